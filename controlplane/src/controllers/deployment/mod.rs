//! The Deployment controller.
//!
//! Three watches (Deployments, ReplicaSets, pods) feed a cache ([`State`])
//! and a [`WorkQueue`] of deployment keys, as Kubernetes' informers do:
//!
//! - a deployment added or changed is queued;
//! - a ReplicaSet is queued under its controlling deployment (before and
//!   after the change), or, as an orphan, under every deployment in its
//!   namespace whose selector matches it;
//! - a pod that is gone queues the Recreate deployment it belonged to,
//!   which waits for exactly that before scaling up.
//!
//! [`DeploymentController::reconcile`] plans one sync with
//! [`plan::plan`] and performs it: ReplicaSet writes in order (each a
//! compare-and-swap against the cached version, so a stale cache fails
//! rather than overwrites), then the deployment's revision annotation and
//! its status. What it wrote goes into the cache at once, and the
//! deployment is queued again, as the watch event of its own write would
//! do in Kubernetes: a rollout moves one step per sync. Time comes in as
//! an argument.
//!
//! There are no expectations, unlike the ReplicaSet controller: a new
//! ReplicaSet's name is derived from its template, so creating it twice
//! fails with AlreadyExists, and every other write is conditional.

pub mod model;
pub mod plan;
pub mod progress;
pub mod revisions;
pub mod rollout;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};
use skiff_store::{Event, EventType as StoreEventType, KeyValue, StoreError};
use tokio::time::Instant;

use self::model::{Condition, Deployment, ReplicaSet};
use self::plan::{Note, Step, SyncPlan};
use self::progress::{PROGRESSING, REPLICA_SET_CREATE_ERROR};
use super::events::{EventRecord, EventRecorder, EventType, InvolvedObject};
use super::replicas::PodInfo;
use super::replication::{parse, split_key, Action};
use super::workqueue::WorkQueue;
use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::{DeleteOptions, Deleted, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

/// How often everything is relisted and every deployment synced.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// The event source Kubernetes uses.
const COMPONENT: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{key}: replica set {name} exists with another template; collisionCount is now {count}"
    )]
    HashCollision {
        key: DeploymentKey,
        name: String,
        count: i64,
    },
}

fn info(plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    let group = if plural == "pods" { "" } else { "apps" };
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
}

/// Which deployment, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Deployment {}/{}", self.namespace, self.name)
    }
}

/// A cached object and the store revision it was read at.
#[derive(Debug, Clone)]
struct Cached<T> {
    revision: i64,
    value: T,
}

/// The controller's whole state between events.
#[derive(Debug, Default)]
pub struct State {
    deployments: HashMap<DeploymentKey, Cached<Deployment>>,
    /// ReplicaSets by namespace, then name.
    replica_sets: HashMap<String, BTreeMap<String, Cached<ReplicaSet>>>,
    /// Pods controlled by a ReplicaSet, by namespace, then name.
    pods: HashMap<String, BTreeMap<String, PodInfo>>,
    pub queue: WorkQueue<DeploymentKey>,
}

fn is_deployment_reference(api_version: &str, kind: &str) -> bool {
    api_version == "apps/v1" && kind == "Deployment"
}

impl State {
    fn deployment(&self, key: &DeploymentKey) -> Option<&Deployment> {
        self.deployments.get(key).map(|cached| &cached.value)
    }

    /// Folds in a deployment's state at `revision` (`None`: deleted).
    /// Anything not newer than what the cache holds is ignored: it is the
    /// echo of the controller's own write.
    pub fn apply_deployment(
        &mut self,
        namespace: &str,
        name: &str,
        object: Option<Value>,
        revision: i64,
    ) {
        let key = DeploymentKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if self
            .deployments
            .get(&key)
            .is_some_and(|cached| cached.revision >= revision)
        {
            return;
        }
        match object.map(Deployment::from_object) {
            Some(Ok(deployment)) => {
                self.deployments.insert(
                    key.clone(),
                    Cached {
                        revision,
                        value: deployment,
                    },
                );
                self.queue.add(key);
            }
            Some(Err(error)) => {
                tracing::warn!(%key, %error, "ignoring a deployment the controller cannot read");
                self.deployments.remove(&key);
            }
            None => {
                self.deployments.remove(&key);
            }
        }
    }

    /// Deployments a ReplicaSet matters to: its controller, or for an
    /// orphan every deployment in its namespace that would adopt it.
    fn interested(&self, rs: &ReplicaSet) -> Vec<DeploymentKey> {
        match &rs.controller {
            Some(controller) => {
                if !is_deployment_reference(&controller.api_version, &controller.kind) {
                    return Vec::new();
                }
                let key = DeploymentKey {
                    namespace: rs.namespace.clone(),
                    name: controller.name.clone(),
                };
                match self.deployment(&key) {
                    Some(d) if d.uid == controller.uid => vec![key],
                    _ => Vec::new(),
                }
            }
            None => self
                .deployments
                .iter()
                .filter(|(key, cached)| {
                    key.namespace == rs.namespace && cached.value.selector.matches(&rs.labels)
                })
                .map(|(key, _)| key.clone())
                .collect(),
        }
    }

    /// Folds in a ReplicaSet's state at `revision` (`None`: deleted).
    pub fn apply_replica_set(
        &mut self,
        namespace: &str,
        name: &str,
        object: Option<Value>,
        revision: i64,
    ) {
        let set = self.replica_sets.entry(namespace.to_owned()).or_default();
        if set
            .get(name)
            .is_some_and(|cached| cached.revision >= revision)
        {
            return;
        }
        let old = set.remove(name).map(|cached| cached.value);
        let new = match object.map(ReplicaSet::from_object) {
            Some(Ok(rs)) => Some(rs),
            Some(Err(error)) => {
                tracing::warn!(namespace, name, %error, "ignoring a replica set the controller cannot read");
                None
            }
            None => None,
        };
        if let Some(rs) = &new {
            set.insert(
                name.to_owned(),
                Cached {
                    revision,
                    value: rs.clone(),
                },
            );
        } else if set.is_empty() {
            self.replica_sets.remove(namespace);
        }
        let mut keys = Vec::new();
        for rs in old.iter().chain(new.iter()) {
            keys.extend(self.interested(rs));
        }
        for key in keys {
            self.queue.add(key);
        }
    }

    /// Folds in a pod's new state (`None`: deleted). Only pods controlled
    /// by a ReplicaSet are kept.
    pub fn apply_pod(&mut self, namespace: &str, name: &str, object: Option<&Value>) {
        let pod = object.map(PodInfo::from_object).filter(|pod| {
            pod.controller
                .as_ref()
                .is_some_and(|c| c.kind == "ReplicaSet")
        });
        let pods = self.pods.entry(namespace.to_owned()).or_default();
        let old = match pod {
            Some(pod) => {
                pods.insert(name.to_owned(), pod);
                None
            }
            None => pods.remove(name),
        };
        if pods.is_empty() {
            self.pods.remove(namespace);
        }
        // Only a pod that is gone matters: it is what a Recreate rollout
        // waits for.
        if let Some(key) = old.and_then(|pod| self.recreate_deployment_of(&pod)) {
            self.queue.add(key);
        }
    }

    fn recreate_deployment_of(&self, pod: &PodInfo) -> Option<DeploymentKey> {
        let controller = pod.controller.as_ref()?;
        let rs = &self
            .replica_sets
            .get(&pod.namespace)?
            .get(&controller.name)?
            .value;
        if rs.uid != controller.uid {
            return None;
        }
        let key = self.interested(rs).into_iter().next()?;
        let deployment = self.deployment(&key)?;
        (!deployment.is_rolling_update()).then_some(key)
    }

    fn replica_sets_in(&self, namespace: &str) -> impl Iterator<Item = &ReplicaSet> {
        self.replica_sets
            .get(namespace)
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|cached| &cached.value)
    }

    fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PodInfo> {
        self.pods
            .get(namespace)
            .into_iter()
            .flat_map(BTreeMap::values)
    }
}

pub struct DeploymentController {
    registry: Arc<Registry>,
    events: EventRecorder,
}

impl DeploymentController {
    pub fn new(registry: Arc<Registry>) -> DeploymentController {
        DeploymentController {
            events: EventRecorder::new(registry.clone(), COMPONENT),
            registry,
        }
    }

    /// Runs forever, starting over from a fresh list after any watch
    /// failure and every [`RESYNC_PERIOD`].
    pub async fn run(self) {
        loop {
            if let Err(error) = self.sync_and_follow().await {
                tracing::warn!(%error, "deployment controller restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn sync_and_follow(&self) -> Result<(), DeploymentError> {
        let deployments_prefix = info("deployments")?.key_prefix(None);
        let rs_prefix = info("replicasets")?.key_prefix(None);
        let pods_prefix = info("pods")?.key_prefix(None);
        let mut state = State::default();
        let deployments = self.registry.store.range(&deployments_prefix).await?;
        let rss = self.registry.store.range(&rs_prefix).await?;
        let pods = self.registry.store.range(&pods_prefix).await?;
        for kv in &deployments.items {
            apply_kv(&mut state, Kind::Deployment, &deployments_prefix, kv, true);
        }
        for kv in &rss.items {
            apply_kv(&mut state, Kind::ReplicaSet, &rs_prefix, kv, true);
        }
        for kv in &pods.items {
            apply_kv(&mut state, Kind::Pod, &pods_prefix, kv, true);
        }
        let mut deployment_watch = self
            .registry
            .store
            .watch(&deployments_prefix, deployments.revision)?;
        let mut rs_watch = self.registry.store.watch(&rs_prefix, rss.revision)?;
        let mut pod_watch = self.registry.store.watch(&pods_prefix, pods.revision)?;
        let resync = tokio::time::sleep(RESYNC_PERIOD);
        tokio::pin!(resync);
        loop {
            while let Some(key) = state.queue.pop(Instant::now()) {
                let result = self.reconcile(&key, &mut state, Timestamp::now()).await;
                let now = Instant::now();
                state.queue.done(&key);
                match result {
                    Ok(action) => {
                        state.queue.forget(&key);
                        if let Some(after) = action.requeue_after {
                            state.queue.add_at(key, now + after, now);
                        }
                    }
                    Err(error) => {
                        if is_stale(&error) {
                            tracing::debug!(%key, %error, "cache was stale; will retry");
                        } else {
                            tracing::warn!(%key, %error, "deployment sync failed; will retry");
                        }
                        state.queue.add_rate_limited(key, now);
                    }
                }
            }
            let wakeup = state
                .queue
                .next_wakeup()
                .unwrap_or_else(|| Instant::now() + RESYNC_PERIOD);
            tokio::select! {
                event = deployment_watch.next() => apply_event(&mut state, Kind::Deployment, &deployments_prefix, event?.as_ref()),
                event = rs_watch.next() => apply_event(&mut state, Kind::ReplicaSet, &rs_prefix, event?.as_ref()),
                event = pod_watch.next() => apply_event(&mut state, Kind::Pod, &pods_prefix, event?.as_ref()),
                _ = tokio::time::sleep_until(wakeup) => {}
                _ = &mut resync => return Ok(()),
            }
        }
    }

    /// Runs one sync of a deployment: plans it from the cache, then
    /// performs the plan.
    pub async fn reconcile(
        &self,
        key: &DeploymentKey,
        state: &mut State,
        now: Timestamp,
    ) -> Result<Action, DeploymentError> {
        let Some(deployment) = state.deployment(key).cloned() else {
            // Deleted: the garbage collector removes its ReplicaSets.
            return Ok(Action::default());
        };
        let plan = plan::plan(
            &deployment,
            state.replica_sets_in(&key.namespace),
            state.pods_in(&key.namespace),
            now,
        );
        self.execute(key, &deployment, plan, state, now).await
    }

    async fn execute(
        &self,
        key: &DeploymentKey,
        deployment: &Deployment,
        plan: SyncPlan,
        state: &mut State,
        now: Timestamp,
    ) -> Result<Action, DeploymentError> {
        if plan.adopts && !self.can_adopt(deployment).await? {
            return Ok(Action::default());
        }
        let rs_info = info("replicasets")?;
        let namespace = Some(key.namespace.as_str());
        for step in plan.steps {
            match step {
                Step::Create {
                    name,
                    object,
                    notes,
                } => match self
                    .registry
                    .create(rs_info, namespace, object, false)
                    .await
                {
                    Ok(kv) => {
                        fold(state, Kind::ReplicaSet, &kv);
                        self.note(deployment, notes).await;
                    }
                    Err(ApiError::AlreadyExists { .. }) => {
                        return self.name_taken(key, deployment, &name, state).await;
                    }
                    Err(error) => {
                        self.failed_create(deployment, &name, &error, state, now)
                            .await;
                        return Err(error.into());
                    }
                },
                Step::Update {
                    name,
                    object,
                    notes,
                } => {
                    let kv = self
                        .registry
                        .update(rs_info, namespace, &name, object, WriteMode::default())
                        .await?;
                    fold(state, Kind::ReplicaSet, &kv);
                    self.note(deployment, notes).await;
                }
                Step::Delete { name, uid } => {
                    let options = DeleteOptions {
                        precondition_uid: Some(uid),
                        ..DeleteOptions::default()
                    };
                    match self
                        .registry
                        .delete(rs_info, namespace, &name, &options)
                        .await
                    {
                        Ok(Deleted::Gone(_)) | Err(ApiError::NotFound { .. }) => {
                            state.apply_replica_set(&key.namespace, &name, None, i64::MAX);
                        }
                        Ok(Deleted::Pending(_)) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }

        let deployments = info("deployments")?;
        let mut latest = deployment.object.clone();
        if let Some(annotations) = plan.annotations {
            latest["metadata"]["annotations"] = json!(annotations);
            let kv = self
                .registry
                .update(
                    deployments,
                    namespace,
                    &key.name,
                    latest,
                    WriteMode::default(),
                )
                .await?;
            fold(state, Kind::Deployment, &kv);
            latest = objects::value(&kv)?;
        }
        if let Some(status) = plan.status {
            latest["status"] = status.to_value();
            let kv = self
                .registry
                .update(deployments, namespace, &key.name, latest, status_only())
                .await?;
            fold(state, Kind::Deployment, &kv);
        }
        Ok(Action {
            requeue_after: plan.requeue_after,
        })
    }

    /// Kubernetes re-reads the deployment before adopting, so that one
    /// deleted or replaced since the cache saw it adopts nothing.
    async fn can_adopt(&self, deployment: &Deployment) -> Result<bool, ApiError> {
        match self
            .registry
            .get(
                info("deployments")?,
                Some(&deployment.namespace),
                &deployment.name,
            )
            .await
        {
            Ok(fresh) => Ok(
                str_at(&fresh, "/metadata/uid") == Some(deployment.uid.as_str())
                    && fresh.pointer("/metadata/deletionTimestamp").is_none(),
            ),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The new ReplicaSet's name is taken. If by the deployment's own
    /// ReplicaSet for this template, the cache was behind: take it in and
    /// sync again. Otherwise the hash collides: raise the collision count,
    /// which changes the hash.
    async fn name_taken(
        &self,
        key: &DeploymentKey,
        deployment: &Deployment,
        name: &str,
        state: &mut State,
    ) -> Result<Action, DeploymentError> {
        let rs_info = info("replicasets")?;
        let kv = self
            .registry
            .get_kv(rs_info, Some(&key.namespace), name)
            .await?;
        let existing = objects::value(&kv)?;
        let ours = ReplicaSet::from_object(existing.clone()).is_ok_and(|rs| {
            rs.is_controlled_by(&deployment.uid)
                && revisions::equal_ignore_hash(&rs.template, &deployment.template)
        });
        if ours {
            fold(state, Kind::ReplicaSet, &kv);
            state.queue.add(key.clone());
            return Ok(Action::default());
        }
        let mut status = deployment.status.clone();
        let count = status.collision_count.unwrap_or(0) + 1;
        status.collision_count = Some(count);
        self.write_status(deployment, &status, state).await?;
        Err(DeploymentError::HashCollision {
            key: key.clone(),
            name: name.to_owned(),
            count,
        })
    }

    /// Reports a failed creation in the status and as an event, as
    /// Kubernetes does; the error itself goes back to the loop.
    async fn failed_create(
        &self,
        deployment: &Deployment,
        name: &str,
        error: &ApiError,
        state: &mut State,
        now: Timestamp,
    ) {
        let message = format!("Failed to create new replica set {name:?}: {error}");
        if deployment.progress_deadline().is_some() {
            let mut status = deployment.status.clone();
            status.set_condition(Condition::new(
                PROGRESSING,
                "False",
                REPLICA_SET_CREATE_ERROR,
                message.clone(),
                now,
            ));
            if let Err(error) = self.write_status(deployment, &status, state).await {
                tracing::debug!(%error, "cannot record the failed creation in the status");
            }
        }
        self.note(
            deployment,
            vec![Note {
                event_type: EventType::Warning,
                reason: REPLICA_SET_CREATE_ERROR,
                message,
            }],
        )
        .await;
    }

    async fn write_status(
        &self,
        deployment: &Deployment,
        status: &model::DeploymentStatus,
        state: &mut State,
    ) -> Result<(), ApiError> {
        let mut object = deployment.object.clone();
        object["status"] = status.to_value();
        let kv = self
            .registry
            .update(
                info("deployments")?,
                Some(&deployment.namespace),
                &deployment.name,
                object,
                status_only(),
            )
            .await?;
        fold(state, Kind::Deployment, &kv);
        Ok(())
    }

    async fn note(&self, deployment: &Deployment, notes: Vec<Note>) {
        for note in notes {
            self.events
                .emit(EventRecord {
                    involved: InvolvedObject::of(&deployment.object),
                    event_type: note.event_type,
                    reason: note.reason.into(),
                    message: note.message,
                })
                .await;
        }
    }
}

fn status_only() -> WriteMode {
    WriteMode {
        status_only: true,
        dry_run: false,
    }
}

/// Errors that only mean the cache was behind the store: the watch
/// brings the news, and the retry sees it.
fn is_stale(error: &DeploymentError) -> bool {
    matches!(
        error,
        DeploymentError::Api(ApiError::Conflict { .. } | ApiError::NotFound { .. })
    )
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Deployment,
    ReplicaSet,
    Pod,
}

fn apply_kv(state: &mut State, kind: Kind, prefix: &str, kv: &KeyValue, present: bool) {
    let Some((namespace, name)) = split_key(&kv.key, prefix) else {
        return;
    };
    let object = if present { parse(kv) } else { None };
    match kind {
        Kind::Deployment => state.apply_deployment(namespace, name, object, kv.mod_revision),
        Kind::ReplicaSet => state.apply_replica_set(namespace, name, object, kv.mod_revision),
        Kind::Pod => state.apply_pod(namespace, name, object.as_ref()),
    }
}

fn apply_event(state: &mut State, kind: Kind, prefix: &str, event: &Event) {
    let present = event.event_type == StoreEventType::Put;
    apply_kv(state, kind, prefix, &event.kv, present);
}

/// Takes the result of the controller's own write into the cache, which
/// queues the deployment again.
fn fold(state: &mut State, kind: Kind, kv: &KeyValue) {
    let prefix = match kind {
        Kind::Deployment => info("deployments"),
        Kind::ReplicaSet => info("replicasets"),
        Kind::Pod => info("pods"),
    }
    .map(|info| info.key_prefix(None));
    if let Ok(prefix) = prefix {
        apply_kv(state, kind, &prefix, kv, true);
    }
}

#[cfg(test)]
mod tests;
