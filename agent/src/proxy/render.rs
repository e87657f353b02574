//! The pure renderer: service table + node settings → the chains we own in
//! the nat and filter tables, and the jumps into them from the built-in
//! chains.
//!
//! Mechanism (kube-proxy's iptables mode, with our prefix):
//! - nat `SKIFF-SERVICES`: one rule per ClusterIP:port with ready
//!   endpoints, jumping to that port's `SKIFF-SVC-<hash>`; its last rule
//!   sends traffic to a local address (or to the configured node addresses)
//!   on to `SKIFF-NODEPORTS`.
//! - `SKIFF-SVC-<hash>`: first marks for masquerade traffic to the ClusterIP
//!   that does not come from the pod network; then, with ClientIP affinity,
//!   one `-m recent --rcheck` rule per endpoint; then rule *i* of *n* picks
//!   `SKIFF-SEP-<hash>` *i* with probability 1/(n−i), the last one always.
//! - `SKIFF-SEP-<hash>`: marks hairpin traffic (an endpoint reaching itself
//!   through its service), then DNATs to the endpoint (recording the client
//!   for affinity with `-m recent --set`).
//! - `SKIFF-NODEPORTS`: per NodePort, mark for masquerade, then jump to the
//!   service's SVC chain.
//! - `SKIFF-MARK-MASQ` sets the mark; `SKIFF-POSTROUTING` masquerades
//!   marked packets and clears the mark bit; `SKIFF-POD-MASQ` masquerades
//!   traffic leaving the pod network and never traffic between pods.
//! - filter `SKIFF-SERVICES` REJECTs ClusterIPs and NodePorts without ready
//!   endpoints, so clients fail fast; filter `SKIFF-FORWARD` accepts marked,
//!   established and pod-network traffic, so a default-DROP forward policy
//!   breaks neither services nor pods.
//!
//! Chain names hash the service port (`ns/name:port/proto`) and, for SEP
//! chains, the endpoint too: they are stable across syncs, which is what
//! lets the syncer rewrite only the chains whose content changed.
//!
//! Ordering: within a table a chain is listed after every chain it jumps
//! to: the fixed chains (`SKIFF-MARK-MASQ`, ...), then per service port its
//! SEP chains and its SVC chain, then the dispatch chains. A restore writes
//! them in this order, and a full sync split into several restores stays
//! valid at every step. In the
//! built-in chains, filter `SKIFF-SERVICES` comes before `SKIFF-FORWARD`,
//! so a REJECT for a service without endpoints is not pre-empted by the
//! pod-network ACCEPT.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use data_encoding::BASE32;
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::service::{Endpoint, Service, ServicePort, ServiceTable, SessionAffinity};
use crate::iptables::Table;

pub const CHAIN_PREFIX: &str = "SKIFF-";
pub const SERVICES_CHAIN: &str = "SKIFF-SERVICES";
pub const NODEPORTS_CHAIN: &str = "SKIFF-NODEPORTS";
pub const MARK_MASQ_CHAIN: &str = "SKIFF-MARK-MASQ";
pub const POSTROUTING_CHAIN: &str = "SKIFF-POSTROUTING";
pub const POD_MASQ_CHAIN: &str = "SKIFF-POD-MASQ";
pub const FORWARD_CHAIN: &str = "SKIFF-FORWARD";
pub const SVC_CHAIN_PREFIX: &str = "SKIFF-SVC-";
pub const SEP_CHAIN_PREFIX: &str = "SKIFF-SEP-";

/// Kubernetes' default masquerade bit.
pub const DEFAULT_MASQUERADE_MARK: u32 = 0x4000;

/// Where NodePorts answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address (`-m addrtype --dst-type LOCAL`), kube-proxy's
    /// default.
    AllLocal,
    /// Only these node addresses.
    Only(Vec<Ipv4Addr>),
}

/// What the rules need to know about the node and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The whole pod network. Traffic from outside it to a ClusterIP is
    /// masqueraded; traffic within it never is.
    pub cluster_cidr: Ipv4Net,
    pub node_port_addresses: NodePortAddresses,
    pub masquerade_mark: u32,
}

impl NodeSettings {
    pub fn new(cluster_cidr: Ipv4Net) -> Self {
        NodeSettings {
            cluster_cidr: cluster_cidr.trunc(),
            node_port_addresses: NodePortAddresses::AllLocal,
            masquerade_mark: DEFAULT_MASQUERADE_MARK,
        }
    }
}

/// One chain we own, its rules as they follow `-A NAME ` in restore input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// Our chains in one table, in write order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRules {
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub nat: TableRules,
    pub filter: TableRules,
}

impl Ruleset {
    pub fn table(&self, table: Table) -> &TableRules {
        match table {
            Table::Nat => &self.nat,
            Table::Filter => &self.filter,
        }
    }

    /// Every chain of both tables as `*table`, `:CHAIN` and `-A CHAIN ...`
    /// lines, chains sorted by name and rules in order: the form golden
    /// tests compare.
    pub fn sorted_dump(&self) -> String {
        let mut out = String::new();
        for table in Table::ALL {
            let _ = writeln!(out, "*{table}");
            let mut chains: Vec<&Chain> = self.table(table).chains.iter().collect();
            chains.sort_by(|a, b| a.name.cmp(&b.name));
            for chain in &chains {
                let _ = writeln!(out, ":{}", chain.name);
            }
            for chain in &chains {
                for rule in &chain.rules {
                    let _ = writeln!(out, "-A {} {rule}", chain.name);
                }
            }
        }
        out
    }
}

/// A jump from a built-in chain into one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    pub table: Table,
    pub builtin_chain: &'static str,
    /// argv words after the chain name.
    pub args: Vec<String>,
}

fn jump(table: Table, builtin_chain: &'static str, args: &[&str]) -> JumpRule {
    JumpRule {
        table,
        builtin_chain,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

/// The jumps the service proxy needs, per built-in chain in the order they
/// must appear at its top.
pub fn service_jumps() -> Vec<JumpRule> {
    let portals = [
        "-m",
        "comment",
        "--comment",
        "skiff service portals",
        "-j",
        SERVICES_CHAIN,
    ];
    let filter_portals = [
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "comment",
        "--comment",
        "skiff service portals",
        "-j",
        SERVICES_CHAIN,
    ];
    vec![
        jump(Table::Nat, "PREROUTING", &portals),
        jump(Table::Nat, "OUTPUT", &portals),
        jump(
            Table::Nat,
            "POSTROUTING",
            &[
                "-m",
                "comment",
                "--comment",
                "skiff postrouting rules",
                "-j",
                POSTROUTING_CHAIN,
            ],
        ),
        jump(Table::Filter, "INPUT", &filter_portals),
        jump(Table::Filter, "OUTPUT", &filter_portals),
        jump(Table::Filter, "FORWARD", &filter_portals),
        jump(
            Table::Filter,
            "FORWARD",
            &[
                "-m",
                "comment",
                "--comment",
                "skiff forwarding rules",
                "-j",
                FORWARD_CHAIN,
            ],
        ),
    ]
}

/// The jumps the pod network's masquerade needs.
pub fn pod_network_jumps() -> Vec<JumpRule> {
    vec![
        jump(
            Table::Nat,
            "POSTROUTING",
            &[
                "-m",
                "comment",
                "--comment",
                "skiff pod network masquerade",
                "-j",
                POD_MASQ_CHAIN,
            ],
        ),
        jump(
            Table::Filter,
            "FORWARD",
            &[
                "-m",
                "comment",
                "--comment",
                "skiff forwarding rules",
                "-j",
                FORWARD_CHAIN,
            ],
        ),
    ]
}

/// Every jump we may have put in a built-in chain, without duplicates.
pub fn all_jumps() -> Vec<JumpRule> {
    let mut jumps = service_jumps();
    for candidate in pod_network_jumps() {
        if !jumps.contains(&candidate) {
            jumps.push(candidate);
        }
    }
    jumps
}

/// The first 16 characters of base32(sha256(input)), as kube-proxy names
/// its chains.
fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    // 10 bytes are exactly 16 base32 characters: the same prefix as
    // encoding the whole digest, without encoding the rest.
    BASE32.encode(&digest[..10])
}

/// `ns/name:port` (`ns/name` for an unnamed port), as Kubernetes prints a
/// ServicePortName.
pub fn service_port_name(service: &Service, port: &ServicePort) -> String {
    if port.name.is_empty() {
        format!("{}", service.key)
    } else {
        format!("{}:{}", service.key, port.name)
    }
}

pub fn svc_chain_name(port_name: &str, port: &ServicePort) -> String {
    format!(
        "{SVC_CHAIN_PREFIX}{}",
        hash16(&format!("{port_name}/{}", port.protocol.as_str()))
    )
}

pub fn sep_chain_name(port_name: &str, port: &ServicePort, endpoint: &Endpoint) -> String {
    format!(
        "{SEP_CHAIN_PREFIX}{}",
        hash16(&format!(
            "{port_name}/{}/{}:{}",
            port.protocol.as_str(),
            endpoint.ip,
            endpoint.port
        ))
    )
}

/// `1/(n-i)` printed as kube-proxy prints it (`%0.10f`).
pub fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

fn masquerade_target(random_fully: bool) -> &'static str {
    if random_fully {
        "-j MASQUERADE --random-fully"
    } else {
        "-j MASQUERADE"
    }
}

/// The chains that do not depend on the service table: the masquerade
/// machinery, the pod-network masquerade and the forward accepts.
pub fn render_fixed(settings: &NodeSettings, random_fully: bool) -> Ruleset {
    let mark = settings.masquerade_mark;
    let cidr = settings.cluster_cidr;
    let masquerade = masquerade_target(random_fully);
    let nat = vec![
        Chain {
            name: MARK_MASQ_CHAIN.into(),
            rules: vec![format!("-j MARK --set-xmark {mark:#x}/{mark:#x}")],
        },
        Chain {
            name: POSTROUTING_CHAIN.into(),
            rules: vec![
                format!("-m mark ! --mark {mark:#x}/{mark:#x} -j RETURN"),
                // Clear the bit so a packet that re-enters (after
                // encapsulation, say) is not masqueraded twice.
                format!("-j MARK --xor-mark {mark:#x}"),
                format!("-m comment --comment \"skiff service traffic requiring SNAT\" {masquerade}"),
            ],
        },
        Chain {
            name: POD_MASQ_CHAIN.into(),
            rules: vec![
                format!("-s {cidr} -d {cidr} -m comment --comment \"pod to pod: never masqueraded\" -j RETURN"),
                format!(
                    "-s {cidr} ! -d 224.0.0.0/4 -m comment --comment \"pod network leaving the cluster\" {masquerade}"
                ),
            ],
        },
    ];
    let filter = vec![Chain {
        name: FORWARD_CHAIN.into(),
        rules: vec![
            format!(
                "-m comment --comment \"skiff forwarding rules\" -m mark --mark {mark:#x}/{mark:#x} -j ACCEPT"
            ),
            "-m comment --comment \"skiff forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
            format!("-s {cidr} -m comment --comment \"pod network\" -j ACCEPT"),
            format!("-d {cidr} -m comment --comment \"pod network\" -j ACCEPT"),
        ],
    }];
    Ruleset {
        nat: TableRules { chains: nat },
        filter: TableRules { chains: filter },
    }
}

/// What one service contributes: its own SEP and SVC chains (SEP chains
/// of a port before its SVC chain), and its rules in the shared dispatch
/// chains. Rendered per service so that the syncer can re-render only the
/// services that changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// nat chains owned by this service.
    pub chains: Vec<Chain>,
    /// Its rules in nat `SKIFF-SERVICES`.
    pub services_rules: Vec<String>,
    /// Its rules in nat `SKIFF-NODEPORTS`.
    pub nodeports_rules: Vec<String>,
    /// Its rules in filter `SKIFF-SERVICES`.
    pub reject_rules: Vec<String>,
}

fn local_matches(settings: &NodeSettings) -> Vec<String> {
    match &settings.node_port_addresses {
        NodePortAddresses::AllLocal => vec!["-m addrtype --dst-type LOCAL".into()],
        NodePortAddresses::Only(addresses) => {
            addresses.iter().map(|a| format!("-d {a}/32")).collect()
        }
    }
}

/// The rules of one service.
pub fn render_service(service: &Service, settings: &NodeSettings) -> ServiceRules {
    let mut out = ServiceRules::default();
    let Some(vip) = service.cluster_ip else {
        return out;
    };
    // Formatted once: Display for addresses is slow, and each appears in
    // several rules.
    let vip = vip.to_string();
    let cidr = settings.cluster_cidr.to_string();
    let local_matches = local_matches(settings);
    for port in &service.ports {
        let port_name = service_port_name(service, port);
        let proto = port.protocol.as_str();
        let endpoints: Vec<&Endpoint> = port.ready_endpoints().collect();
        if endpoints.is_empty() {
            out.reject_rules.push(format!(
                "-d {vip}/32 -p {proto} -m comment --comment \"{port_name} has no endpoints\" -m {proto} --dport {} -j REJECT --reject-with icmp-port-unreachable",
                port.port
            ));
            if let Some(node_port) = port.node_port {
                for local in &local_matches {
                    out.reject_rules.push(format!(
                        "-p {proto} -m comment --comment \"{port_name} has no endpoints\" {local} -m {proto} --dport {node_port} -j REJECT --reject-with icmp-port-unreachable"
                    ));
                }
            }
            continue;
        }
        let svc_chain = svc_chain_name(&port_name, port);
        out.services_rules.push(format!(
            "-d {vip}/32 -p {proto} -m comment --comment \"{port_name} cluster IP\" -m {proto} --dport {} -j {svc_chain}",
            port.port
        ));
        if let Some(node_port) = port.node_port {
            out.nodeports_rules.push(format!(
                "-p {proto} -m comment --comment \"{port_name}\" -m {proto} --dport {node_port} -j {MARK_MASQ_CHAIN}"
            ));
            out.nodeports_rules.push(format!(
                "-p {proto} -m comment --comment \"{port_name}\" -m {proto} --dport {node_port} -j {svc_chain}"
            ));
        }

        let endpoint_ips: Vec<String> = endpoints.iter().map(|e| e.ip.to_string()).collect();
        let sep_names: Vec<String> = endpoints
            .iter()
            .zip(&endpoint_ips)
            .map(|(endpoint, ip)| {
                format!(
                    "{SEP_CHAIN_PREFIX}{}",
                    hash16(&format!(
                        "{port_name}/{}/{ip}:{}",
                        port.protocol.as_str(),
                        endpoint.port
                    ))
                )
            })
            .collect();
        let mut svc_rules = Vec::with_capacity(endpoints.len() * 2 + 1);
        svc_rules.push(format!(
            "! -s {cidr} -d {vip}/32 -p {proto} -m comment --comment \"{port_name} cluster IP\" -m {proto} --dport {} -j {MARK_MASQ_CHAIN}",
            port.port
        ));
        if let SessionAffinity::ClientIp { timeout_seconds } = service.affinity {
            for sep in &sep_names {
                svc_rules.push(format!(
                    "-m recent --name {sep} --rcheck --seconds {timeout_seconds} --reap -j {sep}"
                ));
            }
        }
        let count = sep_names.len();
        for (index, sep) in sep_names.iter().enumerate() {
            if index + 1 < count {
                svc_rules.push(format!(
                    "-m statistic --mode random --probability {} -j {sep}",
                    probability(count - index)
                ));
            } else {
                svc_rules.push(format!("-j {sep}"));
            }
        }

        for ((endpoint, ip), sep) in endpoints.iter().zip(&endpoint_ips).zip(sep_names) {
            let recent = match service.affinity {
                SessionAffinity::ClientIp { .. } => format!("-m recent --set --name {sep} "),
                SessionAffinity::None => String::new(),
            };
            let rules = vec![
                format!("-s {ip}/32 -j {MARK_MASQ_CHAIN}"),
                format!(
                    "-p {proto} {recent}-m {proto} -j DNAT --to-destination {ip}:{}",
                    endpoint.port
                ),
            ];
            out.chains.push(Chain { name: sep, rules });
        }
        out.chains.push(Chain {
            name: svc_chain,
            rules: svc_rules,
        });
    }
    out
}

/// The dispatch chains built from every service's contribution: nat
/// `SKIFF-SERVICES` (ending with the jump to `SKIFF-NODEPORTS`), nat
/// `SKIFF-NODEPORTS`, and filter `SKIFF-SERVICES`.
pub fn render_dispatch<'a>(
    services: impl Iterator<Item = &'a ServiceRules> + Clone,
    settings: &NodeSettings,
) -> (Chain, Chain, Chain) {
    let mut services_rules: Vec<String> = services
        .clone()
        .flat_map(|s| s.services_rules.iter().cloned())
        .collect();
    for local in local_matches(settings) {
        services_rules.push(format!(
            "-m comment --comment \"skiff service nodeports; NOTE: this must be the last rule in this chain\" {local} -j {NODEPORTS_CHAIN}"
        ));
    }
    let nodeports_rules = services
        .clone()
        .flat_map(|s| s.nodeports_rules.iter().cloned())
        .collect();
    let reject_rules = services
        .flat_map(|s| s.reject_rules.iter().cloned())
        .collect();
    (
        Chain {
            name: SERVICES_CHAIN.into(),
            rules: services_rules,
        },
        Chain {
            name: NODEPORTS_CHAIN.into(),
            rules: nodeports_rules,
        },
        Chain {
            name: SERVICES_CHAIN.into(),
            rules: reject_rules,
        },
    )
}

/// The whole ruleset for a service table.
pub fn render(services: &ServiceTable, settings: &NodeSettings, random_fully: bool) -> Ruleset {
    let rendered: Vec<ServiceRules> = services
        .services
        .values()
        .map(|service| render_service(service, settings))
        .collect();
    let (nat_services, nodeports, filter_services) = render_dispatch(rendered.iter(), settings);
    // Fixed chains first (SEP chains jump to SKIFF-MARK-MASQ), then the
    // per-service chains, moved rather than copied, then the dispatch.
    let fixed = render_fixed(settings, random_fully);
    let mut nat = fixed.nat.chains;
    nat.extend(rendered.into_iter().flat_map(|s| s.chains));
    nat.push(nodeports);
    nat.push(nat_services);
    let mut filter = fixed.filter.chains;
    filter.push(filter_services);
    Ruleset {
        nat: TableRules { chains: nat },
        filter: TableRules { chains: filter },
    }
}
