//! UDP conntrack flushing.
//!
//! Mechanism: UDP has no connection teardown, so a conntrack entry that
//! DNATs a client's flow to an endpoint outlives the endpoint, and the
//! client keeps sending into the void until the entry times out. As
//! kube-proxy does, entries are deleted with the `conntrack` tool:
//! - an endpoint gone from a UDP port: the entries DNATed from the
//!   ClusterIP to it (`-D -p udp --orig-dst VIP --dst-nat IP`), and from the
//!   NodePort to it (`-D -p udp --dport NODEPORT --dst-nat IP`);
//! - a UDP port that goes from no ready endpoint to some: every entry for
//!   the ClusterIP and the NodePort, since packets sent while it had none
//!   created entries that would otherwise keep bypassing the new DNAT.
//!
//! Ordering: flushes run after the restore that stops new traffic from
//! reaching the old endpoint (or that starts the DNAT), never before, or a
//! packet in between would recreate the entry. [`conntrack_flushes`] is
//! pure; the [`Conntrack`] trait executes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::service::{Protocol, ServiceKey, ServicePort, ServiceTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConntrackFlush {
    /// UDP entries to `vip` DNATed to `endpoint`.
    ClusterIpToEndpoint { vip: Ipv4Addr, endpoint: Ipv4Addr },
    /// UDP entries to NodePort `node_port` DNATed to `endpoint`.
    NodePortToEndpoint { node_port: u16, endpoint: Ipv4Addr },
    /// Every UDP entry to `vip`.
    ClusterIp { vip: Ipv4Addr },
    /// Every UDP entry to NodePort `node_port`.
    NodePort { node_port: u16 },
}

impl ConntrackFlush {
    /// The `conntrack` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-p", "udp"].iter().map(|s| s.to_string()).collect();
        match self {
            ConntrackFlush::ClusterIpToEndpoint { vip, endpoint } => args.extend([
                "--orig-dst".into(),
                vip.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            ConntrackFlush::NodePortToEndpoint {
                node_port,
                endpoint,
            } => args.extend([
                "--dport".into(),
                node_port.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            ConntrackFlush::ClusterIp { vip } => {
                args.extend(["--orig-dst".into(), vip.to_string()])
            }
            ConntrackFlush::NodePort { node_port } => {
                args.extend(["--dport".into(), node_port.to_string()])
            }
        }
        args
    }
}

type PortKey<'a> = (&'a ServiceKey, &'a str, Protocol);

fn udp_ports(table: &ServiceTable) -> BTreeMap<PortKey<'_>, (Ipv4Addr, &ServicePort)> {
    let mut ports = BTreeMap::new();
    for service in table.services.values() {
        let Some(vip) = service.cluster_ip else {
            continue;
        };
        for port in &service.ports {
            if port.protocol == Protocol::Udp {
                ports.insert(
                    (&service.key, port.name.as_str(), port.protocol),
                    (vip, port),
                );
            }
        }
    }
    ports
}

/// The flushes a change from `old` to `new` calls for.
pub fn conntrack_flushes(old: &ServiceTable, new: &ServiceTable) -> Vec<ConntrackFlush> {
    let old_ports = udp_ports(old);
    let new_ports = udp_ports(new);
    let mut flushes = BTreeSet::new();
    for (key, (vip, old_port)) in &old_ports {
        let still_ready: BTreeSet<(Ipv4Addr, u16)> = new_ports
            .get(key)
            .map(|(_, p)| p.ready_endpoints().map(|e| (e.ip, e.port)).collect())
            .unwrap_or_default();
        for endpoint in old_port.ready_endpoints() {
            if still_ready.contains(&(endpoint.ip, endpoint.port)) {
                continue;
            }
            flushes.insert(ConntrackFlush::ClusterIpToEndpoint {
                vip: *vip,
                endpoint: endpoint.ip,
            });
            if let Some(node_port) = old_port.node_port {
                flushes.insert(ConntrackFlush::NodePortToEndpoint {
                    node_port,
                    endpoint: endpoint.ip,
                });
            }
        }
    }
    for (key, (vip, new_port)) in &new_ports {
        if new_port.ready_endpoints().next().is_none() {
            continue;
        }
        let had_endpoints = old_ports
            .get(key)
            .is_some_and(|(_, p)| p.ready_endpoints().next().is_some());
        if !had_endpoints {
            flushes.insert(ConntrackFlush::ClusterIp { vip: *vip });
            if let Some(node_port) = new_port.node_port {
                flushes.insert(ConntrackFlush::NodePort { node_port });
            }
        }
    }
    flushes.into_iter().collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("could not run conntrack {args}: {source} (is Debian's conntrack package installed?)")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("conntrack {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
}

pub trait Conntrack {
    fn flush(&self, flush: &ConntrackFlush) -> Result<(), ConntrackError>;
}

/// Runs the `conntrack` tool, optionally behind a command prefix.
#[derive(Debug, Clone, Default)]
pub struct CommandConntrack {
    prefix: Vec<String>,
}

impl CommandConntrack {
    pub fn new(prefix: Vec<String>) -> Self {
        CommandConntrack { prefix }
    }
}

impl Conntrack for CommandConntrack {
    fn flush(&self, flush: &ConntrackFlush) -> Result<(), ConntrackError> {
        let args = flush.args();
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push("conntrack".into());
        argv.extend(args.iter().cloned());
        let describe = args.join(" ");
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ConntrackError::Spawn {
                args: describe.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // conntrack exits 1 when nothing matched; that is success here.
        if output.status.success() || stderr.contains("0 flow entries have been deleted") {
            return Ok(());
        }
        Err(ConntrackError::Failed {
            args: describe,
            status: output.status.to_string(),
            stderr: stderr.trim().to_owned(),
        })
    }
}

#[cfg(test)]
pub mod fake {
    use std::sync::Mutex;

    use super::*;

    /// Records the flushes it is asked for.
    #[derive(Debug, Default)]
    pub struct FakeConntrack {
        pub flushed: Mutex<Vec<ConntrackFlush>>,
    }

    impl FakeConntrack {
        pub fn take(&self) -> Vec<ConntrackFlush> {
            std::mem::take(&mut *self.flushed.lock().unwrap_or_else(|p| p.into_inner()))
        }
    }

    impl Conntrack for FakeConntrack {
        fn flush(&self, flush: &ConntrackFlush) -> Result<(), ConntrackError> {
            self.flushed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(*flush);
            Ok(())
        }
    }
}
