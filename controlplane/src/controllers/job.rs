//! The Job controller: runs a Job's pods to completion.
//!
//! [`plan`] decides, without I/O, from the Job and the pods it controls
//! (by controller reference), what Kubernetes' `syncJob` would: how many
//! pods to create (up to `parallelism`, never more than the completions
//! still missing), which active pods to delete, and the status with its
//! conditions:
//!
//! - more failed pods than `backoffLimit`: `Failed` (reason
//!   `BackoffLimitExceeded`), active pods deleted;
//! - running longer than `activeDeadlineSeconds` since `startTime`:
//!   `Failed` (reason `DeadlineExceeded`), active pods deleted;
//! - `completions` pods succeeded (or, without `completions`, one pod
//!   succeeded and none is active): `Complete`, with `completionTime`.
//!
//! Failed pods are replaced after a back-off of 10 s, doubling with each
//! failure up to 6 minutes, counted from the latest failure.
//!
//! As in Kubernetes 1.33 the terminal conditions come with their
//! forerunners (`FailureTarget`, `SuccessCriteriaMet`). A finished Job with
//! `ttlSecondsAfterFinished` is deleted (in the background) that long
//! after it finished. [`JobController`] applies the plan: creations, then
//! deletions, then the status through the status subresource, folding its
//! own writes into its cache so a second reconcile never creates twice.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use skiff_store::StoreError;

use super::events::{EventRecord, EventRecorder, EventType, InvolvedObject};
use super::gc::controller_reference;
use super::watchcache::{self, split_key, Action, Change, Informer, Reconciler};
use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::{DeleteOptions, Deleted, Propagation, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

const JOBS: usize = 0;
const PODS: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A Job, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job {}/{}", self.namespace, self.name)
    }
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

/// What happened, for an event on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub create: usize,
    pub delete: Vec<PodRef>,
    /// The status to store.
    pub status: Value,
    pub events: Vec<JobEvent>,
    /// `ttlSecondsAfterFinished` has run out: delete the Job.
    pub delete_job: bool,
    pub requeue_after: Option<Duration>,
}

fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    value.and_then(Value::as_str).and_then(|t| t.parse().ok())
}

fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn to_std(duration: SignedDuration) -> Duration {
    Duration::try_from(duration)
        .unwrap_or_default()
        .max(Duration::from_millis(100))
}

fn condition_true<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some(kind)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

fn condition(kind: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now,
    })
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Decides what the Job does about `pods` (the pods it controls) at `now`.
pub fn plan(job: &Value, pods: &[&Value], now: Timestamp) -> JobPlan {
    let number = |pointer: &str| job.pointer(pointer).and_then(Value::as_i64);
    let completions = number("/spec/completions");
    let parallelism = number("/spec/parallelism").unwrap_or(1).max(0) as usize;
    let backoff_limit = number("/spec/backoffLimit").unwrap_or(6).max(0);
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let now_text = rfc3339(now);
    let old = job.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = old.clone();

    let phase = |pod: &&Value| str_at(pod, "/status/phase").unwrap_or_default().to_owned();
    let active: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|pod| {
            pod.pointer("/metadata/deletionTimestamp").is_none()
                && !matches!(phase(pod).as_str(), "Succeeded" | "Failed")
        })
        .collect();
    let counted = |wanted: &str| pods.iter().filter(|pod| phase(pod) == wanted).count() as i64;
    // Finished pods may be deleted by hand; what was counted stays counted.
    let stored = |field: &str| old.get(field).and_then(Value::as_i64).unwrap_or(0);
    let succeeded = counted("Succeeded").max(stored("succeeded"));
    let failed = counted("Failed").max(stored("failed"));

    let mut result = JobPlan {
        create: 0,
        delete: Vec::new(),
        status: Value::Null,
        events: Vec::new(),
        delete_job: false,
        requeue_after: None,
    };

    let finished = condition_true(&old, "Complete")
        .or_else(|| condition_true(&old, "Failed"))
        .cloned();
    if let Some(done) = finished {
        // Nothing more runs; a failed Job's leftovers are stopped.
        if done["type"] == "Failed" {
            result.delete = active.iter().map(|pod| pod_ref(pod)).collect();
        }
        if let Some(ttl) = number("/spec/ttlSecondsAfterFinished") {
            let finished_at = timestamp(old.get("completionTime"))
                .or_else(|| timestamp(done.get("lastTransitionTime")))
                .unwrap_or(now);
            let expires = finished_at + SignedDuration::from_secs(ttl.max(0));
            if expires <= now {
                result.delete_job = true;
            } else {
                result.requeue_after = Some(to_std(expires.duration_since(now)));
            }
        }
        status["active"] = json!(active.len() - result.delete.len());
        status["ready"] = json!(active.iter().filter(|p| is_ready(p)).count());
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed);
        result.status = tidy(status);
        return result;
    }

    let start = match timestamp(old.get("startTime")) {
        Some(start) => Some(start),
        None if !suspended => {
            status["startTime"] = json!(now_text);
            Some(now)
        }
        None => None,
    };
    let mut conditions: Vec<Value> = old
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let deadline = number("/spec/activeDeadlineSeconds")
        .zip(start)
        .map(|(seconds, start)| start + SignedDuration::from_secs(seconds.max(0)));
    let failure = if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_owned(),
        ))
    } else if deadline.is_some_and(|at| at <= now) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".to_owned(),
        ))
    } else {
        None
    };
    let complete = match completions {
        Some(wanted) => succeeded >= wanted,
        None => succeeded >= 1 && active.is_empty(),
    };

    if let Some((reason, message)) = failure {
        conditions.push(condition("FailureTarget", reason, &message, &now_text));
        conditions.push(condition("Failed", reason, &message, &now_text));
        result.delete = active.iter().map(|pod| pod_ref(pod)).collect();
        result.events.push(JobEvent {
            warning: true,
            reason,
            message,
        });
    } else if complete {
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            &now_text,
        ));
        conditions.push(condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            &now_text,
        ));
        status["completionTime"] = json!(now_text);
        result.delete = active.iter().map(|pod| pod_ref(pod)).collect();
        result.events.push(JobEvent {
            warning: false,
            reason: "Completed",
            message: "Job completed".into(),
        });
    } else {
        let wanted = if suspended {
            0
        } else {
            let remaining = match completions {
                Some(wanted) => (wanted - succeeded).max(0) as usize,
                // A work queue: once one pod succeeded, no new ones start.
                None if succeeded > 0 => active.len().min(parallelism),
                None => parallelism,
            };
            parallelism.min(remaining)
        };
        let waiting = failure_backoff(pods, failed, now);
        if active.len() < wanted && waiting.is_some() {
            // Failed pods are replaced only after the back-off.
            result.requeue_after = waiting;
        } else if active.len() < wanted {
            result.create = wanted - active.len();
        } else if active.len() > wanted {
            // Not-ready pods go first, then the newest.
            let mut victims = active.clone();
            victims.sort_by_key(|pod| {
                (
                    is_ready(pod),
                    std::cmp::Reverse(
                        str_at(pod, "/metadata/creationTimestamp")
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                )
            });
            result.delete = victims
                .into_iter()
                .take(active.len() - wanted)
                .map(pod_ref)
                .collect();
        }
        if let Some(at) = deadline {
            let until_deadline = to_std(at.duration_since(now));
            result.requeue_after = Some(
                result
                    .requeue_after
                    .map_or(until_deadline, |wait| wait.min(until_deadline)),
            );
        }
    }

    status["conditions"] = Value::Array(conditions);
    status["active"] = json!(active.len() + result.create - result.delete.len());
    status["ready"] = json!(active.iter().filter(|p| is_ready(p)).count());
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    result.status = tidy(status);
    result
}

/// The first delay before a failed pod is replaced; it doubles with each
/// failure up to [`MAX_FAILURE_BACKOFF`] (Kubernetes' pod failure back-off).
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(360);

/// When the Job's pods have failed `failed` times, how long to wait yet
/// before replacing them, counted from the latest failure; `None` when
/// nothing failed or the back-off is over.
pub fn failure_backoff(pods: &[&Value], failed: i64, now: Timestamp) -> Option<Duration> {
    if failed <= 0 {
        return None;
    }
    let finished_at = |pod: &Value| -> Option<Timestamp> {
        let finished = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| timestamp(c.pointer("/state/terminated/finishedAt")))
            .max();
        finished.or_else(|| timestamp(pod.pointer("/metadata/creationTimestamp")))
    };
    let latest = pods
        .iter()
        .filter(|pod| str_at(pod, "/status/phase") == Some("Failed"))
        .filter_map(|pod| finished_at(pod))
        .max()?;
    let exponent = (failed - 1).clamp(0, 16) as u32;
    let delay = FAILURE_BACKOFF
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(MAX_FAILURE_BACKOFF);
    let ready_at = latest + SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO);
    (ready_at > now).then(|| to_std(ready_at.duration_since(now)))
}

/// Leaves out what Kubernetes' `omitempty` leaves out (zero counts other
/// than `ready` and `terminating`, empty conditions), and keeps the empty
/// `uncountedTerminatedPods` it always writes.
fn tidy(mut status: Value) -> Value {
    if let Some(map) = status.as_object_mut() {
        for field in ["active", "succeeded", "failed"] {
            if map.get(field).and_then(Value::as_i64) == Some(0) {
                map.remove(field);
            }
        }
        if map
            .get("conditions")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            map.remove("conditions");
        }
        map.entry("terminating").or_insert(json!(0));
        map.entry("uncountedTerminatedPods").or_insert(json!({}));
    }
    status
}

/// A new pod from the Job's template, controlled by it.
pub fn pod_from_template(job: &Value) -> Value {
    let template = job
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let name = str_at(job, "/metadata/name").unwrap_or_default();
    let mut metadata = json!({
        "generateName": format!("{name}-"),
        "namespace": job.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "ownerReferences": [controller_reference(job)],
    });
    for field in ["labels", "annotations"] {
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

fn info(group: &str, plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
}

/// The Job a pod's controller reference names.
fn owning_job(pod: &Value) -> Option<(String, String)> {
    let reference = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    (str_at(reference, "/kind") == Some("Job")
        && str_at(reference, "/apiVersion") == Some("batch/v1"))
    .then(|| {
        (
            str_at(reference, "/name").unwrap_or_default().to_owned(),
            str_at(reference, "/uid").unwrap_or_default().to_owned(),
        )
    })
}

pub struct JobController {
    registry: Arc<Registry>,
    events: EventRecorder,
}

impl JobController {
    pub fn new(registry: Arc<Registry>) -> JobController {
        JobController {
            events: EventRecorder::new(registry.clone(), "job-controller"),
            registry,
        }
    }

    pub async fn run(self) {
        let store = self.registry.store.clone();
        watchcache::run(self, store).await
    }

    async fn event(&self, job: &Value, warning: bool, reason: &str, message: String) {
        self.events
            .emit(EventRecord {
                involved: InvolvedObject::of(job),
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

impl Reconciler for JobController {
    type Key = JobKey;
    type Error = JobError;

    fn name(&self) -> &'static str {
        "job"
    }

    fn prefixes(&self) -> Vec<String> {
        [("batch", "jobs"), ("", "pods")]
            .iter()
            .filter_map(|(group, plural)| resources::find(group, "v1", plural))
            .map(|info| info.key_prefix(None))
            .collect()
    }

    fn keys_for(&self, change: &Change, informer: &Informer) -> Vec<JobKey> {
        match change.source {
            JOBS => split_key(&change.key, informer.prefix(JOBS))
                .map(|(namespace, name)| JobKey {
                    namespace: namespace.into(),
                    name: name.into(),
                })
                .into_iter()
                .collect(),
            _ => {
                let mut keys: Vec<JobKey> = change
                    .old
                    .iter()
                    .chain(change.new.iter())
                    .filter_map(|pod| {
                        let (name, _) = owning_job(pod)?;
                        Some(JobKey {
                            namespace: str_at(pod, "/metadata/namespace")?.to_owned(),
                            name,
                        })
                    })
                    .collect();
                keys.dedup();
                keys
            }
        }
    }

    fn all_keys(&self, informer: &Informer) -> Vec<JobKey> {
        informer
            .objects(JOBS)
            .filter_map(|(key, _)| split_key(key, informer.prefix(JOBS)))
            .map(|(namespace, name)| JobKey {
                namespace: namespace.into(),
                name: name.into(),
            })
            .collect()
    }

    async fn reconcile(
        &self,
        key: &JobKey,
        informer: &mut Informer,
        now: Timestamp,
    ) -> Result<Action, JobError> {
        let jobs = info("batch", "jobs")?;
        let pods_info = info("", "pods")?;
        let Some(job) = informer
            .get(JOBS, &jobs.key(Some(&key.namespace), &key.name))
            .cloned()
        else {
            // Deleted: the garbage collector takes its pods.
            return Ok(Action::default());
        };
        if job.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::default());
        }
        let uid = str_at(&job, "/metadata/uid").unwrap_or_default().to_owned();
        let pods: Vec<Value> = informer
            .in_namespace(PODS, &key.namespace)
            .filter(|pod| owning_job(pod).is_some_and(|(_, owner)| owner == uid))
            .cloned()
            .collect();
        let pod_refs: Vec<&Value> = pods.iter().collect();
        let plan = plan(&job, &pod_refs, now);

        if plan.delete_job {
            tracing::info!(job = %key, "deleting a finished Job whose ttlSecondsAfterFinished ran out");
            let options = DeleteOptions {
                propagation: Some(Propagation::Background),
                precondition_uid: Some(uid.clone()),
                ..DeleteOptions::default()
            };
            return match self
                .registry
                .delete(jobs, Some(&key.namespace), &key.name, &options)
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {
                    Ok(Action::default())
                }
                Err(other) => Err(other.into()),
            };
        }

        let mut first_error: Option<ApiError> = None;
        if plan.create > 0 {
            let template = pod_from_template(&job);
            for _ in 0..plan.create {
                match self
                    .registry
                    .create(pods_info, Some(&key.namespace), template.clone(), false)
                    .await
                {
                    Ok(kv) => {
                        informer.fold_written(PODS, &kv);
                        let name = objects::value(&kv)
                            .ok()
                            .and_then(|pod| str_at(&pod, "/metadata/name").map(str::to_owned))
                            .unwrap_or_default();
                        self.event(
                            &job,
                            false,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        )
                        .await;
                    }
                    Err(error) => {
                        self.event(
                            &job,
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
                Ok(Deleted::Gone(gone)) => {
                    let revision = str_at(&gone, "/metadata/resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    informer.fold_deleted(PODS, &pod_key, revision);
                    self.event(
                        &job,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name),
                    )
                    .await;
                }
                Ok(Deleted::Pending(pending)) => {
                    informer.fold_object(PODS, &pod_key, &pending);
                    self.event(
                        &job,
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

        let current = job.get("status").cloned().unwrap_or(Value::Null);
        if plan.status != current {
            let mut updated = job.clone();
            updated["status"] = plan.status.clone();
            match self
                .registry
                .update(
                    jobs,
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
                Ok(kv) => {
                    informer.fold_written(JOBS, &kv);
                    for event in &plan.events {
                        self.event(&job, event.warning, event.reason, event.message.clone())
                            .await;
                    }
                }
                // Changed since the cache saw it: the watch brings the
                // new state and the Job is reconciled again.
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

    fn job(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "uid": "job-uid"},
            "spec": spec, "status": status})
    }

    fn pod(name: &str, phase: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}"),
                "creationTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn types(status: &Value) -> Vec<String> {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    const NOW: &str = "2025-01-01T00:01:00Z";

    #[test]
    fn a_new_job_starts_parallelism_pods_and_records_its_start() {
        let plan = plan(
            &job(
                json!({"completions": 3, "parallelism": 2, "backoffLimit": 6}),
                json!({}),
            ),
            &[],
            at(NOW),
        );
        assert_eq!(plan.create, 2);
        assert_eq!(plan.status["startTime"], NOW);
        assert_eq!(plan.status["active"], 2);
        assert_eq!(plan.status["ready"], 0);
        assert!(plan.status.get("succeeded").is_none());
    }

    #[test]
    fn never_more_pods_than_completions_still_missing() {
        let (a, b) = (pod("a", "Succeeded", false), pod("b", "Succeeded", false));
        let c = pod("c", "Running", true);
        let plan = plan(
            &job(
                json!({"completions": 3, "parallelism": 2}),
                json!({"startTime": NOW}),
            ),
            &[&a, &b, &c],
            at(NOW),
        );
        assert_eq!(plan.create, 0);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status["succeeded"], 2);
        assert_eq!(plan.status["active"], 1);
        assert_eq!(plan.status["ready"], 1);
    }

    #[test]
    fn enough_successes_complete_the_job() {
        let pods: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|n| pod(n, "Succeeded", false))
            .collect();
        let refs: Vec<&Value> = pods.iter().collect();
        let plan = plan(
            &job(
                json!({"completions": 3, "parallelism": 2}),
                json!({"startTime": NOW}),
            ),
            &refs,
            at(NOW),
        );
        assert_eq!(types(&plan.status), ["SuccessCriteriaMet", "Complete"]);
        assert_eq!(plan.status["completionTime"], NOW);
        assert_eq!(plan.status["succeeded"], 3);
        assert_eq!(plan.create, 0);
        assert_eq!(plan.events[0].reason, "Completed");
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job_and_stop_its_pods() {
        let (a, b) = (pod("a", "Failed", false), pod("b", "Failed", false));
        let c = pod("c", "Running", false);
        let plan = plan(
            &job(
                json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}),
                json!({"startTime": NOW}),
            ),
            &[&a, &b, &c],
            at(NOW),
        );
        assert_eq!(types(&plan.status), ["FailureTarget", "Failed"]);
        assert_eq!(
            plan.status["conditions"][1]["reason"],
            "BackoffLimitExceeded"
        );
        assert_eq!(plan.delete, [pod_ref(&c)]);
        assert_eq!(plan.create, 0);
        assert_eq!(plan.status["failed"], 2);

        // Within the limit, a failed pod is replaced.
        let plan = super::plan(
            &job(
                json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}),
                json!({"startTime": NOW}),
            ),
            &[&a],
            at(NOW),
        );
        assert_eq!(plan.create, 1);
        assert!(types(&plan.status).is_empty());
    }

    #[test]
    fn failed_pods_are_replaced_after_a_doubling_back_off() {
        let mut failed = pod("a", "Failed", false);
        failed["status"]["containerStatuses"] =
            json!([{"state": {"terminated": {"finishedAt": "2025-01-01T00:00:55Z"}}}]);
        let spec = json!({"completions": 1, "parallelism": 1, "backoffLimit": 6});
        let waiting = plan(
            &job(spec.clone(), json!({"startTime": NOW})),
            &[&failed],
            at(NOW),
        );
        assert_eq!(waiting.create, 0);
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(5)));
        let later = plan(
            &job(spec, json!({"startTime": NOW})),
            &[&failed],
            at("2025-01-01T00:01:05Z"),
        );
        assert_eq!(later.create, 1);
        // Three failures: 40 s.
        assert_eq!(
            failure_backoff(&[&failed], 3, at(NOW)),
            Some(Duration::from_secs(35))
        );
        assert_eq!(
            failure_backoff(&[&failed], 30, at(NOW)),
            Some(Duration::from_secs(355))
        );
        assert_eq!(failure_backoff(&[], 0, at(NOW)), None);
    }

    #[test]
    fn the_active_deadline_fails_the_job_or_schedules_a_look() {
        let running = pod("a", "Running", true);
        let spec = json!({"completions": 1, "parallelism": 1, "activeDeadlineSeconds": 30});
        let early = plan(
            &job(spec.clone(), json!({"startTime": "2025-01-01T00:00:50Z"})),
            &[&running],
            at(NOW),
        );
        assert_eq!(early.requeue_after, Some(Duration::from_secs(20)));
        assert!(types(&early.status).is_empty());
        let late = plan(
            &job(spec, json!({"startTime": "2025-01-01T00:00:00Z"})),
            &[&running],
            at(NOW),
        );
        assert_eq!(late.status["conditions"][1]["reason"], "DeadlineExceeded");
        assert_eq!(late.delete.len(), 1);
    }

    #[test]
    fn lowering_parallelism_deletes_not_ready_pods_first_and_suspend_stops_all() {
        let (a, b) = (pod("a", "Running", true), pod("b", "Pending", false));
        let plan = plan(
            &job(
                json!({"completions": 5, "parallelism": 1}),
                json!({"startTime": NOW}),
            ),
            &[&a, &b],
            at(NOW),
        );
        assert_eq!(plan.delete, [pod_ref(&b)]);
        let suspended = super::plan(
            &job(
                json!({"completions": 5, "parallelism": 2, "suspend": true}),
                json!({}),
            ),
            &[&a, &b],
            at(NOW),
        );
        assert_eq!(suspended.delete.len(), 2);
        assert!(suspended.status.get("startTime").is_none());
    }

    #[test]
    fn a_finished_job_is_deleted_after_its_ttl() {
        let done = json!({"startTime": "2025-01-01T00:00:00Z", "completionTime": "2025-01-01T00:00:30Z",
            "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
        let spec = json!({"completions": 1, "ttlSecondsAfterFinished": 60});
        let waiting = plan(&job(spec.clone(), done.clone()), &[], at(NOW));
        assert!(!waiting.delete_job);
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(30)));
        let expired = plan(&job(spec, done), &[], at("2025-01-01T00:01:30Z"));
        assert!(expired.delete_job);
    }

    #[test]
    fn pods_are_made_from_the_template_and_owned() {
        let job = job(
            json!({"template": {"metadata": {"labels": {"job-name": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}),
            json!({}),
        );
        let pod = pod_from_template(&job);
        assert_eq!(pod["metadata"]["generateName"], "pi-");
        assert_eq!(pod["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "job-uid");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(owning_job(&pod), Some(("pi".into(), "job-uid".into())));
    }
}
