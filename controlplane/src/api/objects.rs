//! Object storage: how API objects are written to and read from the store.
//!
//! Objects are stored as JSON without `metadata.resourceVersion`; the
//! version *is* the key's `mod_revision`, spliced in as objects are read.
//! Splicing bytes instead of parsing keeps large lists cheap: a list of ten
//! thousand pods is a concatenation, not ten thousand parse/serialise
//! round trips.

use bytes::Bytes;
use serde_json::Value;
use skiff_store::KeyValue;

use super::errors::ApiError;

/// Serialises an object for storage, dropping the fields the store itself
/// supplies.
pub fn encode(mut object: Value) -> Result<Bytes, ApiError> {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("selfLink");
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|error| ApiError::Internal(format!("cannot encode object: {error}")))
}

const METADATA_OPEN: &[u8] = b"\"metadata\":{";

/// The stored JSON with `metadata.resourceVersion` set to `revision`.
///
/// Stored objects are serialised by [`encode`] from sorted maps, so the
/// first `"metadata":{` is the top-level one: every key that sorts before
/// `metadata` in the kinds served here holds a string, a number or an
/// object without a `metadata` key, and JSON strings cannot contain an
/// unescaped quote. A stored value without it (never written by this
/// server) falls back to a full parse.
pub fn with_resource_version(stored: &[u8], revision: i64) -> Vec<u8> {
    let field = format!("\"resourceVersion\":\"{revision}\"");
    if let Some(position) = find(stored, METADATA_OPEN) {
        let insert_at = position + METADATA_OPEN.len();
        let mut out = Vec::with_capacity(stored.len() + field.len() + 1);
        out.extend_from_slice(&stored[..insert_at]);
        out.extend_from_slice(field.as_bytes());
        if stored.get(insert_at) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(&stored[insert_at..]);
        return out;
    }
    match serde_json::from_slice::<Value>(stored) {
        Ok(mut object) => {
            object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
            serde_json::to_vec(&object).unwrap_or_else(|_| stored.to_vec())
        }
        Err(_) => stored.to_vec(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A stored key-value as JSON bytes, with its resourceVersion.
pub fn json_bytes(kv: &KeyValue) -> Vec<u8> {
    with_resource_version(&kv.value, kv.mod_revision)
}

/// A stored key-value as a parsed object, with its resourceVersion.
pub fn value(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|error| {
        ApiError::Internal(format!("stored object {} is corrupt: {error}", kv.key))
    })?;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(object)
}

/// Reads a string at a JSON pointer.
pub fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splice_inserts_the_revision_into_top_level_metadata() {
        let stored = encode(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "data": {"metadata": "{\"metadata\":{}}"}, "metadata": {"name": "x"}}))
        .expect("encode");
        let spliced: Value =
            serde_json::from_slice(&with_resource_version(&stored, 42)).expect("json");
        assert_eq!(spliced["metadata"]["resourceVersion"], "42");
        assert_eq!(spliced["metadata"]["name"], "x");
        assert_eq!(spliced["data"]["metadata"], "{\"metadata\":{}}");
    }

    #[test]
    fn splice_handles_empty_metadata_and_drops_stored_versions() {
        let stored =
            encode(json!({"kind": "X", "metadata": {"resourceVersion": "7"}})).expect("encode");
        let spliced: Value =
            serde_json::from_slice(&with_resource_version(&stored, 9)).expect("json");
        assert_eq!(spliced["metadata"], json!({"resourceVersion": "9"}));
    }
}
