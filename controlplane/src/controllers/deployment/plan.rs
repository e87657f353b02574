//! One sync of a deployment, decided without I/O: Kubernetes'
//! `syncDeployment` run against an in-memory copy of the deployment and
//! its ReplicaSets.
//!
//! Kubernetes' controller writes as it goes and reads its own writes back.
//! Here every write is applied to the copy instead ([`Sim`]) and recorded
//! as a [`Step`], so later decisions in the same sync see it as they would
//! in Kubernetes; the executor then performs the steps in order and stops
//! at the first failure. Several changes to one ReplicaSet become one
//! write (they would otherwise conflict with each other), and the
//! deployment's annotation and status come last, once each.
//!
//! The order of a sync:
//! 1. claim ReplicaSets: adopt matching orphans, release owned ones that
//!    no longer match;
//! 2. a deployment being deleted only reports status;
//! 3. paused, or only scaled: resize ReplicaSets (proportionally during a
//!    rollout) and report;
//! 4. otherwise roll out: Recreate scales old ReplicaSets to 0 and waits
//!    for their pods to be gone before the new one is created and scaled
//!    up; RollingUpdate grows the new ReplicaSet within `maxSurge`, then
//!    shrinks old ones within `maxUnavailable`, one move per sync;
//! 5. old ReplicaSets beyond `revisionHistoryLimit` are deleted once the
//!    rollout is complete (or the deployment is paused).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::model::{
    controller_of, Condition, Deployment, DeploymentStatus, ReplicaSet, ReplicaSetStatus,
};
use super::progress::{
    calculate_status, deployment_complete, paused_condition, rollout_status, FOUND_NEW_REPLICA_SET,
    NEW_REPLICA_SET_CREATED, PROGRESSING,
};
use super::revisions::{
    equal_ignore_hash, max_revision, number_annotation, pod_template_hash,
    replicas_annotations_need_update, set_new_replica_set_annotations, set_replicas_annotations,
    DESIRED_REPLICAS, MAX_REPLICAS, POD_TEMPLATE_HASH, REVISION,
};
use super::rollout::{
    max_surge, new_replica_set_size, old_replica_set_sizes, proportional_sizes, ActiveSet, Counts,
};
use crate::controllers::events::EventType;
use crate::controllers::gc::controller_reference;
use crate::controllers::replicas::PodInfo;

/// The reason of the events about scaling.
pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// An event to record about the deployment once a step succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub event_type: EventType,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn scaled(name: &str, from: i64, to: i64) -> Note {
        let direction = if from < to { "up" } else { "down" };
        Note {
            event_type: EventType::Normal,
            reason: SCALING_REPLICA_SET,
            message: format!("Scaled {direction} replica set {name} from {from} to {to}"),
        }
    }
}

/// One write to a ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create {
        name: String,
        object: Value,
        notes: Vec<Note>,
    },
    /// A compare-and-swap update of the stored object (its
    /// resourceVersion is in `object`).
    Update {
        name: String,
        object: Value,
        notes: Vec<Note>,
    },
    Delete {
        name: String,
        uid: String,
    },
}

/// What one sync does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    /// Whether steps adopt orphans, which needs a fresh look at the
    /// deployment first (it may be gone, or going, since the cache saw it).
    pub adopts: bool,
    pub steps: Vec<Step>,
    /// The deployment's new annotations, if they change (its revision).
    pub annotations: Option<BTreeMap<String, String>>,
    /// The deployment's new status, if it changes.
    pub status: Option<DeploymentStatus>,
    /// When to sync again although nothing happens (a progress deadline).
    pub requeue_after: Option<Duration>,
}

/// A ReplicaSet in the copy.
#[derive(Debug, Clone)]
struct Entry {
    rs: ReplicaSet,
    claimed: bool,
    create: bool,
    dirty: bool,
    notes: Vec<Note>,
}

/// The in-memory copy a sync works on.
struct Sim<'a> {
    d: Deployment,
    entries: Vec<Entry>,
    /// Entries in the order they were first changed.
    order: Vec<usize>,
    deletes: Vec<Step>,
    /// Pods controlled by the claimed ReplicaSets, by controller uid.
    pods: Vec<&'a PodInfo>,
    now: Timestamp,
    adopts: bool,
    requeue_after: Option<Duration>,
}

/// Decides one sync of `deployment`, given every ReplicaSet and pod in its
/// namespace, at `now`.
pub fn plan<'a>(
    deployment: &Deployment,
    replica_sets: impl IntoIterator<Item = &'a ReplicaSet>,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    now: Timestamp,
) -> SyncPlan {
    let mut sim = Sim {
        d: deployment.clone(),
        entries: Vec::new(),
        order: Vec::new(),
        deletes: Vec::new(),
        pods: Vec::new(),
        now,
        adopts: false,
        requeue_after: None,
    };
    sim.claim(replica_sets);
    let owned: HashSet<&str> = sim
        .entries
        .iter()
        .filter(|e| e.claimed)
        .map(|e| e.rs.uid.as_str())
        .collect();
    let selector = &deployment.selector;
    let pods: Vec<&PodInfo> = pods
        .into_iter()
        .filter(|pod| {
            selector.matches(&pod.labels)
                && pod
                    .controller
                    .as_ref()
                    .is_some_and(|c| owned.contains(c.uid.as_str()))
        })
        .collect();
    sim.pods = pods;

    if deployment.deleting {
        sim.sync_status_only();
    } else {
        let mut status = sim.d.status.clone();
        paused_condition(&sim.d, &mut status, now);
        sim.d.status = status;
        if sim.d.paused || sim.is_scaling_event() {
            sim.sync();
        } else if sim.d.is_rolling_update() {
            sim.rollout_rolling();
        } else {
            sim.rollout_recreate();
        }
    }
    sim.finish(deployment)
}

impl<'a> Sim<'a> {
    /// Kubernetes' `ClaimReplicaSets`.
    fn claim(&mut self, replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) {
        let d = &self.d;
        let mut entries = Vec::new();
        for rs in replica_sets {
            let matches = d.selector.matches(&rs.labels);
            let mut entry = Entry {
                rs: rs.clone(),
                claimed: false,
                create: false,
                dirty: false,
                notes: Vec::new(),
            };
            match &rs.controller {
                Some(controller) if controller.uid == d.uid => {
                    if matches {
                        entry.claimed = true;
                    } else if !d.deleting {
                        entry.rs.owner_references.retain(|r| {
                            r.get("uid").and_then(Value::as_str) != Some(d.uid.as_str())
                        });
                        entry.rs.controller = None;
                        entry.dirty = true;
                    } else {
                        continue;
                    }
                }
                Some(_) => continue,
                None => {
                    if !matches || d.deleting || rs.deleting {
                        continue;
                    }
                    entry
                        .rs
                        .owner_references
                        .push(controller_reference(&d.object));
                    entry.rs.controller = controller_of(&entry.rs.owner_references);
                    entry.claimed = true;
                    entry.dirty = true;
                    self.adopts = true;
                }
            }
            entries.push(entry);
        }
        // Oldest first, as Kubernetes sorts them before choosing.
        entries.sort_by(|a, b| {
            a.rs.created
                .cmp(&b.rs.created)
                .then_with(|| a.rs.name.cmp(&b.rs.name))
        });
        for (i, entry) in entries.iter().enumerate() {
            if entry.dirty {
                self.order.push(i);
            }
        }
        self.entries = entries;
    }

    fn claimed(&self) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&i| self.entries[i].claimed)
            .collect()
    }

    fn rs(&self, i: usize) -> &ReplicaSet {
        &self.entries[i].rs
    }

    /// Kubernetes' `FindNewReplicaSet`: the oldest claimed ReplicaSet with
    /// the deployment's template.
    fn find_new(&self) -> Option<usize> {
        self.claimed()
            .into_iter()
            .find(|&i| equal_ignore_hash(&self.rs(i).template, &self.d.template))
    }

    fn old_of(&self, new: Option<usize>) -> Vec<usize> {
        self.claimed()
            .into_iter()
            .filter(|&i| Some(i) != new)
            .collect()
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .copied()
            .filter(|&i| self.rs(i).replicas > 0)
            .collect()
    }

    /// Records a changed ReplicaSet, as its write would leave it.
    fn write(&mut self, i: usize, mut rs: ReplicaSet) {
        let entry = &mut self.entries[i];
        if !entry.create
            && (rs.replicas != entry.rs.replicas
                || rs.min_ready_seconds != entry.rs.min_ready_seconds)
        {
            // The API bumps the generation of a spec change; cleanup
            // checks it against the observed one.
            rs.generation = entry.rs.generation + 1;
        }
        entry.rs = rs;
        if !entry.dirty {
            entry.dirty = true;
            self.order.push(i);
        }
    }

    fn set_deployment_revision(&mut self, revision: String) {
        self.d.annotations.insert(REVISION.into(), revision);
    }

    fn set_progressing(&mut self, reason: &str, message: String) {
        if self.d.progress_deadline().is_some() {
            let condition = Condition::new(PROGRESSING, "True", reason, message, self.now);
            self.d.status.set_condition(condition);
        }
    }

    /// Kubernetes' `getNewReplicaSet`: finds the new ReplicaSet and brings
    /// its revision and annotations up to date, or creates it if asked to.
    fn new_replica_set(&mut self, create: bool) -> Option<usize> {
        let existing = self.find_new();
        let old = self.old_of(existing);
        let new_revision = max_revision(old.iter().map(|&i| self.rs(i))) + 1;
        let surge = max_surge(&self.d);
        if let Some(i) = existing {
            let mut rs = self.rs(i).clone();
            let annotations_changed =
                set_new_replica_set_annotations(&self.d, &mut rs, new_revision, true, surge);
            let min_ready_changed = rs.min_ready_seconds != self.d.min_ready_seconds;
            if annotations_changed || min_ready_changed {
                rs.min_ready_seconds = self.d.min_ready_seconds;
                self.write(i, rs);
                return Some(i);
            }
            let revision = rs.annotations.get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(revision);
            if self.d.status.condition(PROGRESSING).is_none() {
                self.set_progressing(
                    FOUND_NEW_REPLICA_SET,
                    format!("Found new replica set {:?}", rs.name),
                );
            }
            return Some(i);
        }
        if !create {
            return None;
        }

        let mut rs = self.new_replica_set_object();
        let total: i64 = old.iter().map(|&i| self.rs(i).replicas).sum();
        rs.replicas = new_replica_set_size(&self.d, total, 0);
        set_new_replica_set_annotations(&self.d, &mut rs, new_revision, false, surge);
        let mut notes = Vec::new();
        if rs.replicas > 0 {
            notes.push(Note::scaled(&rs.name, 0, rs.replicas));
        }
        let message = format!("Created new replica set {:?}", rs.name);
        self.entries.push(Entry {
            rs,
            claimed: true,
            create: true,
            dirty: true,
            notes,
        });
        let i = self.entries.len() - 1;
        self.order.push(i);
        self.set_deployment_revision(new_revision.to_string());
        self.set_progressing(NEW_REPLICA_SET_CREATED, message);
        Some(i)
    }

    /// The ReplicaSet for the deployment's template, before its size and
    /// annotations are decided.
    fn new_replica_set_object(&self) -> ReplicaSet {
        let d = &self.d;
        let hash = pod_template_hash(&d.template, d.status.collision_count);
        let mut template = d.template.clone();
        if !template
            .pointer("/metadata/labels")
            .is_some_and(Value::is_object)
        {
            template["metadata"]["labels"] = json!({});
        }
        template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        let labels = template["metadata"]["labels"].clone();
        let mut selector = d.selector_value.clone();
        if !selector.get("matchLabels").is_some_and(Value::is_object) {
            selector["matchLabels"] = json!({});
        }
        selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
        let name = format!("{}-{hash}", d.name);
        let reference = controller_reference(&d.object);
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": d.namespace,
                "labels": labels,
                "ownerReferences": [reference.clone()],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": d.min_ready_seconds,
                "selector": selector,
                "template": template.clone(),
            },
        });
        ReplicaSet {
            namespace: d.namespace.clone(),
            name,
            uid: String::new(),
            created: Some(self.now),
            generation: 1,
            replicas: 0,
            min_ready_seconds: d.min_ready_seconds,
            labels: labels.as_object().cloned().unwrap_or_default(),
            annotations: BTreeMap::new(),
            template,
            controller: controller_of(std::slice::from_ref(&reference)),
            owner_references: vec![reference],
            deleting: false,
            status: ReplicaSetStatus::default(),
            failure: None,
            object,
        }
    }

    /// Kubernetes' `scaleReplicaSet`: sets the size and the replica
    /// annotations; returns whether the size changed.
    fn scale(&mut self, i: usize, size: i64) -> bool {
        let desired = self.d.replicas;
        let max = desired + max_surge(&self.d);
        let rs = self.rs(i);
        let resize = rs.replicas != size;
        if !resize && !replicas_annotations_need_update(&rs.annotations, desired, max) {
            return false;
        }
        let from = rs.replicas;
        let mut rs = rs.clone();
        rs.replicas = size;
        set_replicas_annotations(&mut rs.annotations, desired, max);
        let name = rs.name.clone();
        self.write(i, rs);
        if resize {
            self.entries[i].notes.push(Note::scaled(&name, from, size));
        }
        resize
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`: only a change of size.
    fn resize(&mut self, i: usize, size: i64) -> bool {
        self.rs(i).replicas != size && self.scale(i, size)
    }

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for a
    /// different `spec.replicas`.
    fn is_scaling_event(&mut self) -> bool {
        let Some(new) = self.new_replica_set(false) else {
            return false;
        };
        let mut all = self.old_of(Some(new));
        all.push(new);
        self.active(&all).into_iter().any(|i| {
            number_annotation(self.rs(i), DESIRED_REPLICAS).is_some_and(|d| d != self.d.replicas)
        })
    }

    /// Kubernetes' `sync`: scaling, and cleanup while paused.
    fn sync(&mut self) {
        let new = self.new_replica_set(false);
        let old = self.old_of(new);
        self.scale_all(new, &old);
        if self.d.paused {
            self.cleanup(&old);
        }
        self.sync_status(new);
    }

    /// Kubernetes' `scale` (of `sync.go`).
    fn scale_all(&mut self, new: Option<usize>, old: &[usize]) {
        let replicas = self.d.replicas;
        let mut newest_first = old.to_vec();
        newest_first.reverse();
        let mut all: Vec<usize> = newest_first.clone();
        all.extend(new);
        let active = self.active(&all);
        // One active ReplicaSet (or none: the newest) takes everything.
        let only = match active.as_slice() {
            [] => new.or_else(|| newest_first.first().copied()),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = only {
            if self.rs(i).replicas != replicas {
                self.resize(i, replicas);
            }
            return;
        }
        if let Some(n) = new.filter(|&n| self.is_saturated(n)) {
            for i in self.active(old) {
                if i != n {
                    self.resize(i, 0);
                }
            }
            return;
        }
        if !self.d.is_rolling_update() {
            return;
        }
        let sized: Vec<ActiveSet> = active
            .iter()
            .map(|&i| {
                let rs = self.rs(i);
                ActiveSet {
                    name: &rs.name,
                    created: rs.created,
                    replicas: rs.replicas,
                    max_replicas: number_annotation(rs, MAX_REPLICAS),
                }
            })
            .collect();
        let sizes = proportional_sizes(&self.d, &sized, self.d.status.replicas);
        for (position, size) in sizes {
            self.scale(active[position], size);
        }
    }

    /// Kubernetes' `IsSaturated`: the new ReplicaSet has all the replicas,
    /// available.
    fn is_saturated(&self, i: usize) -> bool {
        let rs = self.rs(i);
        let replicas = self.d.replicas;
        rs.replicas == replicas
            && number_annotation(rs, DESIRED_REPLICAS) == Some(replicas)
            && rs.status.available_replicas == replicas
    }

    /// Kubernetes' `rolloutRolling`.
    fn rollout_rolling(&mut self) {
        let Some(new) = self.new_replica_set(true) else {
            return;
        };
        let old = self.old_of(Some(new));
        if self.reconcile_new(new, &old) {
            return self.sync_rollout_status(Some(new));
        }
        if self.reconcile_old(new, &old) {
            return self.sync_rollout_status(Some(new));
        }
        if deployment_complete(&self.d, &self.d.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new));
    }

    fn reconcile_new(&mut self, new: usize, old: &[usize]) -> bool {
        let replicas = self.d.replicas;
        let current = self.rs(new).replicas;
        if current == replicas {
            return false;
        }
        if current > replicas {
            return self.resize(new, replicas);
        }
        let total: i64 = old.iter().map(|&i| self.rs(i).replicas).sum::<i64>() + current;
        let size = new_replica_set_size(&self.d, total, current);
        self.resize(new, size)
    }

    fn reconcile_old(&mut self, new: usize, old: &[usize]) -> bool {
        let active = self.active(old);
        let counts = |rs: &ReplicaSet| Counts {
            replicas: rs.replicas,
            available: rs.status.available_replicas,
        };
        let old_counts: Vec<Counts> = active.iter().map(|&i| counts(self.rs(i))).collect();
        let sizes = old_replica_set_sizes(&self.d, &old_counts, counts(self.rs(new)));
        let mut scaled = false;
        for (i, size) in active.into_iter().zip(sizes) {
            scaled |= self.resize(i, size);
        }
        scaled
    }

    /// Kubernetes' `rolloutRecreate`.
    fn rollout_recreate(&mut self) {
        // Not created yet: nothing may scale up before the old pods are
        // gone.
        let mut new = self.new_replica_set(false);
        let old = self.old_of(new);
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.resize(i, 0);
        }
        if scaled_down || self.old_pods_running(new, &old) {
            return self.sync_rollout_status(new);
        }
        if new.is_none() {
            new = self.new_replica_set(true);
        }
        if let Some(n) = new {
            self.resize(n, self.d.replicas);
        }
        if deployment_complete(&self.d, &self.d.status) {
            let old = self.old_of(new);
            self.cleanup(&old);
        }
        self.sync_rollout_status(new);
    }

    /// Whether an old ReplicaSet still reports pods, or any pod of one is
    /// not finished (terminating ones included).
    fn old_pods_running(&self, new: Option<usize>, old: &[usize]) -> bool {
        if old.iter().map(|&i| self.rs(i).status.replicas).sum::<i64>() > 0 {
            return true;
        }
        let new_uid = new.map(|n| self.rs(n).uid.as_str());
        self.pods.iter().any(|pod| {
            let controller = pod.controller.as_ref().map(|c| c.uid.as_str());
            controller != new_uid && pod.phase != "Succeeded" && pod.phase != "Failed"
        })
    }

    /// Kubernetes' `cleanupDeployment`: deletes the oldest revisions
    /// beyond the history limit, if they are scaled to zero and settled.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = self.d.revision_history_limit else {
            return;
        };
        let mut cleanable: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| !self.rs(i).deleting)
            .collect();
        let excess = cleanable.len() as i64 - limit;
        if excess <= 0 {
            return;
        }
        cleanable.sort_by(|&a, &b| {
            let (a, b) = (self.rs(a), self.rs(b));
            a.revision()
                .unwrap_or(0)
                .cmp(&b.revision().unwrap_or(0))
                .then_with(|| a.created.cmp(&b.created))
                .then_with(|| a.name.cmp(&b.name))
        });
        for &i in cleanable.iter().take(excess as usize) {
            let rs = self.rs(i);
            if rs.status.replicas != 0
                || rs.replicas != 0
                || rs.generation > rs.status.observed_generation
                || self.entries[i].create
            {
                continue;
            }
            self.deletes.push(Step::Delete {
                name: rs.name.clone(),
                uid: rs.uid.clone(),
            });
            self.entries[i].claimed = false;
        }
    }

    fn status_inputs(&self, new: Option<usize>) -> Vec<&ReplicaSet> {
        let mut all: Vec<&ReplicaSet> = self.old_of(new).into_iter().map(|i| self.rs(i)).collect();
        all.extend(new.map(|n| self.rs(n)));
        all
    }

    /// Kubernetes' `syncDeploymentStatus`.
    fn sync_status(&mut self, new: Option<usize>) {
        let all = self.status_inputs(new);
        let status = calculate_status(&self.d, &all, new.map(|n| self.rs(n)), self.now);
        self.d.status = status;
    }

    /// Kubernetes' `syncRolloutStatus`.
    fn sync_rollout_status(&mut self, new: Option<usize>) {
        let all = self.status_inputs(new);
        let (status, requeue) = rollout_status(&self.d, &all, new.map(|n| self.rs(n)), self.now);
        self.d.status = status;
        self.requeue_after = requeue;
    }

    /// Kubernetes' `syncStatusOnly`, for a deployment being deleted.
    fn sync_status_only(&mut self) {
        let new = self.new_replica_set(false);
        self.sync_status(new);
    }

    fn finish(self, original: &Deployment) -> SyncPlan {
        let mut steps = Vec::new();
        for i in self.order {
            let entry = &self.entries[i];
            let object = entry.rs.to_object();
            let name = entry.rs.name.clone();
            let notes = entry.notes.clone();
            steps.push(if entry.create {
                Step::Create {
                    name,
                    object,
                    notes,
                }
            } else {
                Step::Update {
                    name,
                    object,
                    notes,
                }
            });
        }
        steps.extend(self.deletes);
        SyncPlan {
            adopts: self.adopts,
            steps,
            annotations: (self.d.annotations != original.annotations).then_some(self.d.annotations),
            status: (self.d.status != original.status).then_some(self.d.status),
            requeue_after: self.requeue_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::deployment::progress::{
        AVAILABLE, DEPLOYMENT_PAUSED, MINIMUM_REPLICAS_UNAVAILABLE,
    };
    use crate::controllers::deployment::revisions::REVISION_HISTORY;

    const CAUSE: &str = "kubernetes.io/change-cause";

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().expect("time")
    }

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    fn deployment(replicas: i64, image: &str, extra: Value) -> Deployment {
        let mut object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(image),
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            },
            "status": {"observedGeneration": 1},
        });
        json_patch::merge(&mut object, &extra);
        Deployment::from_object(object).expect("deployment")
    }

    /// A ReplicaSet of the deployment for `image`, `replicas` of them
    /// (status: `replicas` pods, `available` of them available).
    fn replica_set(
        image: &str,
        revision: i64,
        replicas: i64,
        available: i64,
        age: i64,
    ) -> ReplicaSet {
        let hash = pod_template_hash(&template(image), None);
        let mut rs_template = template(image);
        rs_template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        ReplicaSet::from_object(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("web-{hash}"), "namespace": "default", "uid": format!("uid-{image}"),
                "generation": 1, "resourceVersion": "7",
                "creationTimestamp": format_time(now() - jiff::SignedDuration::from_secs(age)),
                "labels": rs_template["metadata"]["labels"].clone(),
                "annotations": {REVISION: revision.to_string(), DESIRED_REPLICAS: "4", MAX_REPLICAS: "5"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "uid": "d-uid", "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"replicas": replicas, "minReadySeconds": 0,
                "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH: hash}},
                "template": rs_template},
            "status": {"replicas": replicas, "readyReplicas": available,
                "availableReplicas": available, "observedGeneration": 1},
        }))
        .expect("rs")
    }

    fn format_time(time: Timestamp) -> String {
        super::super::model::format_time(time)
    }

    /// Name, replicas and revision of each written ReplicaSet.
    fn written(plan: &SyncPlan) -> Vec<(String, &'static str, i64, String)> {
        plan.steps
            .iter()
            .map(|step| {
                let (verb, object) = match step {
                    Step::Create { object, .. } => ("create", object),
                    Step::Update { object, .. } => ("update", object),
                    Step::Delete { name, .. } => {
                        return (name.clone(), "delete", 0, String::new());
                    }
                };
                (
                    str_of(object, "/metadata/name"),
                    verb,
                    object["spec"]["replicas"].as_i64().unwrap_or(-1),
                    object["metadata"]["annotations"][REVISION]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    fn str_of(object: &Value, pointer: &str) -> String {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn name(image: &str) -> String {
        format!("web-{}", pod_template_hash(&template(image), None))
    }

    fn notes(plan: &SyncPlan) -> Vec<String> {
        plan.steps
            .iter()
            .flat_map(|step| match step {
                Step::Create { notes, .. } | Step::Update { notes, .. } => notes.clone(),
                Step::Delete { .. } => Vec::new(),
            })
            .map(|note| note.message)
            .collect()
    }

    #[test]
    fn a_new_deployment_gets_its_first_replica_set() {
        let d = deployment(3, "nginx:1", json!({}));
        let plan = plan(&d, &[], &[], now());
        assert_eq!(
            written(&plan),
            [(name("nginx:1"), "create", 3, "1".to_owned())]
        );
        let Step::Create { object, .. } = &plan.steps[0] else {
            panic!("not a create: {plan:?}");
        };
        let hash = pod_template_hash(&d.template, None);
        assert_eq!(
            object["metadata"]["labels"],
            json!({"app": "web", POD_TEMPLATE_HASH: hash})
        );
        assert_eq!(
            object["spec"]["template"]["metadata"]["labels"],
            object["metadata"]["labels"]
        );
        assert_eq!(
            object["spec"]["selector"],
            json!({"matchLabels": {"app": "web", POD_TEMPLATE_HASH: hash}})
        );
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "d-uid");
        assert_eq!(object["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(object["metadata"]["annotations"][DESIRED_REPLICAS], "3");
        assert_eq!(object["metadata"]["annotations"][MAX_REPLICAS], "4");
        assert_eq!(
            notes(&plan),
            [format!(
                "Scaled up replica set {} from 0 to 3",
                name("nginx:1")
            )]
        );
        assert_eq!(
            plan.annotations.as_ref().map(|a| a[REVISION].as_str()),
            Some("1")
        );
        let status = plan.status.expect("status");
        assert_eq!(status.observed_generation, 2);
        let progressing = status.condition(PROGRESSING).expect("Progressing");
        assert_eq!(progressing.reason, NEW_REPLICA_SET_CREATED);
        assert_eq!(
            progressing.message,
            format!("Created new replica set {:?}", name("nginx:1"))
        );
        let available = status.condition(AVAILABLE).expect("Available");
        assert_eq!(available.reason, MINIMUM_REPLICAS_UNAVAILABLE);
    }

    #[test]
    fn a_new_template_starts_a_rolling_update_with_the_change_cause() {
        let d = deployment(
            4,
            "nginx:2",
            json!({"metadata": {"annotations": {REVISION: "1", CAUSE: "kubectl set image ..."}}}),
        );
        let old = replica_set("nginx:1", 1, 4, 4, 600);
        let plan = plan(&d, &[old], &[], now());
        // The new set takes the surge; an old pod may go at once, since
        // all four are available and one may be unavailable.
        assert_eq!(
            written(&plan),
            [
                (name("nginx:2"), "create", 1, "2".to_owned()),
                (name("nginx:1"), "update", 3, "1".to_owned()),
            ]
        );
        let Step::Create { object, .. } = &plan.steps[0] else {
            panic!("not a create: {plan:?}");
        };
        assert_eq!(
            object["metadata"]["annotations"][CAUSE],
            "kubectl set image ..."
        );
        assert_eq!(
            plan.annotations.as_ref().map(|a| a[REVISION].as_str()),
            Some("2")
        );
    }

    #[test]
    fn a_rolling_update_moves_one_step_per_sync() {
        let d = deployment(
            4,
            "nginx:2",
            json!({"metadata": {"annotations": {REVISION: "2"}}}),
        );
        let cases = [
            // (old: replicas, available; new: replicas, available) -> writes
            (
                (3, 3),
                (1, 0),
                vec![(name("nginx:2"), "update", 2, "2".to_owned())],
            ),
            ((3, 3), (2, 0), vec![]),
            (
                (3, 3),
                (2, 2),
                vec![(name("nginx:1"), "update", 1, "1".to_owned())],
            ),
            (
                (1, 1),
                (4, 4),
                vec![(name("nginx:1"), "update", 0, "1".to_owned())],
            ),
        ];
        for ((old_replicas, old_available), (new_replicas, new_available), expected) in cases {
            let old = replica_set("nginx:1", 1, old_replicas, old_available, 600);
            let new = replica_set("nginx:2", 2, new_replicas, new_available, 60);
            let plan = plan(&d, &[old, new], &[], now());
            assert_eq!(
                written(&plan),
                expected,
                "old {old_replicas}/{old_available}, new {new_replicas}/{new_available}"
            );
        }
    }

    #[test]
    fn a_rollback_reuses_the_old_replica_set_under_the_next_revision() {
        // `kubectl rollout undo --to-revision=1` put the old template back.
        let d = deployment(
            4,
            "nginx:1",
            json!({"metadata": {"annotations": {REVISION: "2"}}}),
        );
        let first = replica_set("nginx:1", 1, 3, 0, 600);
        let second = replica_set("nginx:2", 2, 2, 0, 60);
        let plan_once = plan(&d, &[first.clone(), second.clone()], &[], now());
        assert_eq!(
            written(&plan_once),
            [(name("nginx:1"), "update", 3, "3".to_owned())]
        );
        let Step::Update { object, .. } = &plan_once.steps[0] else {
            panic!("not an update: {plan_once:?}");
        };
        assert_eq!(object["metadata"]["annotations"][REVISION_HISTORY], "1");
        // The deployment takes the revision of its new ReplicaSet.
        assert_eq!(
            plan_once.annotations.as_ref().map(|a| a[REVISION].as_str()),
            Some("3")
        );

        // Once written, nothing more to do about revisions.
        let first = ReplicaSet::from_object(object.clone()).expect("rs");
        let mut d = d;
        d.annotations.insert(REVISION.into(), "3".into());
        let plan_twice = plan(&d, &[first, second], &[], now());
        assert_eq!(written(&plan_twice), []);
        assert_eq!(plan_twice.annotations, None);
    }

    #[test]
    fn a_paused_deployment_does_not_roll_out_but_scales() {
        let d = deployment(
            5,
            "nginx:2",
            json!({"spec": {"paused": true}, "metadata": {"annotations": {REVISION: "1"}}}),
        );
        let old = replica_set("nginx:1", 1, 4, 4, 600);
        let plan = plan(&d, &[old], &[], now());
        assert_eq!(
            written(&plan),
            [(name("nginx:1"), "update", 5, "1".to_owned())]
        );
        let status = plan.status.expect("status");
        let progressing = status.condition(PROGRESSING).expect("Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("Unknown", DEPLOYMENT_PAUSED)
        );
    }

    #[test]
    fn scaling_mid_rollout_resizes_every_replica_set_proportionally() {
        let d = deployment(
            5,
            "nginx:2",
            json!({"metadata": {"annotations": {REVISION: "2"}}}),
        );
        let old = replica_set("nginx:1", 1, 3, 0, 600);
        let new = replica_set("nginx:2", 2, 2, 0, 60);
        let plan = plan(&d, &[old, new], &[], now());
        let mut sizes: Vec<(String, i64)> = written(&plan)
            .into_iter()
            .map(|(name, _, replicas, _)| (name, replicas))
            .collect();
        sizes.sort();
        let mut expected = vec![(name("nginx:1"), 4), (name("nginx:2"), 3)];
        expected.sort();
        assert_eq!(sizes, expected);
        for step in &plan.steps {
            let Step::Update { object, .. } = step else {
                panic!("not an update: {step:?}");
            };
            assert_eq!(object["metadata"]["annotations"][DESIRED_REPLICAS], "5");
            assert_eq!(object["metadata"]["annotations"][MAX_REPLICAS], "7");
        }
    }

    fn pod(name: &str, rs: &ReplicaSet, phase: &str) -> PodInfo {
        PodInfo::from_object(&json!({
            "metadata": {"name": name, "namespace": "default", "uid": name,
                "labels": rs.template["metadata"]["labels"].clone(),
                "deletionTimestamp": "2025-06-01T12:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": rs.name, "uid": rs.uid, "controller": true}]},
            "status": {"phase": phase},
        }))
    }

    #[test]
    fn recreate_scales_old_pods_away_before_creating_new_ones() {
        let d = deployment(
            2,
            "nginx:2",
            json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}},
                "metadata": {"annotations": {REVISION: "1"}}}),
        );
        let old = replica_set("nginx:1", 1, 2, 2, 600);
        let first = plan(&d, std::slice::from_ref(&old), &[], now());
        assert_eq!(
            written(&first),
            [(name("nginx:1"), "update", 0, "1".to_owned())]
        );

        // Scaled to zero, but a pod is still terminating: wait.
        let mut scaled = old.clone();
        scaled.replicas = 0;
        scaled.status.replicas = 0;
        let terminating = pod("web-old-1", &scaled, "Running");
        let waiting = plan(&d, &[scaled.clone()], &[terminating], now());
        assert_eq!(written(&waiting), []);
        // A finished pod does not hold the rollout back.
        let finished = pod("web-old-1", &scaled, "Succeeded");
        let done = plan(&d, &[scaled.clone()], &[finished], now());
        assert_eq!(
            written(&done),
            [(name("nginx:2"), "create", 2, "2".to_owned())]
        );
        let gone = plan(&d, &[scaled], &[], now());
        assert_eq!(
            written(&gone),
            [(name("nginx:2"), "create", 2, "2".to_owned())]
        );
    }

    #[test]
    fn old_revisions_beyond_the_limit_go_once_the_rollout_is_complete() {
        let complete = json!({"metadata": {"generation": 3, "annotations": {REVISION: "3"}},
            "spec": {"revisionHistoryLimit": 1}, "status": {"observedGeneration": 3}});
        let d = deployment(0, "nginx:3", complete);
        let sets = [
            replica_set("nginx:2", 2, 0, 0, 300),
            replica_set("nginx:1", 1, 0, 0, 600),
            replica_set("nginx:3", 3, 0, 0, 60),
        ];
        let result = plan(&d, &sets, &[], now());
        assert_eq!(
            written(&result),
            [(name("nginx:1"), "delete", 0, String::new())]
        );

        // Not yet complete (the spec is not observed): nothing goes.
        let d = deployment(
            0,
            "nginx:3",
            json!({"metadata": {"generation": 3, "annotations": {REVISION: "3"}},
                "spec": {"revisionHistoryLimit": 1}, "status": {"observedGeneration": 2}}),
        );
        assert_eq!(written(&plan(&d, &sets, &[], now())), []);
    }

    #[test]
    fn orphans_are_adopted_and_relabelled_sets_released() {
        let d = deployment(
            1,
            "nginx:1",
            json!({"metadata": {"annotations": {REVISION: "1"}}}),
        );
        let mut orphan = replica_set("nginx:1", 1, 1, 1, 600);
        orphan.owner_references.clear();
        orphan.controller = None;
        let mut stray = replica_set("nginx:0", 0, 0, 0, 900);
        stray.labels.insert("app".into(), json!("other"));
        let result = plan(&d, &[orphan, stray], &[], now());
        assert!(result.adopts);
        let updates: Vec<(String, Value)> = result
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Update { name, object, .. } => {
                    Some((name.clone(), object["metadata"]["ownerReferences"].clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(updates.len(), 2, "{result:?}");
        assert!(
            updates.contains(&(name("nginx:0"), Value::Null)),
            "{updates:?}"
        );
        let adopted = updates
            .iter()
            .find(|(n, _)| *n == name("nginx:1"))
            .map(|(_, refs)| refs.clone())
            .unwrap_or_default();
        assert_eq!(adopted[0]["uid"], "d-uid");
    }

    #[test]
    fn a_deployment_being_deleted_only_reports() {
        let d = deployment(
            3,
            "nginx:2",
            json!({"metadata": {"deletionTimestamp": "2025-06-01T11:00:00Z",
                "annotations": {REVISION: "1"}}}),
        );
        let old = replica_set("nginx:1", 1, 3, 3, 600);
        let result = plan(&d, &[old], &[], now());
        assert_eq!(written(&result), []);
        let status = result.status.expect("status");
        assert_eq!((status.replicas, status.updated_replicas), (3, 0));
    }
}
