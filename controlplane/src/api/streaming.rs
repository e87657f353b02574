//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward`:
//! upgraded connections relayed to the pod's node agent.
//!
//! Mechanism: the control plane does not speak the streaming protocols.
//! It opens a TLS connection to the agent as [`super::agentproxy`] does
//! for logs, sends the agent's matching path (`/exec/NS/POD/CONTAINER`,
//! `/attach/NS/POD/CONTAINER`, `/portForward/NS/POD`) the client's method,
//! stream options and negotiation headers (`Upgrade`,
//! `X-Stream-Protocol-Version`), and when the agent switches protocols
//! answers the client 101 with the agent's negotiation headers and copies
//! bytes both ways until either side closes. The agent does the same
//! against the container runtime's stream server, which speaks SPDY/3.1
//! and the `channel.k8s.io` / `portforward.k8s.io` protocols. Any other
//! answer from the agent is passed back unchanged.
//!
//! WebSocket upgrades (newer kubectl tries them first) are refused with a
//! 400 Status: the stream server does not speak the `v5.channel.k8s.io`
//! protocol those clients want, and on any non-101 answer they fall back
//! to SPDY.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::agentproxy::{self, encode};
use super::errors::ApiError;
use super::objects::str_at;
use super::registry::Registry;
use super::request::Query;
use super::resources;

type Body = BoxBody<Bytes, Infallible>;

/// An agent's error answer is a short message.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// The headers that carry the protocol negotiation, in both directions.
const NEGOTIATION: [&str; 2] = ["upgrade", "x-stream-protocol-version"];

/// What a streaming request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// The namespace, pod and kind of a streaming path
/// (`/api/v1/namespaces/NS/pods/NAME/exec`), or `None` for other paths.
pub fn stream_path(path: &str) -> Option<(&str, &str, Kind)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", name, sub]
            if !namespace.is_empty() && !name.is_empty() =>
        {
            let kind = match *sub {
                "exec" => Kind::Exec,
                "attach" => Kind::Attach,
                "portforward" => Kind::PortForward,
                _ => return None,
            };
            Some((namespace, name, kind))
        }
        _ => None,
    }
}

/// Whether a request is a streaming upgrade that [`serve`] handles.
/// Streaming paths without `Connection: Upgrade` go through the ordinary
/// handlers, which refuse them.
pub fn is_stream_upgrade<B>(request: &Request<B>) -> bool {
    let upgrading = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    upgrading && stream_path(request.uri().path()).is_some()
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("websocket"))
}

/// The agent path and query for a streaming request on `pod`.
pub fn agent_target(
    pod: &serde_json::Value,
    kind: Kind,
    query: &Query,
) -> Result<String, ApiError> {
    let name = str_at(pod, "/metadata/name").unwrap_or_default();
    let namespace = str_at(pod, "/metadata/namespace").unwrap_or("default");
    let mut params = url::form_urlencoded::Serializer::new(String::new());
    let path = match kind {
        Kind::Exec | Kind::Attach => {
            let container = agentproxy::chosen_container(pod, query)?;
            if kind == Kind::Exec {
                if query.all("command").is_empty() {
                    return Err(ApiError::BadRequest(
                        "you must specify at least 1 command".into(),
                    ));
                }
                for argument in query.all("command") {
                    params.append_pair("command", argument);
                }
            }
            for flag in ["stdin", "stdout", "stderr", "tty"] {
                if query.flag(flag) {
                    params.append_pair(flag, "true");
                }
            }
            let verb = if kind == Kind::Exec { "exec" } else { "attach" };
            format!(
                "/{verb}/{}/{}/{}",
                encode(namespace),
                encode(name),
                encode(container)
            )
        }
        Kind::PortForward => {
            for port in query.all("ports") {
                params.append_pair("port", port);
            }
            format!("/portForward/{}/{}", encode(namespace), encode(name))
        }
    };
    let params = params.finish();
    Ok(if params.is_empty() {
        path
    } else {
        format!("{path}?{params}")
    })
}

/// Copies the negotiation headers of `from` into `to`.
fn copy_negotiation(from: &HeaderMap, to: &mut HeaderMap) {
    for name in NEGOTIATION {
        for value in from.get_all(name) {
            to.append(name, value.clone());
        }
    }
}

/// Relays one streaming upgrade to the pod's agent (see the module
/// documentation). The caller has authenticated the client.
pub async fn serve(
    registry: &Registry,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_owned();
    let Some((namespace, name, kind)) = stream_path(&path) else {
        return Err(ApiError::BadRequest(format!(
            "{path} is not a streaming path"
        )));
    };
    if wants_websocket(request.headers()) {
        return Err(ApiError::BadRequest("Upgrade request required".into()));
    }
    let query = Query::parse(request.uri().query());
    let pods = resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::Internal("pods are not served".into()))?;
    let pod = registry.get(pods, Some(namespace), name).await?;
    let node = str_at(&pod, "/spec/nodeName")
        .filter(|node| !node.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?
        .to_owned();
    let target = agent_target(&pod, kind, &query)?;
    let (tls, address) = agentproxy::connect(registry, &node).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|error| agentproxy::unreachable(&node, error))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "agent stream connection ended");
        }
    });
    let mut builder = Request::builder()
        .method(request.method().clone())
        .uri(target.as_str())
        .header(header::HOST, address.to_string())
        .header(header::CONNECTION, "Upgrade");
    if let Some(headers) = builder.headers_mut() {
        copy_negotiation(request.headers(), headers);
    }
    let agent_request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let upstream = sender
        .send_request(agent_request)
        .await
        .map_err(|error| agentproxy::unreachable(&node, error))?;

    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = upstream.status();
        let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
        let body = Limited::new(upstream.into_body(), MAX_ERROR_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        tracing::debug!(%path, %status, "the agent refused a streaming upgrade");
        let mut response = Response::new(Full::new(body).boxed());
        *response.status_mut() = status;
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        return Ok(response);
    }
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    copy_negotiation(upstream.headers(), response.headers_mut());
    let client_side = hyper::upgrade::on(&mut request);
    let agent_side = hyper::upgrade::on(upstream);
    tokio::spawn(async move {
        let (client_side, agent_side) = match tokio::try_join!(client_side, agent_side) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "a streaming upgrade did not complete");
                return;
            }
        };
        let mut client_side = TokioIo::new(client_side);
        let mut agent_side = TokioIo::new(agent_side);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client_side, &mut agent_side).await {
            tracing::debug!(%error, "a stream ended with an error");
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn streaming_paths_are_recognised() {
        assert_eq!(
            stream_path("/api/v1/namespaces/default/pods/web/exec"),
            Some(("default", "web", Kind::Exec))
        );
        assert_eq!(
            stream_path("/api/v1/namespaces/ns/pods/web/portforward"),
            Some(("ns", "web", Kind::PortForward))
        );
        assert_eq!(stream_path("/api/v1/namespaces/default/pods/web/log"), None);
        assert_eq!(stream_path("/api/v1/namespaces/default/pods/web"), None);

        let upgrade = Request::post("/api/v1/namespaces/default/pods/web/exec?command=ls")
            .header("Connection", "Upgrade")
            .header("Upgrade", "SPDY/3.1")
            .body(())
            .expect("request");
        assert!(is_stream_upgrade(&upgrade));
        assert!(!wants_websocket(upgrade.headers()));
        let plain = Request::post("/api/v1/namespaces/default/pods/web/exec?command=ls")
            .body(())
            .expect("request");
        assert!(!is_stream_upgrade(&plain));
        let mut websocket = HeaderMap::new();
        websocket.insert(header::UPGRADE, "websocket".parse().expect("value"));
        assert!(wants_websocket(&websocket));
    }

    #[test]
    fn agent_targets_carry_the_command_and_streams() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app"}]},
        });
        let query = Query::parse(Some(
            "command=sh&command=-c&command=exit%203&container=app&stdin=true&stdout=true&stderr=true",
        ));
        assert_eq!(
            agent_target(&pod, Kind::Exec, &query).expect("valid"),
            "/exec/default/web/app?command=sh&command=-c&command=exit+3&stdin=true&stdout=true&stderr=true"
        );
        assert!(agent_target(&pod, Kind::Exec, &Query::parse(Some("stdout=true"))).is_err());
        assert_eq!(
            agent_target(
                &pod,
                Kind::Attach,
                &Query::parse(Some("stdout=true&tty=true"))
            )
            .expect("valid"),
            "/attach/default/web/app?stdout=true&tty=true"
        );
        assert_eq!(
            agent_target(&pod, Kind::PortForward, &Query::parse(None)).expect("valid"),
            "/portForward/default/web"
        );
    }
}
