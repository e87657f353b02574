//! The agent's HTTPS endpoint, which the control plane calls for what only
//! the node has: container logs (`GET /containerLogs/NS/POD/CONTAINER`,
//! kubelet's path and query parameters), and `exec`, `attach` and
//! `portForward`, which are proxied to the runtime's stream server (see
//! [`crate::streaming`]).
//!
//! Only the control plane may call it. Clients must present a certificate
//! signed by the cluster CA whose common name is [`CONTROLPLANE_CLIENT_CN`];
//! nodes and admins hold CA-signed certificates too, with other names, and
//! are refused. The serving certificate is self-signed, made at start: the
//! control plane does not verify it (as kube-apiserver does not verify
//! kubelets by default), so the channel is encrypted and the caller
//! authenticated, but a node's identity rests on its address.
//!
//! Logs are read from the CRI log files (see [`crate::logs`]). With
//! `follow`, the file is polled for what is appended until the container
//! stops or the caller hangs up.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cri::Cri;
use crate::logs::{tail_offset, LogRenderer};
use crate::runtime::executor::PodRuntime;

/// The common name of the control plane's client certificate. A contract
/// with the control plane (`controlplane/src/api/agentproxy.rs`).
pub const CONTROLPLANE_CLIENT_CN: &str = "skiff-controlplane";
/// kubelet's port, which the control plane assumes unless the Node says
/// otherwise.
pub const DEFAULT_PORT: u16 = 10250;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a followed log is checked for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot make the endpoint's certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the cluster CA is not usable for client verification: {0}")]
    ClientVerifier(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// TLS for the endpoint: a fresh self-signed certificate naming the node,
/// and client certificates required and verified against the cluster CA.
pub fn tls_config(ca_pem: &str, names: &[String]) -> Result<rustls::ServerConfig, EndpointError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "skiff-agent");
    let cert = params.self_signed(&key)?;
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile_certs(ca_pem) {
        roots
            .add(der)
            .map_err(|e| EndpointError::ClientVerifier(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| EndpointError::ClientVerifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The DER certificates in a PEM bundle.
fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .flatten()
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.contents))
        .collect()
}

/// The common name of a client certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    name
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointRequest {
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
        options: LogOptions,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

fn truthy(value: &str) -> bool {
    matches!(value, "" | "1" | "true" | "True" | "TRUE" | "t" | "T")
}

/// Parses a request line; `Err` is the status and message to answer with.
pub fn parse_request(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
) -> Result<EndpointRequest, (StatusCode, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containerLogs", namespace, pod, container]
            if !namespace.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            if method != http::Method::GET {
                return Err((StatusCode::METHOD_NOT_ALLOWED, "only GET is served".into()));
            }
            let mut options = LogOptions::default();
            for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                let number = || {
                    value.parse::<usize>().map_err(|_| {
                        (
                            StatusCode::BAD_REQUEST,
                            format!("{key} must be a non-negative integer"),
                        )
                    })
                };
                match key.as_ref() {
                    "follow" => options.follow = truthy(&value),
                    "previous" => options.previous = truthy(&value),
                    "timestamps" => options.timestamps = truthy(&value),
                    "tailLines" => options.tail_lines = Some(number()?),
                    "limitBytes" => options.limit_bytes = Some(number()?),
                    _ => {}
                }
            }
            Ok(EndpointRequest::ContainerLogs {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                container: (*container).to_owned(),
                options,
            })
        }
        _ => Err((StatusCode::NOT_FOUND, format!("{path} is not served here"))),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve<C: Cri>(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    runtime: PodRuntime<C>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "the agent endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let caller = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| common_name(cert));
            let allowed = caller.as_deref() == Some(CONTROLPLANE_CLIENT_CN);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let runtime = runtime.clone();
                let caller = caller.clone();
                async move {
                    if !allowed {
                        tracing::warn!(%peer, caller = ?caller, "refused a caller that is not the control plane");
                        return Ok::<_, Infallible>(text(
                            StatusCode::FORBIDDEN,
                            "only the control plane may call this endpoint\n",
                        ));
                    }
                    Ok(handle(&runtime, request).await)
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, %error, "agent endpoint connection ended");
            }
        });
    }
}

async fn handle<C: Cri>(runtime: &PodRuntime<C>, request: Request<Incoming>) -> Response<Body> {
    if crate::streaming::is_streaming_path(request.uri().path()) {
        return crate::streaming::serve(runtime, request).await;
    }
    let parsed = parse_request(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    match parsed {
        Err((status, message)) => text(status, message + "\n"),
        Ok(EndpointRequest::ContainerLogs {
            namespace,
            pod,
            container,
            options,
        }) => container_logs(runtime, &namespace, &pod, &container, &options).await,
    }
}

async fn container_logs<C: Cri>(
    runtime: &PodRuntime<C>,
    namespace: &str,
    pod: &str,
    container: &str,
    options: &LogOptions,
) -> Response<Body> {
    let Some(target) = runtime.log_target(namespace, pod, container, options.previous) else {
        let what = if options.previous {
            "previous terminated container"
        } else {
            "container"
        };
        return text(
            StatusCode::NOT_FOUND,
            format!("{what} \"{container}\" in pod \"{pod}\" not found\n"),
        );
    };
    let mut file = match tokio::fs::File::open(&target.path).await {
        Ok(file) => file,
        // Started but nothing written yet.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return text(StatusCode::OK, Bytes::new());
        }
        Err(error) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the log: {error}\n"),
            )
        }
    };
    let mut content = Vec::new();
    if let Err(error) = file.read_to_end(&mut content).await {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the log: {error}\n"),
        );
    }
    let start = options
        .tail_lines
        .map_or(0, |lines| tail_offset(&content, lines));
    let mut renderer = LogRenderer::new(options.timestamps);
    let mut first = renderer.feed(&content[start..]);
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    first.truncate(budget);
    budget -= first.len();
    if !options.follow || !target.running || budget == 0 {
        return text(StatusCode::OK, first);
    }

    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let runtime = runtime.clone();
    let (namespace, pod) = (namespace.to_owned(), pod.to_owned());
    let mut position = content.len() as u64;
    tokio::spawn(async move {
        if !first.is_empty() && sender.send(Bytes::from(first)).await.is_err() {
            return;
        }
        let mut buffer = vec![0u8; READ_CHUNK];
        loop {
            if file.seek(std::io::SeekFrom::Start(position)).await.is_err() {
                return;
            }
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(_) => return,
            };
            if read == 0 {
                if !runtime.is_running(&namespace, &pod, &target.container_id) {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = sender.closed() => return,
                }
                continue;
            }
            position += read as u64;
            let mut chunk = renderer.feed(&buffer[..read]);
            chunk.truncate(budget);
            budget -= chunk.len();
            if !chunk.is_empty() && sender.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if budget == 0 {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_requests_parse_kubelets_parameters() {
        let request = parse_request(
            &http::Method::GET,
            "/containerLogs/default/web/app",
            Some("follow=true&tailLines=5&timestamps=1&previous=false&limitBytes=100&other=x"),
        )
        .expect("valid");
        assert_eq!(
            request,
            EndpointRequest::ContainerLogs {
                namespace: "default".into(),
                pod: "web".into(),
                container: "app".into(),
                options: LogOptions {
                    follow: true,
                    previous: false,
                    timestamps: true,
                    tail_lines: Some(5),
                    limit_bytes: Some(100),
                },
            }
        );
        assert_eq!(
            parse_request(
                &http::Method::GET,
                "/containerLogs/default/web/app",
                Some("tailLines=-1")
            )
            .map_err(|(status, _)| status),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            parse_request(&http::Method::GET, "/exec/default/web", None).map_err(|(s, _)| s),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            parse_request(&http::Method::POST, "/containerLogs/a/b/c", None).map_err(|(s, _)| s),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
    }

    #[test]
    fn the_endpoint_certificate_is_made_and_the_ca_loaded() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).expect("ca").pem();
        assert!(tls_config(&ca_pem, &["10.0.0.5".into(), "node-1".into()]).is_ok());
        assert!(tls_config("not a certificate", &["node-1".into()]).is_err());
    }
}
