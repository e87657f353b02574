//! `meta/v1` types shared by every kind: ObjectMeta, LabelSelector, Condition.

use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::Value;

use crate::json::{Obj, Res};
use crate::ProtobufError;

pub(crate) fn object_meta(m: &meta::ObjectMeta) -> Res {
    Obj::new()
        .str("name", &m.name)
        .str("generateName", &m.generate_name)
        .str("namespace", &m.namespace)
        .str("selfLink", &m.self_link)
        .str("uid", &m.uid)
        .str("resourceVersion", &m.resource_version)
        .int("generation", m.generation)
        .time("creationTimestamp", &m.creation_timestamp)
        .time("deletionTimestamp", &m.deletion_timestamp)
        .int_ptr(
            "deletionGracePeriodSeconds",
            m.deletion_grace_period_seconds,
        )
        .str_map("labels", &m.labels)
        .str_map("annotations", &m.annotations)
        .list("ownerReferences", &m.owner_references, owner_reference)
        .strs("finalizers", &m.finalizers)
        .list("managedFields", &m.managed_fields, managed_fields_entry)
        .done()
}

fn owner_reference(r: &meta::OwnerReference) -> Res {
    Obj::new()
        .str_req("apiVersion", &r.api_version)
        .str_req("kind", &r.kind)
        .str_req("name", &r.name)
        .str_req("uid", &r.uid)
        .bool_ptr("controller", r.controller)
        .bool_ptr("blockOwnerDeletion", r.block_owner_deletion)
        .done()
}

fn managed_fields_entry(e: &meta::ManagedFieldsEntry) -> Res {
    Obj::new()
        .str("manager", &e.manager)
        .str("operation", &e.operation)
        .str("apiVersion", &e.api_version)
        .time("time", &e.time)
        .str("fieldsType", &e.fields_type)
        .ptr("fieldsV1", &e.fields_v1, fields_v1)
        .str("subresource", &e.subresource)
        .done()
}

/// FieldsV1 carries the JSON document itself as bytes in both encodings.
fn fields_v1(f: &meta::FieldsV1) -> Res {
    match f.raw.as_deref() {
        None | Some([]) => Ok(Value::Null),
        Some(raw) => serde_json::from_slice(raw)
            .map_err(|e| ProtobufError::invalid(format!("fieldsV1 is not JSON: {e}"))),
    }
}

pub(crate) fn label_selector(s: &meta::LabelSelector) -> Res {
    Obj::new()
        .str_map("matchLabels", &s.match_labels)
        .list("matchExpressions", &s.match_expressions, |r| {
            Obj::new()
                .str_req("key", &r.key)
                .str_req("operator", &r.operator)
                .strs("values", &r.values)
                .done()
        })
        .done()
}

/// `metav1.Condition`, used by Service status; every field but
/// observedGeneration is required in Go.
pub(crate) fn condition(c: &meta::Condition) -> Res {
    Obj::new()
        .str_req("type", &c.r#type)
        .str_req("status", &c.status)
        .int("observedGeneration", c.observed_generation)
        .time("lastTransitionTime", &c.last_transition_time)
        .str_req("reason", &c.reason)
        .str_req("message", &c.message)
        .done()
}
