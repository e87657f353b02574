//! Calls from the control plane to node agents, for what only a node has:
//! `pods/{name}/log`, proxied to the agent's `/containerLogs`.
//!
//! Mechanism: the pod's `spec.nodeName` names the Node; its InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset) say
//! where the agent listens. The control plane connects over TLS with a
//! client certificate for `CN=skiff-controlplane` that it issues itself
//! from the cluster CA at start ([`configure`]); the agent accepts no other
//! caller. The agent's serving certificate is self-signed and not verified,
//! as kube-apiserver does not verify kubelets by default: the request is
//! encrypted and the agent knows who calls, but the node's identity rests
//! on its address.
//!
//! Ordering: [`configure`] must run before the API serves requests; until
//! it has, log requests answer 503.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde_json::Value;
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::handlers::Reply;
use super::objects::str_at;
use super::registry::Registry;
use super::request::Query;
use super::resources;

/// The client certificate's common name; the agent checks it
/// (`agent/src/endpoint.rs`).
pub const AGENT_CLIENT_CN: &str = "skiff-controlplane";
/// kubelet's port, used when a Node does not name its agent's.
pub const DEFAULT_AGENT_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A log that is not followed is read whole; this bounds it.
const MAX_LOG_BYTES: usize = 64 << 20;

static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum AgentProxyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot issue the agent client certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Issues the control plane's agent client certificate from the cluster CA
/// in `DATA_DIR/pki` and keeps the TLS configuration for agent calls.
pub fn configure(data_dir: &Path) -> Result<(), AgentProxyError> {
    let read = |name: &str| {
        let path = data_dir.join("pki").join(name);
        std::fs::read_to_string(&path).map_err(|source| AgentProxyError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt")?, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, AGENT_CLIENT_CN);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedAgent(provider)))
        .with_client_auth_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A second call (tests starting servers in one process) keeps the first.
    let _ = CLIENT.set(Arc::new(config));
    Ok(())
}

/// Accepts the agent's self-signed certificate (see the module
/// documentation); handshake signatures are still checked.
#[derive(Debug)]
struct UnverifiedAgent(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for UnverifiedAgent {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where a Node's agent listens.
pub fn agent_address(node: &Value) -> Option<SocketAddr> {
    let ip: IpAddr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.parse().ok())?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some(SocketAddr::new(ip, port))
}

pub(super) fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// The container a log or exec request means: `?container=`, or the only
/// one the pod has.
pub fn chosen_container<'a>(pod: &'a Value, query: &'a Query) -> Result<&'a str, ApiError> {
    let name = str_at(pod, "/metadata/name").unwrap_or_default();
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(wanted) if containers.contains(&wanted) => wanted,
        Some(wanted) => {
            return Err(ApiError::BadRequest(format!(
                "container {wanted} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0],
        None => {
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    Ok(container)
}

/// The agent path for a pod's log request, and whether it follows.
pub fn log_request(pod: &Value, query: &Query) -> Result<(String, bool), ApiError> {
    let name = str_at(pod, "/metadata/name").unwrap_or_default();
    let namespace = str_at(pod, "/metadata/namespace").unwrap_or("default");
    let container = chosen_container(pod, query)?;
    let follow = query.flag("follow");
    let mut params = url::form_urlencoded::Serializer::new(String::new());
    for flag in ["follow", "previous", "timestamps"] {
        if query.flag(flag) {
            params.append_pair(flag, "true");
        }
    }
    for number in ["tailLines", "limitBytes"] {
        if let Some(value) = query.get(number) {
            if value.parse::<i64>().map_or(true, |n| n < 0) {
                return Err(ApiError::BadRequest(format!(
                    "{number} must be a non-negative integer"
                )));
            }
            params.append_pair(number, value);
        }
    }
    Ok((
        format!(
            "/containerLogs/{}/{}/{}?{}",
            encode(namespace),
            encode(name),
            encode(container),
            params.finish()
        ),
        follow,
    ))
}

pub(super) fn unreachable(node: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::ServiceUnavailable(format!("cannot reach the agent of node {node}: {reason}"))
}

/// A TLS connection to a node's agent, authenticated as the control
/// plane, and the agent's address.
pub async fn connect(
    registry: &Registry,
    node_name: &str,
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    ),
    ApiError,
> {
    let nodes = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
    let node = registry.get(nodes, None, node_name).await?;
    let address =
        agent_address(&node).ok_or_else(|| unreachable(node_name, "the Node has no InternalIP"))?;
    let config = CLIENT
        .get()
        .cloned()
        .ok_or_else(|| unreachable(node_name, "agent calls are not configured"))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| unreachable(node_name, format!("{address}: timed out")))?
        .map_err(|error| unreachable(node_name, format!("{address}: {error}")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(address.ip().into()), tcp)
        .await
        .map_err(|error| unreachable(node_name, format!("TLS: {error}")))?;
    Ok((tls, address))
}

/// Answers `pods/{name}/log` from the pod's node.
pub async fn container_logs(
    registry: &Registry,
    pod: &Value,
    node_name: &str,
    query: &Query,
) -> Result<Reply, ApiError> {
    let (path, follow) = log_request(pod, query)?;
    let (tls, address) = connect(registry, node_name).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|error| unreachable(node_name, error))?;
    tokio::spawn(connection);
    let request = http::Request::get(path.as_str())
        .header(http::header::HOST, address.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| unreachable(node_name, error))?;
    let status = response.status();
    if !status.is_success() {
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(match status.as_u16() {
            400 | 404 => ApiError::BadRequest(message),
            _ => unreachable(node_name, format!("{status}: {message}")),
        });
    }
    if !follow {
        let body = Limited::new(response.into_body(), MAX_LOG_BYTES)
            .collect()
            .await
            .map_err(|error| unreachable(node_name, error))?
            .to_bytes();
        return Ok(Reply::Raw {
            status: 200,
            content_type: "text/plain",
            body,
        });
    }
    let (chunks, receiver) = mpsc::channel::<Bytes>(16);
    let mut body = response.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if chunks.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Reply::Stream(receiver))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agents_are_found_at_the_internal_ip() {
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "10.0.0.5"},
        ]}});
        assert_eq!(
            agent_address(&node),
            Some("10.0.0.5:10250".parse().expect("addr"))
        );
        let mut custom = node.clone();
        custom["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": 11250}});
        assert_eq!(
            agent_address(&custom),
            Some("10.0.0.5:11250".parse().expect("addr"))
        );
        assert_eq!(agent_address(&json!({"status": {}})), None);
    }

    fn pod(containers: &[&str]) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()},
        })
    }

    #[test]
    fn log_requests_name_the_container_and_pass_the_options() {
        let query = Query::parse(Some(
            "follow=true&tailLines=5&timestamps=true&sinceSeconds=9",
        ));
        let (path, follow) = log_request(&pod(&["app"]), &query).expect("valid");
        assert_eq!(
            path,
            "/containerLogs/default/web/app?follow=true&timestamps=true&tailLines=5"
        );
        assert!(follow);

        let two = pod(&["a", "b"]);
        let error = log_request(&two, &Query::parse(None)).expect_err("ambiguous");
        assert!(
            error.to_string().contains("choose one of: [a b]"),
            "{error}"
        );
        let (path, follow) =
            log_request(&two, &Query::parse(Some("container=b&previous=true"))).expect("valid");
        assert_eq!(path, "/containerLogs/default/web/b?previous=true");
        assert!(!follow);
        assert!(log_request(&two, &Query::parse(Some("container=c"))).is_err());
        assert!(log_request(&two, &Query::parse(Some("container=a&tailLines=-2"))).is_err());
    }
}
