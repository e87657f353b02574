//! A node's desired pods: the snapshot it gets on connecting, the deltas
//! that follow, and which status reports it may make.
//!
//! Everything here is pure. The service lists the pods bound to the node
//! (`spec.nodeName`) at some store revision and hands them to [`snapshot`];
//! it then watches every pod after that revision and hands each store event
//! to [`change_for_event`], which decides from the pod before and after the
//! event whether this node must hear about it:
//!
//! - bound here after the event, and what the node runs changed (spec,
//!   labels, annotations, deletion) → upsert. A write that changes only the
//!   status or the resourceVersion (the node's own status reports, mostly)
//!   is not echoed back.
//! - bound here before and not after (deleted from the store) → remove.
//! - otherwise → nothing.
//!
//! Status reports are checked against the stored pod by [`check_report`]:
//! a pod bound to another node (or to none) is refused outright; a report
//! about a pod that is gone, or was recreated under the same name with
//! another uid, is stale and dropped.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_proto::node::v1 as proto;
use skiff_store::{Event, EventType};

use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("stored pod {key} has no {field}")]
    Incomplete { key: String, field: &'static str },
    #[error(transparent)]
    Stored(#[from] ApiError),
    #[error("invalid pod status report: {0}")]
    InvalidReport(String),
    #[error("pod {namespace}/{name} is not bound to node {node}; a node may only report the status of its own pods")]
    NotBoundHere {
        namespace: String,
        name: String,
        node: String,
    },
}

/// One pod as the node must run it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub spec: Value,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Set once the pod is being deleted.
    pub deletion_grace_period_seconds: Option<i64>,
    pub resource_version: String,
}

fn string_map(object: &Value, pointer: &str) -> BTreeMap<String, String> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl DesiredPod {
    /// Reads a stored pod (with its resourceVersion spliced in).
    pub fn from_object(key: &str, pod: &Value) -> Result<DesiredPod, PodError> {
        let field = |field: &'static str, pointer: &str| {
            str_at(pod, pointer)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| PodError::Incomplete {
                    key: key.to_owned(),
                    field,
                })
        };
        let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
        Ok(DesiredPod {
            uid: field("metadata.uid", "/metadata/uid")?,
            namespace: field("metadata.namespace", "/metadata/namespace")?,
            name: field("metadata.name", "/metadata/name")?,
            spec: pod.get("spec").cloned().unwrap_or(Value::Null),
            labels: string_map(pod, "/metadata/labels"),
            annotations: string_map(pod, "/metadata/annotations"),
            deletion_grace_period_seconds: deleting.then(|| {
                pod.pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            }),
            resource_version: str_at(pod, "/metadata/resourceVersion")
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Whether the node would run `other` any differently.
    fn same_desired_state(&self, other: &DesiredPod) -> bool {
        DesiredPod {
            resource_version: String::new(),
            ..self.clone()
        } == DesiredPod {
            resource_version: String::new(),
            ..other.clone()
        }
    }
}

impl From<DesiredPod> for proto::Pod {
    fn from(pod: DesiredPod) -> proto::Pod {
        proto::Pod {
            uid: pod.uid,
            namespace: pod.namespace,
            name: pod.name,
            spec_json: pod.spec.to_string(),
            labels: pod.labels.into_iter().collect(),
            annotations: pod.annotations.into_iter().collect(),
            deletion_grace_period_seconds: pod.deletion_grace_period_seconds,
            resource_version: pod.resource_version,
            volume_contents: Vec::new(),
        }
    }
}

/// Whether a pod object is bound to `node`.
pub fn is_bound_to(pod: &Value, node: &str) -> bool {
    str_at(pod, "/spec/nodeName") == Some(node)
}

/// Everything bound to a node at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSnapshot {
    pub revision: i64,
    pub pods: Vec<DesiredPod>,
}

impl From<PodSnapshot> for proto::Snapshot {
    fn from(snapshot: PodSnapshot) -> proto::Snapshot {
        proto::Snapshot {
            revision: snapshot.revision,
            pods: snapshot.pods.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// The snapshot for `node` from a list of stored pods read at `revision`.
/// The list should already be filtered by `spec.nodeName`; pods bound
/// elsewhere are skipped all the same.
pub fn snapshot(
    stored: &[skiff_store::KeyValue],
    node: &str,
    revision: i64,
) -> Result<PodSnapshot, PodError> {
    let mut pods = Vec::new();
    for kv in stored {
        let pod = objects::value(kv)?;
        if is_bound_to(&pod, node) {
            pods.push(DesiredPod::from_object(&kv.key, &pod)?);
        }
    }
    Ok(PodSnapshot { revision, pods })
}

/// What one store event means to a node.
#[derive(Debug, Clone, PartialEq)]
pub enum PodChange {
    Upsert(DesiredPod),
    /// The uid of a pod the node must stop and forget.
    Remove(String),
}

/// A change and the store revision it happened at.
#[derive(Debug, Clone, PartialEq)]
pub struct PodDelta {
    pub revision: i64,
    pub change: PodChange,
}

impl From<PodDelta> for proto::Delta {
    fn from(delta: PodDelta) -> proto::Delta {
        let (upserted, removed) = match delta.change {
            PodChange::Upsert(pod) => (vec![pod.into()], Vec::new()),
            PodChange::Remove(uid) => (Vec::new(), vec![uid]),
        };
        proto::Delta {
            revision: delta.revision,
            upserted,
            removed,
            ..Default::default()
        }
    }
}

/// The change (if any) a store event on a pod key makes for `node`.
pub fn change_for_event(event: &Event, node: &str) -> Result<Option<PodDelta>, PodError> {
    // A delete event carries the deleted value; either way, "before" is
    // what the node may have been running.
    let before = match (&event.previous, event.event_type) {
        (Some(previous), _) => Some(objects::value(previous)?),
        (None, EventType::Delete) => Some(objects::value(&event.kv)?),
        (None, EventType::Put) => None,
    };
    let after = match event.event_type {
        EventType::Put => Some(objects::value(&event.kv)?),
        EventType::Delete => None,
    };
    let before = before.filter(|pod| is_bound_to(pod, node));
    let after = after.filter(|pod| is_bound_to(pod, node));
    let change = match (before, after) {
        (before, Some(after)) => {
            let desired = DesiredPod::from_object(&event.kv.key, &after)?;
            let unchanged = match &before {
                Some(before) => {
                    DesiredPod::from_object(&event.kv.key, before)?.same_desired_state(&desired)
                }
                None => false,
            };
            (!unchanged).then_some(PodChange::Upsert(desired))
        }
        (Some(before), None) => Some(PodChange::Remove(
            DesiredPod::from_object(&event.kv.key, &before)?.uid,
        )),
        (None, None) => None,
    };
    Ok(change.map(|change| PodDelta {
        revision: event.revision(),
        change,
    }))
}

/// A node's report on one of its pods, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub status: Value,
    pub terminated: bool,
}

impl TryFrom<proto::PodStatusReport> for StatusReport {
    type Error = PodError;

    fn try_from(report: proto::PodStatusReport) -> Result<StatusReport, PodError> {
        for (field, value) in [
            ("uid", &report.uid),
            ("namespace", &report.namespace),
            ("name", &report.name),
        ] {
            if value.is_empty() {
                return Err(PodError::InvalidReport(format!("{field} is required")));
            }
        }
        let status: Value = serde_json::from_str(&report.status_json).map_err(|error| {
            PodError::InvalidReport(format!(
                "status_json of pod {}/{} is not JSON: {error}",
                report.namespace, report.name
            ))
        })?;
        if !status.is_object() {
            return Err(PodError::InvalidReport(format!(
                "status_json of pod {}/{} must be a JSON object (a core/v1 PodStatus)",
                report.namespace, report.name
            )));
        }
        Ok(StatusReport {
            uid: report.uid,
            namespace: report.namespace,
            name: report.name,
            status,
            terminated: report.terminated,
        })
    }
}

/// What to do with a status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportCheck {
    /// Write it.
    Accept,
    /// The pod it is about is gone; drop it.
    Stale,
}

/// Checks a report from `node` against the stored pod (`None` if there is
/// no pod under that namespace and name).
pub fn check_report(
    current: Option<&Value>,
    report: &StatusReport,
    node: &str,
) -> Result<ReportCheck, PodError> {
    let Some(pod) = current else {
        return Ok(ReportCheck::Stale);
    };
    if str_at(pod, "/metadata/uid") != Some(report.uid.as_str()) {
        return Ok(ReportCheck::Stale);
    }
    if !is_bound_to(pod, node) {
        return Err(PodError::NotBoundHere {
            namespace: report.namespace.clone(),
            name: report.name.clone(),
            node: node.to_owned(),
        });
    }
    Ok(ReportCheck::Accept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;
    use skiff_store::KeyValue;

    fn kv(revision: i64, pod: Value) -> KeyValue {
        KeyValue {
            key: "/registry/core/pods/default/web".into(),
            value: Bytes::from(serde_json::to_vec(&pod).expect("json")),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    fn pod(node: Option<&str>) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Pending"},
        });
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        pod
    }

    fn put(revision: i64, previous: Option<Value>, current: Value) -> Event {
        Event {
            event_type: EventType::Put,
            kv: kv(revision, current),
            previous: previous.map(|p| kv(revision - 1, p)),
        }
    }

    #[test]
    fn the_snapshot_holds_only_this_nodes_pods() {
        let mut other = pod(Some("n2"));
        other["metadata"]["uid"] = json!("u-2");
        let snapshot = snapshot(
            &[kv(5, pod(Some("n1"))), kv(6, other), kv(7, pod(None))],
            "n1",
            9,
        )
        .expect("snapshot");
        assert_eq!(snapshot.revision, 9);
        assert_eq!(snapshot.pods.len(), 1);
        let only = &snapshot.pods[0];
        assert_eq!(
            (only.uid.as_str(), only.resource_version.as_str()),
            ("u-1", "5")
        );
        assert_eq!(only.labels.get("app").map(String::as_str), Some("web"));

        let wire = proto::Snapshot::from(snapshot);
        let spec: Value = serde_json::from_str(&wire.pods[0].spec_json).expect("json");
        assert_eq!(spec["nodeName"], "n1");
    }

    #[test]
    fn binding_upserts_and_deletion_removes() {
        let bound = change_for_event(&put(10, Some(pod(None)), pod(Some("n1"))), "n1")
            .expect("ok")
            .expect("a change");
        assert_eq!(bound.revision, 10);
        assert!(matches!(&bound.change, PodChange::Upsert(p) if p.uid == "u-1"));

        let created_bound = change_for_event(&put(11, None, pod(Some("n1"))), "n1").expect("ok");
        assert!(matches!(
            created_bound,
            Some(PodDelta {
                change: PodChange::Upsert(_),
                ..
            })
        ));

        assert_eq!(
            change_for_event(&put(12, None, pod(Some("n2"))), "n1").expect("ok"),
            None,
            "another node's pod"
        );

        let deleted = Event {
            event_type: EventType::Delete,
            kv: kv(13, pod(Some("n1"))),
            previous: Some(kv(12, pod(Some("n1")))),
        };
        assert_eq!(
            change_for_event(&deleted, "n1").expect("ok"),
            Some(PodDelta {
                revision: 13,
                change: PodChange::Remove("u-1".into())
            })
        );
        let wire = proto::Delta::from(change_for_event(&deleted, "n1").expect("ok").expect("some"));
        assert_eq!(wire.removed, vec!["u-1".to_owned()]);
        assert!(wire.upserted.is_empty());
    }

    #[test]
    fn status_writes_are_not_echoed_but_deletion_is_sent() {
        let mut reported = pod(Some("n1"));
        reported["status"] = json!({"phase": "Running"});
        assert_eq!(
            change_for_event(&put(20, Some(pod(Some("n1"))), reported), "n1").expect("ok"),
            None
        );

        let mut deleting = pod(Some("n1"));
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:30Z");
        deleting["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let change = change_for_event(&put(21, Some(pod(Some("n1"))), deleting), "n1")
            .expect("ok")
            .expect("a change");
        match change.change {
            PodChange::Upsert(pod) => assert_eq!(pod.deletion_grace_period_seconds, Some(30)),
            other => panic!("expected an upsert, got {other:?}"),
        }
    }

    fn report(status_json: &str) -> proto::PodStatusReport {
        proto::PodStatusReport {
            uid: "u-1".into(),
            namespace: "default".into(),
            name: "web".into(),
            status_json: status_json.into(),
            terminated: false,
        }
    }

    #[test]
    fn reports_must_be_json_objects() {
        assert!(StatusReport::try_from(report(r#"{"phase":"Running"}"#)).is_ok());
        let error = StatusReport::try_from(report("{phase")).expect_err("not JSON");
        assert!(error.to_string().contains("not JSON"), "{error}");
        assert!(StatusReport::try_from(report("[]")).is_err());
        let mut unnamed = report("{}");
        unnamed.name.clear();
        assert!(StatusReport::try_from(unnamed).is_err());
    }

    #[test]
    fn only_this_nodes_live_pods_take_reports() {
        let report = StatusReport::try_from(report("{}")).expect("valid");
        assert_eq!(
            check_report(Some(&pod(Some("n1"))), &report, "n1").expect("ok"),
            ReportCheck::Accept
        );
        assert_eq!(
            check_report(None, &report, "n1").expect("ok"),
            ReportCheck::Stale
        );
        let mut recreated = pod(Some("n1"));
        recreated["metadata"]["uid"] = json!("u-9");
        assert_eq!(
            check_report(Some(&recreated), &report, "n1").expect("ok"),
            ReportCheck::Stale
        );
        assert!(matches!(
            check_report(Some(&pod(Some("n2"))), &report, "n1"),
            Err(PodError::NotBoundHere { .. })
        ));
        assert!(matches!(
            check_report(Some(&pod(None)), &report, "n1"),
            Err(PodError::NotBoundHere { .. })
        ));
    }
}
