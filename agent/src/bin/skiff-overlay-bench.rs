//! Measures the VXLAN overlay at scale: a full apply of N simulated peers
//! (the device, then a neighbour, an FDB entry and a route per peer), a
//! no-op reconcile (which must write nothing), and a reconcile after a few
//! peers changed their VTEP MAC. Runs in a network namespace of its own,
//! created by unsharing the benchmark thread's, with a veth pair as the
//! external interface; the namespace goes away with the thread. Run as
//! root, built with `--release`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ipnet::Ipv4Net;
use nix::sched::{unshare, CloneFlags};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use skiff_agent::overlay::{
    detect_external, Overlay, OverlayConfig, OverlayNetlink, Peer, ReconcileReport, RtNetlink,
    DEFAULT_VXLAN_PORT,
};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the agent's VXLAN overlay reconcile")]
struct Options {
    #[arg(long, default_value_t = 1_000)]
    peers: u32,
    /// Peers whose VTEP MAC changes before the last reconcile.
    #[arg(long, default_value_t = 10)]
    changed: u32,
    /// Repetitions of the no-op reconcile (the median is reported).
    #[arg(long, default_value_t = 10)]
    noop_runs: usize,
}

/// Peer `i`: subnet 10.(100 + i/256).(i%256).0/24, public address
/// 172.16.(i/250).(i%250 + 1), MAC derived as the agent derives its own.
fn peer(i: u32, generation: u8) -> Peer {
    let subnet = Ipv4Net::new(
        Ipv4Addr::new(10, 100 + (i / 256) as u8, (i % 256) as u8, 0),
        24,
    )
    .unwrap_or_default();
    Peer {
        node_name: format!("node-{i:05}"),
        subnet,
        public_ip: Ipv4Addr::new(172, 16, (i / 250) as u8, (i % 250 + 1) as u8),
        vtep_mac: [0x0e, 0x18, generation, (i >> 8) as u8, i as u8, 0],
    }
}

/// A veth pair `ext0`/`ext0p` with 192.0.2.10/24 and a default route, so
/// the external interface is found as the agent finds it.
async fn underlay() -> anyhow::Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
    tokio::spawn(connection);
    handle
        .link()
        .add(LinkVeth::new("ext0", "ext0p").build())
        .execute()
        .await
        .context("create veth")?;
    for name in ["ext0", "ext0p", "lo"] {
        handle
            .link()
            .set(LinkUnspec::new_with_name(name).up().build())
            .execute()
            .await
            .with_context(|| format!("set {name} up"))?;
    }
    let ext0 = RtNetlink::connect()?
        .interface_by_name("ext0")
        .await?
        .context("ext0 vanished")?;
    handle
        .address()
        .add(ext0.index, Ipv4Addr::new(192, 0, 2, 10).into(), 24)
        .execute()
        .await
        .context("address ext0")?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(Ipv4Addr::new(192, 0, 2, 1))
                .output_interface(ext0.index)
                .build(),
        )
        .execute()
        .await
        .context("default route")?;
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

async fn timed(
    overlay: &mut Overlay<RtNetlink>,
    peers: &[Peer],
) -> anyhow::Result<(Duration, ReconcileReport)> {
    let started = Instant::now();
    let report = overlay.reconcile(peers).await?;
    Ok((started.elapsed(), report))
}

async fn bench(options: Options) -> anyhow::Result<()> {
    underlay().await?;
    let mut netlink = RtNetlink::connect()?;
    let external = detect_external(&mut netlink, None).await?;
    let config = OverlayConfig::new(
        1,
        DEFAULT_VXLAN_PORT,
        external,
        "10.99.0.0/24".parse().context("node subnet")?,
    );
    let mut overlay = Overlay::new(netlink, config);
    let mut peers: Vec<Peer> = (0..options.peers).map(|i| peer(i, 0)).collect();

    let (full, report) = timed(&mut overlay, &peers).await?;
    if !report.failures.is_empty() {
        bail!("full apply failed: {:?}", report.failures.first());
    }
    println!(
        "full apply, {} peers: {} ({} writes, device created: {})",
        report.peers,
        millis(full),
        report.writes,
        report.device_recreated
    );

    let mut noop = Vec::new();
    for _ in 0..options.noop_runs.max(1) {
        let (elapsed, report) = timed(&mut overlay, &peers).await?;
        if report.writes != 0 {
            bail!("a no-op reconcile wrote {} times", report.writes);
        }
        noop.push(elapsed);
    }
    noop.sort();
    println!(
        "no-op reconcile: median {} (min {}, max {}, {} runs), 0 writes",
        millis(noop[noop.len() / 2]),
        millis(noop[0]),
        millis(noop[noop.len() - 1]),
        noop.len()
    );

    let changed = options.changed.min(options.peers);
    for i in 0..changed {
        let index = (i * options.peers / changed.max(1)) as usize;
        peers[index] = peer(index as u32, 1);
    }
    let (elapsed, report) = timed(&mut overlay, &peers).await?;
    println!(
        "{changed} peers with a new VTEP MAC: {} ({} writes)",
        millis(elapsed),
        report.writes
    );

    let (elapsed, report) = timed(&mut overlay, &peers[..peers.len() - changed as usize]).await?;
    println!(
        "{changed} peers removed: {} ({} writes)",
        millis(elapsed),
        report.writes
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare the network namespace (run as root)")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        runtime.block_on(bench(options))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
}
