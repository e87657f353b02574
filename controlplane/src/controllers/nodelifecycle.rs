//! The node lifecycle controller: notices nodes whose agent stopped
//! heartbeating, taints unhealthy nodes, evicts pods from NoExecute taints
//! and deletes the pods of nodes that are gone.
//!
//! Mechanism, as in Kubernetes' node lifecycle controller, taint manager
//! and pod garbage collector:
//!
//! - A node whose Ready condition's `lastHeartbeatTime` (or, before its
//!   first report, its creation) is older than the grace period
//!   (`--node-monitor-grace-period`, 40 s) gets every condition set to
//!   `Unknown` with reason `NodeStatusUnknown`, and its pods' Ready
//!   condition set to False.
//! - A node that is Unknown carries `node.kubernetes.io/unreachable`, one
//!   that reports Ready=False `node.kubernetes.io/not-ready`, each with
//!   effects NoSchedule and NoExecute; a Ready node carries neither. The
//!   agent's next heartbeat brings the conditions back, and the taints go.
//! - A pod on a node with a NoExecute taint it does not tolerate is
//!   deleted at once; one that tolerates it for `tolerationSeconds` is
//!   deleted when that much time has passed since the taint's `timeAdded`.
//! - Pods bound to a node that does not exist are deleted with no grace
//!   period: at once when the node's deletion was seen, after 40 s
//!   (Kubernetes' PodGC quarantine) when the node was never seen.
//!
//! Ordering rules: taints are written before conditions, and both before
//! any pod is touched, so a pod is never evicted for a taint that is not
//! stored. Everything is decided by the pure [`plan_node`] and
//! [`eviction`]; [`NodeLifecycleController::reconcile`] only writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use skiff_store::StoreError;

use super::events::{EventRecord, EventRecorder, EventType, InvolvedObject};
use super::watchcache::{self, Action, Change, Informer, Reconciler};
use crate::api::errors::ApiError;
use crate::api::objects::str_at;
use crate::api::registry::{DeleteOptions, Deleted, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Kubernetes' default `--node-monitor-grace-period`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// How long a pod bound to a node never seen waits before it is deleted
/// (Kubernetes' PodGC quarantine).
pub const ORPHAN_QUARANTINE: Duration = Duration::from_secs(40);

const NODES: usize = 0;
const PODS: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's health, as the controller judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    NotReady,
    Unknown,
}

/// What to do about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    pub health: Health,
    /// Conditions to store (all `Unknown`), when the heartbeats stopped.
    pub conditions: Option<Vec<Value>>,
    /// Taints to store, when they change.
    pub taints: Option<Vec<Value>>,
    /// When to look again if nothing happens: when the heartbeat expires.
    pub recheck_after: Option<Duration>,
}

fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    value.and_then(Value::as_str).and_then(|t| t.parse().ok())
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

fn to_std(duration: SignedDuration) -> Duration {
    Duration::try_from(duration).unwrap_or_default()
}

fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The node's own word on when it last reported: the Ready condition's
/// `lastHeartbeatTime`, or before any report its creation.
pub fn reported_probe(node: &Value) -> Option<Timestamp> {
    timestamp(ready_condition(node).and_then(|c| c.get("lastHeartbeatTime")))
        .or_else(|| timestamp(node.pointer("/metadata/creationTimestamp")))
}

/// When the controller last saw each node's heartbeat move, on its own
/// clock, as Kubernetes keeps it: a control plane that was down longer
/// than the grace period, or a skewed clock, must not make every node look
/// silent the moment it starts.
#[derive(Debug, Default)]
pub struct ProbeTimes {
    seen: HashMap<String, (Option<String>, Timestamp)>,
}

impl ProbeTimes {
    /// Records the node's current heartbeat and returns when it last
    /// changed, as first seen at `now`.
    pub fn observe(&mut self, node: &Value, now: Timestamp) -> Timestamp {
        let name = str_at(node, "/metadata/name").unwrap_or_default();
        let heartbeat = ready_condition(node)
            .and_then(|c| c.get("lastHeartbeatTime"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        match self.seen.get(name) {
            Some((known, since)) if *known == heartbeat => *since,
            _ => {
                // A node seen for the first time counts from its creation
                // if that is recent, and from now otherwise.
                let since = if self.seen.contains_key(name) || heartbeat.is_some() {
                    now
                } else {
                    reported_probe(node).map_or(now, |created| created.min(now))
                };
                self.seen.insert(name.to_owned(), (heartbeat, since));
                since
            }
        }
    }

    pub fn forget(&mut self, node: &str) {
        self.seen.remove(node);
    }
}

/// Decides the node's health, conditions and taints at `now`, given when
/// its heartbeat was last seen to move (`probe`).
pub fn plan_node(node: &Value, probe: Timestamp, now: Timestamp, grace: Duration) -> NodePlan {
    let ready = ready_condition(node);
    let expires = probe + SignedDuration::try_from(grace).unwrap_or(SignedDuration::ZERO);
    let stale = now >= expires;
    let reported = ready
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    let health = match (stale, reported) {
        (true, _) => Health::Unknown,
        (false, "True") => Health::Ready,
        (false, "False") => Health::NotReady,
        // Never reported yet, or already marked Unknown and not renewed.
        (false, _) if ready.is_none() => Health::NotReady,
        (false, _) => Health::Unknown,
    };
    let conditions = (stale && (ready.is_none() || reported != "Unknown")).then(|| {
        unknown_conditions(
            node.pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &rfc3339(now),
        )
    });
    let current: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let wanted = desired_taints(&current, health, &rfc3339(now));
    NodePlan {
        health,
        conditions,
        taints: (wanted != current).then_some(wanted),
        recheck_after: (!stale).then(|| to_std(expires.duration_since(now))),
    }
}

/// Every condition set to `Unknown`, as Kubernetes does when the kubelet
/// stops posting status; heartbeat times are kept, transitions move.
pub fn unknown_conditions(conditions: &[Value], now: &str) -> Vec<Value> {
    let mut result: Vec<Value> = conditions
        .iter()
        .map(|condition| {
            let mut condition = condition.clone();
            if condition.get("status").and_then(Value::as_str) != Some("Unknown") {
                condition["lastTransitionTime"] = json!(now);
            }
            condition["status"] = json!("Unknown");
            condition["reason"] = json!("NodeStatusUnknown");
            condition["message"] = json!("Kubelet stopped posting node status.");
            condition
        })
        .collect();
    if !result
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
    {
        result.push(json!({
            "type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
            "message": "Kubelet never posted node status.",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }));
    }
    result
}

fn is_ours(taint: &Value) -> bool {
    matches!(
        taint.get("key").and_then(Value::as_str),
        Some(TAINT_UNREACHABLE) | Some(TAINT_NOT_READY)
    ) && matches!(
        taint.get("effect").and_then(Value::as_str),
        Some("NoSchedule") | Some("NoExecute")
    )
}

/// The node's taints for `health`: others' taints kept in order, ours
/// added or removed; a taint that stays keeps its `timeAdded`.
pub fn desired_taints(current: &[Value], health: Health, now: &str) -> Vec<Value> {
    let key = match health {
        Health::Ready => None,
        Health::NotReady => Some(TAINT_NOT_READY),
        Health::Unknown => Some(TAINT_UNREACHABLE),
    };
    let mut result: Vec<Value> = current
        .iter()
        .filter(|taint| !is_ours(taint) || taint.get("key").and_then(Value::as_str) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let present = result.iter().any(|t| {
                t.get("key").and_then(Value::as_str) == Some(key)
                    && t.get("effect").and_then(Value::as_str) == Some(effect)
            });
            if !present {
                let mut taint = json!({"key": key, "effect": effect});
                if effect == "NoExecute" {
                    taint["timeAdded"] = json!(now);
                }
                result.push(taint);
            }
        }
    }
    result
}

/// What the taint manager does with one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Keep,
    Now,
    At(Timestamp),
}

fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let text = |value: &Value, field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let effect = text(toleration, "effect");
    if !effect.is_empty() && effect != text(taint, "effect") {
        return false;
    }
    let key = text(toleration, "key");
    if !key.is_empty() && key != text(taint, "key") {
        return false;
    }
    match toleration
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("Equal")
    {
        "Exists" => true,
        "Equal" | "" => text(toleration, "value") == text(taint, "value"),
        _ => false,
    }
}

/// Whether (and when) a pod with `tolerations` is evicted by the NoExecute
/// taints among `taints`, at `now`.
pub fn eviction(tolerations: &[Value], taints: &[Value], now: Timestamp) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints
        .iter()
        .filter(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute"))
    {
        let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        // The shortest tolerationSeconds wins; without one it is forever.
        let seconds = matching
            .iter()
            .map(|t| t.get("tolerationSeconds").and_then(Value::as_i64))
            .min_by(|a, b| match (a, b) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .flatten();
        if let Some(seconds) = seconds {
            let added = timestamp(taint.get("timeAdded")).unwrap_or(now);
            let at = added + SignedDuration::from_secs(seconds.max(0));
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    match earliest {
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
        None => Eviction::Keep,
    }
}

/// A pod's Ready condition set to False, if it was not already.
pub fn pod_status_not_ready(pod: &Value, now: &str) -> Option<Value> {
    let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    let conditions = status.get_mut("conditions")?.as_array_mut()?;
    let ready = conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    if ready.get("status").and_then(Value::as_str) == Some("False") {
        return None;
    }
    ready["status"] = json!("False");
    ready["lastTransitionTime"] = json!(now);
    ready["reason"] = json!("NodeNotReady");
    ready["message"] = json!("Node is not ready");
    Some(status)
}

fn info(group: &str, plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
}

pub struct NodeLifecycleController {
    registry: Arc<Registry>,
    grace: Duration,
    /// Nodes pods are bound to but that do not exist, since when.
    missing_since: Mutex<HashMap<String, Timestamp>>,
    probes: Mutex<ProbeTimes>,
    evictions: EventRecorder,
}

impl NodeLifecycleController {
    pub fn new(registry: Arc<Registry>, grace: Duration) -> NodeLifecycleController {
        NodeLifecycleController {
            evictions: EventRecorder::new(registry.clone(), "taint-eviction-controller"),
            registry,
            grace,
            missing_since: Mutex::new(HashMap::new()),
            probes: Mutex::new(ProbeTimes::default()),
        }
    }

    pub async fn run(self) {
        let store = self.registry.store.clone();
        watchcache::run(self, store).await
    }

    fn pods_on<'a>(informer: &'a Informer, node: &'a str) -> impl Iterator<Item = Value> + 'a {
        informer
            .objects(PODS)
            .filter(move |(_, pod)| str_at(pod, "/spec/nodeName") == Some(node))
            .map(|(_, pod)| pod.clone())
    }

    async fn write_node(
        &self,
        informer: &mut Informer,
        node: Value,
        mode: WriteMode,
    ) -> Result<Value, ApiError> {
        let name = str_at(&node, "/metadata/name")
            .unwrap_or_default()
            .to_owned();
        let written = self
            .registry
            .update(info("", "nodes")?, None, &name, node, mode)
            .await?;
        informer.fold_written(NODES, &written);
        crate::api::objects::value(&written)
    }

    async fn delete_pod(
        &self,
        informer: &mut Informer,
        pod: &Value,
        grace: Option<i64>,
    ) -> Result<(), ApiError> {
        let namespace = str_at(pod, "/metadata/namespace").unwrap_or_default();
        let name = str_at(pod, "/metadata/name").unwrap_or_default();
        let pods = info("", "pods")?;
        let options = DeleteOptions {
            precondition_uid: str_at(pod, "/metadata/uid").map(str::to_owned),
            grace_period_seconds: grace,
            ..DeleteOptions::default()
        };
        let key = pods.key(Some(namespace), name);
        match self
            .registry
            .delete(pods, Some(namespace), name, &options)
            .await
        {
            Ok(Deleted::Gone(gone)) => {
                let revision = str_at(&gone, "/metadata/resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                informer.fold_deleted(PODS, &key, revision);
                Ok(())
            }
            Ok(Deleted::Pending(pending)) => {
                informer.fold_object(PODS, &key, &pending);
                Ok(())
            }
            Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Pods bound to a node that does not exist.
    async fn collect_orphans(
        &self,
        node: &str,
        informer: &mut Informer,
        now: Timestamp,
    ) -> Result<Action, NodeLifecycleError> {
        let orphans: Vec<Value> = Self::pods_on(informer, node).collect();
        if orphans.is_empty() {
            self.forget_missing(node);
            return Ok(Action::default());
        }
        let since = {
            let mut missing = self
                .missing_since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *missing.entry(node.to_owned()).or_insert(now)
        };
        let due = since + SignedDuration::try_from(ORPHAN_QUARANTINE).unwrap_or_default();
        if now < due {
            return Ok(Action::requeue(Some(to_std(due.duration_since(now)))));
        }
        for pod in &orphans {
            tracing::info!(
                node,
                pod = str_at(pod, "/metadata/name").unwrap_or_default(),
                "deleting a pod of a node that does not exist"
            );
            self.delete_pod(informer, pod, Some(0)).await?;
        }
        self.forget_missing(node);
        Ok(Action::default())
    }

    fn forget_missing(&self, node: &str) {
        self.missing_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(node);
    }
}

impl Reconciler for NodeLifecycleController {
    type Key = String;
    type Error = NodeLifecycleError;

    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    fn prefixes(&self) -> Vec<String> {
        ["nodes", "pods"]
            .iter()
            .filter_map(|plural| resources::find("", "v1", plural))
            .map(|info| info.key_prefix(None))
            .collect()
    }

    fn keys_for(&self, change: &Change, _informer: &Informer) -> Vec<String> {
        match change.source {
            NODES => {
                let name = change
                    .latest()
                    .and_then(|n| str_at(n, "/metadata/name"))
                    .unwrap_or_default()
                    .to_owned();
                if change.new.is_none() && change.old.is_some() {
                    // Seen deleted: its pods need no quarantine.
                    let long_ago = Timestamp::UNIX_EPOCH;
                    self.missing_since
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(name.clone(), long_ago);
                }
                vec![name]
            }
            _ => change
                .old
                .iter()
                .chain(change.new.iter())
                .filter_map(|pod| str_at(pod, "/spec/nodeName"))
                .filter(|node| !node.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    fn all_keys(&self, informer: &Informer) -> Vec<String> {
        let mut keys: Vec<String> = informer
            .objects(NODES)
            .filter_map(|(_, node)| str_at(node, "/metadata/name").map(str::to_owned))
            .collect();
        keys.extend(
            informer
                .objects(PODS)
                .filter_map(|(_, pod)| str_at(pod, "/spec/nodeName"))
                .filter(|node| !node.is_empty())
                .map(str::to_owned),
        );
        keys.sort();
        keys.dedup();
        keys
    }

    async fn reconcile(
        &self,
        key: &String,
        informer: &mut Informer,
        now: Timestamp,
    ) -> Result<Action, NodeLifecycleError> {
        let node_key = info("", "nodes")?.key(None, key);
        let Some(mut node) = informer.get(NODES, &node_key).cloned() else {
            self.probes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .forget(key);
            return self.collect_orphans(key, informer, now).await;
        };
        self.forget_missing(key);
        let probe = self
            .probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .observe(&node, now);
        let plan = plan_node(&node, probe, now, self.grace);
        if let Some(taints) = &plan.taints {
            tracing::info!(node = %key, health = ?plan.health, "updating the node's condition taints");
            let mut updated = node.clone();
            updated["spec"]["taints"] = Value::Array(taints.clone());
            if taints.is_empty() {
                if let Some(spec) = updated.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("taints");
                }
            }
            node = self
                .write_node(informer, updated, WriteMode::default())
                .await?;
        }
        if let Some(conditions) = &plan.conditions {
            tracing::info!(node = %key, "the node stopped posting status; its conditions become Unknown");
            let mut updated = node.clone();
            updated["status"]["conditions"] = Value::Array(conditions.clone());
            node = self
                .write_node(
                    informer,
                    updated,
                    WriteMode {
                        status_only: true,
                        dry_run: false,
                    },
                )
                .await?;
        }

        let taints: Vec<Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pods: Vec<Value> = Self::pods_on(informer, key).collect();
        let now_text = rfc3339(now);
        let mut next = plan.recheck_after;
        let pods_info = info("", "pods")?;
        for pod in pods {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            if plan.health == Health::Unknown {
                if let Some(status) = pod_status_not_ready(&pod, &now_text) {
                    let mut updated = pod.clone();
                    updated["status"] = status;
                    let namespace = str_at(&pod, "/metadata/namespace").unwrap_or_default();
                    let name = str_at(&pod, "/metadata/name").unwrap_or_default();
                    match self
                        .registry
                        .update(
                            pods_info,
                            Some(namespace),
                            name,
                            updated,
                            WriteMode {
                                status_only: true,
                                dry_run: false,
                            },
                        )
                        .await
                    {
                        Ok(written) => informer.fold_written(PODS, &written),
                        Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                        Err(other) => return Err(other.into()),
                    }
                }
            }
            if matches!(
                str_at(&pod, "/status/phase"),
                Some("Succeeded") | Some("Failed")
            ) {
                continue;
            }
            let tolerations: Vec<Value> = pod
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match eviction(&tolerations, &taints, now) {
                Eviction::Keep => {}
                Eviction::Now => {
                    tracing::info!(
                        node = %key,
                        pod = str_at(&pod, "/metadata/name").unwrap_or_default(),
                        "evicting a pod that does not tolerate the node's NoExecute taint"
                    );
                    self.delete_pod(informer, &pod, None).await?;
                    self.evictions
                        .emit(EventRecord {
                            involved: InvolvedObject::of(&pod),
                            event_type: EventType::Normal,
                            reason: "TaintManagerEviction".into(),
                            message: format!(
                                "Marking for deletion Pod {}/{}",
                                str_at(&pod, "/metadata/namespace").unwrap_or_default(),
                                str_at(&pod, "/metadata/name").unwrap_or_default()
                            ),
                        })
                        .await;
                }
                Eviction::At(at) => {
                    let wait = to_std(at.duration_since(now)).max(Duration::from_millis(100));
                    next = Some(next.map_or(wait, |n| n.min(wait)));
                }
            }
        }
        Ok(Action::requeue(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    /// Plans with the node's own heartbeat time as the probe time.
    fn plan_reported(node: &Value, now: Timestamp, grace: Duration) -> NodePlan {
        plan_node(node, reported_probe(node).unwrap_or(now), now, grace)
    }

    #[test]
    fn probe_times_run_on_the_controllers_clock() {
        let mut probes = ProbeTimes::default();
        // Stale when first seen (say, after a control plane restart): the
        // grace period starts now, not at the old heartbeat.
        let old = node("True", "2025-01-01T00:00:00Z", json!([]));
        assert_eq!(
            probes.observe(&old, at("2025-01-01T01:00:00Z")),
            at("2025-01-01T01:00:00Z")
        );
        assert_eq!(
            probes.observe(&old, at("2025-01-01T01:00:30Z")),
            at("2025-01-01T01:00:00Z")
        );
        let plan = plan_node(
            &old,
            at("2025-01-01T01:00:00Z"),
            at("2025-01-01T01:00:30Z"),
            DEFAULT_GRACE_PERIOD,
        );
        assert_eq!(plan.health, Health::Ready);
        // A new heartbeat moves the probe to when it was seen.
        let renewed = node("True", "2025-01-01T00:00:10Z", json!([]));
        assert_eq!(
            probes.observe(&renewed, at("2025-01-01T01:00:40Z")),
            at("2025-01-01T01:00:40Z")
        );
        // A node that never reported counts from its (recent) creation.
        let fresh =
            json!({"metadata": {"name": "new", "creationTimestamp": "2025-01-01T01:00:35Z"}});
        assert_eq!(
            probes.observe(&fresh, at("2025-01-01T01:00:40Z")),
            at("2025-01-01T01:00:35Z")
        );
    }

    fn node(ready: &str, heartbeat: &str, taints: Value) -> Value {
        json!({"metadata": {"name": "n1", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady",
                 "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2025-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False",
                 "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})
    }

    #[test]
    fn a_fresh_ready_node_is_left_alone_and_rechecked_when_its_heartbeat_expires() {
        let plan = plan_reported(
            &node("True", "2025-01-01T00:01:00Z", json!([])),
            at("2025-01-01T00:01:10Z"),
            DEFAULT_GRACE_PERIOD,
        );
        assert_eq!(plan.health, Health::Ready);
        assert_eq!(plan.conditions, None);
        assert_eq!(plan.taints, None);
        assert_eq!(plan.recheck_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn silence_past_the_grace_period_makes_conditions_unknown_and_taints_unreachable() {
        let user_taint = json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"});
        let plan = plan_reported(
            &node("True", "2025-01-01T00:01:00Z", json!([user_taint])),
            at("2025-01-01T00:01:40Z"),
            DEFAULT_GRACE_PERIOD,
        );
        assert_eq!(plan.health, Health::Unknown);
        let conditions = plan.conditions.expect("conditions");
        for condition in &conditions {
            assert_eq!(condition["status"], "Unknown");
            assert_eq!(condition["reason"], "NodeStatusUnknown");
            assert_eq!(condition["message"], "Kubelet stopped posting node status.");
            assert_eq!(condition["lastHeartbeatTime"], "2025-01-01T00:01:00Z");
            assert_eq!(condition["lastTransitionTime"], "2025-01-01T00:01:40Z");
        }
        let taints = plan.taints.expect("taints");
        assert_eq!(taints[0], user_taint, "other taints are kept");
        assert_eq!(
            &taints[1..],
            &[
                json!({"key": TAINT_UNREACHABLE, "effect": "NoSchedule"}),
                json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-01T00:01:40Z"}),
            ]
        );
        assert_eq!(plan.recheck_after, None);

        // Already marked: nothing more to write.
        let mut marked = node("Unknown", "2025-01-01T00:01:00Z", Value::Array(taints));
        marked["status"]["conditions"] = Value::Array(conditions);
        let again = plan_reported(&marked, at("2025-01-01T00:02:00Z"), DEFAULT_GRACE_PERIOD);
        assert_eq!((again.conditions, again.taints), (None, None));
    }

    #[test]
    fn not_ready_and_recovery_swap_the_taints() {
        let unreachable = json!([
            {"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
            {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"},
        ]);
        let plan = plan_reported(
            &node("False", "2025-01-01T00:01:00Z", unreachable.clone()),
            at("2025-01-01T00:01:05Z"),
            DEFAULT_GRACE_PERIOD,
        );
        assert_eq!(plan.health, Health::NotReady);
        let taints = plan.taints.expect("taints");
        assert!(
            taints.iter().all(|t| t["key"] == TAINT_NOT_READY),
            "{taints:?}"
        );
        assert_eq!(taints.len(), 2);

        let back = plan_reported(
            &node("True", "2025-01-01T00:01:00Z", unreachable),
            at("2025-01-01T00:01:05Z"),
            DEFAULT_GRACE_PERIOD,
        );
        assert_eq!(back.health, Health::Ready);
        assert_eq!(back.taints, Some(Vec::new()));
    }

    #[test]
    fn a_node_that_never_reported_counts_from_its_creation() {
        let fresh = json!({"metadata": {"name": "n", "creationTimestamp": "2025-01-01T00:00:00Z"}});
        let plan = plan_reported(&fresh, at("2025-01-01T00:00:10Z"), DEFAULT_GRACE_PERIOD);
        assert_eq!(plan.health, Health::NotReady);
        assert_eq!(plan.conditions, None);
        let late = plan_reported(&fresh, at("2025-01-01T00:01:00Z"), DEFAULT_GRACE_PERIOD);
        assert_eq!(late.health, Health::Unknown);
        let conditions = late.conditions.expect("conditions");
        assert_eq!(conditions[0]["reason"], "NodeStatusNeverUpdated");
    }

    #[test]
    fn eviction_honours_toleration_seconds_from_the_taint_time() {
        let taints = [
            json!({"key": TAINT_UNREACHABLE, "effect": "NoSchedule"}),
            json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"}),
        ];
        let now = at("2025-01-01T00:00:10Z");
        assert_eq!(eviction(&[], &taints, now), Eviction::Now);
        let default = json!({"key": TAINT_UNREACHABLE, "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300});
        assert_eq!(
            eviction(std::slice::from_ref(&default), &taints, now),
            Eviction::At(at("2025-01-01T00:05:00Z"))
        );
        assert_eq!(
            eviction(
                std::slice::from_ref(&default),
                &taints,
                at("2025-01-01T00:05:00Z")
            ),
            Eviction::Now
        );
        // The shorter of two matching tolerations wins; one without
        // seconds tolerates forever only if it is the only one.
        let forever = json!({"operator": "Exists"});
        assert_eq!(
            eviction(std::slice::from_ref(&forever), &taints, now),
            Eviction::Keep
        );
        assert_eq!(
            eviction(&[forever, default], &taints, now),
            Eviction::At(at("2025-01-01T00:05:00Z"))
        );
        // A NoSchedule-only toleration does not cover NoExecute.
        let no_schedule =
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"});
        assert_eq!(eviction(&[no_schedule], &taints, now), Eviction::Now);
        // No NoExecute taint: nothing to do.
        assert_eq!(eviction(&[], &taints[..1], now), Eviction::Keep);
    }

    #[test]
    fn pods_lose_readiness_once() {
        let pod = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}});
        let status = pod_status_not_ready(&pod, "2025-01-01T00:00:00Z").expect("changed");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][1]["status"], "True");
        let again = json!({"status": status});
        assert_eq!(pod_status_not_ready(&again, "2025-01-01T00:00:01Z"), None);
    }
}
