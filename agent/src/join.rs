//! Joining the cluster: from a join token to stored node credentials.
//!
//! Order, and why:
//! 1. `GET /cacerts` on the API port, unverified: the agent has no CA yet.
//! 2. Its SHA-256 must equal the hash in the token; on a mismatch the agent
//!    stops here, having sent nothing secret (the token has not left it).
//! 3. A key pair is generated locally and a CSR made from it.
//! 4. `Join` on the node API port, over TLS verified against that CA: only
//!    now does the token travel, and only to the real control plane.
//! 5. The CA, key and certificate are stored, certificate last (see
//!    [`crate::credentials`]).

use std::path::Path;

use skiff_proto::node::v1 as proto;
use skiff_proto::node::v1::node_service_client::NodeServiceClient;

use crate::credentials::{self, Credentials, CredentialsError};
use crate::server::{self, ServerAddress, ServerError};
use crate::token::{JoinToken, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the control plane refused to let this node join: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("Join failed: {0}")]
    Rpc(tonic::Status),
    #[error("the CA from /cacerts is not valid UTF-8 PEM")]
    CaNotPem,
    #[error("the control plane issued a certificate for node {issued:?}, not {asked:?}")]
    WrongCertificate { asked: String, issued: String },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl JoinError {
    /// Whether trying again later can help (the control plane is down or
    /// unreachable), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            JoinError::Server(error) => error.is_transient(),
            JoinError::Rpc(_) => true,
            _ => false,
        }
    }
}

impl From<tonic::Status> for JoinError {
    fn from(status: tonic::Status) -> JoinError {
        match status.code() {
            tonic::Code::Unauthenticated
            | tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied => JoinError::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            },
            _ => JoinError::Rpc(status),
        }
    }
}

/// Joins the cluster as `node_name` and stores the credentials in
/// `data_dir`.
pub async fn join(
    server: &ServerAddress,
    node_api_port: u16,
    token: &JoinToken,
    node_name: &str,
    data_dir: &Path,
) -> Result<Credentials, JoinError> {
    tracing::info!(server = %server.api_authority(), "fetching the cluster CA from /cacerts");
    let ca = server::fetch_cacerts(server).await?;
    token.verify_ca(&ca)?;
    let ca_pem = String::from_utf8(ca.to_vec()).map_err(|_| JoinError::CaNotPem)?;
    tracing::info!("the cluster CA matches the join token");

    let request = credentials::generate_request(node_name)?;
    let channel = server::node_api_channel(server, node_api_port, &ca_pem, None).await?;
    tracing::info!(node = %node_name, node_api = %server.authority(node_api_port), "joining the cluster");
    let response = NodeServiceClient::new(channel)
        .join(proto::JoinRequest {
            token: token.as_str().to_owned(),
            node_name: node_name.to_owned(),
            csr_pem: request.csr_pem,
        })
        .await?
        .into_inner();

    let issued =
        credentials::node_name_of(&response.certificate_pem, Path::new("the Join answer"))?;
    if issued != node_name {
        return Err(JoinError::WrongCertificate {
            asked: node_name.to_owned(),
            issued,
        });
    }
    let credentials = Credentials {
        node_name: issued,
        // The CA the token vouched for, not whatever the answer says.
        ca_pem,
        cert_pem: response.certificate_pem,
        key_pem: request.key_pem,
    };
    credentials.save(data_dir)?;
    tracing::info!(node = %node_name, data_dir = %data_dir.display(), "joined; node credentials stored");
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_outages_are_not() {
        let refused = JoinError::from(tonic::Status::unauthenticated("bad token"));
        assert!(!refused.is_transient());
        assert!(refused.to_string().contains("bad token"));
        assert!(JoinError::from(tonic::Status::unavailable("down")).is_transient());
        assert!(!JoinError::from(TokenError::Malformed("x")).is_transient());
    }
}
