//! The DaemonSet controller: one pod of the template on every eligible
//! node.
//!
//! [`plan`] decides, without I/O, what Kubernetes' DaemonSet controller
//! would, from the DaemonSet, the nodes and the pods it controls:
//!
//! - A node is eligible by the template's `nodeSelector` and required node
//!   affinity, and by its taints: a new pod goes only where every NoSchedule
//!   and NoExecute taint is tolerated; a running pod stays while every
//!   NoExecute taint is. Readiness does not matter, as in Kubernetes. The
//!   template's tolerations are extended with the DaemonSet defaults
//!   ([`default_tolerations`]).
//! - An eligible node without a pod gets one; surplus pods on a node go
//!   (the oldest stays), failed pods go (and are replaced next time), pods
//!   on nodes that are not eligible or gone go.
//! - Pods are bound by the scheduler, not here: each carries a required
//!   node affinity `matchFields metadata.name In [node]` (Kubernetes does
//!   the same since 1.12).
//! - RollingUpdate replaces pods whose `controller-revision-hash` is not
//!   the template's: unavailable old pods at once, available ones only
//!   while fewer than `maxUnavailable` desired nodes are unavailable.
//!   OnDelete leaves old pods alone.
//!
//! The status counts are Kubernetes': desired/current/misscheduled by node,
//! ready/available/updated by pod. [`DaemonSetController`] applies the
//! plan (creations, deletions, status) and folds its writes into its cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Taint, Toleration};
use serde_json::{json, Value};
use skiff_store::StoreError;

use super::deployment::revisions::pod_template_hash;
use super::events::{EventRecord, EventRecorder, EventType, InvolvedObject};
use super::gc::controller_reference;
use super::watchcache::{self, split_key, Action, Change, Informer, Reconciler};
use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::{DeleteOptions, Deleted, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};
use crate::scheduler::filters::{affinity_matches, tolerates};
use crate::scheduler::view::{NodeView, PodRequest};

pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

const DAEMONSETS: usize = 0;
const PODS: usize = 1;
const NODES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tolerations Kubernetes adds to every daemon pod.
pub fn default_tolerations() -> Vec<Value> {
    let mut tolerations = Vec::new();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute"}));
    }
    for key in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoSchedule"}));
    }
    tolerations
}

/// The template's tolerations with the defaults added, replacing any of
/// the same key and effect (Kubernetes' `AddOrUpdateDaemonPodTolerations`:
/// a daemon pod tolerates these without time limit).
fn with_default_tolerations(existing: &[Value]) -> Vec<Value> {
    let defaults = default_tolerations();
    let mut tolerations: Vec<Value> = existing
        .iter()
        .filter(|t| {
            !defaults
                .iter()
                .any(|d| t.get("key") == d.get("key") && t.get("effect") == d.get("effect"))
        })
        .cloned()
        .collect();
    tolerations.extend(defaults);
    tolerations
}

/// Whether a node may get a new daemon pod, and whether one already there
/// may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// What the template asks of nodes, decoded once per plan.
pub struct TemplateFit {
    request: PodRequest,
    tolerations: Vec<Toleration>,
}

impl TemplateFit {
    pub fn new(template_spec: &Value) -> TemplateFit {
        let mut spec: PodSpec = serde_json::from_value(template_spec.clone()).unwrap_or_default();
        let existing: Vec<Value> = template_spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let tolerations: Vec<Toleration> = with_default_tolerations(&existing)
            .into_iter()
            .filter_map(|t| serde_json::from_value(t).ok())
            .collect();
        spec.tolerations = Some(tolerations.clone());
        let pod = Pod {
            spec: Some(spec),
            ..Default::default()
        };
        TemplateFit {
            request: PodRequest::from_pod(&pod),
            tolerations,
        }
    }

    /// Kubernetes' `NodeShouldRunDaemonPod`.
    pub fn eligibility(&self, node: &Value) -> Eligibility {
        let Ok(typed) = serde_json::from_value::<Node>(node.clone()) else {
            return Eligibility {
                should_run: false,
                should_continue_running: false,
            };
        };
        let mut view = NodeView::from_node(&typed);
        // The node's own taints, not the ones the scheduler implies from
        // its readiness: a DaemonSet does not care whether a node is Ready.
        let taints: Vec<Taint> = typed
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        view.taints = taints.clone();
        if !affinity_matches(&self.request, &view) {
            return Eligibility {
                should_run: false,
                should_continue_running: false,
            };
        }
        let untolerated = |effects: &[&str]| {
            taints.iter().any(|taint| {
                effects.contains(&taint.effect.as_str())
                    && !self.tolerations.iter().any(|t| tolerates(t, taint))
            })
        };
        Eligibility {
            should_run: !untolerated(&["NoSchedule", "NoExecute"]),
            should_continue_running: !untolerated(&["NoExecute"]),
        }
    }
}

/// The node a daemon pod is for: where it is bound, or else the node its
/// `matchFields` affinity names.
pub fn target_node(pod: &Value) -> Option<String> {
    if let Some(node) = str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()) {
        return Some(node.to_owned());
    }
    pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|term| term.get("matchFields").and_then(Value::as_array))
        .flatten()
        .find(|r| r["key"] == "metadata.name" && r["operator"] == "In")
        .and_then(|r| r.pointer("/values/0"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The template's hash: `controller-revision-hash` on its pods.
pub fn template_hash(ds: &Value) -> String {
    let template = ds
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    pod_template_hash(
        &template,
        ds.pointer("/status/collisionCount").and_then(Value::as_i64),
    )
}

/// A daemon pod for `node`, controlled by the DaemonSet.
pub fn daemon_pod(ds: &Value, node: &str, hash: &str) -> Value {
    let template = ds
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let name = str_at(ds, "/metadata/name").unwrap_or_default();
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels[CONTROLLER_REVISION_HASH] = json!(hash);
    labels[POD_TEMPLATE_GENERATION] = json!(ds
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .to_string());
    let mut metadata = json!({
        "generateName": format!("{name}-"),
        "namespace": ds.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "labels": labels,
        "ownerReferences": [controller_reference(ds)],
    });
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let existing: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    spec["tolerations"] = Value::Array(with_default_tolerations(&existing));
    // Kubernetes' ReplaceDaemonSetPodNodeNameNodeAffinity: every required
    // term gets `metadata.name In [node]` as its only field requirement.
    let by_name = json!([{"key": "metadata.name", "operator": "In", "values": [node]}]);
    let terms_pointer =
        "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
    let mut terms: Vec<Value> = spec
        .pointer(terms_pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if terms.is_empty() {
        terms.push(json!({}));
    }
    for term in &mut terms {
        term["matchFields"] = by_name.clone();
    }
    if !spec.get("affinity").is_some_and(Value::is_object) {
        spec["affinity"] = json!({});
    }
    if !spec["affinity"]
        .get("nodeAffinity")
        .is_some_and(Value::is_object)
    {
        spec["affinity"]["nodeAffinity"] = json!({});
    }
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": terms});
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// A pod to act on, by name and (as a precondition) uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

fn pod_ref(pod: &Value) -> PodRef {
    PodRef {
        name: str_at(pod, "/metadata/name").unwrap_or_default().to_owned(),
        uid: str_at(pod, "/metadata/uid").unwrap_or_default().to_owned(),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonCounts {
    pub desired: i64,
    pub current: i64,
    pub misscheduled: i64,
    pub ready: i64,
    pub available: i64,
    pub updated: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonPlan {
    /// Nodes to create a pod for.
    pub create_on: Vec<String>,
    pub delete: Vec<PodRef>,
    pub counts: DaemonCounts,
    pub requeue_after: Option<Duration>,
}

fn ready_since(pod: &Value) -> Option<Option<Timestamp>> {
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?;
    Some(
        ready
            .get("lastTransitionTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok()),
    )
}

fn is_available(pod: &Value, min_ready_seconds: i64, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            since.is_some_and(|s| s + SignedDuration::from_secs(min_ready_seconds) <= now)
        }
    }
}

/// `maxUnavailable` as a number of nodes out of `desired` (a percentage
/// rounds up), at least 1.
pub fn max_unavailable(ds: &Value, desired: i64) -> i64 {
    let value = ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable");
    let resolved = match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(1),
        Some(Value::String(text)) => match text.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(percent)) => (percent * desired + 99) / 100,
            _ => text.parse().unwrap_or(1),
        },
        _ => 1,
    };
    resolved.max(1)
}

/// Decides what the DaemonSet does about `nodes` and `pods` (those it
/// controls) at `now`.
pub fn plan(ds: &Value, nodes: &[&Value], pods: &[&Value], now: Timestamp) -> DaemonPlan {
    let hash = template_hash(ds);
    let fit = TemplateFit::new(ds.pointer("/spec/template/spec").unwrap_or(&Value::Null));
    let min_ready = ds
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let rolling = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";

    let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = target_node(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    let mut result = DaemonPlan::default();
    // Per desired node: its one kept pod, if any.
    let mut kept: Vec<(&str, Option<&Value>)> = Vec::new();
    for node in nodes {
        let name = str_at(node, "/metadata/name").unwrap_or_default();
        let eligibility = fit.eligibility(node);
        let here = by_node.remove(name).unwrap_or_default();
        let (deleting, mut live): (Vec<&Value>, Vec<&Value>) = here
            .into_iter()
            .partition(|p| p.pointer("/metadata/deletionTimestamp").is_some());
        let scheduled = !live.is_empty() || !deleting.is_empty();
        if eligibility.should_run {
            result.counts.desired += 1;
            if scheduled {
                result.counts.current += 1;
            }
        } else if scheduled {
            result.counts.misscheduled += 1;
        }
        if !eligibility.should_continue_running {
            result.delete.extend(live.iter().map(|p| pod_ref(p)));
            continue;
        }
        // Failed pods are replaced.
        let (failed, running): (Vec<&Value>, Vec<&Value>) = live
            .drain(..)
            .partition(|p| str_at(p, "/status/phase") == Some("Failed"));
        result.delete.extend(failed.iter().map(|p| pod_ref(p)));
        live = running;
        live.sort_by_key(|p| {
            str_at(p, "/metadata/creationTimestamp")
                .unwrap_or_default()
                .to_owned()
        });
        if live.len() > 1 {
            result.delete.extend(live[1..].iter().map(|p| pod_ref(p)));
        }
        let pod = live.first().copied();
        if eligibility.should_run {
            if pod.is_none() && deleting.is_empty() && failed.is_empty() {
                result.create_on.push(name.to_owned());
            }
            if let Some(pod) = pod {
                if ready_since(pod).is_some() {
                    result.counts.ready += 1;
                }
                if is_available(pod, min_ready, now) {
                    result.counts.available += 1;
                } else if min_ready > 0 && ready_since(pod).is_some() {
                    result.requeue_after = Some(Duration::from_secs(min_ready as u64));
                }
                if str_at(pod, &format!("/metadata/labels/{CONTROLLER_REVISION_HASH}"))
                    == Some(hash.as_str())
                {
                    result.counts.updated += 1;
                }
            }
            kept.push((name, pod));
        }
    }
    // Pods for nodes that are gone.
    for pods in by_node.values() {
        result.delete.extend(
            pods.iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .map(|p| pod_ref(p)),
        );
    }

    if rolling {
        let budget = max_unavailable(ds, result.counts.desired);
        let unavailable = kept
            .iter()
            .filter(|(_, pod)| !pod.is_some_and(|p| is_available(p, min_ready, now)))
            .count() as i64;
        let old: Vec<&Value> = kept
            .iter()
            .filter_map(|(_, pod)| *pod)
            .filter(|p| {
                str_at(p, &format!("/metadata/labels/{CONTROLLER_REVISION_HASH}"))
                    != Some(hash.as_str())
            })
            .collect();
        let (old_unavailable, old_available): (Vec<&Value>, Vec<&Value>) = old
            .into_iter()
            .partition(|p| !is_available(p, min_ready, now));
        // An old pod that is not available costs nothing to replace.
        result
            .delete
            .extend(old_unavailable.iter().map(|p| pod_ref(p)));
        let room = (budget - unavailable).max(0) as usize;
        result
            .delete
            .extend(old_available.iter().take(room).map(|p| pod_ref(p)));
    }
    result
}

/// The status to store, keeping what the counts do not cover.
pub fn status_document(current: &Value, counts: &DaemonCounts, generation: i64) -> Value {
    let mut status = current.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["desiredNumberScheduled"] = json!(counts.desired);
    status["currentNumberScheduled"] = json!(counts.current);
    status["numberMisscheduled"] = json!(counts.misscheduled);
    status["numberReady"] = json!(counts.ready);
    status["observedGeneration"] = json!(generation);
    let map = status.as_object_mut();
    if let Some(map) = map {
        for (field, value) in [
            ("numberAvailable", counts.available),
            ("updatedNumberScheduled", counts.updated),
            ("numberUnavailable", counts.desired - counts.available),
        ] {
            if value > 0 {
                map.insert(field.into(), json!(value));
            } else {
                map.remove(field);
            }
        }
    }
    status
}

fn info(group: &str, plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
}

/// A DaemonSet, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DaemonSetKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for DaemonSetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DaemonSet {}/{}", self.namespace, self.name)
    }
}

fn owning_daemonset(pod: &Value) -> Option<(String, String)> {
    let reference = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    (str_at(reference, "/kind") == Some("DaemonSet")
        && str_at(reference, "/apiVersion") == Some("apps/v1"))
    .then(|| {
        (
            str_at(reference, "/name").unwrap_or_default().to_owned(),
            str_at(reference, "/uid").unwrap_or_default().to_owned(),
        )
    })
}

pub struct DaemonSetController {
    registry: Arc<Registry>,
    events: EventRecorder,
}

impl DaemonSetController {
    pub fn new(registry: Arc<Registry>) -> DaemonSetController {
        DaemonSetController {
            events: EventRecorder::new(registry.clone(), "daemonset-controller"),
            registry,
        }
    }

    pub async fn run(self) {
        let store = self.registry.store.clone();
        watchcache::run(self, store).await
    }

    async fn event(&self, ds: &Value, warning: bool, reason: &str, message: String) {
        self.events
            .emit(EventRecord {
                involved: InvolvedObject::of(ds),
                event_type: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.into(),
                message,
            })
            .await;
    }
}

impl Reconciler for DaemonSetController {
    type Key = DaemonSetKey;
    type Error = DaemonSetError;

    fn name(&self) -> &'static str {
        "daemonset"
    }

    fn prefixes(&self) -> Vec<String> {
        [("apps", "daemonsets"), ("", "pods"), ("", "nodes")]
            .iter()
            .filter_map(|(group, plural)| resources::find(group, "v1", plural))
            .map(|info| info.key_prefix(None))
            .collect()
    }

    fn keys_for(&self, change: &Change, informer: &Informer) -> Vec<DaemonSetKey> {
        match change.source {
            DAEMONSETS => split_key(&change.key, informer.prefix(DAEMONSETS))
                .map(|(namespace, name)| DaemonSetKey {
                    namespace: namespace.into(),
                    name: name.into(),
                })
                .into_iter()
                .collect(),
            PODS => {
                let mut keys: Vec<DaemonSetKey> = change
                    .old
                    .iter()
                    .chain(change.new.iter())
                    .filter_map(|pod| {
                        let (name, _) = owning_daemonset(pod)?;
                        Some(DaemonSetKey {
                            namespace: str_at(pod, "/metadata/namespace")?.to_owned(),
                            name,
                        })
                    })
                    .collect();
                keys.dedup();
                keys
            }
            // A node joined, left, or changed labels or taints: every
            // DaemonSet looks again. Heartbeats alone change nothing here.
            _ => {
                let relevant = |node: Option<&Value>| {
                    node.map(|n| {
                        (
                            n.pointer("/metadata/labels").cloned(),
                            n.pointer("/spec").cloned(),
                        )
                    })
                };
                if change.old.is_some()
                    && change.new.is_some()
                    && relevant(change.old.as_ref()) == relevant(change.new.as_ref())
                {
                    return Vec::new();
                }
                self.all_keys(informer)
            }
        }
    }

    fn all_keys(&self, informer: &Informer) -> Vec<DaemonSetKey> {
        informer
            .objects(DAEMONSETS)
            .filter_map(|(key, _)| split_key(key, informer.prefix(DAEMONSETS)))
            .map(|(namespace, name)| DaemonSetKey {
                namespace: namespace.into(),
                name: name.into(),
            })
            .collect()
    }

    async fn reconcile(
        &self,
        key: &DaemonSetKey,
        informer: &mut Informer,
        now: Timestamp,
    ) -> Result<Action, DaemonSetError> {
        let daemonsets = info("apps", "daemonsets")?;
        let pods_info = info("", "pods")?;
        let Some(ds) = informer
            .get(DAEMONSETS, &daemonsets.key(Some(&key.namespace), &key.name))
            .cloned()
        else {
            return Ok(Action::default());
        };
        if ds.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::default());
        }
        let uid = str_at(&ds, "/metadata/uid").unwrap_or_default().to_owned();
        let pods: Vec<Value> = informer
            .in_namespace(PODS, &key.namespace)
            .filter(|pod| owning_daemonset(pod).is_some_and(|(_, owner)| owner == uid))
            .cloned()
            .collect();
        let nodes: Vec<Value> = informer.objects(NODES).map(|(_, n)| n.clone()).collect();
        let plan = plan(
            &ds,
            &nodes.iter().collect::<Vec<_>>(),
            &pods.iter().collect::<Vec<_>>(),
            now,
        );

        let mut first_error: Option<ApiError> = None;
        let hash = template_hash(&ds);
        for node in &plan.create_on {
            match self
                .registry
                .create(
                    pods_info,
                    Some(&key.namespace),
                    daemon_pod(&ds, node, &hash),
                    false,
                )
                .await
            {
                Ok(kv) => {
                    informer.fold_written(PODS, &kv);
                    let name = objects::value(&kv)
                        .ok()
                        .and_then(|pod| str_at(&pod, "/metadata/name").map(str::to_owned))
                        .unwrap_or_default();
                    self.event(
                        &ds,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    )
                    .await;
                }
                Err(error) => {
                    self.event(
                        &ds,
                        true,
                        "FailedCreate",
                        format!("Error creating: {error}"),
                    )
                    .await;
                    first_error = Some(error);
                    break;
                }
            }
        }
        for pod in &plan.delete {
            let options = DeleteOptions {
                precondition_uid: Some(pod.uid.clone()),
                ..DeleteOptions::default()
            };
            let pod_key = pods_info.key(Some(&key.namespace), &pod.name);
            match self
                .registry
                .delete(pods_info, Some(&key.namespace), &pod.name, &options)
                .await
            {
                Ok(deleted) => {
                    match deleted {
                        Deleted::Gone(gone) => {
                            let revision = str_at(&gone, "/metadata/resourceVersion")
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            informer.fold_deleted(PODS, &pod_key, revision);
                        }
                        Deleted::Pending(pending) => informer.fold_object(PODS, &pod_key, &pending),
                    }
                    self.event(
                        &ds,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name),
                    )
                    .await;
                }
                Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }

        let current = ds.get("status").cloned().unwrap_or(Value::Null);
        let generation = ds
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let wanted = status_document(&current, &plan.counts, generation);
        if wanted != current {
            let mut updated = ds.clone();
            updated["status"] = wanted;
            match self
                .registry
                .update(
                    daemonsets,
                    Some(&key.namespace),
                    &key.name,
                    updated,
                    WriteMode {
                        status_only: true,
                        dry_run: false,
                    },
                )
                .await
            {
                Ok(kv) => informer.fold_written(DAEMONSETS, &kv),
                Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(Action::requeue(plan.requeue_after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    const NOW: &str = "2025-01-01T01:00:00Z";

    fn ds(extra_spec: Value) -> Value {
        let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "ds-uid", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}});
        if let Some(map) = extra_spec.as_object() {
            for (k, v) in map {
                ds["spec"][k] = v.clone();
            }
        }
        ds
    }

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod_on(ds: &Value, node: &str, name: &str, ready: bool) -> Value {
        let mut pod = daemon_pod(ds, node, &template_hash(ds));
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["uid"] = json!(format!("uid-{name}"));
        pod["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
        pod["spec"]["nodeName"] = json!(node);
        pod["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready",
            "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
        pod
    }

    #[test]
    fn every_eligible_node_gets_one_pod_with_affinity_and_tolerations() {
        let ds = ds(json!({}));
        let (a, b) = (
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        );
        let existing = pod_on(&ds, "a", "agent-x", true);
        let plan = plan(&ds, &[&a, &b], &[&existing], at(NOW));
        assert_eq!(plan.create_on, ["b"]);
        assert!(plan.delete.is_empty());
        assert_eq!(
            plan.counts,
            DaemonCounts {
                desired: 2,
                current: 1,
                misscheduled: 0,
                ready: 1,
                available: 1,
                updated: 1
            }
        );

        let pod = daemon_pod(&ds, "b", "h1");
        assert_eq!(target_node(&pod).as_deref(), Some("b"));
        assert_eq!(pod["metadata"]["labels"][CONTROLLER_REVISION_HASH], "h1");
        assert_eq!(pod["metadata"]["labels"][POD_TEMPLATE_GENERATION], "2");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        let tolerations = pod["spec"]["tolerations"].as_array().expect("tolerations");
        assert_eq!(tolerations.len(), 6);
        assert!(tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"
                && t["effect"] == "NoExecute"
                && t.get("tolerationSeconds").is_none()));
    }

    #[test]
    fn selectors_and_taints_decide_eligibility_not_readiness() {
        let ds = ds(json!({}));
        let mut selective = ds.clone();
        selective["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        let fit = TemplateFit::new(&selective["spec"]["template"]["spec"]);
        let ssd = node("a", json!({"disk": "ssd"}), json!([]));
        let hdd = node("b", json!({"disk": "hdd"}), json!([]));
        assert!(fit.eligibility(&ssd).should_run);
        assert!(!fit.eligibility(&hdd).should_run);

        let fit = TemplateFit::new(&ds["spec"]["template"]["spec"]);
        let mut not_ready = node("c", json!({}), json!([]));
        not_ready["status"]["conditions"][0]["status"] = json!("False");
        assert!(
            fit.eligibility(&not_ready).should_run,
            "readiness does not matter"
        );
        let cordoned = node(
            "d",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert!(
            fit.eligibility(&cordoned).should_run,
            "tolerated by default"
        );
        let dedicated = node(
            "e",
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            fit.eligibility(&dedicated),
            Eligibility {
                should_run: false,
                should_continue_running: true
            }
        );
        let evicting = node(
            "f",
            json!({}),
            json!([{"key": "dedicated", "effect": "NoExecute"}]),
        );
        assert!(!fit.eligibility(&evicting).should_continue_running);
    }

    #[test]
    fn pods_on_ineligible_or_gone_nodes_and_duplicates_are_deleted() {
        let ds = ds(json!({}));
        let tainted = node("t", json!({}), json!([{"key": "x", "effect": "NoExecute"}]));
        let a = node("a", json!({}), json!([]));
        let on_tainted = pod_on(&ds, "t", "p1", true);
        let on_gone = pod_on(&ds, "gone", "p2", true);
        let first = pod_on(&ds, "a", "p3", true);
        let mut second = pod_on(&ds, "a", "p4", true);
        second["metadata"]["creationTimestamp"] = json!("2025-01-01T00:30:00Z");
        let plan = plan(
            &ds,
            &[&tainted, &a],
            &[&on_tainted, &on_gone, &first, &second],
            at(NOW),
        );
        let deleted: Vec<&str> = plan.delete.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(deleted, ["p1", "p4", "p2"]);
        assert!(plan.create_on.is_empty());
        assert_eq!(plan.counts.desired, 1);
        assert_eq!(plan.counts.misscheduled, 1);
    }

    #[test]
    fn rolling_update_replaces_within_max_unavailable_and_on_delete_waits() {
        let old_ds = ds(json!({}));
        let nodes: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let node_refs: Vec<&Value> = nodes.iter().collect();
        let mut new_ds = old_ds.clone();
        new_ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!("agent:2");
        let old_pods = [
            pod_on(&old_ds, "a", "pa", true),
            pod_on(&old_ds, "b", "pb", false),
            pod_on(&old_ds, "c", "pc", true),
        ];
        let refs: Vec<&Value> = old_pods.iter().collect();
        let plan = plan(&new_ds, &node_refs, &refs, at(NOW));
        // pb is unavailable already: it goes for free, and uses the budget.
        let deleted: Vec<&str> = plan.delete.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(deleted, ["pb"]);
        assert_eq!(plan.counts.updated, 0);

        let mut all_ready = old_pods.clone();
        all_ready[1] = pod_on(&old_ds, "b", "pb", true);
        let refs: Vec<&Value> = all_ready.iter().collect();
        let mut wider = new_ds.clone();
        wider["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!("50%");
        let plan = super::plan(&wider, &node_refs, &refs, at(NOW));
        assert_eq!(plan.delete.len(), 2, "50% of 3 rounds up to 2");

        let mut on_delete = new_ds.clone();
        on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        let plan = super::plan(&on_delete, &node_refs, &refs, at(NOW));
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn status_reports_what_rollout_status_reads() {
        let status = status_document(
            &json!({"collisionCount": 0}),
            &DaemonCounts {
                desired: 2,
                current: 2,
                misscheduled: 0,
                ready: 2,
                available: 2,
                updated: 2,
            },
            3,
        );
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["updatedNumberScheduled"], 2);
        assert_eq!(status["numberAvailable"], 2);
        assert!(status.get("numberUnavailable").is_none());
        assert_eq!(status["collisionCount"], 0);
    }
}
