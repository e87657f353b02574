//! The HTTPS front door: TLS, authentication, body limits, and the
//! translation between hyper and the API handlers.
//!
//! Clients authenticate with a certificate signed by the cluster CA (the
//! admin kubeconfig carries one). The TLS layer verifies certificates when
//! they are presented but does not demand them, so that `/healthz`,
//! `/readyz` and `/livez` stay reachable for probes; every other path
//! without a verified certificate gets 401.
//!
//! Only HTTP/1.1 is offered over ALPN: watches are long chunked responses,
//! and the exec/attach/portforward upgrades ([`crate::api::streaming`])
//! need HTTP/1.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::errors::ApiError;
use crate::api::handlers::{self, Reply, ServerFacts, MAX_BODY_BYTES};
use crate::api::registry::Registry;
use crate::api::streaming;
use crate::pki::ServerPki;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid TLS material: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Builds the rustls configuration from the PKI.
pub fn tls_config(pki: &ServerPki) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |error: &dyn std::fmt::Display| ServerError::Tls(error.to_string());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    full(
        error.code(),
        "application/json",
        serde_json::to_vec(&error.status()).unwrap_or_default(),
    )
}

fn into_response(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Json { status, body } => full(status, "application/json", body),
        Reply::Raw {
            status,
            content_type,
            body,
        } => full(status, content_type, body),
        Reply::Stream(receiver) => {
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver
                    .recv()
                    .await
                    .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), receiver))
            });
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

/// How much of an oversized body is read and thrown away before giving
/// up on the connection.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// Reads a request body of at most [`MAX_BODY_BYTES`]. A larger body is
/// still read to its end (up to [`MAX_DRAIN_BYTES`]) and discarded: answering
/// while the client is still sending makes the connection close under it,
/// and the client then reports a broken pipe instead of the 413.
async fn read_body(mut body: Incoming) -> Result<Bytes, ApiError> {
    let mut collected = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::BadRequest(format!("cannot read the request body: {error}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= MAX_BODY_BYTES {
            collected.extend_from_slice(&data);
        } else if total > MAX_DRAIN_BYTES {
            break;
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::RequestEntityTooLarge(format!(
            "Request entity too large: limit is {MAX_BODY_BYTES}"
        )));
    }
    Ok(Bytes::from(collected))
}

fn is_public(path: &str) -> bool {
    // /cacerts: a joining agent fetches the CA before it can verify
    // anything, and checks it against the hash in its join token.
    matches!(path, "/healthz" | "/readyz" | "/livez" | "/cacerts")
        || path.starts_with("/healthz/")
        || path.starts_with("/readyz/")
        || path.starts_with("/livez/")
}

fn header_str(request: &Request<Incoming>, name: header::HeaderName) -> &str {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

async fn serve_request(
    request: Request<Incoming>,
    authenticated: bool,
    registry: Arc<Registry>,
    facts: Arc<ServerFacts>,
) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    if !authenticated && !is_public(&path) {
        tracing::debug!(%method, %path, "401 for an anonymous request");
        return error_response(&ApiError::Unauthorized);
    }
    if streaming::is_stream_upgrade(&request) {
        return match streaming::serve(&registry, request).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
    }
    let accept = header_str(&request, header::ACCEPT).to_owned();
    let content_type = header_str(&request, header::CONTENT_TYPE).to_owned();
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(error) => return error_response(&error),
    };
    let reply = handlers::handle(
        &registry,
        &facts,
        handlers::Incoming {
            method: &method,
            path: &path,
            query: query.as_deref(),
            accept: &accept,
            content_type: &content_type,
            body,
        },
    )
    .await;
    let response = into_response(reply);
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

/// Accepts connections until the process ends.
pub async fn serve(
    address: SocketAddr,
    tls: rustls::ServerConfig,
    registry: Arc<Registry>,
    facts: Arc<ServerFacts>,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Listen { address, source })?;
    serve_listener(listener, tls, registry, facts).await
}

pub async fn serve_listener(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    registry: Arc<Registry>,
    facts: Arc<ServerFacts>,
) -> Result<(), ServerError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let acceptor = acceptor.clone();
        let registry = registry.clone();
        let facts = facts.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(socket).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let authenticated = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|chain| !chain.is_empty());
            let service = service_fn(move |request| {
                let registry = registry.clone();
                let facts = facts.clone();
                async move {
                    Ok::<_, Infallible>(
                        serve_request(request, authenticated, registry, facts).await,
                    )
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
