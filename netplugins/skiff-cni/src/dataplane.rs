//! The narrow seam between the commands and the kernel: plans go in,
//! observations come out. The netlink executor lives in `netlink`; tests
//! use a fake that keeps a model of links and records calls.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

pub type Mac = [u8; 6];

/// The node's bridge as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// The gateway with the subnet's prefix length.
    pub address: Ipv4Net,
    /// Set only when the bridge is created (a bridge with an explicit MAC
    /// keeps it, instead of taking the lowest MAC of its ports).
    pub mac: Mac,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// Everything ADD puts in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachPlan {
    pub netns: PathBuf,
    pub bridge: BridgeSpec,
    pub host_veth: String,
    pub host_veth_mac: Mac,
    pub pod_ifname: String,
    pub pod_mac: Mac,
    pub pod_address: Ipv4Net,
    pub pod_routes: Vec<RouteSpec>,
    pub mtu: u32,
    pub hairpin: bool,
}

/// What ADD learned from the kernel that the result needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub bridge_mac: Mac,
    pub host_veth_mac: Mac,
    pub pod_mac: Mac,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachPlan {
    pub netns: Option<PathBuf>,
    pub host_veth: String,
    pub pod_ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveQuery {
    pub netns: PathBuf,
    pub pod_ifname: String,
    pub host_veth: String,
    pub bridge: String,
}

/// The pod interface as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPodLink {
    pub mac: Mac,
    pub up: bool,
    pub addresses: Vec<Ipv4Net>,
    /// IPv4 routes of the main table that leave through this interface.
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub pod_link: Option<ObservedPodLink>,
    /// Whether the host end exists and is a port of the bridge.
    pub host_veth_on_bridge: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("network namespace {0} does not exist")]
    NetnsMissing(PathBuf),
    #[error("cannot open network namespace {path}: {source}")]
    NetnsOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    NetnsEnter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(
        "interface {ifname} already exists in {netns}; a second ADD for the same container \
         and interface needs a DEL first"
    )]
    InterfaceExists { ifname: String, netns: PathBuf },
    #[error("{name} exists but is not a bridge; rename it or choose another \"bridge\" in the network configuration")]
    NotABridge { name: String },
    #[error("{operation}: {source}")]
    Netlink {
        operation: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{operation}: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unexpected(String),
}

pub trait Dataplane {
    /// Fails with `NetnsMissing` when the namespace path does not exist.
    fn check_netns(&mut self, netns: &std::path::Path) -> Result<(), DataplaneError>;
    /// Creates (or reuses) the bridge, creates the veth pair with its pod end
    /// in the namespace, and configures the pod end. On error, nothing this
    /// call created is left behind.
    fn attach(&mut self, plan: &AttachPlan) -> Result<Attached, DataplaneError>;
    /// Removes the veth pair; absent links and namespaces are not errors.
    fn detach(&mut self, plan: &DetachPlan) -> Result<(), DataplaneError>;
    fn observe(&mut self, query: &ObserveQuery) -> Result<Observed, DataplaneError>;
}
