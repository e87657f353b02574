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
//! What a node is sent is the pod resolved ([`super::resolve`]) against the
//! ConfigMaps and Secrets of its namespace. [`NodePods`] remembers the pods
//! as last sent and those objects (one namespace at a time, loaded by the
//! caller the first time a pod there refers to one), so that a change to a
//! ConfigMap or Secret re-sends exactly the pods that refer to it, and only
//! when what they are sent changes ([`NodePods::config_event`]).
//!
//! Status reports are checked against the stored pod by [`check_report`]:
//! a pod bound to another node (or to none) is refused outright; a report
//! about a pod that is gone, or was recreated under the same name with
//! another uid, is stale and dropped.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use skiff_proto::node::v1 as proto;
use skiff_store::{Event, EventType};

use super::resolve::{
    self, ConfigData, ConfigKind, ConfigLookup, ConfigRef, EnvSource, ResolveError, ResolvedPod,
};
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
    #[error("invalid pod event: {0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Config(#[from] ResolveError),
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
            unresolved: Vec::new(),
        }
    }
}

/// The pod as its node receives it: `pod` with its spec resolved.
pub fn wire_pod(pod: DesiredPod, resolved: ResolvedPod) -> proto::Pod {
    let mut wire = proto::Pod::from(DesiredPod {
        spec: resolved.spec,
        ..pod
    });
    wire.volume_contents = resolved
        .volumes
        .into_iter()
        .map(|volume| proto::VolumeContents {
            volume_name: volume.volume,
            files: volume.files.into_iter().collect(),
            modes: volume.modes.into_iter().collect(),
        })
        .collect();
    wire.unresolved = resolved
        .unresolved
        .into_iter()
        .map(|u| proto::UnresolvedReference {
            container: u.container,
            volume: u.volume,
            message: u.message,
        })
        .collect();
    wire
}

/// The ConfigMaps and Secrets of one namespace, each kind as of the store
/// revision it was listed at.
#[derive(Debug, Clone, Default)]
pub struct NamespaceConfigs {
    /// Events of a kind at or below its revision are already reflected.
    pub revisions: BTreeMap<ConfigKind, i64>,
    pub objects: BTreeMap<(ConfigKind, String), ConfigData>,
}

impl NamespaceConfigs {
    /// From one list per kind (its revision and its objects); unreadable
    /// objects are left out (and so unresolved) rather than cutting the
    /// node off.
    pub fn from_listed(
        lists: impl IntoIterator<Item = (ConfigKind, i64, Vec<skiff_store::KeyValue>)>,
    ) -> NamespaceConfigs {
        let mut configs = NamespaceConfigs::default();
        for (kind, revision, items) in lists {
            configs.revisions.insert(kind, revision);
            for kv in items {
                let read = objects::value(&kv)
                    .map_err(PodError::from)
                    .and_then(|object| Ok((ConfigData::from_object(kind, &object)?, object)));
                match read {
                    Ok((data, object)) => {
                        let name = str_at(&object, "/metadata/name")
                            .unwrap_or_default()
                            .to_owned();
                        configs.objects.insert((kind, name), data);
                    }
                    Err(error) => {
                        tracing::warn!(key = %kv.key, %error, "skipping an unreadable object")
                    }
                }
            }
        }
        configs
    }
}

impl ConfigLookup for NamespaceConfigs {
    fn get(&self, kind: ConfigKind, name: &str) -> Option<&ConfigData> {
        self.objects.get(&(kind, name.to_owned()))
    }
}

/// A ConfigMap or Secret with nothing in it, for references to namespaces
/// not loaded (which only happens for pods that refer to nothing).
struct NothingLoaded;

impl ConfigLookup for NothingLoaded {
    fn get(&self, _: ConfigKind, _: &str) -> Option<&ConfigData> {
        None
    }
}

#[derive(Debug, Clone)]
struct SentPod {
    desired: DesiredPod,
    refs: BTreeSet<ConfigRef>,
    /// The service link variables, fixed when the pod was first sent.
    service_env: EnvSource,
    wire: proto::Pod,
}

/// A node's pods as last sent, and the configuration they were resolved
/// against.
#[derive(Debug, Default)]
pub struct NodePods {
    pods: BTreeMap<String, SentPod>,
    configs: BTreeMap<String, NamespaceConfigs>,
}

impl NodePods {
    /// The namespace to load before `pod` can be resolved, if any: one
    /// whose objects it refers to and that is not loaded yet.
    pub fn namespace_to_load(&self, pod: &DesiredPod) -> Option<String> {
        (!self.configs.contains_key(&pod.namespace) && !resolve::references(&pod.spec).is_empty())
            .then(|| pod.namespace.clone())
    }

    pub fn load_namespace(&mut self, namespace: &str, configs: NamespaceConfigs) {
        self.configs.insert(namespace.to_owned(), configs);
    }

    fn resolve(&self, pod: &DesiredPod, service_env: &EnvSource) -> proto::Pod {
        let leading = std::slice::from_ref(service_env);
        let resolved = match self.configs.get(&pod.namespace) {
            Some(configs) => resolve::resolve(&pod.namespace, &pod.spec, configs, leading),
            None => resolve::resolve(&pod.namespace, &pod.spec, &NothingLoaded, leading),
        };
        wire_pod(pod.clone(), resolved)
    }

    /// The pod as it is sent now, remembered as sent.
    pub fn send(&mut self, pod: DesiredPod) -> proto::Pod {
        self.send_with_service_env(pod, |_| EnvSource::default())
    }

    /// [`send`](Self::send), with the service link variables `compute`
    /// gives on the pod's first send; later sends keep them.
    pub fn send_with_service_env(
        &mut self,
        pod: DesiredPod,
        compute: impl FnOnce(&DesiredPod) -> EnvSource,
    ) -> proto::Pod {
        let service_env = match self.pods.get(&pod.uid) {
            Some(sent) => sent.service_env.clone(),
            None => compute(&pod),
        };
        let wire = self.resolve(&pod, &service_env);
        self.pods.insert(
            pod.uid.clone(),
            SentPod {
                refs: resolve::references(&pod.spec),
                desired: pod,
                service_env,
                wire: wire.clone(),
            },
        );
        wire
    }

    pub fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    /// Applies a store event on a ConfigMap or Secret; returns the pods
    /// whose resolution it changed, to be sent again. Events about
    /// namespaces not loaded, or already reflected in what was loaded, are
    /// ignored.
    pub fn config_event(
        &mut self,
        kind: ConfigKind,
        event: &Event,
    ) -> Result<Vec<proto::Pod>, PodError> {
        // Keys end in `<namespace>/<name>`; a delete may carry no object.
        let mut parts = event.kv.key.rsplitn(3, '/');
        let (Some(name), Some(namespace)) = (parts.next(), parts.next()) else {
            return Ok(Vec::new());
        };
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let Some(configs) = self.configs.get_mut(&namespace) else {
            return Ok(Vec::new());
        };
        let reflected = configs.revisions.get(&kind).copied().unwrap_or(0);
        if event.revision() <= reflected {
            return Ok(Vec::new());
        }
        configs.revisions.insert(kind, event.revision());
        let key = (kind, name.clone());
        match event.event_type {
            EventType::Put => {
                let object = objects::value(&event.kv)?;
                configs
                    .objects
                    .insert(key, ConfigData::from_object(kind, &object)?);
            }
            EventType::Delete => {
                configs.objects.remove(&key);
            }
        }
        let reference = ConfigRef { kind, name };
        let affected: Vec<(DesiredPod, EnvSource)> = self
            .pods
            .values()
            .filter(|sent| sent.desired.namespace == namespace && sent.refs.contains(&reference))
            .map(|sent| (sent.desired.clone(), sent.service_env.clone()))
            .collect();
        let mut changed = Vec::new();
        for (pod, service_env) in affected {
            let wire = self.resolve(&pod, &service_env);
            if let Some(sent) = self.pods.get_mut(&pod.uid) {
                if sent.wire != wire {
                    sent.wire = wire.clone();
                    changed.push(wire);
                }
            }
        }
        Ok(changed)
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
    /// The pods as sent, resolved, by uid; a pod missing here is sent as
    /// stored.
    pub resolved: BTreeMap<String, proto::Pod>,
}

impl From<PodSnapshot> for proto::Snapshot {
    fn from(mut snapshot: PodSnapshot) -> proto::Snapshot {
        let pods = snapshot
            .pods
            .into_iter()
            .map(|pod| match snapshot.resolved.remove(&pod.uid) {
                Some(wire) => wire,
                None => pod.into(),
            })
            .collect();
        proto::Snapshot {
            revision: snapshot.revision,
            pods,
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
    Ok(PodSnapshot {
        revision,
        pods,
        resolved: BTreeMap::new(),
    })
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

/// An event a node observed about one of its pods, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEventReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub field_path: String,
    pub warning: bool,
    pub reason: String,
    pub message: String,
    pub count: u32,
    /// RFC 3339, seconds.
    pub first_timestamp: String,
    pub last_timestamp: String,
}

/// Kubernetes caps an event's message at this many bytes.
const EVENT_MESSAGE_LIMIT: usize = 1024;

fn rfc3339_from_millis(millis: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(millis)
        .ok()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

impl TryFrom<proto::PodEvent> for PodEventReport {
    type Error = PodError;

    fn try_from(event: proto::PodEvent) -> Result<PodEventReport, PodError> {
        let invalid = PodError::InvalidEvent;
        for (field, value) in [
            ("pod_uid", &event.pod_uid),
            ("namespace", &event.namespace),
            ("pod_name", &event.pod_name),
            ("reason", &event.reason),
        ] {
            if value.is_empty() {
                return Err(invalid(format!("{field} is required")));
            }
        }
        let warning = match event.r#type.as_str() {
            "Normal" => false,
            "Warning" => true,
            other => {
                return Err(invalid(format!(
                    "type must be Normal or Warning, not {other:?}"
                )))
            }
        };
        if event.count == 0 {
            return Err(invalid("count must be at least 1".into()));
        }
        if event.last_timestamp_ms < event.first_timestamp_ms {
            return Err(invalid(
                "last_timestamp_ms must not be before first_timestamp_ms".into(),
            ));
        }
        let first = rfc3339_from_millis(event.first_timestamp_ms)
            .ok_or_else(|| invalid("first_timestamp_ms is out of range".into()))?;
        let last = rfc3339_from_millis(event.last_timestamp_ms)
            .ok_or_else(|| invalid("last_timestamp_ms is out of range".into()))?;
        let mut message = event.message;
        if message.len() > EVENT_MESSAGE_LIMIT {
            let mut end = EVENT_MESSAGE_LIMIT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Ok(PodEventReport {
            uid: event.pod_uid,
            namespace: event.namespace,
            name: event.pod_name,
            field_path: event.field_path,
            warning,
            reason: event.reason,
            message,
            count: event.count,
            first_timestamp: first,
            last_timestamp: last,
        })
    }
}

/// Whether an event from `node` is about a pod it runs: the stored pod
/// (`None` if there is none under that name) has the event's uid and is
/// bound to `node`.
pub fn event_is_about_own_pod(current: Option<&Value>, event: &PodEventReport, node: &str) -> bool {
    current.is_some_and(|pod| {
        str_at(pod, "/metadata/uid") == Some(event.uid.as_str()) && is_bound_to(pod, node)
    })
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

    fn config_kv(kind: &str, name: &str, revision: i64, object: Value) -> KeyValue {
        KeyValue {
            key: format!("/registry/core/{kind}/default/{name}"),
            value: Bytes::from(serde_json::to_vec(&object).expect("json")),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    fn config_map(name: &str, mode: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "data": {"mode": mode}})
    }

    fn pod_using(uid: &str, config_map: &str) -> DesiredPod {
        let mut stored = pod(Some("n1"));
        stored["metadata"]["uid"] = json!(uid);
        stored["spec"]["containers"][0]["env"] = json!([
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "mode"}}}
        ]);
        stored["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": config_map}}]);
        DesiredPod::from_object("k", &stored).expect("pod")
    }

    #[test]
    fn a_config_change_resends_exactly_the_pods_that_refer_to_it() {
        let mut pods = NodePods::default();
        let uses_app = pod_using("u-1", "app");
        let uses_other = pod_using("u-2", "other");
        let plain = DesiredPod::from_object("k", &pod(Some("n1"))).expect("pod");
        assert_eq!(pods.namespace_to_load(&plain), None, "refers to nothing");
        assert_eq!(
            pods.namespace_to_load(&uses_app).as_deref(),
            Some("default")
        );
        pods.load_namespace(
            "default",
            NamespaceConfigs::from_listed([
                (
                    ConfigKind::ConfigMap,
                    10,
                    vec![config_kv("configmaps", "app", 9, config_map("app", "slow"))],
                ),
                (ConfigKind::Secret, 10, Vec::new()),
            ]),
        );
        assert_eq!(pods.namespace_to_load(&uses_app), None);
        let sent = pods.send(uses_app);
        assert_eq!(sent.volume_contents[0].files["mode"], b"slow");
        assert!(sent.unresolved.is_empty());
        let unresolved = pods.send(uses_other);
        assert_eq!(unresolved.unresolved.len(), 2, "env and volume");
        pods.send(DesiredPod {
            uid: "u-3".into(),
            ..plain
        });

        let change = |revision, mode: &str| Event {
            event_type: EventType::Put,
            kv: config_kv("configmaps", "app", revision, config_map("app", mode)),
            previous: None,
        };
        assert!(
            pods.config_event(ConfigKind::ConfigMap, &change(10, "fast"))
                .expect("ok")
                .is_empty(),
            "already reflected in the list"
        );
        let resent = pods
            .config_event(ConfigKind::ConfigMap, &change(11, "fast"))
            .expect("ok");
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].uid, "u-1");
        let spec: Value = serde_json::from_str(&resent[0].spec_json).expect("json");
        assert_eq!(spec["containers"][0]["env"][0]["value"], "fast");
        assert!(
            pods.config_event(ConfigKind::ConfigMap, &change(12, "fast"))
                .expect("ok")
                .is_empty(),
            "nothing the pod is sent changed"
        );
        let created = Event {
            event_type: EventType::Put,
            kv: config_kv("configmaps", "other", 13, config_map("other", "x")),
            previous: None,
        };
        let resent = pods
            .config_event(ConfigKind::ConfigMap, &created)
            .expect("ok");
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].uid, "u-2");
        assert!(resent[0].unresolved.is_empty());

        pods.forget("u-2");
        let deleted = Event {
            event_type: EventType::Delete,
            kv: config_kv("configmaps", "other", 14, Value::Null),
            previous: None,
        };
        assert!(pods
            .config_event(ConfigKind::ConfigMap, &deleted)
            .expect("ok")
            .is_empty());
        let elsewhere = Event {
            event_type: EventType::Put,
            kv: KeyValue {
                key: "/registry/core/secrets/kube-system/s".into(),
                ..config_kv("secrets", "s", 15, json!({}))
            },
            previous: None,
        };
        assert!(pods
            .config_event(ConfigKind::Secret, &elsewhere)
            .expect("ok")
            .is_empty());
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

    fn pod_event() -> proto::PodEvent {
        proto::PodEvent {
            pod_uid: "u-1".into(),
            namespace: "default".into(),
            pod_name: "web".into(),
            field_path: "spec.containers{c}".into(),
            r#type: "Normal".into(),
            reason: "Started".into(),
            message: "Started container c".into(),
            first_timestamp_ms: 1_735_689_600_000,
            last_timestamp_ms: 1_735_689_660_500,
            count: 2,
        }
    }

    #[test]
    fn event_reports_are_checked_at_the_edge() {
        let event = PodEventReport::try_from(pod_event()).expect("valid");
        assert_eq!(event.first_timestamp, "2025-01-01T00:00:00Z");
        assert_eq!(event.last_timestamp, "2025-01-01T00:01:00Z");
        assert!(!event.warning);
        assert_eq!(event.count, 2);

        let broken = [
            proto::PodEvent {
                r#type: "Info".into(),
                ..pod_event()
            },
            proto::PodEvent {
                count: 0,
                ..pod_event()
            },
            proto::PodEvent {
                reason: String::new(),
                ..pod_event()
            },
            proto::PodEvent {
                pod_uid: String::new(),
                ..pod_event()
            },
            proto::PodEvent {
                last_timestamp_ms: 0,
                ..pod_event()
            },
        ];
        for event in broken {
            let error = PodEventReport::try_from(event.clone()).expect_err("invalid");
            assert!(
                error.to_string().starts_with("invalid pod event: "),
                "{error}"
            );
        }
        let long = PodEventReport::try_from(proto::PodEvent {
            message: "é".repeat(600),
            ..pod_event()
        })
        .expect("valid");
        assert!(long.message.len() <= 1024);

        assert!(event_is_about_own_pod(Some(&pod(Some("n1"))), &event, "n1"));
        assert!(!event_is_about_own_pod(
            Some(&pod(Some("n2"))),
            &event,
            "n1"
        ));
        assert!(!event_is_about_own_pod(None, &event, "n1"));
        let mut recreated = pod(Some("n1"));
        recreated["metadata"]["uid"] = json!("u-9");
        assert!(!event_is_about_own_pod(Some(&recreated), &event, "n1"));
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
