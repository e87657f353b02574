//! The scheduling loop: the only part of the scheduler that does I/O.
//!
//! It lists nodes and pods, then follows both watches. Every event is
//! folded into [`State`] synchronously; the loop then pops ready pods from
//! the queue, asks [`Cluster::schedule`] where each goes, and acts:
//!
//! - **fits**: bind, as the `pods/binding` subresource does: one
//!   compare-and-swap write that sets `spec.nodeName` and the
//!   `PodScheduled=True` condition, refused if the pod was bound, deleted
//!   or replaced meanwhile. The pod is then *assumed* on its node at once,
//!   so the next pod sees its footprint before the watch echoes the write;
//!   watch events older than the binding write are ignored for it.
//! - **fits nowhere**: set `PodScheduled=False` (reason `Unschedulable`,
//!   the FitError as message), record a `FailedScheduling` event, and park
//!   the pod until the cluster changes.
//!
//! Everything restarts from a fresh list on a watch failure and every
//! [`RESYNC_PERIOD`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};
use skiff_store::{Event, EventType, KeyValue, Revision, StoreError};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::queue::SchedulingQueue;
use super::view::{NodeView, PodOnNode};
use super::SCHEDULER_NAME;
use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::{Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};
use crate::controllers::events::{EventRecord, EventRecorder, EventType as Kind, InvolvedObject};

/// How often everything is rebuilt from a fresh list.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// How often a write is retried when the pod changed under it.
const WRITE_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn info(plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
}

/// Whether the default scheduler should place this pod now.
pub fn needs_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
        // A gated pod waits until its gates are removed (an update).
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
}

/// The part of a pending pod the scheduler keeps: what placement reads and
/// the identity a binding checks. Everything else (env, volumes, probes,
/// commands, annotations such as kubectl's last-applied configuration) is
/// dropped, so that many pending pods cost little memory.
fn for_scheduling(pod: &Pod) -> Pod {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let slim_container = |container: &Container| Container {
        name: container.name.clone(),
        resources: container.resources.clone(),
        ports: container.ports.clone(),
        ..Container::default()
    };
    let metadata = &pod.metadata;
    Pod {
        metadata: ObjectMeta {
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            uid: metadata.uid.clone(),
            labels: metadata.labels.clone(),
            owner_references: metadata.owner_references.clone(),
            deletion_timestamp: metadata.deletion_timestamp.clone(),
            ..ObjectMeta::default()
        },
        spec: pod.spec.as_ref().map(|spec| PodSpec {
            containers: spec.containers.iter().map(slim_container).collect(),
            init_containers: spec.init_containers.as_ref().map(|list| list.iter().map(slim_container).collect()),
            node_name: spec.node_name.clone(),
            node_selector: spec.node_selector.clone(),
            affinity: spec.affinity.clone(),
            tolerations: spec.tolerations.clone(),
            overhead: spec.overhead.clone(),
            host_network: spec.host_network,
            scheduler_name: spec.scheduler_name.clone(),
            priority: spec.priority,
            scheduling_gates: spec.scheduling_gates.clone(),
            topology_spread_constraints: spec.topology_spread_constraints.clone(),
            ..PodSpec::default()
        }),
        status: pod.status.as_ref().map(|status| PodStatus { phase: status.phase.clone(), ..PodStatus::default() }),
    }
}

/// Sets a pod condition the way Kubernetes' `UpdatePodCondition` does:
/// `lastTransitionTime` moves only when the status does. Returns whether
/// anything changed.
pub fn set_condition(
    pod: &mut Value,
    condition_type: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
    now: &str,
) -> bool {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    if !pod["status"].get("conditions").is_some_and(Value::is_array) {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return false;
    };
    // No `lastProbeTime`: the scheduler never probes, and the stored pod
    // drops a null one, which would make every comparison a change.
    let mut condition = json!({"type": condition_type, "status": status});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(condition_type))
    {
        Some(existing) => {
            let transition = if existing.get("status").and_then(Value::as_str) == Some(status) {
                existing
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or_else(|| json!(now))
            } else {
                json!(now)
            };
            condition["lastTransitionTime"] = transition;
            if *existing == condition {
                return false;
            }
            *existing = condition;
        }
        None => {
            condition["lastTransitionTime"] = json!(now);
            conditions.push(condition);
        }
    }
    true
}

/// Whether a pod changed in something placement could depend on: not
/// only its status or its resourceVersion (Kubernetes' `isPodUpdated`).
fn placement_inputs_differ(old: &Pod, new: &Pod) -> bool {
    let strip = |pod: &Pod| {
        let mut pod = pod.clone();
        pod.status = None;
        pod.metadata.resource_version = None;
        pod.metadata.managed_fields = None;
        pod
    };
    strip(old) != strip(new)
}

/// What the scheduler knows, folded from list and watch events.
#[derive(Default)]
pub struct State {
    pub cluster: Cluster,
    pub queue: SchedulingQueue,
    /// Bound pods' footprints, by store key, to undo on change.
    bound: HashMap<String, PodOnNode>,
    /// Pods waiting for a node, by store key.
    pending: HashMap<String, Pod>,
    /// Node names by store key.
    node_names: HashMap<String, String>,
    /// Pods bound by this scheduler whose binding the watch has not
    /// delivered yet: the revision of the binding write.
    assumed: HashMap<String, Revision>,
}

impl State {
    /// Folds in a pod's new state (`None`: deleted) at `revision`.
    pub fn apply_pod(&mut self, key: &str, pod: Option<&Pod>, revision: Revision, now: Instant) {
        if let Some(&bound_at) = self.assumed.get(key) {
            if revision < bound_at {
                // Older than our own binding: already superseded.
                return;
            }
            self.assumed.remove(key);
        }
        let old = self.bound.remove(key);
        if let Some(old) = &old {
            self.cluster.remove_pod(old);
        }
        let new = pod.and_then(PodOnNode::from_pod);
        if let Some(footprint) = &new {
            self.cluster.add_pod(footprint);
            self.bound.insert(key.to_owned(), footprint.clone());
        }
        match pod.filter(|pod| needs_scheduling(pod)) {
            Some(pod) => {
                let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                let slim = for_scheduling(pod);
                let previous = self.pending.insert(key.to_owned(), slim.clone());
                // A status write (our own PodScheduled condition, mostly)
                // cannot make a pod fit, so it does not end its wait.
                if previous.is_none_or(|previous| placement_inputs_differ(&previous, &slim)) {
                    self.queue.add(key, priority, now);
                }
            }
            None => {
                self.pending.remove(key);
                self.queue.remove(key);
            }
        }
        // Room freed on a node may let a parked pod fit.
        if old.is_some() && old != new {
            self.queue.cluster_changed(now);
        }
    }

    /// Folds in a node's new state (`None`: deleted).
    pub fn apply_node(&mut self, key: &str, node: Option<&Node>, now: Instant) {
        let view = node.map(NodeView::from_node);
        let old_name = self.node_names.get(key).cloned();
        let old_view = old_name
            .as_deref()
            .and_then(|n| self.cluster.node(n))
            .cloned();
        if old_view == view {
            // A heartbeat: nothing the scheduler looks at changed.
            return;
        }
        if let Some(name) = &old_name {
            self.cluster.remove_node(name);
            self.node_names.remove(key);
        }
        if let Some(view) = view {
            self.node_names.insert(key.to_owned(), view.name.clone());
            self.cluster.upsert_node(view);
            self.queue.cluster_changed(now);
        }
    }

    /// Records a binding this scheduler made, before the watch shows it.
    pub fn assume(&mut self, key: &str, node: &str, revision: Revision, now: Instant) {
        let Some(mut pod) = self.pending.get(key).cloned() else {
            return;
        };
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        self.apply_pod(key, Some(&pod), revision, now);
        self.assumed.insert(key.to_owned(), revision);
    }

    pub fn pending(&self, key: &str) -> Option<&Pod> {
        self.pending.get(key)
    }
}

fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(object) => Some(object),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "scheduler skips an object it cannot read");
            None
        }
    }
}

/// How a binding attempt ended.
enum Bound {
    /// Written at this revision.
    At(Revision),
    /// The pod is gone, replaced, or no longer waiting: nothing to do.
    NotNeeded,
}

pub struct Scheduler {
    registry: Arc<Registry>,
    events: EventRecorder,
}

impl Scheduler {
    pub fn new(registry: Arc<Registry>) -> Scheduler {
        Scheduler {
            events: EventRecorder::new(registry.clone(), SCHEDULER_NAME),
            registry,
        }
    }

    /// Runs forever, starting over from a fresh list after any failure and
    /// every [`RESYNC_PERIOD`].
    pub async fn run(self) {
        loop {
            if let Err(error) = self.sync_and_follow().await {
                tracing::warn!(%error, "scheduler restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn sync_and_follow(&self) -> Result<(), SchedulerError> {
        let nodes_prefix = info("nodes")?.key_prefix(None);
        let pods_prefix = info("pods")?.key_prefix(None);
        let nodes = self.registry.store.range(&nodes_prefix).await?;
        let pods = self.registry.store.range(&pods_prefix).await?;
        let now = Instant::now();
        let mut state = State::default();
        for kv in &nodes.items {
            state.apply_node(&kv.key, parse::<Node>(kv).as_ref(), now);
        }
        for kv in &pods.items {
            state.apply_pod(&kv.key, parse::<Pod>(kv).as_ref(), kv.mod_revision, now);
        }
        let mut node_watch = self.registry.store.watch(&nodes_prefix, nodes.revision)?;
        let mut pod_watch = self.registry.store.watch(&pods_prefix, pods.revision)?;
        tracing::info!(
            nodes = state.cluster.node_count(),
            pending = state.queue.len(),
            "scheduler synced"
        );
        let resync = tokio::time::sleep(RESYNC_PERIOD);
        tokio::pin!(resync);
        loop {
            while let Some(key) = state.queue.pop(Instant::now()) {
                self.schedule_one(&mut state, &key).await;
                // Take in what happened meanwhile before the next pod.
                while let Some(event) = futures_util::FutureExt::now_or_never(pod_watch.next()) {
                    apply_pod_event(&mut state, &event?);
                }
                while let Some(event) = futures_util::FutureExt::now_or_never(node_watch.next()) {
                    apply_node_event(&mut state, &event?);
                }
            }
            let wakeup = state
                .queue
                .next_wakeup()
                .unwrap_or_else(|| Instant::now() + RESYNC_PERIOD);
            tokio::select! {
                event = pod_watch.next() => apply_pod_event(&mut state, &event?),
                event = node_watch.next() => apply_node_event(&mut state, &event?),
                _ = tokio::time::sleep_until(wakeup) => {}
                _ = &mut resync => return Ok(()),
            }
        }
    }

    async fn schedule_one(&self, state: &mut State, key: &str) {
        let Some(pod) = state.pending(key).cloned() else {
            state.queue.remove(key);
            return;
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        match state.cluster.schedule(&pod) {
            Ok(node) => match self.bind(&pod, &node).await {
                Ok(Bound::At(revision)) => {
                    tracing::info!(pod = %format!("{namespace}/{name}"), %node, "scheduled");
                    state.assume(key, &node, revision, Instant::now());
                    self.event(
                        &pod,
                        Kind::Normal,
                        "Scheduled",
                        format!("Successfully assigned {namespace}/{name} to {node}"),
                    )
                    .await;
                }
                Ok(Bound::NotNeeded) => state.queue.remove(key),
                Err(error) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), %node, %error, "binding failed; will retry");
                    state.queue.retry(key, Instant::now());
                }
            },
            Err(fit) => {
                let message = fit.to_string();
                tracing::info!(pod = %format!("{namespace}/{name}"), %message, "unschedulable");
                state.queue.unschedulable(key, Instant::now());
                if let Err(error) = self.mark_unschedulable(&pod, &message).await {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "cannot set the PodScheduled condition");
                }
                self.event(&pod, Kind::Warning, "FailedScheduling", message)
                    .await;
            }
        }
    }

    async fn event(&self, pod: &Pod, event_type: Kind, reason: &str, message: String) {
        let involved = InvolvedObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        self.events
            .emit(EventRecord {
                involved,
                event_type,
                reason: reason.into(),
                message,
            })
            .await;
    }

    /// The stored pod, if it is still the one we decided about and still
    /// waiting for a node.
    async fn current(&self, pod: &Pod) -> Result<Option<(KeyValue, Value)>, ApiError> {
        let pods = info("pods")?;
        let namespace = pod.metadata.namespace.as_deref();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let kv = match self.registry.get_kv(pods, namespace, name).await {
            Ok(kv) => kv,
            Err(ApiError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other),
        };
        let object = objects::value(&kv)?;
        let same = str_at(&object, "/metadata/uid") == pod.metadata.uid.as_deref();
        let unbound = str_at(&object, "/spec/nodeName").is_none_or(str::is_empty);
        let live = object.pointer("/metadata/deletionTimestamp").is_none();
        Ok((same && unbound && live).then_some((kv, object)))
    }

    /// Binds the pod to `node` (see the module comment).
    async fn bind(&self, pod: &Pod, node: &str) -> Result<Bound, ApiError> {
        let pods = info("pods")?;
        for _ in 0..WRITE_RETRIES {
            let Some((kv, mut object)) = self.current(pod).await? else {
                return Ok(Bound::NotNeeded);
            };
            object["spec"]["nodeName"] = json!(node);
            set_condition(
                &mut object,
                "PodScheduled",
                "True",
                None,
                None,
                &objects::now_rfc3339(),
            );
            // The binding subresource writes past the pod-update rules
            // (which forbid spec changes); the checks above are its own.
            match self.registry.put_raw(pods, &kv, object).await {
                Ok(written) => return Ok(Bound::At(written.mod_revision)),
                Err(ApiError::Conflict { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(ApiError::conflict(
            pods,
            pod.metadata.name.as_deref().unwrap_or_default(),
        ))
    }

    async fn mark_unschedulable(&self, pod: &Pod, message: &str) -> Result<(), ApiError> {
        let pods = info("pods")?;
        for _ in 0..WRITE_RETRIES {
            let Some((_, mut object)) = self.current(pod).await? else {
                return Ok(());
            };
            let changed = set_condition(
                &mut object,
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(message),
                &objects::now_rfc3339(),
            );
            if !changed {
                return Ok(());
            }
            let status_only = WriteMode {
                status_only: true,
                dry_run: false,
            };
            let namespace = pod.metadata.namespace.as_deref();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match self
                .registry
                .update(pods, namespace, name, object, status_only)
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => return Ok(()),
                Err(ApiError::Conflict { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }
}

fn apply_pod_event(state: &mut State, event: &Arc<Event>) {
    let pod = match event.event_type {
        EventType::Put => parse::<Pod>(&event.kv),
        EventType::Delete => None,
    };
    state.apply_pod(
        &event.kv.key,
        pod.as_ref(),
        event.revision(),
        Instant::now(),
    );
}

fn apply_node_event(state: &mut State, event: &Arc<Event>) {
    let node = match event.event_type {
        EventType::Put => parse::<Node>(&event.kv),
        EventType::Delete => None,
    };
    state.apply_node(&event.kv.key, node.as_ref(), Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    fn pending_pod(name: &str) -> Pod {
        pod(
            json!({"metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"containers": [{"name": "c", "image": "x"}], "schedulerName": "default-scheduler"}}),
        )
    }

    fn ready_node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "1"},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00:00Z"}]}}))
        .expect("node")
    }

    #[test]
    fn which_pods_need_scheduling() {
        assert!(needs_scheduling(&pending_pod("a")));
        let mut bound = pending_pod("a");
        bound.spec.as_mut().expect("spec").node_name = Some("n".into());
        assert!(!needs_scheduling(&bound));
        let mut other = pending_pod("a");
        other.spec.as_mut().expect("spec").scheduler_name = Some("my-scheduler".into());
        assert!(!needs_scheduling(&other));
        let mut deleting = pending_pod("a");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(!needs_scheduling(&deleting));
        let gated = pod(json!({"metadata": {"name": "g"}, "spec": {"containers": [],
            "schedulingGates": [{"name": "wait"}]}}));
        assert!(!needs_scheduling(&gated));
    }

    #[test]
    fn conditions_move_their_transition_time_only_on_status_changes() {
        let mut object = json!({"status": {"phase": "Pending"}});
        assert!(set_condition(
            &mut object,
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some("m1"),
            "t1"
        ));
        assert!(!set_condition(
            &mut object,
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some("m1"),
            "t2"
        ));
        assert!(set_condition(
            &mut object,
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some("m2"),
            "t3"
        ));
        let condition = &object["status"]["conditions"][0];
        assert_eq!(condition["message"], "m2");
        assert_eq!(condition["lastTransitionTime"], "t1");
        assert!(set_condition(
            &mut object,
            "PodScheduled",
            "True",
            None,
            None,
            "t4"
        ));
        let condition = &object["status"]["conditions"][0];
        assert_eq!(condition["lastTransitionTime"], "t4");
        assert!(condition.get("message").is_none());
        assert_eq!(
            object["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn an_assumed_pod_counts_at_once_and_stale_events_do_not_undo_it() {
        let now = Instant::now();
        let mut state = State::default();
        state.apply_node("/n/a", Some(&ready_node("a")), now);
        state.apply_pod("/p/one", Some(&pending_pod("one")), 10, now);
        state.apply_pod("/p/two", Some(&pending_pod("two")), 11, now);
        assert_eq!(state.queue.pop(now).as_deref(), Some("/p/one"));
        assert_eq!(state.cluster.schedule(&pending_pod("one")), Ok("a".into()));
        state.assume("/p/one", "a", 20, now);
        // An event from before the binding (a label change, say) arrives
        // late; the assumed binding stands.
        state.apply_pod("/p/one", Some(&pending_pod("one")), 15, now);
        assert!(state.pending("/p/one").is_none());
        // The node takes one pod, so the second fits nowhere.
        assert_eq!(state.queue.pop(now).as_deref(), Some("/p/two"));
        let error = state
            .cluster
            .schedule(&pending_pod("two"))
            .expect_err("full");
        assert!(error.to_string().contains("1 Too many pods"), "{error}");
        state.queue.unschedulable("/p/two", now);
        // The first pod is deleted: the second is retried after backoff.
        state.apply_pod("/p/one", None, 30, now);
        let later = now + Duration::from_secs(1);
        assert_eq!(state.queue.pop(later).as_deref(), Some("/p/two"));
        assert_eq!(state.cluster.schedule(&pending_pod("two")), Ok("a".into()));
    }

    #[test]
    fn status_writes_do_not_wake_a_parked_pod_but_spec_changes_do() {
        let now = Instant::now();
        let mut state = State::default();
        state.apply_pod("/p/x", Some(&pending_pod("x")), 1, now);
        state.queue.pop(now);
        state.queue.unschedulable("/p/x", now);
        let mut with_condition = json!({"metadata": {"name": "x", "namespace": "default", "uid": "x"},
            "spec": {"containers": [{"name": "c", "image": "x"}], "schedulerName": "default-scheduler"}});
        set_condition(
            &mut with_condition,
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some("m"),
            "2025-01-01T00:00:00Z",
        );
        with_condition["metadata"]["resourceVersion"] = json!("2");
        state.apply_pod("/p/x", Some(&pod(with_condition)), 2, now);
        let later = now + Duration::from_secs(60);
        assert_eq!(state.queue.pop(later), None);
        let mut tolerant = pending_pod("x");
        tolerant.spec.as_mut().expect("spec").tolerations =
            Some(vec![
                serde_json::from_value(json!({"operator": "Exists"})).expect("toleration")
            ]);
        state.apply_pod("/p/x", Some(&tolerant), 3, later);
        assert_eq!(state.queue.pop(later).as_deref(), Some("/p/x"));
    }

    #[test]
    fn heartbeats_do_not_wake_parked_pods_but_real_node_changes_do() {
        let now = Instant::now();
        let mut state = State::default();
        state.apply_pod("/p/x", Some(&pending_pod("x")), 1, now);
        state.queue.pop(now);
        state.queue.unschedulable("/p/x", now);
        let later = now + Duration::from_secs(20);
        state.apply_node("/n/a", Some(&ready_node("a")), now);
        assert_eq!(
            state.queue.pop(later).as_deref(),
            Some("/p/x"),
            "a new node"
        );
        state.queue.unschedulable("/p/x", later);
        let mut heartbeat = ready_node("a");
        if let Some(conditions) = heartbeat
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
        {
            conditions[0].last_heartbeat_time = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        state.apply_node("/n/a", Some(&heartbeat), later);
        assert_eq!(state.queue.pop(later + Duration::from_secs(30)), None);
        state.apply_node("/n/a", None, later);
        assert_eq!(state.cluster.node_count(), 0);
        assert_eq!(
            state.queue.pop(later + Duration::from_secs(30)),
            None,
            "a node leaving frees nothing"
        );
    }
}
