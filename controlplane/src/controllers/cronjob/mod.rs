//! The CronJob controller: creates a Job for each scheduled time.
//!
//! [`plan`] decides, without I/O and with the time passed in, what
//! Kubernetes' CronJob controller (v2) would for one CronJob and the Jobs
//! it controls:
//!
//! - the most recent scheduled time since `status.lastScheduleTime` (or the
//!   creation), within `startingDeadlineSeconds` if set, gets a Job named
//!   `<cronjob>-<scheduled time in minutes since the epoch>` unless the
//!   CronJob is suspended or being deleted, or that Job exists already;
//! - `concurrencyPolicy`: Allow runs Jobs side by side, Forbid skips a time
//!   while a Job is active, Replace deletes the active Jobs first;
//! - finished Jobs beyond `successfulJobsHistoryLimit` and
//!   `failedJobsHistoryLimit` are deleted, oldest first;
//! - the status keeps `active`, `lastScheduleTime` and
//!   `lastSuccessfulTime`, and the CronJob is looked at again at its next
//!   scheduled time.
//!
//! The cron syntax and the schedule arithmetic are in [`schedule`].

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};
use skiff_store::StoreError;

use super::events::{EventRecord, EventRecorder, EventType, InvolvedObject};
use super::gc::controller_reference;
use super::watchcache::{self, split_key, Action, Change, Informer, Reconciler};
use crate::api::errors::ApiError;
use crate::api::objects::str_at;
use crate::api::registry::{DeleteOptions, Deleted, Propagation, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

const CRONJOBS: usize = 0;
const JOBS: usize = 1;

/// The annotation Kubernetes puts on a CronJob's Jobs.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed times than this get a warning, as in Kubernetes.
const TOO_MANY_MISSED: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A Job, by name and (as a precondition) uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub name: String,
    pub uid: String,
}

fn job_ref(job: &Value) -> JobRef {
    JobRef {
        name: str_at(job, "/metadata/name").unwrap_or_default().to_owned(),
        uid: str_at(job, "/metadata/uid").unwrap_or_default().to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CronPlan {
    /// A Job to create.
    pub create: Option<Value>,
    /// Jobs to delete: replaced, or beyond the history limits.
    pub delete: Vec<JobRef>,
    pub status: Value,
    pub events: Vec<CronEvent>,
    pub requeue_after: Option<Duration>,
}

fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    value.and_then(Value::as_str).and_then(|t| t.parse().ok())
}

fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `Complete` or `Failed`, if the Job has finished.
fn finished(job: &Value) -> Option<&'static str> {
    let conditions = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    ["Complete", "Failed"].into_iter().find(|kind| {
        conditions
            .iter()
            .any(|c| c["type"] == *kind && c["status"] == "True")
    })
}

fn object_reference(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "namespace": job.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "uid": job.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    })
}

/// The name of the Job for `scheduled`.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// The Job for `scheduled`, from the CronJob's template.
pub fn job_for(cron_job: &Value, scheduled: Timestamp) -> Value {
    let name = str_at(cron_job, "/metadata/name").unwrap_or_default();
    let template = cron_job
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut annotations = template
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    annotations[SCHEDULED_TIMESTAMP] = json!(rfc3339(scheduled));
    let mut metadata = json!({
        "name": job_name(name, scheduled),
        "namespace": cron_job.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "annotations": annotations,
        "ownerReferences": [controller_reference(cron_job)],
    });
    if let Some(labels) = template.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

fn history_victims(jobs: &[&Value], outcome: &str, limit: i64) -> Vec<JobRef> {
    let mut done: Vec<&Value> = jobs
        .iter()
        .copied()
        .filter(|job| finished(job) == Some(outcome))
        .collect();
    let keep = limit.max(0) as usize;
    if done.len() <= keep {
        return Vec::new();
    }
    done.sort_by_key(|job| {
        str_at(job, "/status/startTime")
            .or_else(|| str_at(job, "/metadata/creationTimestamp"))
            .unwrap_or_default()
            .to_owned()
    });
    let surplus = done.len() - keep;
    done.into_iter().take(surplus).map(job_ref).collect()
}

/// Decides what `cron_job` does about `jobs` (the Jobs it controls) at
/// `now`.
pub fn plan(cron_job: &Value, jobs: &[&Value], now: Timestamp) -> CronPlan {
    let name = str_at(cron_job, "/metadata/name").unwrap_or_default();
    let old_status = cron_job.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = old_status.clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut result = CronPlan {
        create: None,
        delete: Vec::new(),
        status: Value::Null,
        events: Vec::new(),
        requeue_after: None,
    };

    let mut active: Vec<&Value> = jobs
        .iter()
        .copied()
        .filter(|job| {
            finished(job).is_none() && job.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect();
    let mut last_success = timestamp(old_status.get("lastSuccessfulTime"));
    for job in jobs.iter().filter(|job| finished(job) == Some("Complete")) {
        if let Some(done) = timestamp(job.pointer("/status/completionTime")) {
            last_success = Some(last_success.map_or(done, |t| t.max(done)));
        }
    }
    let number = |pointer: &str| cron_job.pointer(pointer).and_then(Value::as_i64);
    result.delete.extend(history_victims(
        jobs,
        "Complete",
        number("/spec/successfulJobsHistoryLimit").unwrap_or(3),
    ));
    result.delete.extend(history_victims(
        jobs,
        "Failed",
        number("/spec/failedJobsHistoryLimit").unwrap_or(1),
    ));

    let suspended = cron_job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let deleting = cron_job.pointer("/metadata/deletionTimestamp").is_some();
    let parsed = schedule::Schedule::parse(str_at(cron_job, "/spec/schedule").unwrap_or_default());
    let zone = schedule::time_zone(str_at(cron_job, "/spec/timeZone"));
    if !suspended && !deleting {
        match (parsed, zone) {
            (Ok(parsed), Ok(zone)) => {
                let created =
                    timestamp(cron_job.pointer("/metadata/creationTimestamp")).unwrap_or(now);
                let missed = schedule::missed(
                    &parsed,
                    &zone,
                    created,
                    timestamp(old_status.get("lastScheduleTime")),
                    number("/spec/startingDeadlineSeconds"),
                    now,
                );
                result.requeue_after = missed.next.map(|next| {
                    Duration::try_from(next.duration_since(now))
                        .unwrap_or_default()
                        .saturating_add(Duration::from_millis(100))
                });
                if missed.count > TOO_MANY_MISSED {
                    result.events.push(CronEvent {
                        warning: true,
                        reason: "TooManyMissedTimes",
                        message: format!(
                            "too many missed start times: {}. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                            missed.count
                        ),
                    });
                }
                if let Some(scheduled) = missed.most_recent {
                    let wanted_name = job_name(name, scheduled);
                    let exists = jobs
                        .iter()
                        .any(|job| str_at(job, "/metadata/name") == Some(wanted_name.as_str()));
                    let policy = str_at(cron_job, "/spec/concurrencyPolicy").unwrap_or("Allow");
                    if exists {
                        // Already run (the status write may have been lost).
                        status["lastScheduleTime"] = json!(rfc3339(scheduled));
                    } else if policy == "Forbid" && !active.is_empty() {
                        result.events.push(CronEvent {
                            warning: false,
                            reason: "JobAlreadyActive",
                            message: "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                        });
                    } else {
                        if policy == "Replace" {
                            for job in active.drain(..) {
                                result.delete.push(job_ref(job));
                                result.events.push(CronEvent {
                                    warning: false,
                                    reason: "SuccessfulDelete",
                                    message: format!(
                                        "Deleted job {}",
                                        str_at(job, "/metadata/name").unwrap_or_default()
                                    ),
                                });
                            }
                        }
                        result.create = Some(job_for(cron_job, scheduled));
                        status["lastScheduleTime"] = json!(rfc3339(scheduled));
                    }
                }
            }
            (Err(error), _) => result.events.push(CronEvent {
                warning: true,
                reason: "UnparseableSchedule",
                message: format!("unparseable schedule: {error}"),
            }),
            (_, Err(error)) => result.events.push(CronEvent {
                warning: true,
                reason: "UnknownTimeZone",
                message: error.to_string(),
            }),
        }
    }

    let mut references: Vec<Value> = active.iter().map(|job| object_reference(job)).collect();
    if let Some(job) = &result.create {
        references.push(object_reference(job));
    }
    let map = status.as_object_mut();
    if let Some(map) = map {
        if references.is_empty() {
            map.remove("active");
        } else {
            map.insert("active".into(), Value::Array(references));
        }
        if let Some(at) = last_success {
            map.insert("lastSuccessfulTime".into(), json!(rfc3339(at)));
        }
    }
    result.status = status;
    result
}

fn info(group: &str, plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))
}

fn owning_cron_job(job: &Value) -> Option<(String, String)> {
    let reference = job
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    (str_at(reference, "/kind") == Some("CronJob")
        && str_at(reference, "/apiVersion") == Some("batch/v1"))
    .then(|| {
        (
            str_at(reference, "/name").unwrap_or_default().to_owned(),
            str_at(reference, "/uid").unwrap_or_default().to_owned(),
        )
    })
}

/// A CronJob, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CronJobKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for CronJobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CronJob {}/{}", self.namespace, self.name)
    }
}

pub struct CronJobController {
    registry: Arc<Registry>,
    events: EventRecorder,
}

impl CronJobController {
    pub fn new(registry: Arc<Registry>) -> CronJobController {
        CronJobController {
            events: EventRecorder::new(registry.clone(), "cronjob-controller"),
            registry,
        }
    }

    pub async fn run(self) {
        let store = self.registry.store.clone();
        watchcache::run(self, store).await
    }

    async fn event(&self, object: &Value, warning: bool, reason: &str, message: String) {
        self.events
            .emit(EventRecord {
                involved: InvolvedObject::of(object),
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

impl Reconciler for CronJobController {
    type Key = CronJobKey;
    type Error = CronJobError;

    fn name(&self) -> &'static str {
        "cronjob"
    }

    fn prefixes(&self) -> Vec<String> {
        [("batch", "cronjobs"), ("batch", "jobs")]
            .iter()
            .filter_map(|(group, plural)| resources::find(group, "v1", plural))
            .map(|info| info.key_prefix(None))
            .collect()
    }

    fn keys_for(&self, change: &Change, informer: &Informer) -> Vec<CronJobKey> {
        match change.source {
            CRONJOBS => split_key(&change.key, informer.prefix(CRONJOBS))
                .map(|(namespace, name)| CronJobKey {
                    namespace: namespace.into(),
                    name: name.into(),
                })
                .into_iter()
                .collect(),
            _ => {
                let mut keys: Vec<CronJobKey> = change
                    .old
                    .iter()
                    .chain(change.new.iter())
                    .filter_map(|job| {
                        let (name, _) = owning_cron_job(job)?;
                        Some(CronJobKey {
                            namespace: str_at(job, "/metadata/namespace")?.to_owned(),
                            name,
                        })
                    })
                    .collect();
                keys.dedup();
                keys
            }
        }
    }

    fn all_keys(&self, informer: &Informer) -> Vec<CronJobKey> {
        informer
            .objects(CRONJOBS)
            .filter_map(|(key, _)| split_key(key, informer.prefix(CRONJOBS)))
            .map(|(namespace, name)| CronJobKey {
                namespace: namespace.into(),
                name: name.into(),
            })
            .collect()
    }

    async fn reconcile(
        &self,
        key: &CronJobKey,
        informer: &mut Informer,
        now: Timestamp,
    ) -> Result<Action, CronJobError> {
        let cron_jobs = info("batch", "cronjobs")?;
        let jobs_info = info("batch", "jobs")?;
        let Some(cron_job) = informer
            .get(CRONJOBS, &cron_jobs.key(Some(&key.namespace), &key.name))
            .cloned()
        else {
            return Ok(Action::default());
        };
        let uid = str_at(&cron_job, "/metadata/uid")
            .unwrap_or_default()
            .to_owned();
        let jobs: Vec<Value> = informer
            .in_namespace(JOBS, &key.namespace)
            .filter(|job| owning_cron_job(job).is_some_and(|(_, owner)| owner == uid))
            .cloned()
            .collect();
        let plan = plan(&cron_job, &jobs.iter().collect::<Vec<_>>(), now);

        for job in &plan.delete {
            let options = DeleteOptions {
                propagation: Some(Propagation::Background),
                precondition_uid: Some(job.uid.clone()),
                ..DeleteOptions::default()
            };
            let job_key = jobs_info.key(Some(&key.namespace), &job.name);
            match self
                .registry
                .delete(jobs_info, Some(&key.namespace), &job.name, &options)
                .await
            {
                Ok(Deleted::Gone(gone)) => {
                    let revision = str_at(&gone, "/metadata/resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    informer.fold_deleted(JOBS, &job_key, revision);
                }
                Ok(Deleted::Pending(pending)) => informer.fold_object(JOBS, &job_key, &pending),
                Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let mut status = plan.status.clone();
        if let Some(job) = &plan.create {
            match self
                .registry
                .create(jobs_info, Some(&key.namespace), job.clone(), false)
                .await
            {
                Ok(kv) => {
                    informer.fold_written(JOBS, &kv);
                    // The reference with the uid the server gave the Job.
                    if let (Ok(created), Some(active)) = (
                        crate::api::objects::value(&kv),
                        status.get_mut("active").and_then(Value::as_array_mut),
                    ) {
                        if let Some(last) = active.last_mut() {
                            *last = object_reference(&created);
                        }
                    }
                    self.event(
                        &cron_job,
                        false,
                        "SuccessfulCreate",
                        format!(
                            "Created job {}",
                            str_at(job, "/metadata/name").unwrap_or_default()
                        ),
                    )
                    .await;
                }
                Err(ApiError::AlreadyExists { .. }) => {
                    // Someone else's Job has the name: nothing more to run
                    // for this time.
                    if let Some(active) = status.get_mut("active").and_then(Value::as_array_mut) {
                        active.pop();
                    }
                }
                Err(error) => {
                    self.event(
                        &cron_job,
                        true,
                        "FailedCreate",
                        format!("Error creating job: {error}"),
                    )
                    .await;
                    return Err(error.into());
                }
            }
        }
        for event in &plan.events {
            self.event(
                &cron_job,
                event.warning,
                event.reason,
                event.message.clone(),
            )
            .await;
        }
        let current = cron_job.get("status").cloned().unwrap_or(Value::Null);
        if status != current {
            let mut updated = cron_job.clone();
            updated["status"] = status;
            match self
                .registry
                .update(
                    cron_jobs,
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
                Ok(kv) => informer.fold_written(CRONJOBS, &kv),
                Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(Action::requeue(plan.requeue_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn cron_job(spec: Value, status: Value) -> Value {
        let mut object = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "hello", "namespace": "default", "uid": "cj-uid",
                "creationTimestamp": "2025-01-01T00:00:30Z"},
            "spec": {"schedule": "*/1 * * * *", "concurrencyPolicy": "Allow",
                "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                "jobTemplate": {"metadata": {"labels": {"app": "hello"}},
                    "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                        "containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": status});
        if let Some(map) = spec.as_object() {
            for (k, v) in map {
                object["spec"][k] = v.clone();
            }
        }
        object
    }

    fn job(name: &str, outcome: Option<&str>, started: &str) -> Value {
        let mut job = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "creationTimestamp": started}, "status": {"startTime": started}});
        if let Some(kind) = outcome {
            job["status"]["conditions"] = json!([{"type": kind, "status": "True"}]);
            job["status"]["completionTime"] = json!(started);
        }
        job
    }

    #[test]
    fn a_due_time_creates_its_job_and_waits_for_the_next() {
        let now = at("2025-01-01T00:03:10Z");
        let plan = plan(&cron_job(json!({}), json!({})), &[], now);
        let job = plan.create.expect("a job");
        // 00:03 is minute 29_454_603 since the epoch... of 2025-01-01.
        let minutes = at("2025-01-01T00:03:00Z").as_second() / 60;
        assert_eq!(job["metadata"]["name"], format!("hello-{minutes}"));
        assert_eq!(job["metadata"]["labels"]["app"], "hello");
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2025-01-01T00:03:00Z"
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(
            job["spec"]["template"]["spec"]["restartPolicy"],
            "OnFailure"
        );
        assert_eq!(plan.status["lastScheduleTime"], "2025-01-01T00:03:00Z");
        assert_eq!(plan.status["active"][0]["name"], job["metadata"]["name"]);
        assert_eq!(plan.requeue_after, Some(Duration::from_millis(50_100)));
    }

    #[test]
    fn nothing_runs_before_the_first_time_while_suspended_or_twice() {
        let early = plan(
            &cron_job(json!({}), json!({})),
            &[],
            at("2025-01-01T00:00:40Z"),
        );
        assert!(early.create.is_none());
        assert_eq!(early.requeue_after, Some(Duration::from_millis(20_100)));

        let suspended = plan(
            &cron_job(json!({"suspend": true}), json!({})),
            &[],
            at("2025-01-01T00:03:10Z"),
        );
        assert!(suspended.create.is_none());
        assert_eq!(suspended.requeue_after, None);

        let name = job_name("hello", at("2025-01-01T00:03:00Z"));
        let existing = job(&name, None, "2025-01-01T00:03:00Z");
        let again = plan(
            &cron_job(json!({}), json!({})),
            &[&existing],
            at("2025-01-01T00:03:10Z"),
        );
        assert!(again.create.is_none());
        assert_eq!(again.status["active"][0]["name"], name);
    }

    #[test]
    fn concurrency_policies() {
        let running = job("hello-1", None, "2025-01-01T00:02:00Z");
        let status = json!({"lastScheduleTime": "2025-01-01T00:02:00Z"});
        let now = at("2025-01-01T00:03:10Z");
        let forbid = plan(
            &cron_job(json!({"concurrencyPolicy": "Forbid"}), status.clone()),
            &[&running],
            now,
        );
        assert!(forbid.create.is_none());
        assert_eq!(forbid.events[0].reason, "JobAlreadyActive");
        let replace = plan(
            &cron_job(json!({"concurrencyPolicy": "Replace"}), status.clone()),
            &[&running],
            now,
        );
        assert!(replace.create.is_some());
        assert_eq!(replace.delete, [job_ref(&running)]);
        assert_eq!(replace.status["active"].as_array().map(Vec::len), Some(1));
        let allow = plan(&cron_job(json!({}), status), &[&running], now);
        assert!(allow.create.is_some());
        assert!(allow.delete.is_empty());
        assert_eq!(allow.status["active"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_starting_deadline_skips_times_too_late_to_start() {
        let late = plan(
            &cron_job(
                json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 60}),
                json!({}),
            ),
            &[],
            at("2025-01-01T01:05:00Z"),
        );
        assert!(late.create.is_none());
        assert_eq!(late.requeue_after, Some(Duration::from_millis(3_300_100)));
    }

    #[test]
    fn history_limits_delete_the_oldest_finished_jobs_and_success_is_remembered() {
        let jobs = [
            job("s1", Some("Complete"), "2025-01-01T00:01:00Z"),
            job("s2", Some("Complete"), "2025-01-01T00:02:00Z"),
            job("f1", Some("Failed"), "2025-01-01T00:01:30Z"),
            job("f2", Some("Failed"), "2025-01-01T00:02:30Z"),
        ];
        let refs: Vec<&Value> = jobs.iter().collect();
        let plan = plan(
            &cron_job(
                json!({"successfulJobsHistoryLimit": 1, "suspend": true}),
                json!({}),
            ),
            &refs,
            at("2025-01-01T00:03:10Z"),
        );
        let deleted: Vec<&str> = plan.delete.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(deleted, ["s1", "f1"]);
        assert_eq!(plan.status["lastSuccessfulTime"], "2025-01-01T00:02:00Z");
        assert!(plan.status.get("active").is_none());
    }

    async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        use crate::allocators::{Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = skiff_store::RedbStore::open(
            &dir.path().join("store.redb"),
            skiff_store::RedbStoreOptions::default(),
        )
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

    #[tokio::test]
    async fn the_controller_runs_a_due_time_once_on_an_injected_clock() {
        let (_dir, registry) = registry().await;
        let mut object = cron_job(json!({}), json!({}));
        for field in ["uid", "creationTimestamp"] {
            object["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove(field);
        }
        object.as_object_mut().expect("object").remove("status");
        let created = registry
            .create(
                info("batch", "cronjobs").expect("cronjobs"),
                Some("default"),
                object,
                false,
            )
            .await
            .expect("create");
        let stored = crate::api::objects::value(&created).expect("stored");
        let created_at = timestamp(stored.pointer("/metadata/creationTimestamp")).expect("created");

        let controller = CronJobController::new(registry.clone());
        let mut informer = Informer::start(registry.store.as_ref(), &controller.prefixes())
            .await
            .expect("informer");
        let key = CronJobKey {
            namespace: "default".into(),
            name: "hello".into(),
        };
        // Three minutes later, on the injected clock.
        let now = created_at + jiff::SignedDuration::from_mins(3);
        let action = controller
            .reconcile(&key, &mut informer, now)
            .await
            .expect("reconcile");
        assert!(action
            .requeue_after
            .is_some_and(|after| after <= Duration::from_secs(61)));
        // Again, before any watch event arrives: the folded-in writes keep
        // it from running the same time twice.
        controller
            .reconcile(&key, &mut informer, now)
            .await
            .expect("reconcile again");
        let (jobs, _) = registry
            .list(
                info("batch", "jobs").expect("jobs"),
                Some("default"),
                &skiff_apimachinery::labels::LabelSelector::everything(),
                &skiff_apimachinery::fields::FieldSelector::default(),
            )
            .await
            .expect("list");
        assert_eq!(jobs.len(), 1);
        let job = crate::api::objects::value(&jobs[0]).expect("job");
        let last_minute = now.as_second().div_euclid(60);
        assert_eq!(job["metadata"]["name"], format!("hello-{last_minute}"));
        let cron = registry
            .get(
                info("batch", "cronjobs").expect("cronjobs"),
                Some("default"),
                "hello",
            )
            .await
            .expect("get");
        assert_eq!(cron["status"]["active"][0]["uid"], job["metadata"]["uid"]);
        assert!(cron["status"]["lastScheduleTime"].is_string(), "{cron:#}");
    }
}
