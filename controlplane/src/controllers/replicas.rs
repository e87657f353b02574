//! What a ReplicationController or ReplicaSet should do about its pods,
//! decided without I/O.
//!
//! [`plan`] takes the owner, the pods in its namespace and the time, and
//! returns a [`ReplicaPlan`]: which orphans to adopt and which pods to
//! release (Kubernetes' `ClaimPods`), how many pods to create or which to
//! delete, and the status to report. The rules are Kubernetes':
//!
//! - Only active pods count: not finished, not being deleted. They are
//!   neither adopted nor released either.
//! - A pod controlled by another owner is never touched. An orphan whose
//!   labels match the selector is adopted; an owned pod whose labels no
//!   longer match is released. An owner being deleted does neither, and
//!   creates and deletes nothing.
//! - At most [`BURST`] pods are created or deleted per reconcile.
//! - Scale-down victims are ordered as in Kubernetes' `ActivePodsWithRanks`
//!   ([`compare_victims`]): unscheduled before scheduled, pending before
//!   unknown before running, not ready before ready, lower
//!   `pod-deletion-cost` first, pods doubled up on a node first, then the
//!   more recently ready, then more restarts, then the newer (recent
//!   times compared on a logarithmic scale), then by uid.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Map, Value};
use skiff_apimachinery::labels::{LabelSelector, SelectorError};

use super::gc::controller_reference;
use crate::api::errors::ApiError;
use crate::api::objects::str_at;
use crate::api::resources::{self, ResourceInfo};

/// The most pods created or deleted in one reconcile (Kubernetes'
/// `BurstReplicas`).
pub const BURST: usize = 500;

const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    ReplicationController,
    ReplicaSet,
}

impl OwnerKind {
    pub const ALL: [OwnerKind; 2] = [OwnerKind::ReplicationController, OwnerKind::ReplicaSet];

    pub fn kind(self) -> &'static str {
        match self {
            OwnerKind::ReplicationController => "ReplicationController",
            OwnerKind::ReplicaSet => "ReplicaSet",
        }
    }

    pub fn info(self) -> Result<&'static ResourceInfo, ApiError> {
        let found = match self {
            OwnerKind::ReplicationController => resources::find("", "v1", "replicationcontrollers"),
            OwnerKind::ReplicaSet => resources::find("apps", "v1", "replicasets"),
        };
        found.ok_or_else(|| ApiError::Internal(format!("no {} resource", self.kind())))
    }

    /// The event source Kubernetes uses for this kind's controller.
    pub fn component(self) -> &'static str {
        match self {
            OwnerKind::ReplicationController => "replication-controller",
            OwnerKind::ReplicaSet => "replicaset-controller",
        }
    }

    /// The kind an owner reference names, if it is one of these.
    pub fn of_reference(api_version: &str, kind: &str) -> Option<OwnerKind> {
        match (api_version, kind) {
            ("v1", "ReplicationController") => Some(OwnerKind::ReplicationController),
            ("apps/v1", "ReplicaSet") => Some(OwnerKind::ReplicaSet),
            _ => None,
        }
    }
}

/// Which owner, by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub kind: OwnerKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("{kind} has no {field}")]
    Incomplete {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{key} has an invalid selector: {source}")]
    Selector {
        key: OwnerKey,
        source: SelectorError,
    },
}

/// A ReplicationController or ReplicaSet, as the controller needs it.
#[derive(Debug, Clone)]
pub struct ReplicaOwner {
    pub key: OwnerKey,
    pub uid: String,
    pub generation: i64,
    pub replicas: usize,
    pub min_ready_seconds: i64,
    pub selector: LabelSelector,
    pub template_labels: Map<String, Value>,
    pub deleting: bool,
    /// The stored object, for the pod template, the owner reference and
    /// the current status.
    pub object: Value,
}

impl ReplicaOwner {
    pub fn from_object(kind: OwnerKind, object: Value) -> Result<ReplicaOwner, OwnerError> {
        let text = |pointer: &str, field: &'static str| {
            str_at(&object, pointer)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or(OwnerError::Incomplete {
                    kind: kind.kind(),
                    field,
                })
        };
        let key = OwnerKey {
            kind,
            namespace: text("/metadata/namespace", "metadata.namespace")?,
            name: text("/metadata/name", "metadata.name")?,
        };
        let uid = text("/metadata/uid", "metadata.uid")?;
        let selector_value = object
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        let selector = match kind {
            OwnerKind::ReplicationController => match &selector_value {
                Value::Object(map) => LabelSelector::from_map(map),
                // Defaulting fills it from the template; none selects
                // nothing rather than everything.
                _ => Ok(LabelSelector::nothing()),
            },
            OwnerKind::ReplicaSet => LabelSelector::from_api(&selector_value),
        }
        .map_err(|source| OwnerError::Selector {
            key: key.clone(),
            source,
        })?;
        let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64);
        Ok(ReplicaOwner {
            uid,
            generation: number("/metadata/generation").unwrap_or(0),
            replicas: number("/spec/replicas").unwrap_or(1).max(0) as usize,
            min_ready_seconds: number("/spec/minReadySeconds").unwrap_or(0).max(0),
            selector,
            template_labels: object
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            deleting: object.pointer("/metadata/deletionTimestamp").is_some(),
            key,
            object,
        })
    }
}

/// The controller reference of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A pod, as the controller needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Map<String, Value>,
    pub controller: Option<ControllerRef>,
    pub deleting: bool,
    pub phase: String,
    pub node_name: String,
    pub ready: bool,
    /// When the Ready condition last changed.
    pub ready_since: Option<Timestamp>,
    pub restarts: i64,
    pub created: Option<Timestamp>,
    pub deletion_cost: i32,
}

fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    value.and_then(Value::as_str).and_then(|t| t.parse().ok())
}

impl PodInfo {
    pub fn from_object(object: &Value) -> PodInfo {
        let text = |pointer: &str| str_at(object, pointer).unwrap_or_default().to_owned();
        let controller = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            .map(|r| ControllerRef {
                api_version: str_at(r, "/apiVersion").unwrap_or_default().to_owned(),
                kind: str_at(r, "/kind").unwrap_or_default().to_owned(),
                name: str_at(r, "/name").unwrap_or_default().to_owned(),
                uid: str_at(r, "/uid").unwrap_or_default().to_owned(),
            });
        let ready_condition = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
        let restarts = object
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
            .max()
            .unwrap_or(0);
        PodInfo {
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
            labels: object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            controller,
            deleting: object.pointer("/metadata/deletionTimestamp").is_some(),
            phase: text("/status/phase"),
            node_name: text("/spec/nodeName"),
            ready: ready_condition
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
                == Some("True"),
            ready_since: timestamp(ready_condition.and_then(|c| c.get("lastTransitionTime"))),
            restarts,
            created: timestamp(object.pointer("/metadata/creationTimestamp")),
            deletion_cost: str_at(
                object,
                &format!("/metadata/annotations/{}", DELETION_COST.replace('/', "~1")),
            )
            .and_then(|cost| cost.parse().ok())
            .unwrap_or(0),
        }
    }

    /// Not finished and not being deleted.
    pub fn is_active(&self) -> bool {
        !self.deleting && self.phase != "Succeeded" && self.phase != "Failed"
    }

    /// Ready for at least `min_ready_seconds` at `now`.
    pub fn is_available(&self, min_ready_seconds: i64, now: Timestamp) -> bool {
        self.ready
            && (min_ready_seconds == 0
                || self.ready_since.is_some_and(|since| {
                    since + jiff::SignedDuration::from_secs(min_ready_seconds) < now
                }))
    }

    /// The owner this pod's controller reference names, if it is a
    /// ReplicationController or ReplicaSet.
    pub fn owner_key(&self) -> Option<OwnerKey> {
        let controller = self.controller.as_ref()?;
        Some(OwnerKey {
            kind: OwnerKind::of_reference(&controller.api_version, &controller.kind)?,
            namespace: self.namespace.clone(),
            name: controller.name.clone(),
        })
    }
}

/// A pod to act on, by name and (as a precondition) uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

impl From<&PodInfo> for PodRef {
    fn from(pod: &PodInfo) -> PodRef {
        PodRef {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }
    }
}

/// The counts in the owner's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaCounts {
    pub replicas: usize,
    pub fully_labeled: usize,
    pub ready: usize,
    pub available: usize,
    pub observed_generation: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaPlan {
    pub adopt: Vec<PodRef>,
    pub release: Vec<PodRef>,
    pub create: usize,
    pub delete: Vec<PodRef>,
    pub counts: ReplicaCounts,
    /// When to look again even if nothing happens: a ready pod becomes
    /// available after `minReadySeconds`, and no event says so.
    pub requeue_after: Option<Duration>,
}

fn is_owned_by(pod: &PodInfo, owner: &ReplicaOwner) -> bool {
    pod.controller.as_ref().is_some_and(|c| c.uid == owner.uid)
}

/// Decides what `owner` does about `pods` (every pod in its namespace) at
/// `now`. With `manage` false (expectations outstanding) it only claims
/// and reports.
pub fn plan<'a>(
    owner: &ReplicaOwner,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    now: Timestamp,
    manage: bool,
) -> ReplicaPlan {
    let mut result = ReplicaPlan::default();
    let mut claimed: Vec<&PodInfo> = Vec::new();
    for pod in pods.into_iter().filter(|pod| pod.is_active()) {
        let matches = owner.selector.matches(&pod.labels);
        match &pod.controller {
            Some(_) if is_owned_by(pod, owner) => {
                if matches {
                    claimed.push(pod);
                } else if !owner.deleting {
                    result.release.push(pod.into());
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner.deleting {
                    result.adopt.push(pod.into());
                    claimed.push(pod);
                }
            }
        }
    }

    if manage && !owner.deleting {
        if claimed.len() < owner.replicas {
            result.create = (owner.replicas - claimed.len()).min(BURST);
        } else if claimed.len() > owner.replicas {
            let count = (claimed.len() - owner.replicas).min(BURST);
            result.delete = victims(&claimed, count, now)
                .into_iter()
                .map(PodRef::from)
                .collect();
        }
    }

    let template = &owner.template_labels;
    let mut counts = ReplicaCounts {
        replicas: claimed.len(),
        observed_generation: owner.generation,
        ..ReplicaCounts::default()
    };
    let mut next_available: Option<Duration> = None;
    for pod in &claimed {
        if template
            .iter()
            .all(|(key, value)| pod.labels.get(key) == Some(value))
        {
            counts.fully_labeled += 1;
        }
        if pod.ready {
            counts.ready += 1;
            if pod.is_available(owner.min_ready_seconds, now) {
                counts.available += 1;
            } else if let Some(since) = pod.ready_since {
                let at = since + jiff::SignedDuration::from_secs(owner.min_ready_seconds);
                let wait = Duration::try_from(at.duration_since(now))
                    .unwrap_or_default()
                    .max(Duration::from_secs(1));
                next_available = Some(next_available.map_or(wait, |w| w.min(wait)));
            }
        }
    }
    result.counts = counts;
    result.requeue_after = next_available;
    result
}

/// Pods per node, for the "doubled up" rank.
fn pods_per_node<'a>(pods: &[&'a PodInfo]) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for pod in pods {
        *counts.entry(pod.node_name.as_str()).or_default() += 1;
    }
    counts
}

/// The `count` pods to delete first.
pub fn victims<'a>(pods: &[&'a PodInfo], count: usize, now: Timestamp) -> Vec<&'a PodInfo> {
    let per_node = pods_per_node(pods);
    let mut ranked: Vec<(&PodInfo, usize)> = pods
        .iter()
        .map(|pod| {
            (
                *pod,
                per_node.get(pod.node_name.as_str()).copied().unwrap_or(0),
            )
        })
        .collect();
    ranked.sort_by(|(a, rank_a), (b, rank_b)| compare_victims(a, *rank_a, b, *rank_b, now));
    ranked.into_iter().take(count).map(|(pod, _)| pod).collect()
}

fn phase_order(phase: &str) -> u8 {
    match phase {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

/// Kubernetes' `logarithmicRankDiff`: the difference of log2 of the ages
/// in nanoseconds, so that pods of about the same age count as equal.
fn log_rank(time: Timestamp, now: Timestamp) -> i64 {
    let age = now.as_nanosecond() - time.as_nanosecond();
    if age > 0 {
        (age as f64).log2() as i64
    } else {
        -1
    }
}

/// Orders two times newest first on a logarithmic scale, with a missing
/// time first; `None` when they count as equal.
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>, now: Timestamp) -> Option<Ordering> {
    match (a, b) {
        (None, None) => None,
        (None, Some(_)) => Some(Ordering::Less),
        (Some(_), None) => Some(Ordering::Greater),
        (Some(a), Some(b)) if a == b => None,
        (Some(a), Some(b)) => {
            let diff = log_rank(a, now) - log_rank(b, now);
            (diff != 0).then(|| diff.cmp(&0))
        }
    }
}

/// `Less` when `a` should be deleted before `b` (see the module comment).
pub fn compare_victims(
    a: &PodInfo,
    rank_a: usize,
    b: &PodInfo,
    rank_b: usize,
    now: Timestamp,
) -> Ordering {
    let unassigned = |pod: &PodInfo| pod.node_name.is_empty();
    unassigned(b)
        .cmp(&unassigned(a))
        .then_with(|| phase_order(&a.phase).cmp(&phase_order(&b.phase)))
        .then_with(|| a.ready.cmp(&b.ready))
        .then_with(|| a.deletion_cost.cmp(&b.deletion_cost))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| {
            if a.ready && b.ready {
                newer_first(a.ready_since, b.ready_since, now).unwrap_or(Ordering::Equal)
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| b.restarts.cmp(&a.restarts))
        .then_with(|| newer_first(a.created, b.created, now).unwrap_or(Ordering::Equal))
        .then_with(|| a.uid.cmp(&b.uid))
}

/// A new pod from the owner's template, controlled by it.
pub fn pod_from_template(owner: &ReplicaOwner) -> Value {
    let template = owner
        .object
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut metadata = json!({
        "generateName": format!("{}-", owner.key.name),
        "namespace": owner.key.namespace,
        "ownerReferences": [controller_reference(&owner.object)],
    });
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(value) = template.pointer(&format!("/metadata/{field}")) {
            metadata[field] = value.clone();
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The status to store for `counts`, keeping the owner's other
/// conditions; `failure` sets (or, if `None`, clears) `ReplicaFailure`.
/// Zero counts are left out, as Kubernetes' `omitempty` does.
pub fn status_document(
    counts: &ReplicaCounts,
    current: &Value,
    failure: Option<(&str, &str)>,
    now: &str,
) -> Value {
    let mut status = json!({"replicas": counts.replicas});
    for (field, value) in [
        ("fullyLabeledReplicas", counts.fully_labeled as i64),
        ("readyReplicas", counts.ready as i64),
        ("availableReplicas", counts.available as i64),
        ("observedGeneration", counts.observed_generation),
    ] {
        if value != 0 {
            status[field] = json!(value);
        }
    }
    let previous: Vec<Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let old_failure = previous
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure"));
    let mut conditions: Vec<Value> = previous
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) != Some("ReplicaFailure"))
        .cloned()
        .collect();
    if let Some((reason, message)) = failure {
        let since = old_failure
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        conditions.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }));
    }
    if !conditions.is_empty() {
        status["conditions"] = Value::Array(conditions);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().expect("time")
    }

    fn ago(seconds: i64) -> String {
        (now() - jiff::SignedDuration::from_secs(seconds))
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn rc(replicas: i64, extra: Value) -> ReplicaOwner {
        let mut object = json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "web", "namespace": "default", "uid": "rc-uid", "generation": 3},
            "spec": {
                "replicas": replicas,
                "selector": {"app": "web"},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}, "annotations": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        });
        json_patch::merge(&mut object, &extra);
        ReplicaOwner::from_object(OwnerKind::ReplicationController, object).expect("valid rc")
    }

    fn pod(name: &str, extra: Value) -> PodInfo {
        let mut object = json!({
            "metadata": {
                "name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "web", "tier": "front"},
                "creationTimestamp": ago(3600),
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController",
                    "name": "web", "uid": "rc-uid", "controller": true}],
            },
            "status": {"phase": "Pending"},
        });
        json_patch::merge(&mut object, &extra);
        PodInfo::from_object(&object)
    }

    fn running(name: &str, node: &str, ready_for: i64) -> PodInfo {
        pod(
            name,
            json!({"spec": {"nodeName": node}, "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": ago(ready_for)}]}}),
        )
    }

    fn names(refs: &[PodRef]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn too_few_pods_creates_the_difference() {
        let plan = plan(&rc(3, json!({})), &[pod("a", json!({}))], now(), true);
        assert_eq!(plan.create, 2);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.counts.replicas, 1);
        assert_eq!(plan.counts.observed_generation, 3);
    }

    #[test]
    fn outstanding_expectations_hold_creates_and_deletes() {
        let owner = rc(3, json!({}));
        assert_eq!(plan(&owner, &[], now(), false).create, 0);
        let many: Vec<PodInfo> = (0..5).map(|i| pod(&format!("p{i}"), json!({}))).collect();
        assert!(plan(&owner, &many, now(), false).delete.is_empty());
    }

    #[test]
    fn creates_and_deletes_are_capped_per_reconcile() {
        assert_eq!(plan(&rc(2000, json!({})), &[], now(), true).create, BURST);
    }

    #[test]
    fn inactive_and_foreign_pods_do_not_count() {
        let pods = [
            pod("done", json!({"status": {"phase": "Succeeded"}})),
            pod("failed", json!({"status": {"phase": "Failed"}})),
            pod("going", json!({"metadata": {"deletionTimestamp": ago(1)}})),
            pod(
                "other",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "v1",
                "kind": "ReplicationController", "name": "x", "uid": "x-uid", "controller": true}]}}),
            ),
            pod("mine", json!({})),
        ];
        let plan = plan(&rc(1, json!({})), &pods, now(), true);
        assert_eq!(plan.counts.replicas, 1);
        assert_eq!((plan.create, plan.delete.len()), (0, 0));
        assert!(plan.adopt.is_empty() && plan.release.is_empty());
    }

    #[test]
    fn matching_orphans_are_adopted_and_strays_released() {
        let orphan = pod("orphan", json!({"metadata": {"ownerReferences": null}}));
        let stranger = pod(
            "stranger",
            json!({"metadata": {"ownerReferences": null,
            "labels": {"app": "db"}}}),
        );
        let relabelled = pod(
            "relabelled",
            json!({"metadata": {"labels": {"app": "debug"}}}),
        );
        let orphan_going = pod(
            "orphan-going",
            json!({"metadata": {"ownerReferences": null,
            "deletionTimestamp": ago(1)}}),
        );
        let pods = [orphan, stranger, relabelled, orphan_going];
        let result = plan(&rc(1, json!({})), &pods, now(), true);
        assert_eq!(names(&result.adopt), ["orphan"]);
        assert_eq!(names(&result.release), ["relabelled"]);
        assert_eq!(result.counts.replicas, 1, "the adopted pod counts");
        assert_eq!(result.create, 0);

        // An owner being deleted neither adopts, releases, creates nor
        // deletes, but still reports.
        let deleting = rc(5, json!({"metadata": {"deletionTimestamp": ago(1)}}));
        let result = plan(&deleting, &pods, now(), true);
        assert!(result.adopt.is_empty() && result.release.is_empty());
        assert_eq!((result.create, result.delete.len()), (0, 0));
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let owner = rc(3, json!({"spec": {"minReadySeconds": 30}}));
        let pods = [
            running("old", "n1", 300),
            running("fresh", "n2", 10),
            pod(
                "partial",
                json!({"metadata": {"labels": {"app": "web", "tier": null}}}),
            ),
        ];
        let result = plan(&owner, &pods, now(), true);
        assert_eq!(
            result.counts,
            ReplicaCounts {
                replicas: 3,
                fully_labeled: 2,
                ready: 2,
                available: 1,
                observed_generation: 3
            }
        );
        assert_eq!(result.requeue_after, Some(Duration::from_secs(20)));
        assert_eq!(
            plan(&rc(1, json!({})), &[running("r", "n", 0)], now(), true).requeue_after,
            None
        );
    }

    fn victim_names(pods: &[PodInfo], count: usize) -> Vec<String> {
        let refs: Vec<&PodInfo> = pods.iter().collect();
        victims(&refs, count, now())
            .into_iter()
            .map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn scale_down_removes_unscheduled_then_pending_then_not_ready_pods() {
        let pods = [
            running("ready", "n1", 600),
            pod("unscheduled", json!({})),
            pod("pending-on-node", json!({"spec": {"nodeName": "n2"}})),
            pod(
                "running-not-ready",
                json!({"spec": {"nodeName": "n3"},
                "status": {"phase": "Running"}}),
            ),
            pod(
                "unknown",
                json!({"spec": {"nodeName": "n4"}, "status": {"phase": "Unknown"}}),
            ),
        ];
        assert_eq!(
            victim_names(&pods, 5),
            [
                "unscheduled",
                "pending-on-node",
                "unknown",
                "running-not-ready",
                "ready"
            ]
        );
    }

    #[test]
    fn among_ready_pods_cost_doubling_up_recency_restarts_and_age_decide() {
        let cheap = pod(
            "cheap",
            json!({"metadata": {"annotations": {DELETION_COST: "-5"}},
            "spec": {"nodeName": "n9"}, "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": ago(9000)}]}}),
        );
        let pods = [
            running("alone", "n1", 600),
            running("doubled-1", "n2", 600_000),
            running("doubled-2", "n2", 600_000),
            cheap,
        ];
        assert_eq!(victim_names(&pods, 2), ["cheap", "doubled-1"]);

        // Same node counts: the more recently ready goes first...
        let pods = [running("long", "n1", 100_000), running("recent", "n2", 60)];
        assert_eq!(victim_names(&pods, 1), ["recent"]);
        // ...and on a log scale, readiness of about the same age is equal,
        // so restarts decide.
        let mut restarted = running("restarted", "n1", 1000);
        restarted.restarts = 4;
        let pods = [running("steady", "n2", 1010), restarted];
        assert_eq!(victim_names(&pods, 1), ["restarted"]);
        // Then the newer pod, then the uid.
        let mut newer = pod("newer", json!({}));
        newer.created = Some(now() - jiff::SignedDuration::from_secs(10));
        let pods = [pod("older", json!({})), newer];
        assert_eq!(victim_names(&pods, 1), ["newer"]);
        let pods = [pod("b", json!({})), pod("a", json!({}))];
        assert_eq!(victim_names(&pods, 1), ["a"], "uid-a sorts first");
    }

    #[test]
    fn surplus_pods_are_deleted_in_victim_order() {
        let pods = [running("keep", "n1", 600), pod("drop", json!({}))];
        let result = plan(&rc(1, json!({})), &pods, now(), true);
        assert_eq!(names(&result.delete), ["drop"]);
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let owner = rc(1, json!({}));
        let created = pod_from_template(&owner);
        assert_eq!(created["metadata"]["generateName"], "web-");
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(
            created["metadata"]["labels"],
            json!({"app": "web", "tier": "front"})
        );
        assert_eq!(created["metadata"]["annotations"], json!({"a": "b"}));
        let reference = &created["metadata"]["ownerReferences"][0];
        assert_eq!(reference["uid"], "rc-uid");
        assert_eq!(reference["kind"], "ReplicationController");
        assert_eq!(reference["controller"], true);
        assert_eq!(created["spec"]["containers"][0]["image"], "nginx");
        let back = PodInfo::from_object(&created);
        assert_eq!(back.owner_key(), Some(owner.key.clone()));
    }

    #[test]
    fn replica_sets_use_label_selector_objects() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "rs", "namespace": "default", "uid": "rs-uid"},
            "spec": {"replicas": 2, "selector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "api"]}]},
                "template": {"metadata": {"labels": {"app": "api"}}, "spec": {}}},
        });
        let owner = ReplicaOwner::from_object(OwnerKind::ReplicaSet, object).expect("rs");
        let orphan = pod("o", json!({"metadata": {"ownerReferences": null}}));
        let result = plan(&owner, &[orphan], now(), true);
        assert_eq!(names(&result.adopt), ["o"]);
        assert_eq!(result.create, 1);
        assert!(ReplicaOwner::from_object(
            OwnerKind::ReplicaSet,
            json!({"metadata": {"name": "x", "namespace": "d", "uid": "u"},
                "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}),
        )
        .is_err());
    }

    #[test]
    fn status_leaves_out_zeros_and_tracks_replica_failure() {
        let counts = ReplicaCounts {
            replicas: 2,
            fully_labeled: 2,
            observed_generation: 1,
            ..ReplicaCounts::default()
        };
        let status = status_document(&counts, &json!({}), None, "t1");
        assert_eq!(
            status,
            json!({"replicas": 2, "fullyLabeledReplicas": 2, "observedGeneration": 1})
        );
        let failed = status_document(&counts, &status, Some(("FailedCreate", "quota")), "t2");
        assert_eq!(failed["conditions"][0]["lastTransitionTime"], "t2");
        let still = status_document(&counts, &failed, Some(("FailedCreate", "quota")), "t3");
        assert_eq!(still["conditions"][0]["lastTransitionTime"], "t2");
        assert_eq!(status_document(&counts, &still, None, "t4"), status);
        assert_eq!(
            status_document(&ReplicaCounts::default(), &json!({}), None, "t"),
            json!({"replicas": 0})
        );
    }
}
