//! Applies the proxy's rules with the real iptables binaries inside a
//! throwaway network namespace (root only; skipped otherwise), checks what
//! `iptables-save` reports, applies an endpoint change, then cleans up.
//! The root namespace's rules are never touched: every command runs
//! through `nsenter --net=/run/netns/<ours>`.

use std::process::Command;
use std::time::Instant;

use skiff_agent::iptables::{Backend, CommandIptables, Iptables, Table};
use skiff_agent::proxy::{
    cleanup, ensure_pod_masquerade, CommandConntrack, Conntrack, ConntrackFlush, NodeSettings,
    ServiceTable, SyncConfig, SyncKind, Syncer,
};
use skiff_proto::node::v1 as proto;

/// A network namespace that is deleted when dropped, even on panic.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Option<Netns> {
        let name = format!("skiff-ipt-{tag}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        Some(Netns { name })
    }

    fn prefix(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.name)]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn endpoint(ip: &str, port: u32) -> proto::ServiceEndpoint {
    proto::ServiceEndpoint {
        ip: ip.into(),
        port,
        ready: true,
        ..Default::default()
    }
}

fn services(web_endpoints: Vec<proto::ServiceEndpoint>) -> ServiceTable {
    let web = proto::Service {
        namespace: "default".into(),
        name: "web".into(),
        r#type: "NodePort".into(),
        cluster_ip: "10.96.0.10".into(),
        ports: vec![proto::ServicePort {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 80,
            node_port: 30080,
            endpoints: web_endpoints,
        }],
        session_affinity: "ClientIP".into(),
        session_affinity_timeout_seconds: 600,
        ..Default::default()
    };
    let dns = proto::Service {
        namespace: "kube-system".into(),
        name: "dns".into(),
        r#type: "ClusterIP".into(),
        cluster_ip: "10.96.0.53".into(),
        ports: vec![proto::ServicePort {
            name: "dns".into(),
            protocol: "UDP".into(),
            port: 53,
            endpoints: vec![],
            ..Default::default()
        }],
        ..Default::default()
    };
    let (table, errors) = ServiceTable::from_snapshot(&[web, dns]);
    assert!(errors.is_empty(), "{errors:?}");
    table
}

fn skiff_chains(saved: &str) -> Vec<String> {
    saved
        .lines()
        .filter_map(|l| l.strip_prefix(":SKIFF-"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| format!("SKIFF-{n}"))
        .collect()
}

#[test]
fn nft_backend_applies_changes_and_cleans_up() {
    if !is_root() {
        eprintln!("skipped: needs root to create a network namespace");
        return;
    }
    let netns = Netns::create("nft").expect("ip netns add");
    let iptables = CommandIptables::detect(netns.prefix());
    // A fresh namespace has no rules in either backend: nft is the default.
    assert_eq!(iptables.backend(), Backend::Nft);
    apply_change_and_clean_up(&iptables, &netns);
}

#[test]
fn legacy_backend_applies_changes_and_cleans_up() {
    if !is_root() {
        eprintln!("skipped: needs root to create a network namespace");
        return;
    }
    let netns = Netns::create("legacy").expect("ip netns add");
    let iptables = CommandIptables::with_backend(netns.prefix(), Backend::Legacy, true);
    apply_change_and_clean_up(&iptables, &netns);
}

fn apply_change_and_clean_up(iptables: &CommandIptables, netns: &Netns) {
    let conntrack = CommandConntrack::new(netns.prefix());
    let settings = NodeSettings::new("10.244.0.0/16".parse().expect("cidr"));

    ensure_pod_masquerade(iptables, &settings).expect("pod masquerade applies");
    let mut syncer = Syncer::new(settings.clone(), SyncConfig::default());
    let first = services(vec![
        endpoint("10.244.1.2", 8080),
        endpoint("10.244.2.3", 8080),
    ]);
    let report = syncer
        .sync(iptables, &conntrack, &first, Instant::now())
        .expect("full sync applies with the real iptables-restore");
    assert_eq!(report.kind, SyncKind::Full);

    let nat = iptables.save(Table::Nat).expect("iptables-save");
    let filter = iptables.save(Table::Filter).expect("iptables-save");
    assert!(
        nat.contains(
            "-A PREROUTING -m comment --comment \"skiff service portals\" -j SKIFF-SERVICES"
        ),
        "{nat}"
    );
    assert!(
        nat.contains("-A OUTPUT -m comment --comment \"skiff service portals\" -j SKIFF-SERVICES"),
        "{nat}"
    );
    assert!(nat.contains("-j SKIFF-POSTROUTING"), "{nat}");
    assert_eq!(nat.matches("-j SKIFF-POD-MASQ").count(), 1, "{nat}");
    assert!(nat.contains("-d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j SKIFF-SVC-"), "{nat}");
    assert!(
        nat.contains("--probability 0.50000000000"),
        "statistic rule: {nat}"
    );
    assert!(
        nat.contains("-j DNAT --to-destination 10.244.1.2:8080"),
        "{nat}"
    );
    assert!(
        nat.contains("--rcheck --seconds 600 --reap"),
        "affinity: {nat}"
    );
    assert!(
        nat.contains("-m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS"),
        "{nat}"
    );
    assert!(nat.contains("--dport 30080 -j SKIFF-MARK-MASQ"), "{nat}");
    assert!(filter.contains("-d 10.96.0.53/32 -p udp -m comment --comment \"kube-system/dns:dns has no endpoints\" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable"), "{filter}");
    assert!(
        filter.contains(
            "-A FORWARD -m comment --comment \"skiff forwarding rules\" -j SKIFF-FORWARD"
        ),
        "{filter}"
    );
    let nat_chains = skiff_chains(&nat);
    assert_eq!(
        nat_chains
            .iter()
            .filter(|c| c.starts_with("SKIFF-SEP-"))
            .count(),
        2
    );

    // One endpoint moves: a partial sync replaces its SEP chain.
    let second = services(vec![
        endpoint("10.244.1.2", 8080),
        endpoint("10.244.2.4", 8080),
    ]);
    let report = syncer
        .sync(iptables, &conntrack, &second, Instant::now())
        .expect("partial sync applies");
    assert_eq!(report.kind, SyncKind::Partial);
    assert_eq!(report.chains_deleted, 1);
    let nat = iptables.save(Table::Nat).expect("iptables-save");
    assert!(!nat.contains("10.244.2.3:8080"), "{nat}");
    assert!(
        nat.contains("-j DNAT --to-destination 10.244.2.4:8080"),
        "{nat}"
    );
    assert_eq!(
        skiff_chains(&nat)
            .iter()
            .filter(|c| c.starts_with("SKIFF-SEP-"))
            .count(),
        2
    );

    // A full resync on top of the same rules duplicates no jump.
    syncer.request_full_sync();
    syncer
        .sync(iptables, &conntrack, &second, Instant::now())
        .expect("full resync");
    let nat = iptables.save(Table::Nat).expect("iptables-save");
    assert_eq!(nat.matches("-A PREROUTING ").count(), 1, "{nat}");
    assert_eq!(nat.matches("-A POSTROUTING ").count(), 2, "{nat}");

    // Flushing conntrack entries that do not exist is not an error.
    conntrack
        .flush(&ConntrackFlush::ClusterIpToEndpoint {
            vip: "10.96.0.53".parse().expect("ip"),
            endpoint: "10.244.9.9".parse().expect("ip"),
        })
        .expect("conntrack -D with no match succeeds");

    // A bad restore reports the line iptables-restore rejected.
    let error = iptables
        .restore(
            Table::Nat,
            "*nat\n:SKIFF-BROKEN - [0:0]\n-A SKIFF-BROKEN -p tcp --no-such-option 1 -j ACCEPT\nCOMMIT\n",
        )
        .expect_err("an unknown option fails");
    assert!(
        error
            .to_string()
            .contains("line 3 (\"-A SKIFF-BROKEN -p tcp --no-such-option 1 -j ACCEPT\")"),
        "{error}"
    );
    // Errors found only at COMMIT (nft checks jumps then) still say why.
    let error = iptables
        .restore(
            Table::Nat,
            "*nat\n:SKIFF-BROKEN - [0:0]\n-A SKIFF-BROKEN -j SKIFF-NO-SUCH-CHAIN\nCOMMIT\n",
        )
        .expect_err("a jump to a missing chain fails");
    assert!(error.to_string().contains("SKIFF-NO-SUCH-CHAIN"), "{error}");

    cleanup(iptables, Some(3)).expect("cleanup in restores of three chains");
    for table in Table::ALL {
        let saved = iptables.save(table).expect("iptables-save");
        assert!(
            !saved.contains("SKIFF-"),
            "{table} still has our rules:\n{saved}"
        );
    }
}
