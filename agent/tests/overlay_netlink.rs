//! The overlay against the real kernel, as root, each test in network
//! namespaces of its own (named with the process id, deleted on drop).
//! The code under test runs on a thread that has entered the namespace,
//! with its own current-thread runtime: a netlink socket programs the
//! namespace it was opened in. Assertions read the kernel with `ip` and
//! `bridge`, independently of the code under test.

use std::fs::File;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::Ipv4Net;
use nix::sched::{setns, CloneFlags};
use skiff_agent::overlay::{
    cleanup, detect_external, enable_ip_forwarding, ExternalInterface, Overlay, OverlayConfig,
    OverlayError, Peer, ReconcileReport, RtNetlink, DEFAULT_VXLAN_PORT,
};

static NEXT_NAMESPACE: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted, with everything in it, on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let n = NEXT_NAMESPACE.fetch_add(1, Ordering::SeqCst);
        let name = format!("skiff-ovl-{}-{n}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// `ip -n <namespace> <args>`, which must succeed; its output.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn bridge(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("bridge", &all)
    }

    /// Runs `body` with a netlink connection opened inside the namespace,
    /// on a thread that lives in it.
    fn run<T, F, Fut>(&self, body: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(RtNetlink) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let netlink = RtNetlink::connect().expect("netlink socket");
                body(netlink).await
            })
        })
        .join()
        .expect("namespace thread")
    }

    /// A veth pair inside the namespace: `external` with `address` (a
    /// CIDR) and a default route through it; the other end only up.
    fn with_external(self, external: &str, address: &str, gateway: &str) -> Self {
        let peer_end = format!("{external}p");
        self.ip(&[
            "link", "add", external, "type", "veth", "peer", "name", &peer_end,
        ]);
        self.ip(&["addr", "add", address, "dev", external]);
        self.ip(&["link", "set", external, "up"]);
        self.ip(&["link", "set", &peer_end, "up"]);
        self.ip(&["route", "add", "default", "via", gateway, "dev", external]);
        self
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn enter(path: &str) {
    let file = File::open(path).expect("namespace file");
    setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn peer(name: &str, third_octet: u8, public_ip: &str) -> Peer {
    Peer {
        node_name: name.to_string(),
        subnet: Ipv4Net::new(Ipv4Addr::new(10, 244, third_octet, 0), 24).unwrap(),
        public_ip: public_ip.parse().unwrap(),
        vtep_mac: [0x0e, 0x18, 10, 244, third_octet, 0],
    }
}

fn three_peers() -> Vec<Peer> {
    vec![
        peer("node-b", 2, "192.0.2.11"),
        peer("node-c", 3, "192.0.2.12"),
        peer("node-d", 4, "192.0.2.13"),
    ]
}

/// Non-empty lines of `text`, trimmed.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// One node with an external interface: its configuration as detected.
fn node(tag: &str) -> (Netns, OverlayConfig) {
    let ns = Netns::new(tag).with_external("ext0", "192.0.2.10/24", "192.0.2.1");
    let external = ns.run(|mut netlink| async move { detect_external(&mut netlink, None).await });
    let external = external.expect("detect external interface");
    let config = OverlayConfig::new(1, DEFAULT_VXLAN_PORT, external, net("10.244.1.0/24"));
    (ns, config)
}

fn reconcile(ns: &Netns, config: &OverlayConfig, peers: &[Peer]) -> ReconcileReport {
    let config = config.clone();
    let peers = peers.to_vec();
    ns.run(move |netlink| async move {
        let mut overlay = Overlay::new(netlink, config);
        overlay.reconcile(&peers).await
    })
    .expect("reconcile")
}

/// The entries of `peer` as `ip neigh`, `bridge fdb` and `ip route` print
/// them.
fn expected_lines(peer: &Peer) -> (String, String, String) {
    let mac = peer
        .vtep_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let gateway = peer.subnet.network();
    (
        format!("{gateway} lladdr {mac} PERMANENT"),
        format!("{mac} dst {} self permanent", peer.public_ip),
        format!("{} via {gateway} proto static onlink", peer.subnet),
    )
}

/// Asserts the device holds exactly the entries of `peers`.
fn assert_entries(ns: &Netns, peers: &[Peer]) {
    let neighbours = lines(&ns.ip(&["neigh", "show", "dev", "skiff.1"]));
    let fdb = lines(&ns.bridge(&["fdb", "show", "dev", "skiff.1"]));
    let routes = lines(&ns.ip(&["route", "show", "dev", "skiff.1"]));
    for peer in peers {
        let (neighbour, fdb_entry, route) = expected_lines(peer);
        assert!(
            neighbours.contains(&neighbour),
            "{neighbour:?} not in {neighbours:?}"
        );
        assert!(fdb.contains(&fdb_entry), "{fdb_entry:?} not in {fdb:?}");
        assert!(routes.contains(&route), "{route:?} not in {routes:?}");
    }
    assert_eq!(neighbours.len(), peers.len(), "{neighbours:?}");
    assert_eq!(fdb.len(), peers.len(), "{fdb:?}");
    assert_eq!(routes.len(), peers.len(), "{routes:?}");
}

fn device_index(ns: &Netns) -> String {
    let link = ns.ip(&["-o", "link", "show", "skiff.1"]);
    link.split(':').next().unwrap_or_default().to_string()
}

#[test]
fn detects_the_external_interface() {
    let (ns, config) = node("detect");
    assert_eq!(
        config.external,
        ExternalInterface {
            name: "ext0".to_string(),
            index: config.external.index,
            ip: "192.0.2.10".parse().unwrap(),
            mtu: 1500,
        }
    );
    assert_eq!(config.device, "skiff.1");

    ns.ip(&[
        "link", "add", "ext1", "type", "veth", "peer", "name", "ext1p",
    ]);
    ns.ip(&["link", "set", "ext1", "mtu", "9000"]);
    ns.ip(&["addr", "add", "198.51.100.7/24", "dev", "ext1"]);
    let named = ns.run(|mut n| async move { detect_external(&mut n, Some("ext1")).await });
    let named = named.expect("named interface");
    assert_eq!(named.name, "ext1");
    assert_eq!(named.ip, "198.51.100.7".parse::<Ipv4Addr>().unwrap());
    assert_eq!(named.mtu, 9000);

    let missing = ns.run(|mut n| async move { detect_external(&mut n, Some("nope0")).await });
    assert!(matches!(missing, Err(OverlayError::InterfaceNotFound(_))));

    ns.ip(&["route", "del", "default"]);
    let no_route = ns.run(|mut n| async move { detect_external(&mut n, None).await });
    assert!(matches!(no_route, Err(OverlayError::NoDefaultRoute)));
}

#[test]
fn creates_the_device_as_flannel_does_and_keeps_it() {
    let (ns, config) = node("device");
    let vtep = {
        let config = config.clone();
        ns.run(move |netlink| async move { Overlay::new(netlink, config).ensure_device().await })
    }
    .expect("ensure device");
    assert_eq!(vtep.mac, [0x0e, 0x18, 10, 244, 1, 0]);
    assert_eq!(vtep.mtu, 1450);

    let link = ns.ip(&["-d", "link", "show", "skiff.1"]);
    for expected in [
        "mtu 1450",
        "link/ether 0e:18:0a:f4:01:00",
        "vxlan id 1 ",
        "local 192.0.2.10 ",
        "dev ext0 ",
        "dstport 8472 ",
        "nolearning ",
    ] {
        assert!(link.contains(expected), "{expected:?} not in {link}");
    }
    assert!(link.contains(",UP,") || link.contains(",UP>"), "{link}");
    let addresses = ns.ip(&["-4", "-o", "addr", "show", "dev", "skiff.1"]);
    assert!(addresses.contains("inet 10.244.1.0/32 "), "{addresses}");
    assert_eq!(lines(&addresses).len(), 1, "{addresses}");

    // An agent restart keeps the very same device.
    let index = device_index(&ns);
    let again = {
        let config = config.clone();
        ns.run(move |netlink| async move { Overlay::new(netlink, config).ensure_device().await })
    }
    .expect("ensure device again");
    assert_eq!(again, vtep);
    assert_eq!(device_index(&ns), index);

    let removed = ns.run(|mut n| async move { cleanup(&mut n, "skiff.1").await });
    assert!(removed.expect("cleanup"));
    let links = ns.ip(&["link", "show"]);
    assert!(!links.contains("skiff.1"), "{links}");
    let again = ns.run(|mut n| async move { cleanup(&mut n, "skiff.1").await });
    assert!(!again.expect("second cleanup"));
}

#[test]
fn programs_peers_and_follows_their_changes() {
    let (ns, config) = node("peers");
    let mut peers = three_peers();

    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 3 + 3 * 3);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_entries(&ns, &peers);

    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 0, "a no-op reconcile writes nothing");

    // One peer leaves: exactly its three entries go.
    let gone = peers.remove(1);
    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 3);
    assert_entries(&ns, &peers);
    let (neighbour, fdb, route) = expected_lines(&gone);
    assert!(!ns
        .ip(&["neigh", "show", "dev", "skiff.1"])
        .contains(&neighbour));
    assert!(!ns.bridge(&["fdb", "show", "dev", "skiff.1"]).contains(&fdb));
    assert!(!ns.ip(&["route", "show", "dev", "skiff.1"]).contains(&route));

    // One peer's device got a new MAC.
    peers[0].vtep_mac = [0x0e, 0x18, 10, 244, 2, 0x99];
    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 3, "neighbour, FDB entry, old FDB entry");
    assert_entries(&ns, &peers);

    // A changed public address rewrites the FDB entry only.
    peers[1].public_ip = "192.0.2.99".parse().unwrap();
    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 1);
    assert_entries(&ns, &peers);

    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 0);
}

#[test]
fn restores_a_deleted_device_and_recreates_a_wrong_one() {
    let (ns, config) = node("restore");
    let peers = three_peers();
    reconcile(&ns, &config, &peers);

    ns.ip(&["link", "del", "skiff.1"]);
    let report = reconcile(&ns, &config, &peers);
    assert!(report.device_recreated);
    assert_eq!(report.writes, 3 + 3 * 3);
    assert_entries(&ns, &peers);

    ns.ip(&["link", "del", "skiff.1"]);
    ns.ip(&[
        "link",
        "add",
        "skiff.1",
        "type",
        "vxlan",
        "id",
        "7",
        "dev",
        "ext0",
        "dstport",
        "8472",
        "local",
        "192.0.2.10",
    ]);
    let report = reconcile(&ns, &config, &peers);
    assert!(report.device_recreated);
    let link = ns.ip(&["-d", "link", "show", "skiff.1"]);
    assert!(link.contains("vxlan id 1 "), "{link}");
    assert!(link.contains("nolearning "), "{link}");
    assert_entries(&ns, &peers);

    // A wrong MTU is fixed in place, keeping the device and its entries.
    let index = device_index(&ns);
    ns.ip(&["link", "set", "skiff.1", "mtu", "1400"]);
    let report = reconcile(&ns, &config, &peers);
    assert_eq!(report.writes, 1);
    assert!(!report.device_recreated);
    assert_eq!(device_index(&ns), index);
    assert!(ns.ip(&["link", "show", "skiff.1"]).contains("mtu 1450"));
    assert_entries(&ns, &peers);
}

/// Two nodes joined by a veth pair as their underlay, each with its own
/// overlay device and a pod address in its subnet on a bridge: a UDP
/// datagram from one pod address reaches the other and is answered.
#[test]
fn two_nodes_reach_each_other_through_the_overlay() {
    let a = Netns::new("node-a");
    let b = Netns::new("node-b");
    a.ip(&[
        "link", "add", "under0", "type", "veth", "peer", "name", "under1", "netns", &b.name,
    ]);
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "under0"]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "under1"]);
    a.ip(&["link", "set", "under0", "up"]);
    b.ip(&["link", "set", "under1", "up"]);
    for (ns, pod_gateway) in [(&a, "10.244.1.1/24"), (&b, "10.244.2.1/24")] {
        ns.ip(&["link", "add", "cni0", "type", "bridge"]);
        ns.ip(&["addr", "add", pod_gateway, "dev", "cni0"]);
        ns.ip(&["link", "set", "cni0", "up"]);
    }

    let setup = |ns: &Netns, underlay: &'static str, subnet: &str| {
        let subnet = net(subnet);
        ns.run(move |mut netlink| async move {
            enable_ip_forwarding()?;
            let external = detect_external(&mut netlink, Some(underlay)).await?;
            let config = OverlayConfig::new(1, DEFAULT_VXLAN_PORT, external.clone(), subnet);
            let vtep = Overlay::new(netlink, config.clone())
                .ensure_device()
                .await?;
            Ok::<_, OverlayError>((
                config,
                Peer {
                    node_name: String::new(),
                    subnet,
                    public_ip: external.ip,
                    vtep_mac: vtep.mac,
                },
            ))
        })
        .expect("node setup")
    };
    let (config_a, mut as_peer_a) = setup(&a, "under0", "10.244.1.0/24");
    let (config_b, mut as_peer_b) = setup(&b, "under1", "10.244.2.0/24");
    as_peer_a.node_name = "node-a".to_string();
    as_peer_b.node_name = "node-b".to_string();
    for ns in [&a, &b] {
        let forwarding = run(
            "ip",
            &[
                "netns",
                "exec",
                &ns.name,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ],
        );
        assert_eq!(forwarding.trim(), "1");
    }

    // Each node learns of both; its own entry is skipped.
    let everyone = vec![as_peer_a.clone(), as_peer_b.clone()];
    let report_a = reconcile(&a, &config_a, &everyone);
    let report_b = reconcile(&b, &config_b, &everyone);
    assert_eq!((report_a.peers, report_b.peers), (1, 1));
    assert_eq!(report_a.skipped.len(), 1);

    let b_path = format!("/run/netns/{}", b.name);
    let server = std::thread::spawn(move || {
        enter(&b_path);
        let socket = UdpSocket::bind("10.244.2.1:7000").expect("bind in node-b");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buffer = [0u8; 64];
        let (len, from) = socket.recv_from(&mut buffer).expect("datagram from node-a");
        socket.send_to(&buffer[..len], from).expect("answer");
        from
    });

    let a_path = format!("/run/netns/{}", a.name);
    let answer = std::thread::spawn(move || {
        enter(&a_path);
        let socket = UdpSocket::bind("10.244.1.1:0").expect("bind in node-a");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buffer = [0u8; 64];
        // The first datagram may race the server's bind; send until answered.
        for _ in 0..20 {
            socket
                .send_to(b"across the overlay", "10.244.2.1:7000")
                .expect("send");
            if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                return Some((buffer[..len].to_vec(), from));
            }
        }
        None
    })
    .join()
    .expect("client thread");
    let (payload, from) = answer.expect("no answer from node-b's pod address");
    assert_eq!(payload, b"across the overlay");
    assert_eq!(from, "10.244.2.1:7000".parse::<SocketAddr>().unwrap());
    let seen_from = server.join().expect("server thread");
    assert_eq!(
        seen_from.ip().to_string(),
        "10.244.1.1",
        "no address rewriting"
    );

    // And it went through the VXLAN devices.
    for ns in [&a, &b] {
        let sent = run(
            "ip",
            &[
                "netns",
                "exec",
                &ns.name,
                "cat",
                "/sys/class/net/skiff.1/statistics/tx_packets",
            ],
        );
        assert!(sent.trim().parse::<u64>().unwrap_or(0) > 0, "{sent}");
    }
}
