//! Reaching the control plane: its address, the unverified `/cacerts`
//! fetch that starts a join, and TLS channels to the node API.
//!
//! Trust is built in one direction only: the CA from `/cacerts` is trusted
//! once its hash matches the join token (checked by the caller, before the
//! CA is used); every later connection verifies the server against that CA.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A CA bundle is a few kilobytes; anything this large is not one.
const MAX_CA_BYTES: usize = 1 << 20;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "--server must be an https:// URL with a host, e.g. https://10.0.0.1:6443 (got {0:?})"
    )]
    BadUrl(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS with {address} failed: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("GET {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("cannot connect to the node API at {uri}: {reason}")]
    Channel { uri: String, reason: String },
}

/// An error with its causes, since tonic's transport errors say only
/// "transport error" at the top.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ServerError {
    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ServerError::BadUrl(_))
    }
}

/// Where the control plane is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// The host as TLS names it: a DNS name or a bare IP.
    host: String,
    api_port: u16,
}

impl ServerAddress {
    /// Parses `--server` (`https://HOST[:PORT]`, port 6443 by default).
    pub fn parse(text: &str) -> Result<ServerAddress, ServerError> {
        let bad = || ServerError::BadUrl(text.to_owned());
        let url = url::Url::parse(text).map_err(|_| bad())?;
        if url.scheme() != "https" {
            return Err(bad());
        }
        let host = match url.host().ok_or_else(bad)? {
            url::Host::Domain(domain) => domain.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Ok(ServerAddress {
            host,
            api_port: url.port().unwrap_or(6443),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port`, bracketing IPv6 addresses.
    pub fn authority(&self, port: u16) -> String {
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }

    pub fn api_authority(&self) -> String {
        self.authority(self.api_port)
    }
}

/// Accepts any server certificate. Used for exactly one request, the
/// `/cacerts` fetch, whose answer is checked against the join token's hash
/// before anything trusts it. Handshake signatures are still verified, so
/// the connection is at least to whoever holds the presented key.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
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
        dss: &DigitallySignedStruct,
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
        dss: &DigitallySignedStruct,
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

/// Fetches `GET /cacerts` from the API port without verifying the server.
/// Returns the exact bytes, which the join token's hash covers.
pub async fn fetch_cacerts(server: &ServerAddress) -> Result<Bytes, ServerError> {
    let address = server.api_authority();
    let url = format!("https://{address}/cacerts");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |source| ServerError::Tls {
        address: address.clone(),
        source,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(std::io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(server.host().to_owned())
        .map_err(|e| tls_error(std::io::Error::other(e)))?;

    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| ServerError::Connect {
            address: address.clone(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| ServerError::Connect {
            address: address.clone(),
            source,
        })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(tls_error)?;

    let http = |reason: String| ServerError::Http {
        url: url.clone(),
        reason,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| http(e.to_string()))?;
    // The connection task ends by itself when the response is read.
    tokio::spawn(connection);
    let request = http::Request::get("/cacerts")
        .header(http::header::HOST, address.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_CA_BYTES)
        .collect()
        .await
        .map_err(|e| http(format!("cannot read the body: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(http(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(body)
}

/// A channel to the node API, verifying the server against `ca_pem` and,
/// with `identity` (certificate and key PEM), authenticating as the node.
pub async fn node_api_channel(
    server: &ServerAddress,
    port: u16,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, ServerError> {
    let uri = format!("https://{}", server.authority(port));
    let channel_error = |error: tonic::transport::Error| ServerError::Channel {
        uri: uri.clone(),
        reason: with_causes(&error),
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(server.host());
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(uri.clone())
        .map_err(channel_error)?
        .tls_config(tls)
        .map_err(channel_error)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(channel_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_name_host_and_port() {
        let server = ServerAddress::parse("https://10.0.0.1:7443").expect("valid");
        assert_eq!(server.host(), "10.0.0.1");
        assert_eq!(server.api_authority(), "10.0.0.1:7443");
        assert_eq!(server.authority(6444), "10.0.0.1:6444");

        let default_port = ServerAddress::parse("https://cp.example/").expect("valid");
        assert_eq!(default_port.api_authority(), "cp.example:6443");

        let v6 = ServerAddress::parse("https://[::1]:6443").expect("valid");
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.authority(6444), "[::1]:6444");

        for bad in ["http://10.0.0.1:6443", "10.0.0.1:6443", "https://"] {
            assert!(ServerAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
