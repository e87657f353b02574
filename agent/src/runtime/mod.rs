//! The pod runtime: the node's desired pods, run on containerd through CRI.
//!
//! Plan, then apply, like kubelet:
//! - [`spec`] decodes a desired pod and renders the CRI configurations;
//! - [`observed`] is what the runtime shows of a pod;
//! - [`plan::pod_actions`] decides the next step for one pod, and
//!   [`status::pod_status`] what its status is; both are pure;
//! - [`executor`] runs one worker per pod uid that applies the plan through
//!   a [`crate::cri::Cri`], and a relist that feeds the workers what the
//!   runtime shows;
//! - [`volumes`] writes configMap and secret volumes atomically, and
//!   [`events`] collects what kubelet would record as Events.

pub mod events;
pub mod executor;
#[cfg(test)]
pub mod fake;
pub mod observed;
pub mod plan;
pub mod probe;
pub mod quantity;
pub mod spec;
pub mod status;
pub mod volumes;
