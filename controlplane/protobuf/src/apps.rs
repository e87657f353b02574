//! The `apps/v1` workloads: Deployment, ReplicaSet, DaemonSet, StatefulSet.

use k8s_pb::api::apps::v1 as apps;

use crate::core::{persistent_volume_claim, pod_template_spec};
use crate::json::{Obj, Res};
use crate::meta::{label_selector, object_meta};

pub(crate) fn deployment(d: &apps::Deployment) -> Res {
    Obj::new()
        .val("metadata", &d.metadata, object_meta)
        .val("spec", &d.spec, deployment_spec)
        .val("status", &d.status, deployment_status)
        .done()
}

fn deployment_spec(s: &apps::DeploymentSpec) -> Res {
    Obj::new()
        .int_ptr("replicas", s.replicas)
        .ptr("selector", &s.selector, label_selector)
        .val("template", &s.template, pod_template_spec)
        .val("strategy", &s.strategy, |st| {
            Obj::new()
                .str("type", &st.r#type)
                .ptr("rollingUpdate", &st.rolling_update, |r| {
                    Obj::new()
                        .int_or_string_ptr("maxUnavailable", &r.max_unavailable)
                        .int_or_string_ptr("maxSurge", &r.max_surge)
                        .done()
                })
                .done()
        })
        .int("minReadySeconds", s.min_ready_seconds)
        .int_ptr("revisionHistoryLimit", s.revision_history_limit)
        .bool("paused", s.paused)
        .int_ptr("progressDeadlineSeconds", s.progress_deadline_seconds)
        .done()
}

fn deployment_status(s: &apps::DeploymentStatus) -> Res {
    Obj::new()
        .int("observedGeneration", s.observed_generation)
        .int("replicas", s.replicas)
        .int("updatedReplicas", s.updated_replicas)
        .int("readyReplicas", s.ready_replicas)
        .int("availableReplicas", s.available_replicas)
        .int("unavailableReplicas", s.unavailable_replicas)
        .int_ptr("terminatingReplicas", s.terminating_replicas)
        .list("conditions", &s.conditions, |c| {
            Obj::new()
                .str_req("type", &c.r#type)
                .str_req("status", &c.status)
                .time("lastUpdateTime", &c.last_update_time)
                .time("lastTransitionTime", &c.last_transition_time)
                .str("reason", &c.reason)
                .str("message", &c.message)
                .done()
        })
        .int_ptr("collisionCount", s.collision_count)
        .done()
}

pub(crate) fn replica_set(rs: &apps::ReplicaSet) -> Res {
    Obj::new()
        .val("metadata", &rs.metadata, object_meta)
        .val("spec", &rs.spec, |s| {
            Obj::new()
                .int_ptr("replicas", s.replicas)
                .int("minReadySeconds", s.min_ready_seconds)
                .ptr("selector", &s.selector, label_selector)
                .val("template", &s.template, pod_template_spec)
                .done()
        })
        .val("status", &rs.status, |s| {
            Obj::new()
                .int_req("replicas", s.replicas)
                .int("fullyLabeledReplicas", s.fully_labeled_replicas)
                .int("readyReplicas", s.ready_replicas)
                .int("availableReplicas", s.available_replicas)
                .int_ptr("terminatingReplicas", s.terminating_replicas)
                .int("observedGeneration", s.observed_generation)
                .list("conditions", &s.conditions, |c| {
                    simple_condition(
                        &c.r#type,
                        &c.status,
                        &c.last_transition_time,
                        &c.reason,
                        &c.message,
                    )
                })
                .done()
        })
        .done()
}

pub(crate) fn daemon_set(ds: &apps::DaemonSet) -> Res {
    Obj::new()
        .val("metadata", &ds.metadata, object_meta)
        .val("spec", &ds.spec, |s| {
            Obj::new()
                .ptr("selector", &s.selector, label_selector)
                .val("template", &s.template, pod_template_spec)
                .val("updateStrategy", &s.update_strategy, |u| {
                    Obj::new()
                        .str("type", &u.r#type)
                        .ptr("rollingUpdate", &u.rolling_update, |r| {
                            Obj::new()
                                .int_or_string_ptr("maxUnavailable", &r.max_unavailable)
                                .int_or_string_ptr("maxSurge", &r.max_surge)
                                .done()
                        })
                        .done()
                })
                .int("minReadySeconds", s.min_ready_seconds)
                .int_ptr("revisionHistoryLimit", s.revision_history_limit)
                .done()
        })
        .val("status", &ds.status, |s| {
            Obj::new()
                .int_req("currentNumberScheduled", s.current_number_scheduled)
                .int_req("numberMisscheduled", s.number_misscheduled)
                .int_req("desiredNumberScheduled", s.desired_number_scheduled)
                .int_req("numberReady", s.number_ready)
                .int("observedGeneration", s.observed_generation)
                .int("updatedNumberScheduled", s.updated_number_scheduled)
                .int("numberAvailable", s.number_available)
                .int("numberUnavailable", s.number_unavailable)
                .int_ptr("collisionCount", s.collision_count)
                .list("conditions", &s.conditions, |c| {
                    simple_condition(
                        &c.r#type,
                        &c.status,
                        &c.last_transition_time,
                        &c.reason,
                        &c.message,
                    )
                })
                .done()
        })
        .done()
}

pub(crate) fn stateful_set(ss: &apps::StatefulSet) -> Res {
    Obj::new()
        .val("metadata", &ss.metadata, object_meta)
        .val("spec", &ss.spec, stateful_set_spec)
        .val("status", &ss.status, |s| {
            Obj::new()
                .int("observedGeneration", s.observed_generation)
                .int_req("replicas", s.replicas)
                .int("readyReplicas", s.ready_replicas)
                .int("currentReplicas", s.current_replicas)
                .int("updatedReplicas", s.updated_replicas)
                .str("currentRevision", &s.current_revision)
                .str("updateRevision", &s.update_revision)
                .int_ptr("collisionCount", s.collision_count)
                .list("conditions", &s.conditions, |c| {
                    simple_condition(
                        &c.r#type,
                        &c.status,
                        &c.last_transition_time,
                        &c.reason,
                        &c.message,
                    )
                })
                .int("availableReplicas", s.available_replicas)
                .done()
        })
        .done()
}

fn stateful_set_spec(s: &apps::StatefulSetSpec) -> Res {
    Obj::new()
        .int_ptr("replicas", s.replicas)
        .ptr("selector", &s.selector, label_selector)
        .val("template", &s.template, pod_template_spec)
        .list(
            "volumeClaimTemplates",
            &s.volume_claim_templates,
            persistent_volume_claim,
        )
        .str("serviceName", &s.service_name)
        .str("podManagementPolicy", &s.pod_management_policy)
        .val("updateStrategy", &s.update_strategy, |u| {
            Obj::new()
                .str("type", &u.r#type)
                .ptr("rollingUpdate", &u.rolling_update, |r| {
                    Obj::new()
                        .int_ptr("partition", r.partition)
                        .int_or_string_ptr("maxUnavailable", &r.max_unavailable)
                        .done()
                })
                .done()
        })
        .int_ptr("revisionHistoryLimit", s.revision_history_limit)
        .int("minReadySeconds", s.min_ready_seconds)
        .ptr(
            "persistentVolumeClaimRetentionPolicy",
            &s.persistent_volume_claim_retention_policy,
            |p| {
                Obj::new()
                    .str("whenDeleted", &p.when_deleted)
                    .str("whenScaled", &p.when_scaled)
                    .done()
            },
        )
        .ptr("ordinals", &s.ordinals, |o| {
            Obj::new().int("start", o.start).done()
        })
        .done()
}

/// The workload conditions of ReplicaSet, DaemonSet and StatefulSet share
/// one shape in Go but are separate protobuf messages.
fn simple_condition(
    kind: &Option<String>,
    status: &Option<String>,
    last_transition_time: &Option<k8s_pb::apimachinery::pkg::apis::meta::v1::Time>,
    reason: &Option<String>,
    message: &Option<String>,
) -> Res {
    Obj::new()
        .str_req("type", kind)
        .str_req("status", status)
        .time("lastTransitionTime", last_transition_time)
        .str("reason", reason)
        .str("message", message)
        .done()
}
