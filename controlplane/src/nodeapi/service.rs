//! The gRPC edge: `Join`, and the opening of a `Connect` stream up to the
//! validated `Hello`. Wire types become domain types here and go no
//! further; errors become gRPC statuses here and nowhere else.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use skiff_proto::node::v1 as proto;
use tonic::{Request, Response, Status, Streaming};

use super::identity::{self, IdentityError};
use super::network::NodeNetwork;
use super::node::{self, NodeInfoError, NodeRegistration};
use super::session::Session;
use super::token::{JoinToken, TokenError, TokenStore};
use crate::pki::{self, PkiError};

/// The node API's request handlers.
pub struct NodeService {
    registry: Arc<crate::api::registry::Registry>,
    tokens: TokenStore,
    data_dir: PathBuf,
    ca_pem: String,
    network: Arc<NodeNetwork>,
}

impl NodeService {
    pub fn new(
        registry: Arc<crate::api::registry::Registry>,
        data_dir: PathBuf,
        ca_pem: String,
        network: Arc<NodeNetwork>,
    ) -> NodeService {
        NodeService {
            registry,
            tokens: TokenStore::new(&data_dir),
            data_dir,
            ca_pem,
            network,
        }
    }
}

/// A `JoinRequest`, validated.
struct JoinApplication {
    token: JoinToken,
    node_name: String,
    csr_pem: String,
}

#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Name(#[from] NodeInfoError),
    #[error("csr_pem is required: a PEM certificate signing request for the node's key")]
    NoCsr,
    #[error(transparent)]
    Signing(#[from] PkiError),
}

impl TryFrom<proto::JoinRequest> for JoinApplication {
    type Error = JoinError;

    fn try_from(request: proto::JoinRequest) -> Result<JoinApplication, JoinError> {
        let token: JoinToken = request.token.parse()?;
        node::validate_node_name(&request.node_name)?;
        if request.csr_pem.trim().is_empty() {
            return Err(JoinError::NoCsr);
        }
        Ok(JoinApplication {
            token,
            node_name: request.node_name,
            csr_pem: request.csr_pem,
        })
    }
}

impl From<JoinError> for Status {
    fn from(error: JoinError) -> Status {
        let message = error.to_string();
        match error {
            JoinError::Token(TokenError::Io { .. } | TokenError::Pki(_)) => {
                tracing::error!(%message, "cannot check a join token");
                Status::internal("the control plane cannot check join tokens; see its log")
            }
            JoinError::Token(_) => Status::unauthenticated(message),
            JoinError::Name(_) | JoinError::NoCsr | JoinError::Signing(PkiError::Request(_)) => {
                Status::invalid_argument(message)
            }
            JoinError::Signing(_) => {
                tracing::error!(%message, "cannot sign a node certificate");
                Status::internal("the control plane cannot sign node certificates; see its log")
            }
        }
    }
}

impl From<IdentityError> for Status {
    fn from(error: IdentityError) -> Status {
        Status::unauthenticated(error.to_string())
    }
}

fn invalid(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

fn not_hello(what: &str) -> Status {
    Status::invalid_argument(format!(
        "the first message on a Connect stream must be Hello, got {what}"
    ))
}

pub type ControlStream = Pin<Box<dyn Stream<Item = Result<proto::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl proto::node_service_server::NodeService for NodeService {
    async fn join(
        &self,
        request: Request<proto::JoinRequest>,
    ) -> Result<Response<proto::JoinResponse>, Status> {
        let remote = request.remote_addr();
        let application = JoinApplication::try_from(request.into_inner()).map_err(|error| {
            tracing::info!(?remote, %error, "join refused");
            Status::from(error)
        })?;
        let check = self
            .tokens
            .verify(&application.token, &self.ca_pem)
            .map_err(JoinError::from)
            .and_then(|()| {
                pki::sign_node_csr(&self.data_dir, &application.csr_pem, &application.node_name)
                    .map_err(JoinError::from)
            });
        let certificate_pem = check.map_err(|error| {
            tracing::info!(?remote, node = %application.node_name, token = %application.token.id, %error, "join refused");
            Status::from(error)
        })?;
        tracing::info!(?remote, node = %application.node_name, token = %application.token.id, "node joined: issued its client certificate");
        Ok(Response::new(proto::JoinResponse {
            certificate_pem,
            ca_pem: self.ca_pem.clone(),
        }))
    }

    type ConnectStream = ControlStream;

    async fn connect(
        &self,
        request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<ControlStream>, Status> {
        let remote = request.remote_addr();
        let certificates = request.peer_certs();
        let node_name = identity::node_name_of_chain(certificates.as_deref().map(Vec::as_slice))
            .inspect_err(|error| tracing::info!(?remote, %error, "connect refused"))?;
        let mut inbound = request.into_inner();
        use proto::agent_message::Message;
        let first = match inbound.message().await? {
            Some(message) => message.message,
            None => {
                return Err(Status::invalid_argument(
                    "the stream ended before its Hello",
                ))
            }
        };
        let hello = match first {
            Some(Message::Hello(hello)) => hello,
            Some(Message::Heartbeat(_)) => return Err(not_hello("a Heartbeat")),
            Some(Message::PodStatus(_)) => return Err(not_hello("a PodStatusReport")),
            Some(Message::Events(_)) => return Err(not_hello("an EventReport")),
            None => return Err(not_hello("an empty or unknown message")),
        };
        let registration =
            NodeRegistration::try_from(hello.node.ok_or(NodeInfoError::Missing).map_err(invalid)?)
                .map_err(|error| {
                    Status::invalid_argument(format!(
                        "invalid Hello from node {node_name}: {error}"
                    ))
                })?;
        if registration.name != node_name {
            tracing::warn!(?remote, certificate = %node_name, hello = %registration.name, "connect refused: a node said Hello under another node's name");
            return Err(Status::permission_denied(format!(
                "node {node_name} cannot act as node {}: the Hello must name the node of the client certificate",
                registration.name
            )));
        }
        tracing::info!(?remote, node = %node_name, agent = %registration.agent_version, protocol = hello.protocol_version, "node connected");
        let session =
            Session::open(self.registry.clone(), registration, self.network.clone()).await?;
        Ok(Response::new(session.run(inbound)))
    }
}
