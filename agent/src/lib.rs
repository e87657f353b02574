//! Skiff's node agent: it joins the cluster, registers its node, and runs
//! the node's desired pods, following them over the node API.
//!
//! Mechanism, in order:
//! 1. Credentials ([`credentials`]): reused from the data directory when the
//!    node has joined before; otherwise obtained by [`join`] with a join
//!    token ([`token`]), trusting the control plane's CA only once its hash
//!    matches the token.
//! 2. A session ([`session`]) over mutual TLS: `Hello` with what
//!    [`hostinfo`] found out about the host, then a snapshot of the node's
//!    pods and deltas, with heartbeats going up.
//! 3. The pods the session receives go to the pod [`runtime`], which runs
//!    them through containerd's CRI ([`cri`]) and publishes their status,
//!    which the session sends up. Pods keep running between sessions.
//! 4. The [`endpoint`] serves container logs ([`logs`]) to the control
//!    plane, and image tarballs dropped into the [`images`] directory are
//!    imported into containerd. The agent carries its own [`pause`] image
//!    (written by [`oci`]) and imports it under the runtime's configured
//!    sandbox image name when the runtime lacks that image.
//! 5. When a session breaks, another is opened after a delay from
//!    [`backoff`]; refusals (a certificate the control plane no longer
//!    accepts) end the agent instead, since retrying cannot fix them.

pub mod backoff;
pub mod credentials;
pub mod cri;
pub mod endpoint;
pub mod hostinfo;
pub mod images;
pub mod iptables;
pub mod join;
pub mod logs;
pub mod overlay;
pub mod proxy;
pub mod oci;
pub mod pause;
pub mod podnet;
pub mod runtime;
pub mod server;
pub mod session;
pub mod streaming;
pub mod token;

/// The agent's version in Kubernetes form, reported as the Node's
/// `kubeletVersion`: the Kubernetes release whose API it follows, then
/// Skiff's own version.
pub const AGENT_VERSION: &str = concat!("v1.33.0-skiff.", env!("CARGO_PKG_VERSION"));
