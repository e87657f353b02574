//! The node API: the gRPC service (`skiff.node.v1.NodeService`) node agents
//! join the cluster through and then hold their session on.
//!
//! Mechanism. The service listens on its own port (`--node-api-port`, 6444)
//! with the API server's serving certificate. Client certificates are
//! verified against the cluster CA when presented but not demanded, because
//! `Join` is how a node gets its first one:
//!
//! 1. `Join` ([`service`]): a join token ([`token`]) buys a certificate for
//!    `CN=system:node:<name>, O=system:nodes`, signed from the node's CSR.
//! 2. `Connect` ([`session`]): the peer certificate names the node
//!    ([`identity`]); the stream's first message must be a `Hello` for that
//!    same node. The Node object is created or updated through the registry
//!    ([`node`]), then the agent gets `Welcome`, a `Snapshot` of the pods
//!    bound to it and a `Delta` per relevant pod change ([`pods`]), while it
//!    sends heartbeats and pod status up. The node's pod subnet and overlay
//!    endpoint ([`network`]) are recorded at registration, and the other
//!    nodes' overlay endpoints ([`peers`]) are sent with the pods, as is
//!    every Service with its endpoints ([`services`]); pods get their
//!    service link variables ([`service_env`]) when first sent.
//!
//! Ordering rules:
//! - Nothing is written before the identity and the whole `Hello` are
//!   validated; a message that fails validation ends the stream with
//!   INVALID_ARGUMENT before anything of it is written.
//! - `Welcome` is sent only once the Node object is stored, so an agent
//!   that has it can rely on the node being visible to the cluster.
//! - The snapshot is a list at store revision R and the watch starts right
//!   after R, so no pod change falls between them and none is sent twice.
//! - Every write goes through the registry, so nodes and pod status get
//!   the same validation and optimistic concurrency as API writes.

pub mod identity;
pub mod network;
pub mod node;
pub mod peers;
pub mod pods;
pub mod resolve;
mod service;
pub mod service_env;
pub mod services;
mod session;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::node::v1::node_service_server::NodeServiceServer;
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Certificate, Identity, Server, ServerTlsConfig};

use crate::api::registry::Registry;
use crate::pki::ServerPki;

pub use service::NodeService;

/// The revision of the node API protocol this server speaks (see the
/// versioning rules in `node.proto`).
pub const PROTOCOL_VERSION: u32 = 1;

/// How often agents are asked to heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// A TLS handshake that takes longer than this is a stuck or hostile peer.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings find agents whose host vanished without closing the
/// connection, so their sessions (and watches) do not linger.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeApiError {
    #[error("node API transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the node API on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    pki: &ServerPki,
    registry: Arc<Registry>,
    data_dir: PathBuf,
    network: Arc<network::NodeNetwork>,
) -> Result<(), NodeApiError> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &pki.serving_cert_pem,
            &pki.serving_key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem))
        .client_auth_optional(true)
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    let service = NodeService::new(registry, data_dir, pki.ca_pem.clone(), network);
    Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(NodeServiceServer::new(service))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}
