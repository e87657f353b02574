//! The `batch/v1` kinds: Job and CronJob.

use k8s_pb::api::batch::v1 as batch;

use crate::core::{object_reference, pod_template_spec};
use crate::json::{Obj, Res};
use crate::meta::{label_selector, object_meta};

pub(crate) fn job(j: &batch::Job) -> Res {
    Obj::new()
        .val("metadata", &j.metadata, object_meta)
        .val("spec", &j.spec, job_spec)
        .val("status", &j.status, job_status)
        .done()
}

pub(crate) fn cron_job(c: &batch::CronJob) -> Res {
    Obj::new()
        .val("metadata", &c.metadata, object_meta)
        .val("spec", &c.spec, |s| {
            Obj::new()
                .str_req("schedule", &s.schedule)
                .str_ptr("timeZone", &s.time_zone)
                .int_ptr("startingDeadlineSeconds", s.starting_deadline_seconds)
                .str("concurrencyPolicy", &s.concurrency_policy)
                .bool_ptr("suspend", s.suspend)
                .val("jobTemplate", &s.job_template, |t| {
                    Obj::new()
                        .val("metadata", &t.metadata, object_meta)
                        .val("spec", &t.spec, job_spec)
                        .done()
                })
                .int_ptr(
                    "successfulJobsHistoryLimit",
                    s.successful_jobs_history_limit,
                )
                .int_ptr("failedJobsHistoryLimit", s.failed_jobs_history_limit)
                .done()
        })
        .val("status", &c.status, |s| {
            Obj::new()
                .list("active", &s.active, object_reference)
                .time("lastScheduleTime", &s.last_schedule_time)
                .time("lastSuccessfulTime", &s.last_successful_time)
                .done()
        })
        .done()
}

fn job_spec(s: &batch::JobSpec) -> Res {
    Obj::new()
        .int_ptr("parallelism", s.parallelism)
        .int_ptr("completions", s.completions)
        .int_ptr("activeDeadlineSeconds", s.active_deadline_seconds)
        .ptr("podFailurePolicy", &s.pod_failure_policy, |p| {
            Obj::new()
                .list("rules", &p.rules, |r| {
                    Obj::new()
                        .str_req("action", &r.action)
                        .ptr("onExitCodes", &r.on_exit_codes, |e| {
                            Obj::new()
                                .str_ptr("containerName", &e.container_name)
                                .str_req("operator", &e.operator)
                                .ints("values", &e.values)
                                .done()
                        })
                        .list("onPodConditions", &r.on_pod_conditions, |c| {
                            Obj::new()
                                .str_req("type", &c.r#type)
                                .str_req("status", &c.status)
                                .done()
                        })
                        .done()
                })
                .done()
        })
        .ptr("successPolicy", &s.success_policy, |p| {
            Obj::new()
                .list("rules", &p.rules, |r| {
                    Obj::new()
                        .str_ptr("succeededIndexes", &r.succeeded_indexes)
                        .int_ptr("succeededCount", r.succeeded_count)
                        .done()
                })
                .done()
        })
        .int_ptr("backoffLimit", s.backoff_limit)
        .int_ptr("backoffLimitPerIndex", s.backoff_limit_per_index)
        .int_ptr("maxFailedIndexes", s.max_failed_indexes)
        .ptr("selector", &s.selector, label_selector)
        .bool_ptr("manualSelector", s.manual_selector)
        .val("template", &s.template, pod_template_spec)
        .int_ptr("ttlSecondsAfterFinished", s.ttl_seconds_after_finished)
        .str_ptr("completionMode", &s.completion_mode)
        .bool_ptr("suspend", s.suspend)
        .str_ptr("podReplacementPolicy", &s.pod_replacement_policy)
        .str_ptr("managedBy", &s.managed_by)
        .done()
}

fn job_status(s: &batch::JobStatus) -> Res {
    Obj::new()
        .list("conditions", &s.conditions, |c| {
            Obj::new()
                .str_req("type", &c.r#type)
                .str_req("status", &c.status)
                .time("lastProbeTime", &c.last_probe_time)
                .time("lastTransitionTime", &c.last_transition_time)
                .str("reason", &c.reason)
                .str("message", &c.message)
                .done()
        })
        .time("startTime", &s.start_time)
        .time("completionTime", &s.completion_time)
        .int("active", s.active)
        .int("succeeded", s.succeeded)
        .int("failed", s.failed)
        .int_ptr("terminating", s.terminating)
        .str("completedIndexes", &s.completed_indexes)
        .str_ptr("failedIndexes", &s.failed_indexes)
        .ptr(
            "uncountedTerminatedPods",
            &s.uncounted_terminated_pods,
            |u| {
                Obj::new()
                    .strs("succeeded", &u.succeeded)
                    .strs("failed", &u.failed)
                    .done()
            },
        )
        .int_ptr("ready", s.ready)
        .done()
}
