//! Decodes Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! into the JSON form of the same object.
//!
//! # Why
//!
//! kubectl 1.32 and later send `kubectl create deployment`, `create configmap`,
//! `create secret ...`, `create service ...`, `create job` and the other
//! `kubectl create <generator>` commands as protobuf, and offer no flag to
//! send JSON instead. The API server stores JSON, so it has to turn those
//! bodies into exactly the JSON Kubernetes would have produced for the object.
//!
//! # The wire format
//!
//! A body is the four magic bytes `k8s\0` followed by a `runtime.Unknown`
//! message, the envelope:
//!
//! ```text
//! message Unknown {
//!   optional TypeMeta typeMeta = 1;        // apiVersion + kind, e.g. "apps/v1" / "Deployment"
//!   optional bytes raw = 2;                // the object itself, e.g. an apps.v1.Deployment message
//!   optional string contentEncoding = 3;   // always "" from Kubernetes clients
//!   optional string contentType = 4;       // always "" from Kubernetes clients
//! }
//! ```
//!
//! The object message in `raw` carries no `apiVersion` or `kind` of its own;
//! [`decode_to_json`] takes them from the envelope and puts them into the JSON.
//!
//! # Why the conversion is written by hand
//!
//! The k8s-pb message types have no serde support, and even if they had, a
//! derived serialisation would not match Kubernetes JSON: Go writes every
//! non-pointer field into protobuf (empty strings, zeros and all), and only
//! its JSON tags decide which of those appear in JSON. Each converter in this
//! crate therefore states, field by field, what the Go type is; see the table
//! in the `json` module. Values with a special JSON form are converted the way
//! Go's marshallers do it: `metav1.Time` as RFC 3339 in UTC
//! (`"2026-01-02T03:04:05Z"`), `MicroTime` with six fraction digits, a
//! `Quantity` as its string, an `IntOrString` as a bare number or string,
//! `[]byte` (Secret `data`) as base64, and maps as JSON objects.
//!
//! Kinds without a converter fail with [`ProtobufError::UnsupportedKind`],
//! whose message asks the client to send JSON.

mod apps;
mod batch;
mod core;
mod error;
mod json;
mod meta;

use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::Value;

pub use error::ProtobufError;

use crate::json::Res;

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix every Kubernetes protobuf body starts with.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// Decodes one object of kind `M` and converts it; a decode error is kept
/// apart so that the caller can name the kind in it.
fn decode<M: Message + Default>(
    raw: &[u8],
    convert: fn(&M) -> Res,
) -> Result<Res, prost::DecodeError> {
    let message = M::decode(raw)?;
    Ok(convert(&message))
}

type Decoder = fn(&[u8]) -> Result<Res, prost::DecodeError>;

/// Every (apiVersion, kind) with a converter.
const KINDS: &[(&str, &str, Decoder)] = &[
    ("v1", "Pod", |raw| decode(raw, core::pod)),
    ("v1", "ReplicationController", |raw| {
        decode(raw, core::replication_controller)
    }),
    ("v1", "Service", |raw| decode(raw, core::service)),
    ("v1", "ConfigMap", |raw| decode(raw, core::config_map)),
    ("v1", "Secret", |raw| decode(raw, core::secret)),
    ("v1", "Namespace", |raw| decode(raw, core::namespace)),
    ("v1", "ServiceAccount", |raw| {
        decode(raw, core::service_account)
    }),
    ("v1", "Endpoints", |raw| decode(raw, core::endpoints)),
    ("v1", "Event", |raw| decode(raw, core::event)),
    ("v1", "Node", |raw| decode(raw, core::node)),
    ("apps/v1", "Deployment", |raw| decode(raw, apps::deployment)),
    ("apps/v1", "ReplicaSet", |raw| {
        decode(raw, apps::replica_set)
    }),
    ("apps/v1", "DaemonSet", |raw| decode(raw, apps::daemon_set)),
    ("apps/v1", "StatefulSet", |raw| {
        decode(raw, apps::stateful_set)
    }),
    ("batch/v1", "Job", |raw| decode(raw, batch::job)),
    ("batch/v1", "CronJob", |raw| decode(raw, batch::cron_job)),
];

/// The (apiVersion, kind) pairs [`decode_to_json`] can convert, so a server
/// can tell a client up front (or in discovery) what it accepts as protobuf.
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS
        .iter()
        .map(|(api_version, kind, _)| (*api_version, *kind))
}

/// Whether [`decode_to_json`] has a converter for this kind.
pub fn is_supported(api_version: &str, kind: &str) -> bool {
    supported_kinds().any(|(v, k)| v == api_version && k == kind)
}

/// Turns a Kubernetes protobuf request body into the JSON object Kubernetes
/// would have received as `application/json`, with `apiVersion` and `kind`
/// set from the envelope.
///
/// Fails, without panicking, on a body that lacks the magic prefix, on bytes
/// that are not valid protobuf, on a kind with no converter, and on values
/// that have no JSON form.
pub fn decode_to_json(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(&MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let unknown = Unknown::decode(envelope).map_err(ProtobufError::Envelope)?;

    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    // Kubernetes clients leave both empty; anything else means `raw` is not a
    // plain protobuf message and decoding it would only produce nonsense.
    if let Some(content_encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::UnsupportedEncoding { content_encoding });
    }
    if let Some(content_type) = unknown
        .content_type
        .filter(|t| !t.is_empty() && t != CONTENT_TYPE)
    {
        return Err(ProtobufError::UnsupportedContentType { content_type });
    }

    let Some((_, _, decoder)) = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        return Err(ProtobufError::UnsupportedKind { api_version, kind });
    };
    let raw = unknown.raw.unwrap_or_default();
    let converted = match decoder(&raw) {
        Ok(converted) => converted,
        Err(source) => {
            return Err(ProtobufError::Object {
                api_version,
                kind,
                source,
            })
        }
    };

    let mut value = converted?;
    if let Value::Object(fields) = &mut value {
        fields.insert("apiVersion".to_owned(), Value::String(api_version));
        fields.insert("kind".to_owned(), Value::String(kind));
    }
    Ok(value)
}
