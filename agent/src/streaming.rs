//! `exec`, `attach` and `portForward` on the agent endpoint, kubelet's
//! paths: `/exec/NS/POD/CONTAINER?command=..&stdin=..&stdout=..&stderr=..&tty=..`,
//! `/attach/NS/POD/CONTAINER?...` and `/portForward/NS/POD`.
//!
//! Mechanism: the agent asks CRI (`Exec`, `Attach`, `PortForward`) for a
//! single-use URL on the runtime's stream server, sends that URL the
//! caller's upgrade request (its `Upgrade` and `X-Stream-Protocol-Version`
//! headers), and when the stream server switches protocols answers the
//! caller 101 with the stream server's headers and copies bytes both ways
//! until either side closes. The agent never looks inside the stream: the
//! stream server speaks SPDY and the channel protocols itself, including
//! the exit status on the error stream.
//!
//! The stream server is plain HTTP on the node's loopback (containerd's
//! `stream_server_address`); the agent shares the runtime's network
//! namespace, so the URL is reachable as given.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;

use crate::cri::Cri;
use crate::runtime::executor::PodRuntime;

type Body = BoxBody<Bytes, Infallible>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An error answer from the stream server is a short message.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// The headers that carry the protocol negotiation, in both directions.
const NEGOTIATION: [&str; 2] = ["upgrade", "x-stream-protocol-version"];

/// A streaming request, parsed from its path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec {
        namespace: String,
        pod: String,
        container: String,
        command: Vec<String>,
        io: StreamIo,
    },
    Attach {
        namespace: String,
        pod: String,
        container: String,
        io: StreamIo,
    },
    PortForward {
        namespace: String,
        pod: String,
        ports: Vec<i32>,
    },
}

/// Which streams the caller wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamIo {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(value: &str) -> bool {
    matches!(value, "" | "1" | "true" | "True" | "TRUE" | "t" | "T")
}

/// Whether `path` is one of the streaming paths served here.
pub fn is_streaming_path(path: &str) -> bool {
    ["/exec/", "/attach/", "/portForward/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// Parses a streaming request; `Err` is the status and message to answer.
pub fn parse(path: &str, query: Option<&str>) -> Result<StreamRequest, (StatusCode, String)> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let mut command = Vec::new();
    let mut io = StreamIo::default();
    let mut ports = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "command" => command.push(value.into_owned()),
            "input" | "stdin" => io.stdin = truthy(&value),
            "output" | "stdout" => io.stdout = truthy(&value),
            "error" | "stderr" => io.stderr = truthy(&value),
            "tty" => io.tty = truthy(&value),
            "port" => {
                for port in value.split(',').filter(|p| !p.is_empty()) {
                    let port = port
                        .trim()
                        .parse::<u16>()
                        .map_err(|_| bad(format!("invalid port {port:?}")))?;
                    ports.push(i32::from(port));
                }
            }
            _ => {}
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let nonempty = |parts: &[&str]| parts.iter().all(|p| !p.is_empty());
    match segments.as_slice() {
        ["exec", namespace, pod, container] if nonempty(&[namespace, pod, container]) => {
            if command.is_empty() {
                return Err(bad("you must specify at least 1 command".into()));
            }
            Ok(StreamRequest::Exec {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                container: (*container).to_owned(),
                command,
                io,
            })
        }
        ["attach", namespace, pod, container] if nonempty(&[namespace, pod, container]) => {
            Ok(StreamRequest::Attach {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                container: (*container).to_owned(),
                io,
            })
        }
        ["portForward", namespace, pod] if nonempty(&[namespace, pod]) => {
            Ok(StreamRequest::PortForward {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                ports,
            })
        }
        _ => Err((StatusCode::NOT_FOUND, format!("{path} is not served here"))),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Asks CRI for the stream server URL that serves `request`.
async fn stream_url<C: Cri>(
    runtime: &PodRuntime<C>,
    request: &StreamRequest,
) -> Result<String, (StatusCode, String)> {
    let container_id = |namespace: &str, pod: &str, container: &str| {
        runtime
            .running_container(namespace, pod, container)
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("container {container:?} in pod {pod:?} is not running"),
                )
            })
    };
    let failed =
        |error: crate::cri::CriError| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
    match request {
        StreamRequest::Exec {
            namespace,
            pod,
            container,
            command,
            io,
        } => {
            let container_id = container_id(namespace, pod, container)?;
            runtime
                .cri()
                .exec_url(cri::ExecRequest {
                    container_id,
                    cmd: command.clone(),
                    tty: io.tty,
                    stdin: io.stdin,
                    stdout: io.stdout,
                    // With a tty, stderr is merged into stdout.
                    stderr: io.stderr && !io.tty,
                })
                .await
                .map_err(failed)
        }
        StreamRequest::Attach {
            namespace,
            pod,
            container,
            io,
        } => {
            let container_id = container_id(namespace, pod, container)?;
            runtime
                .cri()
                .attach_url(cri::AttachRequest {
                    container_id,
                    stdin: io.stdin,
                    tty: io.tty,
                    stdout: io.stdout,
                    stderr: io.stderr && !io.tty,
                })
                .await
                .map_err(failed)
        }
        StreamRequest::PortForward {
            namespace,
            pod,
            ports,
        } => {
            let pod_sandbox_id = runtime.ready_sandbox(namespace, pod).ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("pod {pod:?} has no running sandbox"),
                )
            })?;
            runtime
                .cri()
                .port_forward_url(cri::PortForwardRequest {
                    pod_sandbox_id,
                    port: ports.clone(),
                })
                .await
                .map_err(failed)
        }
    }
}

/// Copies the negotiation headers of `from` into `to`.
fn copy_negotiation(from: &HeaderMap, to: &mut HeaderMap) {
    for name in NEGOTIATION {
        for value in from.get_all(name) {
            to.append(name, value.clone());
        }
    }
}

/// Serves one streaming request (see the module documentation).
pub async fn serve<C: Cri>(
    runtime: &PodRuntime<C>,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let parsed = match parse(request.uri().path(), request.uri().query()) {
        Ok(parsed) => parsed,
        Err((status, message)) => return text(status, message + "\n"),
    };
    if !request.headers().contains_key(header::UPGRADE) {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required\n");
    }
    let url = match stream_url(runtime, &parsed).await {
        Ok(url) => url,
        Err((status, message)) => return text(status, message + "\n"),
    };
    let upstream = match upgrade_upstream(&url, request.method(), request.headers()).await {
        Ok(upstream) => upstream,
        Err(message) => {
            tracing::warn!(%url, %message, "the stream server cannot be reached");
            return text(StatusCode::BAD_GATEWAY, message + "\n");
        }
    };
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = upstream.status();
        let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
        let body = Limited::new(upstream.into_body(), MAX_ERROR_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut response = Response::new(Full::new(body).boxed());
        *response.status_mut() = status;
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        return response;
    }
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    copy_negotiation(upstream.headers(), response.headers_mut());
    let caller = hyper::upgrade::on(&mut request);
    let runtime_side = hyper::upgrade::on(upstream);
    tokio::spawn(async move {
        let (caller, runtime_side) = match tokio::try_join!(caller, runtime_side) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "a streaming upgrade did not complete");
                return;
            }
        };
        let mut caller = TokioIo::new(caller);
        let mut runtime_side = TokioIo::new(runtime_side);
        if let Err(error) = tokio::io::copy_bidirectional(&mut caller, &mut runtime_side).await {
            tracing::debug!(%error, "a stream ended with an error");
        }
    });
    response
}

/// Sends the upgrade request to the stream server URL and returns its
/// answer, whose connection stays open for the upgrade.
async fn upgrade_upstream(
    url: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Incoming>, String> {
    let parsed = url::Url::parse(url).map_err(|error| format!("bad stream URL {url}: {error}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("stream URL {url} is not plain HTTP"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("stream URL {url} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    // `host_str` brackets IPv6 addresses; connecting needs them bare.
    let address = (host.trim_start_matches('[').trim_end_matches(']'), port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {url} timed out"))?
        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|error| format!("HTTP with {url}: {error}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "stream server connection ended");
        }
    });
    let target = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(target)
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::CONNECTION, "Upgrade");
    if let Some(request_headers) = builder.headers_mut() {
        copy_negotiation(headers, request_headers);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|error| format!("request to {url}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_requests_carry_the_command_and_streams() {
        let request = parse(
            "/exec/default/web/app",
            Some("command=sh&command=-c&command=exit%203&stdin=true&stdout=1&tty=false"),
        )
        .expect("valid");
        assert_eq!(
            request,
            StreamRequest::Exec {
                namespace: "default".into(),
                pod: "web".into(),
                container: "app".into(),
                command: vec!["sh".into(), "-c".into(), "exit 3".into()],
                io: StreamIo {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                    tty: false,
                },
            }
        );
        assert!(parse("/exec/default/web/app", Some("stdout=true")).is_err());
        assert_eq!(
            parse("/portForward/default/web", Some("port=80,81")).expect("valid"),
            StreamRequest::PortForward {
                namespace: "default".into(),
                pod: "web".into(),
                ports: vec![80, 81],
            }
        );
        assert!(matches!(
            parse("/attach/default/web/app", Some("stdout=true&tty=true")),
            Ok(StreamRequest::Attach {
                io: StreamIo {
                    tty: true,
                    stdout: true,
                    ..
                },
                ..
            })
        ));
        assert_eq!(
            parse("/exec/default/web", Some("command=ls")).map_err(|e| e.0),
            Err(StatusCode::NOT_FOUND)
        );
        assert!(is_streaming_path("/portForward/default/web"));
        assert!(!is_streaming_path("/containerLogs/default/web/app"));
    }
}
