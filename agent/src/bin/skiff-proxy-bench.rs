//! Measures the service proxy at scale: rendering the rules for N services
//! with M endpoints each, a full apply with `iptables-restore` in a
//! throwaway network namespace, and one endpoint change applied by a
//! partial sync. Run as root, built with `--release`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use skiff_agent::iptables::{Backend, CommandIptables, Iptables, IptablesError, Table};
use skiff_agent::proxy::render::render;
use skiff_agent::proxy::service::{
    Endpoint, Protocol, Service, ServiceKey, ServicePort, ServiceType, SessionAffinity,
};
use skiff_agent::proxy::sync::plan_full;
use skiff_agent::proxy::{
    cleanup, CommandConntrack, NodeSettings, ServiceTable, SyncConfig, SyncKind, Syncer,
};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the agent's iptables service proxy")]
struct Options {
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value_t = 5)]
    endpoints: u32,
    /// Rendering runs (the median is reported).
    #[arg(long, default_value_t = 10)]
    render_runs: usize,
    /// Endpoint changes applied one at a time by partial syncs.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// iptables backend: detect (as the agent does), nft or legacy.
    #[arg(long, default_value = "detect")]
    backend: String,
}

fn address(base: [u8; 2], index: u32) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1], (index >> 8) as u8, index as u8)
}

fn table(services: u32, endpoints: u32) -> ServiceTable {
    let mut table = ServiceTable::default();
    for s in 0..services {
        let endpoints = (0..endpoints)
            .map(|e| Endpoint {
                // 10.244.0.0/16 holds 65,536 pod addresses; wrap around.
                ip: address([10, 244], (s * endpoints + e) % 65_536),
                port: 8080,
                ready: true,
            })
            .collect();
        table.insert(Service {
            key: ServiceKey {
                namespace: format!("ns-{}", s % 100),
                name: format!("svc-{s}"),
            },
            kind: if s % 10 == 0 {
                ServiceType::NodePort
            } else {
                ServiceType::ClusterIp
            },
            cluster_ip: Some(address([10, 96], s + 1)),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: (s % 10 == 0).then(|| 30000 + (s / 10) as u16 % 2768),
                endpoints,
            }],
            affinity: SessionAffinity::None,
        });
    }
    table
}

/// Accepts everything and does nothing: isolates the syncer's own work.
struct NullIptables;

impl Iptables for NullIptables {
    fn restore(&self, _: Table, _: &str) -> Result<(), IptablesError> {
        Ok(())
    }
    fn save(&self, _: Table) -> Result<String, IptablesError> {
        Ok(String::new())
    }
    fn rule_exists(&self, _: Table, _: &str, _: &[String]) -> Result<bool, IptablesError> {
        Ok(true)
    }
    fn insert_rule(&self, _: Table, _: &str, _: &[String]) -> Result<(), IptablesError> {
        Ok(())
    }
    fn delete_rule(&self, _: Table, _: &str, _: &[String]) -> Result<(), IptablesError> {
        Ok(())
    }
    fn supports_random_fully(&self) -> bool {
        true
    }
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = NodeSettings::new("10.244.0.0/16".parse().context("cidr")?);
    let services = table(options.services, options.endpoints);

    let mut render_times = Vec::new();
    let mut ruleset = render(&services, &settings, true);
    for _ in 0..options.render_runs {
        let start = Instant::now();
        let fresh = render(&services, &settings, true);
        render_times.push(start.elapsed());
        // Freeing the previous ruleset is not rendering: outside the clock.
        ruleset = fresh;
    }
    let rules: usize = Table::ALL
        .iter()
        .flat_map(|t| ruleset.table(*t).chains.iter())
        .map(|c| c.rules.len())
        .sum();
    let chains: usize = Table::ALL
        .iter()
        .map(|t| ruleset.table(*t).chains.len())
        .sum();
    let start = Instant::now();
    let unchunked = plan_full(&ruleset, &Default::default(), None);
    let plan_time = start.elapsed();
    let input_bytes: usize = unchunked.inputs.iter().map(|(_, i)| i.len()).sum();
    println!(
        "ruleset: {} services x {} endpoints = {chains} chains, {rules} rules, {:.1} MB of restore input",
        options.services,
        options.endpoints,
        input_bytes as f64 / 1e6
    );
    println!(
        "render: median {} (min {}, {} runs); restore input: {}",
        ms(median(render_times.clone())),
        ms(*render_times.iter().min().context("runs")?),
        render_times.len(),
        ms(plan_time)
    );

    // The syncer's own share of a partial sync, with iptables taken out.
    let mut null_syncer = Syncer::new(settings.clone(), SyncConfig::default());
    let null_conntrack = CommandConntrack::new(vec!["true".into()]);
    null_syncer.sync(&NullIptables, &null_conntrack, &services, Instant::now())?;
    let mut changed = services.clone();
    let mut in_process = Vec::new();
    for change in 0..options.changes {
        if let Some(service) = changed.services.values_mut().nth(change * 37) {
            service.ports[0].endpoints[0].ip = address([10, 246], change as u32);
        }
        let start = Instant::now();
        null_syncer.sync(&NullIptables, &null_conntrack, &changed, Instant::now())?;
        in_process.push(start.elapsed());
    }
    println!(
        "one endpoint change, the syncer's own work (no iptables): median {}",
        ms(median(in_process))
    );

    let name = format!("skiff-proxy-bench-{}", std::process::id());
    if !Command::new("ip")
        .args(["netns", "add", &name])
        .status()?
        .success()
    {
        bail!("ip netns add {name} failed (run as root)");
    }
    let netns = Netns(name);
    let prefix = vec![
        "nsenter".to_owned(),
        format!("--net=/run/netns/{}", netns.0),
    ];
    let iptables = match options.backend.as_str() {
        "detect" => CommandIptables::detect(prefix.clone()),
        "nft" => CommandIptables::with_backend(prefix.clone(), Backend::Nft, true),
        "legacy" => CommandIptables::with_backend(prefix.clone(), Backend::Legacy, true),
        other => bail!("--backend {other}: expected detect, nft or legacy"),
    };
    let conntrack = CommandConntrack::new(prefix);
    let config = SyncConfig::for_backend(iptables.backend());
    println!(
        "backend: {:?}, chains per restore: {:?}",
        iptables.backend(),
        config.max_chains_per_restore
    );
    let plan = plan_full(&ruleset, &Default::default(), config.max_chains_per_restore);

    // The restore alone, then the whole full sync (save, restore, jumps).
    let mut restore_times = Vec::new();
    for (table, input) in &plan.inputs {
        let start = Instant::now();
        iptables.restore(*table, input)?;
        restore_times.push((*table, start.elapsed()));
    }
    let total = |table: Table| -> Duration {
        restore_times
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, d)| *d)
            .sum()
    };
    println!(
        "full apply with iptables-restore into an empty netns: {} (nat {} in {} inputs, filter {})",
        ms(total(Table::Nat) + total(Table::Filter)),
        ms(total(Table::Nat)),
        restore_times
            .iter()
            .filter(|(t, _)| *t == Table::Nat)
            .count(),
        ms(total(Table::Filter))
    );
    // The floor under any partial sync: one restore that changes nothing,
    // which still has iptables read the table.
    let mut empty_times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        iptables.restore(Table::Nat, "*nat\nCOMMIT\n")?;
        empty_times.push(start.elapsed());
    }
    println!(
        "iptables-restore of an empty input over this ruleset: median {}",
        ms(median(empty_times))
    );
    let mut syncer = Syncer::new(settings, config);
    let start = Instant::now();
    let report = syncer.sync(&iptables, &conntrack, &services, Instant::now())?;
    println!(
        "full sync over existing rules (render, save, restore, jumps): {} ({} chains written)",
        ms(start.elapsed()),
        report.chains_written
    );

    let mut changed = services.clone();
    let mut change_times = Vec::new();
    for change in 0..options.changes {
        let key = changed
            .services
            .keys()
            .nth(change * 37 % changed.services.len())
            .cloned()
            .context("a service")?;
        if let Some(service) = changed.services.get_mut(&key) {
            service.ports[0].endpoints[0].ip = address([10, 245], change as u32);
        }
        let start = Instant::now();
        let report = syncer.sync(&iptables, &conntrack, &changed, Instant::now())?;
        change_times.push(start.elapsed());
        if report.kind != SyncKind::Partial
            || report.chains_written != 2
            || report.chains_deleted != 1
        {
            bail!("expected a partial sync of one SVC and one SEP chain, got {report:?}");
        }
    }
    println!(
        "one endpoint change (partial sync: render, diff, restore of 2 chains + 1 deletion): median {}, max {} ({} changes)",
        ms(median(change_times.clone())),
        ms(*change_times.iter().max().context("changes")?),
        change_times.len()
    );

    let start = Instant::now();
    cleanup(
        &iptables,
        SyncConfig::for_backend(iptables.backend()).max_chains_per_restore,
    )?;
    println!("cleanup: {}", ms(start.elapsed()));
    for table in Table::ALL {
        if iptables.save(table)?.contains("SKIFF-") {
            bail!("cleanup left SKIFF- chains in {table}");
        }
    }
    Ok(())
}
