//! The pod network's overlay between nodes: a VXLAN device programmed as
//! flannel's VXLAN backend programs it, so a pod on any node reaches a pod
//! on any other by its own address.
//!
//! Mechanism. Each node owns a pod subnet (its `podCIDR`) and one VXLAN
//! device, `skiff.<VNI>`, bound to the external interface (the one of the
//! default IPv4 route unless named), with that interface's address as the
//! source of the UDP packets (port 8472 by default), learning off, and an
//! MTU 50 bytes below the external one. The device holds the node
//! subnet's network address as a /32, so no broadcast or prefix route
//! appears. Its MAC, the VTEP MAC, is derived from the node subnet
//! ([`plan::vtep_mac`]) so it survives restarts and recreation. The control
//! plane knows every node, so the tables are static: no L2/L3 miss
//! listeners and no learning. For each peer the device gets
//!
//! 1. a permanent neighbour: the peer subnet's network address resolves
//!    to the peer's VTEP MAC;
//! 2. a permanent FDB entry (`NTF_SELF`): that MAC is reached in UDP at
//!    the peer's public address;
//! 3. last, a route: `<peer subnet> via <peer subnet network address>
//!    dev skiff.<VNI> onlink`.
//!
//! Ordering rules. The route goes in last, so the kernel never has to
//! resolve its gateway by ARP (nothing would answer). New and changed
//! peers are installed before stale entries are removed, so a peer whose
//! MAC changed keeps its traffic flowing. A departed peer loses its route,
//! then its neighbour, then its FDB entry, and a failure to remove one
//! does not stop the others. A device whose identity differs (VNI, port,
//! source address, external link, learning, MAC) is deleted and created
//! again with all its entries; a matching device is kept, with its MTU,
//! address and state fixed in place, so an agent restart does not drop
//! traffic. A reconcile that finds everything in place writes nothing.
//!
//! Layout: [`plan`] computes the desired state and the diff (pure);
//! [`netlink`] holds the narrow [`OverlayNetlink`] trait, its `rtnetlink`
//! implementation and the executor. The agent calls [`detect_external`],
//! [`Overlay::ensure_device`] once its node subnet is known, then
//! [`Overlay::reconcile`] on every peer change and periodically, and
//! [`enable_ip_forwarding`]; [`cleanup`] removes the device. Masquerading
//! pod traffic that leaves the cluster network is the iptables code's job.
//!
//! Not done: flannel turns off tx checksum offload on the device on
//! kernels where netfilter corrupts VXLAN UDP checksums (before 5.7, some
//! RHEL 8); that takes the ethtool generic-netlink family, which the
//! `rtnetlink` crate does not speak. On such kernels run
//! `ethtool -K skiff.<VNI> tx-checksum-ip-generic off` after the device
//! appears. IPv6 router advertisements on the device are not turned off
//! either (flannel sets `accept_ra=0`); the device carries no IPv6 routes.

pub mod netlink;
pub mod plan;

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use skiff_proto::node::v1 as proto;

pub use netlink::{apply_actions, ActionFailure, ApplyOutcome, OverlayNetlink, RtNetlink};
pub use plan::{
    device_name, ExternalInterface, Mac, OverlayConfig, Peer, SkippedPeer, DEFAULT_VXLAN_PORT,
};

/// Everything that can go wrong programming the overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] io::Error),
    #[error("netlink: {operation} failed: {source}")]
    Netlink {
        operation: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no IPv4 default route to pick the external interface from; \
         name the interface VXLAN packets should use"
    )]
    NoDefaultRoute,
    #[error("external interface {0} does not exist")]
    InterfaceNotFound(String),
    #[error("external interface {0} has no IPv4 address; VXLAN packets need one as their source")]
    NoIpv4Address(String),
    #[error("overlay device {0} does not exist (deleted while being programmed?)")]
    DeviceMissing(String),
    #[error("programming overlay device {device}: {action} failed: {source}")]
    DeviceAction {
        device: String,
        action: String,
        #[source]
        source: Box<OverlayError>,
    },
    #[error("overlay peer {node_name}: {problem}")]
    InvalidPeer { node_name: String, problem: String },
    #[error("cannot enable IP forwarding through {path}: {source}")]
    IpForwarding {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl OverlayError {
    /// True when the kernel said the object is not there (`ENOENT`,
    /// `ESRCH`, `ENODEV`, `EADDRNOTAVAIL`): for a removal, the job is done.
    pub fn is_not_found(&self) -> bool {
        let OverlayError::Netlink { source, .. } = self else {
            return false;
        };
        matches!(
            source.raw_os_error().map(nix::errno::Errno::from_raw),
            Some(
                nix::errno::Errno::ENOENT
                    | nix::errno::Errno::ESRCH
                    | nix::errno::Errno::ENODEV
                    | nix::errno::Errno::EADDRNOTAVAIL
            )
        )
    }
}

/// This node's end of the overlay, as other nodes need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalVtep {
    pub mac: Mac,
    pub mtu: u32,
}

impl LocalVtep {
    /// The endpoint the agent reports to the control plane (in `NodeInfo`
    /// or a `Heartbeat`), with the external interface's address.
    pub fn endpoint(&self, public_ip: Ipv4Addr) -> proto::OverlayEndpoint {
        proto::OverlayEndpoint {
            public_ip: public_ip.to_string(),
            vtep_mac: plan::format_mac(&self.mac),
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Successful netlink writes; 0 when everything was in place.
    pub writes: usize,
    /// Peers whose entries are wanted on the device.
    pub peers: usize,
    /// Peers left out, with the reason (log them).
    pub skipped: Vec<SkippedPeer>,
    /// Writes that failed for one peer or one stale entry; the next
    /// reconcile tries them again.
    pub failures: Vec<ActionFailure>,
    /// The device was (re)created, dropping whatever it held.
    pub device_recreated: bool,
}

/// The overlay of one node: its configuration and the kernel it programs.
pub struct Overlay<N> {
    netlink: N,
    config: OverlayConfig,
}

impl<N: OverlayNetlink> Overlay<N> {
    pub fn new(netlink: N, config: OverlayConfig) -> Self {
        Overlay { netlink, config }
    }

    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// Creates the device (or keeps a matching one, fixing its MTU,
    /// address and state), and returns the VTEP to announce. Peer entries
    /// already on a kept device stay untouched.
    pub async fn ensure_device(&mut self) -> Result<LocalVtep, OverlayError> {
        let spec = plan::desired_device(&self.config);
        let observed = netlink::observe_device(&mut self.netlink, &spec.name).await?;
        let actions = plan::diff_device(&spec, &observed);
        apply_actions(&mut self.netlink, &spec.name, &actions).await?;
        Ok(LocalVtep {
            mac: spec.mac,
            mtu: spec.mtu,
        })
    }

    /// Observes the device, compares it with the device and entries
    /// `peers` call for, and applies the difference. Safe to call as often
    /// as wanted: when everything is in place it only reads.
    pub async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, OverlayError> {
        let desired = plan::desired_overlay(&self.config, peers);
        let observed = netlink::observe(&mut self.netlink, &desired.device.name).await?;
        let actions = plan::diff(&desired, &observed);
        let device_recreated = plan::recreates_device(&actions);
        let outcome = apply_actions(&mut self.netlink, &desired.device.name, &actions).await?;
        Ok(ReconcileReport {
            writes: outcome.writes,
            peers: desired.peers.len(),
            skipped: desired.skipped,
            failures: outcome.failures,
            device_recreated,
        })
    }
}

/// The external interface: the one named by `flag` (a name, as the
/// operator gave it), or else the output interface of the IPv4 default
/// route with the lowest metric; with its first IPv4 address and its MTU.
pub async fn detect_external<N: OverlayNetlink>(
    netlink: &mut N,
    flag: Option<&str>,
) -> Result<ExternalInterface, OverlayError> {
    let interface = match flag {
        Some(name) => netlink
            .interface_by_name(name)
            .await?
            .ok_or_else(|| OverlayError::InterfaceNotFound(name.to_string()))?,
        None => {
            let index = netlink
                .default_route_interface()
                .await?
                .ok_or(OverlayError::NoDefaultRoute)?;
            netlink
                .interface_by_index(index)
                .await?
                .ok_or_else(|| OverlayError::InterfaceNotFound(format!("index {index}")))?
        }
    };
    let ip = netlink
        .ipv4_addresses(interface.index)
        .await?
        .first()
        .map(Ipv4Net::addr)
        .ok_or_else(|| OverlayError::NoIpv4Address(interface.name.clone()))?;
    Ok(ExternalInterface {
        name: interface.name,
        index: interface.index,
        ip,
        mtu: interface.mtu,
    })
}

/// Deletes the overlay device, and with it its neighbours, FDB entries
/// and routes. Returns whether there was one.
pub async fn cleanup<N: OverlayNetlink>(
    netlink: &mut N,
    device_name: &str,
) -> Result<bool, OverlayError> {
    let Some(device) = netlink.device(device_name).await? else {
        return Ok(false);
    };
    let delete = plan::OverlayAction::DeleteDevice {
        index: device.index,
        reason: "cleanup".to_string(),
    };
    match netlink.apply(device_name, &delete).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Turns on IPv4 forwarding in the agent's network namespace; without it
/// the node drops pod traffic between the overlay and its bridge.
pub fn enable_ip_forwarding() -> Result<(), OverlayError> {
    enable_ip_forwarding_in(Path::new("/proc/sys"))
}

/// [`enable_ip_forwarding`] under another `/proc/sys`.
pub fn enable_ip_forwarding_in(proc_sys: &Path) -> Result<(), OverlayError> {
    let path = proc_sys.join("net/ipv4/ip_forward");
    std::fs::write(&path, b"1\n").map_err(|source| OverlayError::IpForwarding {
        path: path.display().to_string(),
        source,
    })
}

impl TryFrom<&proto::OverlayPeer> for Peer {
    type Error = OverlayError;

    /// A peer as the node API carries it. Missing or malformed fields are
    /// errors naming the peer; the caller logs and leaves that peer out.
    fn try_from(peer: &proto::OverlayPeer) -> Result<Self, Self::Error> {
        let invalid = |problem: String| OverlayError::InvalidPeer {
            node_name: peer.node_name.clone(),
            problem,
        };
        if peer.node_name.is_empty() {
            return Err(invalid("no node name".to_string()));
        }
        let subnet: Ipv4Net = peer.pod_cidr.parse().map_err(|_| {
            invalid(format!(
                "pod CIDR {:?} is not an IPv4 CIDR like 10.244.3.0/24",
                peer.pod_cidr
            ))
        })?;
        let public_ip: Ipv4Addr = peer.public_ip.parse().map_err(|_| {
            invalid(format!(
                "public IP {:?} is not an IPv4 address",
                peer.public_ip
            ))
        })?;
        let vtep_mac = plan::parse_mac(&peer.vtep_mac).ok_or_else(|| {
            invalid(format!(
                "VTEP MAC {:?} is not like aa:bb:cc:dd:ee:ff",
                peer.vtep_mac
            ))
        })?;
        Ok(Peer {
            node_name: peer.node_name.clone(),
            subnet: subnet.trunc(),
            public_ip,
            vtep_mac,
        })
    }
}

#[cfg(test)]
mod tests;
