//! `skiff-cni`, the CNI plugin containerd runs for every pod sandbox on a
//! Skiff node.
//!
//! Mechanism: one Linux bridge per node holds the gateway address of the
//! node's pod subnet; each pod gets a veth pair whose host end is a port of
//! that bridge (hairpin on, so a pod can reach itself through a service) and
//! whose other end, inside the pod's network namespace, carries an address
//! from the subnet and a default route via the gateway. Addresses come from
//! a host-local IPAM with one file per address under a lock.
//!
//! Layout: a pure core (`invocation`, `config`, `version`, `result`, `ipam`,
//! `plan`), the verbs (`commands`), two narrow seams to the outside world
//! (`dataplane::Dataplane`, `commands::Stores`) and their executors
//! (`netlink`, `ipam_store`). Failures meet their CNI codes in `error`.

pub mod commands;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod invocation;
pub mod ipam;
pub mod ipam_store;
pub mod netlink;
pub mod plan;
pub mod result;
pub mod version;

pub use commands::{run, FsStores, Stores};
pub use error::PluginError;
pub use invocation::{parse_invocation, Invocation};
pub use netlink::NetlinkDataplane;
