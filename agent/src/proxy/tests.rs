//! Root-free tests of the proxy, as kube-proxy's own: golden rulesets, a
//! check that every jump has a target, a packet tracer, and partial syncs,
//! all against the fake iptables.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::conntrack::fake::FakeConntrack;
use super::conntrack::ConntrackFlush;
use super::render::*;
use super::service::*;
use super::sync::{SyncConfig, SyncKind, Syncer};
use super::tracer::{Origin, Outcome, Packet, Tracer};
use super::{cleanup, ensure_pod_masquerade};
use crate::iptables::fake::{builtin_chains, FakeIptables, BUILTIN_TARGETS};
use crate::iptables::{Iptables, Table};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("test address")
}

fn settings() -> NodeSettings {
    NodeSettings::new("10.244.0.0/16".parse().expect("cidr"))
}

fn port(
    name: &str,
    protocol: Protocol,
    port: u16,
    node_port: Option<u16>,
    endpoints: &[(&str, u16)],
) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol,
        port,
        node_port,
        endpoints: endpoints
            .iter()
            .map(|(address, port)| Endpoint {
                ip: ip(address),
                port: *port,
                ready: true,
            })
            .collect(),
    }
}

fn service(namespace: &str, name: &str, vip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        key: ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        },
        kind: if ports.iter().any(|p| p.node_port.is_some()) {
            ServiceType::NodePort
        } else {
            ServiceType::ClusterIp
        },
        cluster_ip: Some(ip(vip)),
        ports,
        affinity: SessionAffinity::None,
    }
}

fn table(services: Vec<Service>) -> ServiceTable {
    let mut table = ServiceTable::default();
    for s in services {
        table.insert(s);
    }
    table
}

fn three_endpoints() -> Service {
    service(
        "default",
        "web",
        "10.96.0.10",
        vec![port(
            "http",
            Protocol::Tcp,
            80,
            None,
            &[
                ("10.244.1.2", 8080),
                ("10.244.1.3", 8080),
                ("10.244.2.4", 8080),
            ],
        )],
    )
}

/// The sorted dump without the chains every ruleset has.
fn service_chains(ruleset: &Ruleset) -> String {
    let fixed = [
        MARK_MASQ_CHAIN,
        POSTROUTING_CHAIN,
        POD_MASQ_CHAIN,
        FORWARD_CHAIN,
    ];
    ruleset
        .sorted_dump()
        .lines()
        .filter(|line| {
            !fixed
                .iter()
                .any(|name| *line == format!(":{name}") || line.starts_with(&format!("-A {name} ")))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

fn assert_golden(actual: &str, expected: &str) {
    let expected: String = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(actual, expected, "\nactual:\n{actual}");
}

/// Applies `services` through a fresh syncer, returning the fake.
fn applied(services: &ServiceTable) -> FakeIptables {
    let fake = FakeIptables::default();
    let mut syncer = Syncer::new(settings(), SyncConfig::default());
    syncer
        .sync(&fake, &FakeConntrack::default(), services, Instant::now())
        .expect("sync applies");
    fake
}

#[test]
fn golden_cluster_ip_with_three_endpoints() {
    let ruleset = render(&table(vec![three_endpoints()]), &settings(), true);
    assert_golden(&ruleset.sorted_dump(), GOLDEN_THREE_ENDPOINTS);
}

#[test]
fn golden_without_random_fully() {
    let ruleset = render(&ServiceTable::default(), &settings(), false);
    let dump = ruleset.sorted_dump();
    assert!(!dump.contains("--random-fully"));
    assert!(dump.contains("-A SKIFF-POSTROUTING -m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE\n"));
}

#[test]
fn golden_node_port() {
    let ruleset = render(
        &table(vec![service(
            "default",
            "site",
            "10.96.0.20",
            vec![port(
                "",
                Protocol::Tcp,
                80,
                Some(30080),
                &[("10.244.1.2", 80)],
            )],
        )]),
        &settings(),
        true,
    );
    assert_golden(&service_chains(&ruleset), GOLDEN_NODE_PORT);
}

#[test]
fn golden_node_port_on_listed_addresses() {
    let mut settings = settings();
    settings.node_port_addresses = NodePortAddresses::Only(vec![NODE_IP]);
    let ruleset = render(
        &table(vec![service(
            "default",
            "site",
            "10.96.0.20",
            vec![port("", Protocol::Tcp, 80, Some(30080), &[])],
        )]),
        &settings,
        true,
    );
    let dump = ruleset.sorted_dump();
    assert!(dump.contains("-A SKIFF-SERVICES -m comment --comment \"skiff service nodeports; NOTE: this must be the last rule in this chain\" -d 192.168.1.10/32 -j SKIFF-NODEPORTS\n"), "{dump}");
    assert!(dump.contains("-A SKIFF-SERVICES -p tcp -m comment --comment \"default/site has no endpoints\" -d 192.168.1.10/32 -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable\n"), "{dump}");
    assert!(!dump.contains("addrtype"));
}

#[test]
fn golden_service_without_endpoints() {
    let mut not_ready = port("dns", Protocol::Udp, 53, Some(30053), &[("10.244.1.9", 53)]);
    not_ready.endpoints[0].ready = false;
    let ruleset = render(
        &table(vec![service(
            "kube-system",
            "dns",
            "10.96.0.53",
            vec![not_ready],
        )]),
        &settings(),
        true,
    );
    assert_golden(&service_chains(&ruleset), GOLDEN_NO_ENDPOINTS);
}

#[test]
fn golden_client_ip_affinity() {
    let mut sticky = three_endpoints();
    sticky.ports[0].endpoints.truncate(2);
    sticky.affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    let ruleset = render(&table(vec![sticky]), &settings(), true);
    assert_golden(&service_chains(&ruleset), GOLDEN_AFFINITY);
}

#[test]
fn golden_named_port_with_per_pod_target_ports() {
    let ruleset = render(
        &table(vec![service(
            "shop",
            "api",
            "10.96.0.30",
            vec![port(
                "grpc",
                Protocol::Tcp,
                9000,
                None,
                &[("10.244.1.2", 9090), ("10.244.2.2", 9191)],
            )],
        )]),
        &settings(),
        true,
    );
    assert_golden(&service_chains(&ruleset), GOLDEN_NAMED_PORT);
}

#[test]
fn golden_two_services_sharing_a_vip() {
    // Two services cannot hold the same ClusterIP in Kubernetes, but the
    // proxy must not care: one VIP, two ports, two services.
    let ruleset = render(
        &table(vec![
            service(
                "default",
                "a",
                "10.96.0.40",
                vec![port("", Protocol::Tcp, 80, None, &[("10.244.1.2", 80)])],
            ),
            service(
                "default",
                "b",
                "10.96.0.40",
                vec![port("", Protocol::Udp, 81, None, &[("10.244.1.3", 81)])],
            ),
        ]),
        &settings(),
        true,
    );
    assert_golden(&service_chains(&ruleset), GOLDEN_SHARED_VIP);
}

#[test]
fn applied_rules_equal_the_rendered_ruleset() {
    let services = table(vec![three_endpoints()]);
    let fake = applied(&services);
    let ruleset = render(&services, &settings(), true);
    for t in Table::ALL {
        let chains = fake.chains(t);
        for chain in &ruleset.table(t).chains {
            let rules: Vec<Vec<String>> = chain
                .rules
                .iter()
                .map(|r| crate::iptables::split_rule_words(r))
                .collect();
            assert_eq!(chains.get(&chain.name), Some(&rules), "{t} {}", chain.name);
        }
    }
}

#[test]
fn every_jump_targets_a_defined_chain() {
    let mut sticky = three_endpoints();
    sticky.key.name = "sticky".into();
    sticky.cluster_ip = Some(ip("10.96.0.11"));
    sticky.affinity = SessionAffinity::ClientIp {
        timeout_seconds: 10,
    };
    let services = table(vec![
        three_endpoints(),
        sticky,
        service(
            "default",
            "site",
            "10.96.0.20",
            vec![port(
                "",
                Protocol::Tcp,
                80,
                Some(30080),
                &[("10.244.1.2", 80)],
            )],
        ),
        service(
            "default",
            "empty",
            "10.96.0.21",
            vec![port("", Protocol::Tcp, 80, Some(30081), &[])],
        ),
    ]);
    let fake = applied(&services);
    let mut checked = 0;
    for t in Table::ALL {
        let chains = fake.chains(t);
        for rules in chains.values() {
            for rule in rules {
                if let Some(i) = rule.iter().position(|w| w == "-j") {
                    let target = rule[i + 1].as_str();
                    assert!(
                        BUILTIN_TARGETS.contains(&target) || chains.contains_key(target),
                        "{t}: jump to undefined {target} in {rule:?}"
                    );
                    checked += 1;
                }
            }
        }
        // Our jumps from the built-in chains are there, once each.
        for builtin in builtin_chains(t) {
            let rules = &chains[*builtin];
            let unique: BTreeSet<&Vec<String>> = rules.iter().collect();
            assert_eq!(
                unique.len(),
                rules.len(),
                "{t} {builtin} has duplicate rules"
            );
        }
    }
    assert!(checked > 20);
}

fn tracer_fixture() -> (FakeIptables, Tracer) {
    let services = table(vec![
        three_endpoints(),
        service(
            "default",
            "site",
            "10.96.0.20",
            vec![port(
                "",
                Protocol::Tcp,
                80,
                Some(30080),
                &[("10.244.1.2", 80)],
            )],
        ),
        service(
            "default",
            "empty",
            "10.96.0.21",
            vec![port("", Protocol::Tcp, 80, Some(30081), &[])],
        ),
    ]);
    let fake = applied(&services);
    let tracer = Tracer::new(&fake, &[NODE_IP, ip("127.0.0.1")]);
    (fake, tracer)
}

fn tcp(src: Ipv4Addr, dst: &str, dport: u16) -> Packet {
    Packet {
        src,
        dst: ip(dst),
        protocol: "tcp",
        dport,
    }
}

fn outcomes(list: &[(&str, u16, bool)]) -> BTreeSet<Outcome> {
    list.iter()
        .map(|(address, port, masqueraded)| Outcome {
            destination: (ip(address), *port),
            masqueraded: *masqueraded,
            rejected: false,
        })
        .collect()
}

#[test]
fn trace_pod_to_cluster_ip() {
    let (_, tracer) = tracer_fixture();
    let result = tracer.trace(tcp(ip("10.244.3.3"), "10.96.0.10", 80), Origin::Arriving);
    assert_eq!(
        result,
        outcomes(&[
            ("10.244.1.2", 8080, false),
            ("10.244.1.3", 8080, false),
            ("10.244.2.4", 8080, false)
        ])
    );
    // Another port on the VIP is not DNATed: it leaves for the default
    // route like any traffic out of the pod network, masqueraded.
    let other = tracer.trace(tcp(ip("10.244.3.3"), "10.96.0.10", 81), Origin::Arriving);
    assert_eq!(other, outcomes(&[("10.96.0.10", 81, true)]));
}

#[test]
fn trace_host_to_cluster_ip_is_masqueraded() {
    let (_, tracer) = tracer_fixture();
    let result = tracer.trace(tcp(NODE_IP, "10.96.0.10", 80), Origin::Host);
    assert_eq!(
        result,
        outcomes(&[
            ("10.244.1.2", 8080, true),
            ("10.244.1.3", 8080, true),
            ("10.244.2.4", 8080, true)
        ])
    );
}

#[test]
fn trace_outside_to_node_port_is_masqueraded() {
    let (_, tracer) = tracer_fixture();
    let result = tracer.trace(tcp(OUTSIDE, "192.168.1.10", 30080), Origin::Arriving);
    assert_eq!(result, outcomes(&[("10.244.1.2", 80, true)]));
    // Not on an address of this node: left alone.
    let elsewhere = tracer.trace(tcp(OUTSIDE, "192.168.1.99", 30080), Origin::Arriving);
    assert_eq!(elsewhere, outcomes(&[("192.168.1.99", 30080, false)]));
}

#[test]
fn trace_pod_to_its_own_service_is_hairpin_masqueraded() {
    let (_, tracer) = tracer_fixture();
    let result = tracer.trace(tcp(ip("10.244.1.3"), "10.96.0.10", 80), Origin::Arriving);
    assert_eq!(
        result,
        outcomes(&[
            ("10.244.1.2", 8080, false),
            ("10.244.1.3", 8080, true),
            ("10.244.2.4", 8080, false)
        ])
    );
}

#[test]
fn trace_pod_to_pod_is_not_masqueraded() {
    let (_, tracer) = tracer_fixture();
    let result = tracer.trace(tcp(ip("10.244.1.3"), "10.244.2.4", 8080), Origin::Arriving);
    assert_eq!(result, outcomes(&[("10.244.2.4", 8080, false)]));
}

#[test]
fn trace_pod_to_outside_is_masqueraded() {
    let (_, tracer) = tracer_fixture();
    let result = tracer.trace(tcp(ip("10.244.1.3"), "203.0.113.80", 443), Origin::Arriving);
    assert_eq!(result, outcomes(&[("203.0.113.80", 443, true)]));
    // Traffic that is not the pod network's is not ours to masquerade.
    let transit = tracer.trace(tcp(OUTSIDE, "203.0.113.80", 443), Origin::Arriving);
    assert_eq!(transit, outcomes(&[("203.0.113.80", 443, false)]));
}

#[test]
fn trace_service_without_endpoints_is_rejected() {
    let (_, tracer) = tracer_fixture();
    for (packet, origin) in [
        (tcp(ip("10.244.1.3"), "10.96.0.21", 80), Origin::Arriving),
        (tcp(NODE_IP, "10.96.0.21", 80), Origin::Host),
        (tcp(OUTSIDE, "192.168.1.10", 30081), Origin::Arriving),
    ] {
        let result = tracer.trace(packet, origin);
        assert!(
            !result.is_empty() && result.iter().all(|o| o.rejected),
            "{packet:?}: {result:?}"
        );
    }
}

fn chains_in(input: &str) -> BTreeSet<String> {
    input
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn partial_sync_rewrites_only_the_changed_service() {
    let other = service(
        "default",
        "other",
        "10.96.0.99",
        vec![port("", Protocol::Tcp, 80, None, &[("10.244.5.5", 80)])],
    );
    let mut services = table(vec![three_endpoints(), other]);
    let fake = FakeIptables::default();
    let conntrack = FakeConntrack::default();
    let mut syncer = Syncer::new(settings(), SyncConfig::default());
    let start = Instant::now();
    let first = syncer
        .sync(&fake, &conntrack, &services, start)
        .expect("full sync");
    assert_eq!(first.kind, SyncKind::Full);
    fake.clear_restores();

    // One endpoint of default/web changes its address.
    let web = services
        .services
        .values_mut()
        .find(|s| s.key.name == "web")
        .expect("web");
    let web_port = web.ports[0].clone();
    web.ports[0].endpoints[2].ip = ip("10.244.2.5");
    let report = syncer
        .sync(&fake, &conntrack, &services, start + Duration::from_secs(1))
        .expect("partial sync");
    assert_eq!(report.kind, SyncKind::Partial);
    let restores = fake.restores();
    assert_eq!(restores.len(), 1, "only nat changed: {restores:?}");
    let (t, input) = &restores[0];
    assert_eq!(*t, Table::Nat);
    let port_name = "default/web:http";
    let old_sep = sep_chain_name(port_name, &web_port, &web_port.endpoints[2]);
    let mut new_port = web_port.clone();
    new_port.endpoints[2].ip = ip("10.244.2.5");
    let new_sep = sep_chain_name(port_name, &new_port, &new_port.endpoints[2]);
    let expected: BTreeSet<String> = [
        svc_chain_name(port_name, &web_port),
        new_sep.clone(),
        old_sep.clone(),
    ]
    .into_iter()
    .collect();
    // The SVC chain, the new SEP chain, and the old SEP chain (declared to
    // be deleted); SKIFF-SERVICES did not change, so it is not rewritten.
    assert_eq!(chains_in(input), expected, "{input}");
    assert!(
        input.ends_with(&format!("-X {old_sep}\nCOMMIT\n")),
        "{input}"
    );
    assert!(!fake.chains(Table::Nat).contains_key(&old_sep));
    assert!(fake.chains(Table::Nat).contains_key(&new_sep));

    // Removing the other service rewrites the dispatch chain too.
    fake.clear_restores();
    services.services.retain(|key, _| key.name != "other");
    syncer
        .sync(&fake, &conntrack, &services, start + Duration::from_secs(2))
        .expect("partial sync");
    let restores = fake.restores();
    let nat: Vec<&String> = restores
        .iter()
        .filter(|(t, _)| *t == Table::Nat)
        .map(|(_, i)| i)
        .collect();
    assert_eq!(nat.len(), 1);
    assert!(chains_in(nat[0]).contains(SERVICES_CHAIN), "{}", nat[0]);
    assert!(!fake
        .chains(Table::Nat)
        .keys()
        .any(|c| c.starts_with(SEP_CHAIN_PREFIX)
            && !render(&services, &settings(), true)
                .nat
                .chains
                .iter()
                .any(|d| &d.name == c)));

    // Nothing changed: nothing written.
    fake.clear_restores();
    let idle = syncer
        .sync(&fake, &conntrack, &services, start + Duration::from_secs(3))
        .expect("idle sync");
    assert_eq!(idle.chains_written, 0);
    assert!(fake.restores().is_empty());
}

#[test]
fn failed_partial_restore_falls_back_to_full_and_resync_is_periodic() {
    let mut services = table(vec![three_endpoints()]);
    let fake = FakeIptables::default();
    let conntrack = FakeConntrack::default();
    let config = SyncConfig {
        full_resync_period: Duration::from_secs(60),
        ..SyncConfig::default()
    };
    let mut syncer = Syncer::new(settings(), config);
    let start = Instant::now();
    syncer
        .sync(&fake, &conntrack, &services, start)
        .expect("full sync");

    services.services.values_mut().for_each(|s| {
        s.ports[0].endpoints.pop();
    });
    fake.fail_next_restores(1);
    let report = syncer
        .sync(&fake, &conntrack, &services, start + Duration::from_secs(1))
        .expect("falls back");
    assert_eq!(report.kind, SyncKind::Full);
    assert!(report.fell_back_to_full);
    assert_eq!(
        fake.chains(Table::Nat)
            .keys()
            .filter(|c| c.starts_with(SEP_CHAIN_PREFIX))
            .count(),
        2
    );

    let periodic = syncer
        .sync(
            &fake,
            &conntrack,
            &services,
            start + Duration::from_secs(120),
        )
        .expect("periodic");
    assert_eq!(periodic.kind, SyncKind::Full);
    assert!(!periodic.fell_back_to_full);

    // A full sync that fails is reported, and the next one is full again.
    syncer.request_full_sync();
    fake.fail_next_restores(1);
    assert!(syncer
        .sync(
            &fake,
            &conntrack,
            &services,
            start + Duration::from_secs(121)
        )
        .is_err());
    let after = syncer
        .sync(
            &fake,
            &conntrack,
            &services,
            start + Duration::from_secs(122),
        )
        .expect("recovers");
    assert_eq!(after.kind, SyncKind::Full);
}

#[test]
fn chunked_full_sync_writes_chains_before_their_users() {
    let mut services = table(vec![three_endpoints()]);
    for i in 0..5 {
        services.insert(service(
            "default",
            &format!("extra-{i}"),
            &format!("10.96.1.{i}"),
            vec![port(
                "",
                Protocol::Tcp,
                80,
                None,
                &[("10.244.7.1", 80), ("10.244.7.2", 80)],
            )],
        ));
    }
    let fake = FakeIptables::default();
    let config = SyncConfig {
        max_chains_per_restore: Some(4),
        ..SyncConfig::default()
    };
    let mut syncer = Syncer::new(settings(), config);
    // The fake refuses any jump to a chain that neither exists nor is
    // declared in the same input, so success proves the order.
    syncer
        .sync(&fake, &FakeConntrack::default(), &services, Instant::now())
        .expect("chunked full sync");
    let nat_inputs: Vec<String> = fake
        .restores()
        .into_iter()
        .filter(|(t, _)| *t == Table::Nat)
        .map(|(_, input)| input)
        .collect();
    assert!(nat_inputs.len() > 3, "{} inputs", nat_inputs.len());
    assert!(nat_inputs.iter().all(|input| chains_in(input).len() <= 4));
    assert!(chains_in(nat_inputs.last().expect("inputs")).contains(SERVICES_CHAIN));
    let expected = applied(&services);
    assert_eq!(fake.chains(Table::Nat), expected.chains(Table::Nat));
}

#[test]
fn full_sync_deletes_stale_chains_and_repairs_jumps() {
    let services = table(vec![three_endpoints()]);
    let fake = FakeIptables::default();
    fake.restore(
        Table::Nat,
        "*nat\n:SKIFF-SVC-LEFTOVER - [0:0]\n-A SKIFF-SVC-LEFTOVER -j RETURN\n:OTHER-CHAIN - [0:0]\nCOMMIT\n",
    )
    .expect("seed");
    let mut syncer = Syncer::new(settings(), SyncConfig::default());
    syncer
        .sync(&fake, &FakeConntrack::default(), &services, Instant::now())
        .expect("full sync");
    let nat = fake.chains(Table::Nat);
    assert!(!nat.contains_key("SKIFF-SVC-LEFTOVER"));
    assert!(
        nat.contains_key("OTHER-CHAIN"),
        "chains that are not ours stay"
    );

    // Jumps are ensured, in order, and a second full sync adds none.
    let forward_targets = |fake: &FakeIptables| -> Vec<String> {
        fake.chains(Table::Filter)["FORWARD"]
            .iter()
            .filter_map(|r| r.last().cloned())
            .collect()
    };
    assert_eq!(forward_targets(&fake), [SERVICES_CHAIN, FORWARD_CHAIN]);
    syncer.request_full_sync();
    syncer
        .sync(&fake, &FakeConntrack::default(), &services, Instant::now())
        .expect("again");
    assert_eq!(forward_targets(&fake), [SERVICES_CHAIN, FORWARD_CHAIN]);
    assert_eq!(fake.chains(Table::Nat)["POSTROUTING"].len(), 2);
}

#[test]
fn pod_masquerade_before_services_then_syncer_keeps_jump_order() {
    let fake = FakeIptables::default();
    ensure_pod_masquerade(&fake, &settings()).expect("pod masquerade");
    ensure_pod_masquerade(&fake, &settings()).expect("idempotent");
    let nat = fake.chains(Table::Nat);
    assert_eq!(nat["POSTROUTING"].len(), 1);
    assert_eq!(nat[POD_MASQ_CHAIN].len(), 2);
    let tracer = Tracer::new(&fake, &[NODE_IP]);
    assert_eq!(
        tracer.trace(tcp(ip("10.244.1.3"), "8.8.8.8", 53), Origin::Arriving),
        outcomes(&[("8.8.8.8", 53, true)])
    );
    assert_eq!(
        tracer.trace(tcp(ip("10.244.1.3"), "10.244.9.9", 53), Origin::Arriving),
        outcomes(&[("10.244.9.9", 53, false)])
    );

    let mut syncer = Syncer::new(settings(), SyncConfig::default());
    syncer
        .sync(
            &fake,
            &FakeConntrack::default(),
            &table(vec![three_endpoints()]),
            Instant::now(),
        )
        .expect("sync");
    let forward: Vec<String> = fake.chains(Table::Filter)["FORWARD"]
        .iter()
        .filter_map(|r| r.last().cloned())
        .collect();
    assert_eq!(forward, [SERVICES_CHAIN, FORWARD_CHAIN]);
}

#[test]
fn cleanup_removes_everything_of_ours() {
    let fake = applied(&table(vec![three_endpoints()]));
    fake.restore(
        Table::Filter,
        "*filter\n:OTHER - [0:0]\n-A OTHER -j ACCEPT\nCOMMIT\n",
    )
    .expect("seed");
    fake.insert_rule(
        Table::Filter,
        "INPUT",
        &["-j".to_owned(), "OTHER".to_owned()],
    )
    .expect("seed");
    // In restores of two chains: flush all, then delete.
    cleanup(&fake, Some(2)).expect("cleanup");
    assert!(fake.restores().len() > 4);
    for t in Table::ALL {
        let saved = fake.save(t).expect("save");
        assert!(!saved.contains("SKIFF-"), "{saved}");
    }
    assert!(fake.chains(Table::Filter).contains_key("OTHER"));
    assert_eq!(fake.chains(Table::Filter)["INPUT"].len(), 1);
    cleanup(&fake, None).expect("cleanup twice is fine");
}

#[test]
fn udp_endpoint_changes_flush_conntrack() {
    let dns = |endpoints: &[(&str, u16)]| {
        service(
            "kube-system",
            "dns",
            "10.96.0.53",
            vec![port("dns", Protocol::Udp, 53, Some(30053), endpoints)],
        )
    };
    let fake = FakeIptables::default();
    let conntrack = FakeConntrack::default();
    let mut syncer = Syncer::new(settings(), SyncConfig::default());
    let start = Instant::now();

    // No endpoints at first: nothing to flush.
    syncer
        .sync(&fake, &conntrack, &table(vec![dns(&[])]), start)
        .expect("sync");
    assert_eq!(conntrack.take(), []);

    // First endpoint: entries made while it had none are flushed.
    syncer
        .sync(
            &fake,
            &conntrack,
            &table(vec![dns(&[("10.244.1.9", 53), ("10.244.2.9", 53)])]),
            start,
        )
        .expect("sync");
    assert_eq!(
        conntrack.take(),
        [
            ConntrackFlush::ClusterIp {
                vip: ip("10.96.0.53")
            },
            ConntrackFlush::NodePort { node_port: 30053 },
        ]
    );

    // One endpoint goes away.
    syncer
        .sync(
            &fake,
            &conntrack,
            &table(vec![dns(&[("10.244.2.9", 53)])]),
            start,
        )
        .expect("sync");
    assert_eq!(
        conntrack.take(),
        [
            ConntrackFlush::ClusterIpToEndpoint {
                vip: ip("10.96.0.53"),
                endpoint: ip("10.244.1.9")
            },
            ConntrackFlush::NodePortToEndpoint {
                node_port: 30053,
                endpoint: ip("10.244.1.9")
            },
        ]
    );
    assert_eq!(
        ConntrackFlush::ClusterIpToEndpoint {
            vip: ip("10.96.0.53"),
            endpoint: ip("10.244.1.9")
        }
        .args(),
        [
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            "10.96.0.53",
            "--dst-nat",
            "10.244.1.9"
        ]
    );

    // The service goes away: its last endpoint's entries go too.
    syncer
        .sync(&fake, &conntrack, &ServiceTable::default(), start)
        .expect("sync");
    assert_eq!(conntrack.take().len(), 2);

    // TCP changes never flush.
    syncer
        .sync(&fake, &conntrack, &table(vec![three_endpoints()]), start)
        .expect("sync");
    syncer
        .sync(&fake, &conntrack, &ServiceTable::default(), start)
        .expect("sync");
    assert_eq!(conntrack.take(), []);
}

#[test]
fn probabilities_are_printed_as_kube_proxy_prints_them() {
    assert_eq!(probability(3), "0.3333333333");
    assert_eq!(probability(2), "0.5000000000");
    assert_eq!(probability(7), "0.1428571429");
}

#[test]
fn chain_names_fit_iptables_limits() {
    let web = three_endpoints();
    let name = svc_chain_name("default/web:http", &web.ports[0]);
    assert!(
        name.len() <= 28 && name.starts_with(SVC_CHAIN_PREFIX),
        "{name}"
    );
    assert_eq!(
        name,
        svc_chain_name("default/web:http", &web.ports[0]),
        "stable"
    );
    let udp = ServicePort {
        protocol: Protocol::Udp,
        ..web.ports[0].clone()
    };
    assert_ne!(name, svc_chain_name("default/web:http", &udp));
}

const GOLDEN_THREE_ENDPOINTS: &str = r#"
*nat
:SKIFF-MARK-MASQ
:SKIFF-NODEPORTS
:SKIFF-POD-MASQ
:SKIFF-POSTROUTING
:SKIFF-SEP-P7MZEHKO3WQ3MWFA
:SKIFF-SEP-VMOHKR5FX6MC6AGE
:SKIFF-SEP-WYSJ76DHX3P6CBZH
:SKIFF-SERVICES
:SKIFF-SVC-OSC5D42RU6KJHZT7
-A SKIFF-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A SKIFF-POD-MASQ -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "pod to pod: never masqueraded" -j RETURN
-A SKIFF-POD-MASQ -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "pod network leaving the cluster" -j MASQUERADE --random-fully
-A SKIFF-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A SKIFF-POSTROUTING -j MARK --xor-mark 0x4000
-A SKIFF-POSTROUTING -m comment --comment "skiff service traffic requiring SNAT" -j MASQUERADE --random-fully
-A SKIFF-SEP-P7MZEHKO3WQ3MWFA -s 10.244.1.2/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-P7MZEHKO3WQ3MWFA -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080
-A SKIFF-SEP-VMOHKR5FX6MC6AGE -s 10.244.2.4/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-VMOHKR5FX6MC6AGE -p tcp -m tcp -j DNAT --to-destination 10.244.2.4:8080
-A SKIFF-SEP-WYSJ76DHX3P6CBZH -s 10.244.1.3/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-WYSJ76DHX3P6CBZH -p tcp -m tcp -j DNAT --to-destination 10.244.1.3:8080
-A SKIFF-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j SKIFF-SVC-OSC5D42RU6KJHZT7
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
-A SKIFF-SVC-OSC5D42RU6KJHZT7 ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j SKIFF-MARK-MASQ
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -m statistic --mode random --probability 0.3333333333 -j SKIFF-SEP-P7MZEHKO3WQ3MWFA
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -m statistic --mode random --probability 0.5000000000 -j SKIFF-SEP-WYSJ76DHX3P6CBZH
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -j SKIFF-SEP-VMOHKR5FX6MC6AGE
*filter
:SKIFF-FORWARD
:SKIFF-SERVICES
-A SKIFF-FORWARD -m comment --comment "skiff forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A SKIFF-FORWARD -m comment --comment "skiff forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A SKIFF-FORWARD -s 10.244.0.0/16 -m comment --comment "pod network" -j ACCEPT
-A SKIFF-FORWARD -d 10.244.0.0/16 -m comment --comment "pod network" -j ACCEPT
"#;
const GOLDEN_NODE_PORT: &str = r#"
*nat
:SKIFF-NODEPORTS
:SKIFF-SEP-XMVWTGYCGLRBR5D5
:SKIFF-SERVICES
:SKIFF-SVC-7TJS3AWFAVHUET4S
-A SKIFF-NODEPORTS -p tcp -m comment --comment "default/site" -m tcp --dport 30080 -j SKIFF-MARK-MASQ
-A SKIFF-NODEPORTS -p tcp -m comment --comment "default/site" -m tcp --dport 30080 -j SKIFF-SVC-7TJS3AWFAVHUET4S
-A SKIFF-SEP-XMVWTGYCGLRBR5D5 -s 10.244.1.2/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-XMVWTGYCGLRBR5D5 -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80
-A SKIFF-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "default/site cluster IP" -m tcp --dport 80 -j SKIFF-SVC-7TJS3AWFAVHUET4S
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
-A SKIFF-SVC-7TJS3AWFAVHUET4S ! -s 10.244.0.0/16 -d 10.96.0.20/32 -p tcp -m comment --comment "default/site cluster IP" -m tcp --dport 80 -j SKIFF-MARK-MASQ
-A SKIFF-SVC-7TJS3AWFAVHUET4S -j SKIFF-SEP-XMVWTGYCGLRBR5D5
*filter
:SKIFF-SERVICES
"#;
const GOLDEN_NO_ENDPOINTS: &str = r#"
*nat
:SKIFF-NODEPORTS
:SKIFF-SERVICES
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
*filter
:SKIFF-SERVICES
-A SKIFF-SERVICES -d 10.96.0.53/32 -p udp -m comment --comment "kube-system/dns:dns has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable
-A SKIFF-SERVICES -p udp -m comment --comment "kube-system/dns:dns has no endpoints" -m addrtype --dst-type LOCAL -m udp --dport 30053 -j REJECT --reject-with icmp-port-unreachable
"#;
const GOLDEN_AFFINITY: &str = r#"
*nat
:SKIFF-NODEPORTS
:SKIFF-SEP-P7MZEHKO3WQ3MWFA
:SKIFF-SEP-WYSJ76DHX3P6CBZH
:SKIFF-SERVICES
:SKIFF-SVC-OSC5D42RU6KJHZT7
-A SKIFF-SEP-P7MZEHKO3WQ3MWFA -s 10.244.1.2/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-P7MZEHKO3WQ3MWFA -p tcp -m recent --set --name SKIFF-SEP-P7MZEHKO3WQ3MWFA -m tcp -j DNAT --to-destination 10.244.1.2:8080
-A SKIFF-SEP-WYSJ76DHX3P6CBZH -s 10.244.1.3/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-WYSJ76DHX3P6CBZH -p tcp -m recent --set --name SKIFF-SEP-WYSJ76DHX3P6CBZH -m tcp -j DNAT --to-destination 10.244.1.3:8080
-A SKIFF-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j SKIFF-SVC-OSC5D42RU6KJHZT7
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
-A SKIFF-SVC-OSC5D42RU6KJHZT7 ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j SKIFF-MARK-MASQ
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -m recent --name SKIFF-SEP-P7MZEHKO3WQ3MWFA --rcheck --seconds 600 --reap -j SKIFF-SEP-P7MZEHKO3WQ3MWFA
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -m recent --name SKIFF-SEP-WYSJ76DHX3P6CBZH --rcheck --seconds 600 --reap -j SKIFF-SEP-WYSJ76DHX3P6CBZH
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -m statistic --mode random --probability 0.5000000000 -j SKIFF-SEP-P7MZEHKO3WQ3MWFA
-A SKIFF-SVC-OSC5D42RU6KJHZT7 -j SKIFF-SEP-WYSJ76DHX3P6CBZH
*filter
:SKIFF-SERVICES
"#;
const GOLDEN_NAMED_PORT: &str = r#"
*nat
:SKIFF-NODEPORTS
:SKIFF-SEP-EOSMHVXSMUV4GRDS
:SKIFF-SEP-ZF2CMYZ3R5Z3VDNC
:SKIFF-SERVICES
:SKIFF-SVC-MMUFEA5RLCNCGBV4
-A SKIFF-SEP-EOSMHVXSMUV4GRDS -s 10.244.2.2/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-EOSMHVXSMUV4GRDS -p tcp -m tcp -j DNAT --to-destination 10.244.2.2:9191
-A SKIFF-SEP-ZF2CMYZ3R5Z3VDNC -s 10.244.1.2/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-ZF2CMYZ3R5Z3VDNC -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:9090
-A SKIFF-SERVICES -d 10.96.0.30/32 -p tcp -m comment --comment "shop/api:grpc cluster IP" -m tcp --dport 9000 -j SKIFF-SVC-MMUFEA5RLCNCGBV4
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
-A SKIFF-SVC-MMUFEA5RLCNCGBV4 ! -s 10.244.0.0/16 -d 10.96.0.30/32 -p tcp -m comment --comment "shop/api:grpc cluster IP" -m tcp --dport 9000 -j SKIFF-MARK-MASQ
-A SKIFF-SVC-MMUFEA5RLCNCGBV4 -m statistic --mode random --probability 0.5000000000 -j SKIFF-SEP-ZF2CMYZ3R5Z3VDNC
-A SKIFF-SVC-MMUFEA5RLCNCGBV4 -j SKIFF-SEP-EOSMHVXSMUV4GRDS
*filter
:SKIFF-SERVICES
"#;
const GOLDEN_SHARED_VIP: &str = r#"
*nat
:SKIFF-NODEPORTS
:SKIFF-SEP-KY23PAVYPAUE4P2C
:SKIFF-SEP-MOYGLL6SDFDPE2WR
:SKIFF-SERVICES
:SKIFF-SVC-NY2562IQLXVP33MF
:SKIFF-SVC-UTSJXKJCZ6GQYIOP
-A SKIFF-SEP-KY23PAVYPAUE4P2C -s 10.244.1.3/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-KY23PAVYPAUE4P2C -p udp -m udp -j DNAT --to-destination 10.244.1.3:81
-A SKIFF-SEP-MOYGLL6SDFDPE2WR -s 10.244.1.2/32 -j SKIFF-MARK-MASQ
-A SKIFF-SEP-MOYGLL6SDFDPE2WR -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80
-A SKIFF-SERVICES -d 10.96.0.40/32 -p tcp -m comment --comment "default/a cluster IP" -m tcp --dport 80 -j SKIFF-SVC-NY2562IQLXVP33MF
-A SKIFF-SERVICES -d 10.96.0.40/32 -p udp -m comment --comment "default/b cluster IP" -m udp --dport 81 -j SKIFF-SVC-UTSJXKJCZ6GQYIOP
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
-A SKIFF-SVC-NY2562IQLXVP33MF ! -s 10.244.0.0/16 -d 10.96.0.40/32 -p tcp -m comment --comment "default/a cluster IP" -m tcp --dport 80 -j SKIFF-MARK-MASQ
-A SKIFF-SVC-NY2562IQLXVP33MF -j SKIFF-SEP-MOYGLL6SDFDPE2WR
-A SKIFF-SVC-UTSJXKJCZ6GQYIOP ! -s 10.244.0.0/16 -d 10.96.0.40/32 -p udp -m comment --comment "default/b cluster IP" -m udp --dport 81 -j SKIFF-MARK-MASQ
-A SKIFF-SVC-UTSJXKJCZ6GQYIOP -j SKIFF-SEP-KY23PAVYPAUE4P2C
*filter
:SKIFF-SERVICES
"#;
