//! The ReplicationController and ReplicaSet controller.
//!
//! Three watches (pods, ReplicationControllers, ReplicaSets) feed a cache
//! ([`Caches`]) and a [`WorkQueue`] of owner keys; the handlers only record
//! what changed and which owners care, as Kubernetes' do:
//!
//! - an owner added or changed is queued; one deleted is forgotten;
//! - a pod is queued under its controller (before and after the change),
//!   or, as an orphan, under every owner in its namespace whose selector
//!   matches it;
//! - a pod appearing, or starting to go, fulfils its owner's
//!   [`Expectations`].
//!
//! [`ReplicationManager::reconcile`] then plans with
//! [`replicas::plan`](super::replicas::plan) and applies the plan:
//! releases and adoptions (by compare-and-swap on the pod), creations in
//! batches of 1, 2, 4, … (so a failing create stops early, as Kubernetes'
//! slow start does), deletions, and finally the status through the status
//! subresource. It returns an [`Action`] rather than sleeping or queueing
//! itself. Time comes in as an argument.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use jiff::Timestamp;
use serde_json::Value;
use skiff_store::{Event, EventType as StoreEventType, KeyValue, StoreError};
use tokio::time::Instant;

use super::events::{EventRecord, EventRecorder, EventType, InvolvedObject};
use super::expectations::Expectations;
use super::replicas::{self, OwnerKey, OwnerKind, PodInfo, PodRef, ReplicaOwner, ReplicaPlan};
use super::workqueue::WorkQueue;
use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::{DeleteOptions, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

/// How often everything is relisted and every owner reconciled.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// The first batch of creations; each later batch doubles.
const SLOW_START_BATCH: usize = 1;

/// What the loop should do with a key after reconciling it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Action {
    pub requeue_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: {failed} of {attempted} pod {verb}s failed; first: {first}")]
    Pods {
        key: OwnerKey,
        verb: &'static str,
        failed: usize,
        attempted: usize,
        first: ApiError,
    },
}

fn pods_info() -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", "v1", "pods").ok_or_else(|| ApiError::Internal("no pods resource".into()))
}

/// The owners and pods, as the watches last showed them.
#[derive(Debug, Default)]
pub struct Caches {
    pub owners: HashMap<OwnerKey, ReplicaOwner>,
    /// Pods by namespace, then name.
    pub pods: HashMap<String, BTreeMap<String, PodInfo>>,
}

impl Caches {
    /// Owners a pod matters to: its controller, or for an orphan every
    /// owner in its namespace that would adopt it.
    fn interested(&self, pod: &PodInfo) -> Vec<OwnerKey> {
        if pod.controller.is_some() {
            return pod.owner_key().into_iter().collect();
        }
        self.owners
            .values()
            .filter(|owner| {
                owner.key.namespace == pod.namespace && owner.selector.matches(&pod.labels)
            })
            .map(|owner| owner.key.clone())
            .collect()
    }
}

/// The controller's whole state between events.
#[derive(Debug, Default)]
pub struct State {
    pub caches: Caches,
    pub queue: WorkQueue<OwnerKey>,
    pub expectations: Expectations<OwnerKey>,
}

impl State {
    /// Folds in an owner's new state (`None`: deleted).
    pub fn apply_owner(&mut self, kind: OwnerKind, key_hint: &str, object: Option<Value>) {
        match object.map(|object| ReplicaOwner::from_object(kind, object)) {
            Some(Ok(owner)) => {
                self.queue.add(owner.key.clone());
                self.caches.owners.insert(owner.key.clone(), owner);
            }
            Some(Err(error)) => {
                tracing::warn!(key = key_hint, %error, "ignoring an owner the controller cannot read");
            }
            None => {
                let gone: Vec<OwnerKey> = self
                    .caches
                    .owners
                    .keys()
                    .filter(|key| {
                        key.kind == kind && owner_store_key(key).as_deref() == Some(key_hint)
                    })
                    .cloned()
                    .collect();
                for key in gone {
                    self.caches.owners.remove(&key);
                    self.expectations.forget(&key);
                }
            }
        }
    }

    /// Folds in a pod's new state (`None`: deleted), given its namespace
    /// and name.
    pub fn apply_pod(&mut self, namespace: &str, name: &str, object: Option<&Value>) {
        let old = self
            .caches
            .pods
            .get_mut(namespace)
            .and_then(|pods| pods.remove(name));
        let new = object.map(PodInfo::from_object);
        if let Some(pod) = &new {
            self.caches
                .pods
                .entry(namespace.to_owned())
                .or_default()
                .insert(name.to_owned(), pod.clone());
        } else if self
            .caches
            .pods
            .get(namespace)
            .is_some_and(BTreeMap::is_empty)
        {
            self.caches.pods.remove(namespace);
        }

        // Expectations: a pod of ours appeared, or started to go.
        match (&old, &new) {
            (None, Some(pod)) => {
                if let Some(owner) = pod.owner_key() {
                    self.expectations.creation_observed(&owner);
                }
                if pod.deleting {
                    if let Some(owner) = pod.owner_key() {
                        self.expectations.deletion_observed(&owner, &pod.uid);
                    }
                }
            }
            (Some(before), Some(after)) if after.deleting && !before.deleting => {
                if let Some(owner) = after.owner_key() {
                    self.expectations.deletion_observed(&owner, &after.uid);
                }
            }
            (Some(before), None) => {
                if let Some(owner) = before.owner_key() {
                    self.expectations.deletion_observed(&owner, &before.uid);
                }
            }
            _ => {}
        }

        let mut keys = Vec::new();
        for pod in old.iter().chain(new.iter()) {
            keys.extend(self.caches.interested(pod));
        }
        for key in keys {
            self.queue.add(key);
        }
    }
}

/// The store key of an owner.
fn owner_store_key(key: &OwnerKey) -> Option<String> {
    key.kind
        .info()
        .ok()
        .map(|info| info.key(Some(&key.namespace), &key.name))
}

/// Namespace and name from a namespaced store key under `prefix`.
pub(crate) fn split_key<'a>(key: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

pub struct ReplicationManager {
    registry: Arc<Registry>,
    rc_events: EventRecorder,
    rs_events: EventRecorder,
}

impl ReplicationManager {
    pub fn new(registry: Arc<Registry>) -> ReplicationManager {
        ReplicationManager {
            rc_events: EventRecorder::new(
                registry.clone(),
                OwnerKind::ReplicationController.component(),
            ),
            rs_events: EventRecorder::new(registry.clone(), OwnerKind::ReplicaSet.component()),
            registry,
        }
    }

    fn events(&self, kind: OwnerKind) -> &EventRecorder {
        match kind {
            OwnerKind::ReplicationController => &self.rc_events,
            OwnerKind::ReplicaSet => &self.rs_events,
        }
    }

    /// Runs forever, starting over from a fresh list after any watch
    /// failure and every [`RESYNC_PERIOD`].
    pub async fn run(self) {
        loop {
            if let Err(error) = self.sync_and_follow().await {
                tracing::warn!(%error, "replication controller restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn sync_and_follow(&self) -> Result<(), ReplicationError> {
        let pods_prefix = pods_info()?.key_prefix(None);
        let rc_prefix = OwnerKind::ReplicationController.info()?.key_prefix(None);
        let rs_prefix = OwnerKind::ReplicaSet.info()?.key_prefix(None);
        let mut state = State::default();
        // Owners first, so that the pods listed next find who wants them.
        let rcs = self.registry.store.range(&rc_prefix).await?;
        let rss = self.registry.store.range(&rs_prefix).await?;
        let pods = self.registry.store.range(&pods_prefix).await?;
        for kv in &rcs.items {
            state.apply_owner(OwnerKind::ReplicationController, &kv.key, parse(kv));
        }
        for kv in &rss.items {
            state.apply_owner(OwnerKind::ReplicaSet, &kv.key, parse(kv));
        }
        for kv in &pods.items {
            if let Some((namespace, name)) = split_key(&kv.key, &pods_prefix) {
                state.apply_pod(namespace, name, parse(kv).as_ref());
            }
        }
        let mut rc_watch = self.registry.store.watch(&rc_prefix, rcs.revision)?;
        let mut rs_watch = self.registry.store.watch(&rs_prefix, rss.revision)?;
        let mut pod_watch = self.registry.store.watch(&pods_prefix, pods.revision)?;
        let resync = tokio::time::sleep(RESYNC_PERIOD);
        tokio::pin!(resync);
        loop {
            while let Some(key) = state.queue.pop(Instant::now()) {
                let result = self
                    .reconcile(&key, &mut state, Timestamp::now(), Instant::now())
                    .await;
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
                        tracing::warn!(%key, %error, "reconcile failed; will retry");
                        state.queue.add_rate_limited(key, now);
                    }
                }
                // Take in what the writes caused before the next owner.
                loop {
                    let event = match futures_util::FutureExt::now_or_never(pod_watch.next()) {
                        Some(event) => event?,
                        None => break,
                    };
                    apply_pod_event(&mut state, &pods_prefix, &event);
                }
            }
            let wakeup = state
                .queue
                .next_wakeup()
                .unwrap_or_else(|| Instant::now() + RESYNC_PERIOD);
            tokio::select! {
                event = pod_watch.next() => apply_pod_event(&mut state, &pods_prefix, event?.as_ref()),
                event = rc_watch.next() => apply_owner_event(&mut state, OwnerKind::ReplicationController, event?.as_ref()),
                event = rs_watch.next() => apply_owner_event(&mut state, OwnerKind::ReplicaSet, event?.as_ref()),
                _ = tokio::time::sleep_until(wakeup) => {}
                _ = &mut resync => return Ok(()),
            }
        }
    }

    /// Brings one owner's pods and status in line with its spec.
    pub async fn reconcile(
        &self,
        key: &OwnerKey,
        state: &mut State,
        now: Timestamp,
        tick: Instant,
    ) -> Result<Action, ReplicationError> {
        let Some(owner) = state.caches.owners.get(key).cloned() else {
            // Deleted: the garbage collector takes care of its pods.
            state.expectations.forget(key);
            return Ok(Action::default());
        };
        let manage = state.expectations.satisfied(key, tick);
        let pods = state
            .caches
            .pods
            .get(&key.namespace)
            .into_iter()
            .flat_map(BTreeMap::values);
        let plan = replicas::plan(&owner, pods, now, manage);

        let mut failure: Option<(&'static str, ReplicationError)> = None;
        for pod in &plan.release {
            if let Err(error) = self.release(&owner, pod).await {
                failure.get_or_insert(("FailedRelease", error.into()));
            }
        }
        if !plan.adopt.is_empty() && self.can_adopt(&owner).await? {
            for pod in &plan.adopt {
                if let Err(error) = self.adopt(&owner, pod).await {
                    failure.get_or_insert(("FailedAdopt", error.into()));
                }
            }
        }
        if plan.create > 0 {
            state
                .expectations
                .expect(key, plan.create, Vec::new(), tick);
            if let Err(error) = self.create_pods(&owner, plan.create, state).await {
                failure.get_or_insert(("FailedCreate", error));
            }
        } else if !plan.delete.is_empty() {
            let uids = plan.delete.iter().map(|p| p.uid.clone()).collect();
            state.expectations.expect(key, 0, uids, tick);
            if let Err(error) = self.delete_pods(&owner, &plan.delete, state).await {
                failure.get_or_insert(("FailedDelete", error));
            }
        }
        let message = failure
            .as_ref()
            .map(|(reason, error)| (*reason, error.to_string()));
        self.write_status(
            &owner,
            &plan,
            message.as_ref().map(|(r, m)| (*r, m.as_str())),
        )
        .await?;
        match failure {
            Some((_, error)) => Err(error),
            None => Ok(Action {
                requeue_after: plan.requeue_after,
            }),
        }
    }

    /// Kubernetes re-reads the owner before adopting, so that an owner
    /// deleted or replaced since the cache saw it adopts nothing.
    async fn can_adopt(&self, owner: &ReplicaOwner) -> Result<bool, ApiError> {
        let info = owner.key.kind.info()?;
        match self
            .registry
            .get(info, Some(&owner.key.namespace), &owner.key.name)
            .await
        {
            Ok(fresh) => Ok(str_at(&fresh, "/metadata/uid") == Some(owner.uid.as_str())
                && fresh.pointer("/metadata/deletionTimestamp").is_none()),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Rewrites a pod's owner references with compare-and-swap, if it is
    /// still the pod planned for (same uid).
    async fn edit_owner_references(
        &self,
        namespace: &str,
        pod: &PodRef,
        edit: impl Fn(&mut Vec<Value>) -> bool,
    ) -> Result<(), ApiError> {
        let info = pods_info()?;
        let mut object = match self.registry.get(info, Some(namespace), &pod.name).await {
            Ok(object) => object,
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(other) => return Err(other),
        };
        if str_at(&object, "/metadata/uid") != Some(pod.uid.as_str()) {
            return Ok(());
        }
        let mut references: Vec<Value> = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !edit(&mut references) {
            return Ok(());
        }
        object["metadata"]["ownerReferences"] = Value::Array(references);
        // The resourceVersion read above makes this a compare-and-swap; a
        // conflict fails the reconcile, which retries from fresh state.
        self.registry
            .update(
                info,
                Some(namespace),
                &pod.name,
                object,
                WriteMode::default(),
            )
            .await
            .map(|_| ())
    }

    async fn adopt(&self, owner: &ReplicaOwner, pod: &PodRef) -> Result<(), ApiError> {
        let reference = super::gc::controller_reference(&owner.object);
        self.edit_owner_references(&owner.key.namespace, pod, |references| {
            if references
                .iter()
                .any(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            {
                return false;
            }
            references.push(reference.clone());
            true
        })
        .await
    }

    async fn release(&self, owner: &ReplicaOwner, pod: &PodRef) -> Result<(), ApiError> {
        let uid = owner.uid.clone();
        self.edit_owner_references(&owner.key.namespace, pod, |references| {
            let before = references.len();
            references.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
            references.len() != before
        })
        .await
    }

    async fn create_pods(
        &self,
        owner: &ReplicaOwner,
        count: usize,
        state: &mut State,
    ) -> Result<(), ReplicationError> {
        let info = pods_info()?;
        let template = replicas::pod_from_template(owner);
        let mut remaining = count;
        let mut batch = SLOW_START_BATCH;
        while remaining > 0 {
            let size = batch.min(remaining);
            let results = join_all((0..size).map(|_| {
                self.registry
                    .create(info, Some(&owner.key.namespace), template.clone(), false)
            }))
            .await;
            remaining -= size;
            let mut failed = Vec::new();
            for result in results {
                match result {
                    Ok(kv) => {
                        let name = objects::value(&kv)
                            .ok()
                            .and_then(|pod| str_at(&pod, "/metadata/name").map(str::to_owned))
                            .unwrap_or_default();
                        self.event(
                            owner,
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        )
                        .await;
                    }
                    Err(error) => {
                        // This pod will never appear.
                        state.expectations.creation_observed(&owner.key);
                        self.event(
                            owner,
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {error}"),
                        )
                        .await;
                        failed.push(error);
                    }
                }
            }
            if let Some(first) = failed.first().cloned() {
                // The rest would most likely fail the same way; they are
                // skipped, and expected no more.
                for _ in 0..remaining {
                    state.expectations.creation_observed(&owner.key);
                }
                return Err(ReplicationError::Pods {
                    key: owner.key.clone(),
                    verb: "create",
                    failed: failed.len(),
                    attempted: count - remaining,
                    first,
                });
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(
        &self,
        owner: &ReplicaOwner,
        victims: &[PodRef],
        state: &mut State,
    ) -> Result<(), ReplicationError> {
        let info = pods_info()?;
        let results = join_all(victims.iter().map(|pod| {
            let options = DeleteOptions {
                precondition_uid: Some(pod.uid.clone()),
                ..DeleteOptions::default()
            };
            async move {
                self.registry
                    .delete(info, Some(&owner.key.namespace), &pod.name, &options)
                    .await
            }
        }))
        .await;
        let mut failed = Vec::new();
        for (pod, result) in victims.iter().zip(results) {
            match result {
                Ok(_) => {
                    self.event(
                        owner,
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name),
                    )
                    .await;
                }
                // Already gone (or replaced): nothing left to wait for.
                Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {
                    state.expectations.deletion_observed(&owner.key, &pod.uid);
                }
                Err(error) => {
                    state.expectations.deletion_observed(&owner.key, &pod.uid);
                    self.event(
                        owner,
                        EventType::Warning,
                        "FailedDelete",
                        format!("Error deleting: {error}"),
                    )
                    .await;
                    failed.push(error);
                }
            }
        }
        match failed.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(ReplicationError::Pods {
                key: owner.key.clone(),
                verb: "delete",
                failed: 1,
                attempted: victims.len(),
                first,
            }),
        }
    }

    /// Writes the status if it changed, through the status subresource.
    async fn write_status(
        &self,
        owner: &ReplicaOwner,
        plan: &ReplicaPlan,
        failure: Option<(&str, &str)>,
    ) -> Result<(), ApiError> {
        let info = owner.key.kind.info()?;
        let empty = Value::Object(Default::default());
        let current = owner.object.get("status").unwrap_or(&empty);
        let wanted =
            replicas::status_document(&plan.counts, current, failure, &objects::now_rfc3339());
        if wanted == *current {
            return Ok(());
        }
        let mut object = owner.object.clone();
        object["status"] = wanted;
        let status_only = WriteMode {
            status_only: true,
            dry_run: false,
        };
        match self
            .registry
            .update(
                info,
                Some(&owner.key.namespace),
                &owner.key.name,
                object,
                status_only,
            )
            .await
        {
            // Gone, or changed since the cache saw it: the watch brings
            // the new state and the owner is reconciled again.
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn event(
        &self,
        owner: &ReplicaOwner,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        self.events(owner.key.kind)
            .emit(EventRecord {
                involved: InvolvedObject::of(&owner.object),
                event_type,
                reason: reason.into(),
                message,
            })
            .await;
    }
}

pub(crate) fn parse(kv: &KeyValue) -> Option<Value> {
    match objects::value(kv) {
        Ok(object) => Some(object),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "a controller skips an object it cannot read");
            None
        }
    }
}

fn apply_pod_event(state: &mut State, prefix: &str, event: &Event) {
    let Some((namespace, name)) = split_key(&event.kv.key, prefix) else {
        return;
    };
    let object = match event.event_type {
        StoreEventType::Put => parse(&event.kv),
        StoreEventType::Delete => None,
    };
    state.apply_pod(namespace, name, object.as_ref());
}

fn apply_owner_event(state: &mut State, kind: OwnerKind, event: &Event) {
    let object = match event.event_type {
        StoreEventType::Put => parse(&event.kv),
        StoreEventType::Delete => None,
    };
    state.apply_owner(kind, &event.kv.key, object);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::{Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations};
    use serde_json::json;
    use skiff_apimachinery::{fields::FieldSelector, labels::LabelSelector};
    use skiff_store::{RedbStore, RedbStoreOptions};

    async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default())
            .expect("store");
        let allocations = ServiceAllocations {
            cluster_ips: ClusterIpAllocator::new(Cidr::parse("10.96.0.0/12").expect("cidr")),
            node_ports: NodePortAllocator::new(30000, 32767),
        };
        let registry = Arc::new(Registry::new(Arc::new(store), allocations));
        crate::bootstrap::ensure_defaults(&registry, "127.0.0.1", 6443)
            .await
            .expect("defaults");
        (dir, registry)
    }

    fn rc(replicas: i64) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"app": "web"}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        })
    }

    const KEY_PREFIX: &str = "/registry/core/pods/";

    /// Loads everything from the store, as the loop's list does.
    async fn load(registry: &Registry) -> State {
        let mut state = State::default();
        let rcs = registry
            .store
            .range("/registry/core/replicationcontrollers/")
            .await
            .expect("range");
        for kv in &rcs.items {
            state.apply_owner(OwnerKind::ReplicationController, &kv.key, parse(kv));
        }
        let pods = registry.store.range(KEY_PREFIX).await.expect("range");
        for kv in &pods.items {
            let (namespace, name) = split_key(&kv.key, KEY_PREFIX).expect("key");
            state.apply_pod(namespace, name, parse(kv).as_ref());
        }
        state
    }

    async fn pods(registry: &Registry) -> Vec<Value> {
        let (items, _) = registry
            .list(
                pods_info().expect("pods"),
                Some("default"),
                &LabelSelector::everything(),
                &FieldSelector::default(),
            )
            .await
            .expect("list");
        items
            .iter()
            .map(|kv| objects::value(kv).expect("pod"))
            .collect()
    }

    fn key() -> OwnerKey {
        OwnerKey {
            kind: OwnerKind::ReplicationController,
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    #[tokio::test]
    async fn creates_missing_pods_once_and_reports_status() {
        let (_dir, registry) = registry().await;
        let info = OwnerKind::ReplicationController.info().expect("rc");
        registry
            .create(info, Some("default"), rc(3), false)
            .await
            .expect("create rc");
        let manager = ReplicationManager::new(registry.clone());
        let mut state = load(&registry).await;
        let tick = Instant::now();
        manager
            .reconcile(&key(), &mut state, Timestamp::now(), tick)
            .await
            .expect("reconcile");
        let created = pods(&registry).await;
        assert_eq!(created.len(), 3);
        for pod in &created {
            assert!(str_at(pod, "/metadata/name").is_some_and(|n| n.starts_with("web-")));
            assert_eq!(
                pod["metadata"]["ownerReferences"][0]["kind"],
                "ReplicationController"
            );
        }

        // The cache has not seen the new pods yet: expectations stop a
        // second round of creations.
        manager
            .reconcile(&key(), &mut state, Timestamp::now(), tick)
            .await
            .expect("reconcile again");
        assert_eq!(pods(&registry).await.len(), 3, "no double creation");

        // Once the cache has them, the status is written.
        let mut state = load(&registry).await;
        manager
            .reconcile(&key(), &mut state, Timestamp::now(), tick)
            .await
            .expect("reconcile with cache");
        let stored = registry
            .get(info, Some("default"), "web")
            .await
            .expect("rc");
        assert_eq!(stored["status"]["replicas"], 3);
        assert_eq!(stored["status"]["observedGeneration"], 1);
        assert_eq!(pods(&registry).await.len(), 3);
    }

    #[tokio::test]
    async fn scaling_down_deletes_victims_and_orphans_are_adopted() {
        let (_dir, registry) = registry().await;
        let info = OwnerKind::ReplicationController.info().expect("rc");
        registry
            .create(info, Some("default"), rc(2), false)
            .await
            .expect("create rc");
        let pods_resource = pods_info().expect("pods");
        for name in ["a", "b", "c"] {
            registry
                .create(
                    pods_resource,
                    Some("default"),
                    json!({"metadata": {"name": name, "labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
                    false,
                )
                .await
                .expect("create pod");
        }
        let manager = ReplicationManager::new(registry.clone());
        let mut state = load(&registry).await;
        manager
            .reconcile(&key(), &mut state, Timestamp::now(), Instant::now())
            .await
            .expect("reconcile");
        let left = pods(&registry).await;
        assert_eq!(left.len(), 2, "one surplus orphan deleted");
        for pod in &left {
            assert_eq!(
                pod["metadata"]["ownerReferences"][0]["name"], "web",
                "adopted: {pod}"
            );
        }
    }

    #[test]
    fn pod_events_queue_their_owner_and_fulfil_expectations() {
        let mut state = State::default();
        let owner = json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "web", "namespace": "default", "uid": "rc-uid"},
            "spec": {"replicas": 1, "selector": {"app": "web"}}});
        state.apply_owner(
            OwnerKind::ReplicationController,
            "/registry/core/replicationcontrollers/default/web",
            Some(owner),
        );
        assert_eq!(state.queue.pop(Instant::now()), Some(key()));
        state.queue.done(&key());
        let now = Instant::now();
        state
            .expectations
            .expect(&key(), 1, vec!["old-uid".into()], now);

        let pod = json!({"metadata": {"name": "web-1", "namespace": "default", "uid": "new-uid",
            "labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "v1",
            "kind": "ReplicationController", "name": "web", "uid": "rc-uid", "controller": true}]}});
        state.apply_pod("default", "web-1", Some(&pod));
        assert_eq!(state.queue.pop(now), Some(key()));
        state.queue.done(&key());
        assert!(
            !state.expectations.satisfied(&key(), now),
            "a deletion is outstanding"
        );
        let old = json!({"metadata": {"name": "web-0", "namespace": "default", "uid": "old-uid",
            "labels": {"app": "web"}, "ownerReferences": pod["metadata"]["ownerReferences"].clone()}});
        state.apply_pod("default", "web-0", Some(&old));
        state.apply_pod("default", "web-0", None);
        assert!(state.expectations.satisfied(&key(), now));

        // An orphan queues the owners that would adopt it; an unrelated
        // one queues nothing.
        while state.queue.pop(now).is_some() {}
        state.queue.done(&key());
        state.apply_pod(
            "default",
            "stray",
            Some(&json!({"metadata": {"name": "stray",
            "namespace": "default", "uid": "s", "labels": {"app": "db"}}})),
        );
        assert_eq!(state.queue.pop(now), None);
        state.apply_pod(
            "default",
            "loose",
            Some(&json!({"metadata": {"name": "loose",
            "namespace": "default", "uid": "l", "labels": {"app": "web"}}})),
        );
        assert_eq!(state.queue.pop(now), Some(key()));

        state.apply_owner(
            OwnerKind::ReplicationController,
            "/registry/core/replicationcontrollers/default/web",
            None,
        );
        assert!(state.caches.owners.is_empty());
    }
}
