//! An HTTPS/1.1 client for the control plane, authenticated with the admin
//! client certificate from the server's PKI directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where the API server is and how to authenticate to it.
#[derive(Clone)]
pub struct ApiTarget {
    /// Host to open TCP connections to (no brackets around IPv6).
    connect_host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

/// A buffered response.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(400)
            .collect()
    }
}

fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl ApiTarget {
    /// `server` is the API URL (`https://HOST:PORT`); `pki_dir` holds
    /// `ca.crt`, `admin.crt` and `admin.key` as the control plane writes them.
    pub fn new(server: &str, pki_dir: &Path) -> anyhow::Result<ApiTarget> {
        let url =
            url::Url::parse(server).with_context(|| format!("invalid --server URL {server:?}"))?;
        if url.scheme() != "https" {
            bail!("--server must be an https:// URL, got {server:?}");
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow!("--server {server:?} has no port"))?;
        let (connect_host, server_name) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (
                ip.to_string(),
                ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
            ),
            Some(url::Host::Ipv6(ip)) => (
                ip.to_string(),
                ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
            ),
            Some(url::Host::Domain(name)) => (
                name.to_owned(),
                ServerName::try_from(name.to_owned())
                    .with_context(|| format!("invalid server name {name:?}"))?,
            ),
            None => bail!("--server {server:?} has no host"),
        };
        let authority = match url.host() {
            Some(host) => format!("{host}:{port}"),
            None => bail!("--server {server:?} has no host"),
        };

        let ca_pem = read_pem(&pki_dir.join("ca.crt"))?;
        let cert_pem = read_pem(&pki_dir.join("admin.crt"))?;
        let key_pem = read_pem(&pki_dir.join("admin.key"))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&ca_pem) {
            roots
                .add(ca.context("invalid CA certificate in ca.crt")?)
                .context("unusable CA certificate")?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .context("invalid client certificate in admin.crt")?;
        let key =
            PrivateKeyDer::from_pem_slice(&key_pem).context("invalid client key in admin.key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("the admin certificate and key do not form a usable client identity")?;
        // The server offers only HTTP/1.1; say so, as kubectl does.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        Ok(ApiTarget {
            connect_host,
            port,
            authority,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Opens one keep-alive connection (TCP, TLS handshake, HTTP/1.1).
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect((self.connect_host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        // Requests are small and latency is what is measured: no Nagle delay.
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Ends when the server closes or every handle is dropped; either
            // way the next request on this connection reports the error.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            authority: self.authority.clone(),
        })
    }
}

/// One HTTP/1.1 connection: one request at a time.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    /// Sends a request and returns once the response head has arrived; the
    /// body is left to the caller (a watch reads it for as long as it runs).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .context("cannot build the request")?;
        self.sender.ready().await.context("connection not ready")?;
        self.sender
            .send_request(request)
            .await
            .context("request failed")
    }

    /// Sends a request and reads the whole response body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("cannot read the response body")?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// Whether the connection can no longer be used.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Creates a namespace unless it exists already.
pub async fn ensure_namespace(connection: &mut Connection, name: &str) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
    }))
    .context("cannot encode the namespace")?;
    let reply = connection
        .call(Method::POST, "/api/v1/namespaces", Some(Bytes::from(body)))
        .await?;
    match reply.status {
        StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT => Ok(()),
        status => bail!(
            "creating namespace {name} answered {status}: {}",
            reply.text()
        ),
    }
}

/// The `metadata.resourceVersion` of a list response.
pub fn list_resource_version(body: &[u8]) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct ListMeta {
        #[serde(rename = "resourceVersion")]
        resource_version: String,
    }
    #[derive(serde::Deserialize)]
    struct List {
        metadata: ListMeta,
    }
    let list: List = serde_json::from_slice(body)
        .context("the list response has no metadata.resourceVersion")?;
    Ok(list.metadata.resource_version)
}
