//! The one error type of this crate.

/// Why a protobuf request body could not be turned into JSON.
///
/// Every variant is the client's fault (or a kind this crate does not know), so
/// the API server answers all of them with a 4xx status; the messages are
/// written to be shown to the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with the four bytes `k8s\0` that every
    /// Kubernetes protobuf payload starts with.
    #[error("protobuf body does not start with the Kubernetes magic prefix \"k8s\\x00\"")]
    MissingMagic,

    /// The `runtime.Unknown` envelope after the magic prefix is not valid protobuf.
    #[error("malformed runtime.Unknown envelope in protobuf body: {0}")]
    Envelope(#[source] prost::DecodeError),

    /// The envelope carries no `typeMeta.apiVersion` or no `typeMeta.kind`, so
    /// there is no way to know which message `raw` holds.
    #[error("protobuf body names no apiVersion and kind in its envelope")]
    MissingTypeMeta,

    /// The envelope says its `raw` bytes are compressed or otherwise encoded;
    /// no Kubernetes client does that for request bodies.
    #[error("protobuf body uses content encoding {content_encoding:?}, which is not supported")]
    UnsupportedEncoding {
        /// The `contentEncoding` field of the envelope.
        content_encoding: String,
    },

    /// The envelope says `raw` holds something other than protobuf.
    #[error("protobuf envelope carries content type {content_type:?}; only protobuf is supported")]
    UnsupportedContentType {
        /// The `contentType` field of the envelope.
        content_type: String,
    },

    /// The object is of a kind this crate has no converter for.
    #[error(
        "protobuf request bodies of kind {kind} ({api_version}) are not supported; \
         send the object as JSON (Content-Type: application/json) instead"
    )]
    UnsupportedKind {
        /// The `typeMeta.apiVersion` of the envelope.
        api_version: String,
        /// The `typeMeta.kind` of the envelope.
        kind: String,
    },

    /// The `raw` bytes are not a valid protobuf message of the announced kind.
    #[error("malformed {kind} ({api_version}) in protobuf body: {source}")]
    Object {
        /// The `typeMeta.apiVersion` of the envelope.
        api_version: String,
        /// The `typeMeta.kind` of the envelope.
        kind: String,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },

    /// The message decoded, but one of its values has no JSON form (a time
    /// outside the years 0 to 9999, an IntOrString of an unknown type, ...).
    #[error("invalid value at {path}: {reason}")]
    InvalidValue {
        /// Where the value is, as a JSON path such as `spec.template.metadata.creationTimestamp`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ProtobufError {
    /// An [`ProtobufError::InvalidValue`] at the value being converted; the
    /// object builder prefixes the path with each enclosing field name as the
    /// error travels up.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        ProtobufError::InvalidValue {
            path: String::new(),
            reason: reason.into(),
        }
    }

    /// Puts `segment` in front of the path of an `InvalidValue`; other variants
    /// pass through unchanged.
    pub(crate) fn within(self, segment: &str) -> Self {
        match self {
            ProtobufError::InvalidValue { path, reason } => ProtobufError::InvalidValue {
                path: if path.is_empty() {
                    segment.to_owned()
                } else if path.starts_with('[') {
                    format!("{segment}{path}")
                } else {
                    format!("{segment}.{path}")
                },
                reason,
            },
            other => other,
        }
    }
}
