//! A deployment's status and conditions, as Kubernetes computes them;
//! `kubectl rollout status` reads nothing else.
//!
//! - The counts add up the ReplicaSets' own status; `updatedReplicas` is
//!   the new ReplicaSet's.
//! - `Available` is True once at least replicas minus `maxUnavailable`
//!   pods are available.
//! - `Progressing` records the rollout: `NewReplicaSetCreated` or
//!   `FoundNewReplicaSet` when it starts, `ReplicaSetUpdated` (with a new
//!   `lastUpdateTime`) whenever pods move, `NewReplicaSetAvailable` when
//!   it completes, and `ProgressDeadlineExceeded` once no progress was seen
//!   for `progressDeadlineSeconds`. A stuck deployment is looked at again
//!   when its deadline passes, since no event would say so.
//! - While paused it is `Unknown` (`DeploymentPaused`, then
//!   `DeploymentResumed`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::model::{Condition, Deployment, DeploymentStatus, ReplicaSet};
use super::rollout::max_unavailable;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
pub const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";
pub const DEPLOYMENT_RESUMED: &str = "DeploymentResumed";
pub const REPLICA_SET_CREATE_ERROR: &str = "ReplicaSetCreateError";

/// Kubernetes' `calculateStatus`: counts from `all` (the new ReplicaSet
/// included), the deployment's conditions, and `Available` updated.
pub fn calculate_status(
    deployment: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i64 = all.iter().map(|rs| rs.status.available_replicas).sum();
    let wanted: i64 = all.iter().map(|rs| rs.replicas).sum();
    let mut status = DeploymentStatus {
        observed_generation: deployment.generation,
        replicas: all.iter().map(|rs| rs.status.replicas).sum(),
        updated_replicas: new.map_or(0, |rs| rs.status.replicas),
        ready_replicas: all.iter().map(|rs| rs.status.ready_replicas).sum(),
        available_replicas: available,
        // Negative while scaling down with extra pods still up.
        unavailable_replicas: (wanted - available).max(0),
        conditions: deployment.status.conditions.clone(),
        collision_count: deployment.status.collision_count,
    };
    let condition = if available >= deployment.replicas - max_unavailable(deployment) {
        Condition::new(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        Condition::new(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    status.set_condition(condition);
    status
}

/// Every replica updated and available, and the spec observed.
pub fn deployment_complete(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    status.updated_replicas == deployment.replicas
        && status.replicas == deployment.replicas
        && status.available_replicas == deployment.replicas
        && status.observed_generation >= deployment.generation
}

/// Whether pods moved since the deployment's last status.
fn progressing(deployment: &Deployment, new: &DeploymentStatus) -> bool {
    let old = &deployment.status;
    new.updated_replicas > old.updated_replicas
        || new.replicas - new.updated_replicas < old.replicas - old.updated_replicas
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

fn deadline_of(condition: &Condition, seconds: i64) -> Option<Timestamp> {
    let updated: Timestamp = condition.last_update_time.parse().ok()?;
    Some(updated + SignedDuration::from_secs(seconds))
}

fn timed_out(deployment: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(seconds) = deployment.progress_deadline() else {
        return false;
    };
    let Some(condition) = status.condition(PROGRESSING) else {
        return false;
    };
    match condition.reason.as_str() {
        // A finished rollout is not estimated again.
        NEW_REPLICA_SET_AVAILABLE => false,
        PROGRESS_DEADLINE_EXCEEDED => true,
        _ => deadline_of(condition, seconds).is_some_and(|deadline| deadline < now),
    }
}

fn replica_set_name_or(new: Option<&ReplicaSet>, deployment: &Deployment) -> String {
    match new {
        Some(rs) => format!("ReplicaSet {:?}", rs.name),
        None => format!("Deployment {:?}", deployment.name),
    }
}

/// Kubernetes' `syncRolloutStatus`, without the write: the status to store
/// and, if it is unchanged and the rollout may be stuck, when to look
/// again for the deadline.
pub fn rollout_status(
    deployment: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let mut status = calculate_status(deployment, all, new, now);
    let deadline = deployment.progress_deadline();
    if deadline.is_none() {
        status.remove_condition(PROGRESSING);
    }
    let current = deployment.status.condition(PROGRESSING);
    // A resync of a finished rollout estimates nothing.
    let finished = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason == NEW_REPLICA_SET_AVAILABLE);
    if deadline.is_some() && !finished {
        let subject = replica_set_name_or(new, deployment);
        if deployment_complete(deployment, &status) {
            status.set_condition(Condition::new(
                PROGRESSING,
                "True",
                NEW_REPLICA_SET_AVAILABLE,
                format!("{subject} has successfully progressed."),
                now,
            ));
        } else if progressing(deployment, &status) {
            // Progress refreshes lastUpdateTime even with the same
            // reason, which is what the deadline counts from.
            let mut condition = Condition::new(
                PROGRESSING,
                "True",
                REPLICA_SET_UPDATED,
                format!("{subject} is progressing."),
                now,
            );
            if let Some(current) = current {
                if current.status == "True" {
                    condition.last_transition_time = current.last_transition_time.clone();
                }
                status.remove_condition(PROGRESSING);
            }
            status.set_condition(condition);
        } else if timed_out(deployment, &status, now) {
            status.set_condition(Condition::new(
                PROGRESSING,
                "False",
                PROGRESS_DEADLINE_EXCEEDED,
                format!("{subject} has timed out progressing."),
                now,
            ));
        }
    }

    // A ReplicaSet that cannot create pods says so in the deployment; the
    // new one's failure wins over old ones'.
    let failure = new
        .and_then(|rs| rs.failure.as_ref())
        .or_else(|| all.iter().find_map(|rs| rs.failure.as_ref()));
    match failure {
        Some(failure) => {
            let mut condition = failure.clone();
            condition.last_update_time = condition.last_transition_time.clone();
            status.set_condition(condition);
        }
        None => status.remove_condition(REPLICA_FAILURE),
    }

    let requeue = if status == deployment.status {
        stuck_requeue(deployment, &status, now)
    } else {
        None
    };
    (status, requeue)
}

/// Kubernetes' `requeueStuckDeployment`: when an unfinished rollout should
/// be checked for its deadline.
fn stuck_requeue(
    deployment: &Deployment,
    status: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let seconds = deployment.progress_deadline()?;
    let current = deployment.status.condition(PROGRESSING)?;
    if deployment_complete(deployment, status) || current.reason == PROGRESS_DEADLINE_EXCEEDED {
        return None;
    }
    let deadline = deadline_of(current, seconds)?;
    let after = Duration::try_from(deadline.duration_since(now)).unwrap_or_default();
    if after < Duration::from_secs(1) {
        return Some(Duration::from_secs(1));
    }
    // A second more, so the check does not land just before the deadline.
    Some(after + Duration::from_secs(1))
}

/// Kubernetes' `checkPausedConditions`: marks `Progressing` Unknown when a
/// deployment is paused or resumed, unless it already timed out.
pub fn paused_condition(deployment: &Deployment, status: &mut DeploymentStatus, now: Timestamp) {
    if deployment.progress_deadline().is_none() {
        return;
    }
    let current = status.condition(PROGRESSING);
    if current.is_some_and(|c| c.reason == PROGRESS_DEADLINE_EXCEEDED) {
        return;
    }
    let paused_before = current.is_some_and(|c| c.reason == DEPLOYMENT_PAUSED);
    if deployment.paused && !paused_before {
        status.set_condition(Condition::new(
            PROGRESSING,
            "Unknown",
            DEPLOYMENT_PAUSED,
            "Deployment is paused".into(),
            now,
        ));
    } else if !deployment.paused && paused_before {
        status.set_condition(Condition::new(
            PROGRESSING,
            "Unknown",
            DEPLOYMENT_RESUMED,
            "Deployment is resumed".into(),
            now,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("time")
    }

    fn deployment(replicas: i64, status: Value) -> Deployment {
        Deployment::from_object(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "progressDeadlineSeconds": 60},
            "status": status,
        }))
        .expect("deployment")
    }

    fn replica_set(name: &str, replicas: i64, status: Value) -> ReplicaSet {
        ReplicaSet::from_object(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"replicas": replicas},
            "status": status,
        }))
        .expect("rs")
    }

    fn progressing_since(reason: &str, second: i64) -> Value {
        let time = super::super::model::format_time(at(second));
        json!({"type": "Progressing", "status": "True", "reason": reason, "message": "m",
            "lastUpdateTime": time, "lastTransitionTime": time})
    }

    #[test]
    fn counts_add_up_the_replica_sets() {
        let d = deployment(4, json!({}));
        let old = replica_set(
            "old",
            3,
            json!({"replicas": 3, "readyReplicas": 3, "availableReplicas": 2}),
        );
        let new = replica_set("new", 2, json!({"replicas": 2, "readyReplicas": 1}));
        let status = calculate_status(&d, &[&old, &new], Some(&new), at(0));
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status.unavailable_replicas,
                status.observed_generation
            ),
            (5, 2, 4, 2, 3, 2)
        );
        let available = status.condition(AVAILABLE).expect("Available");
        assert_eq!(
            (available.status.as_str(), available.reason.as_str()),
            ("False", MINIMUM_REPLICAS_UNAVAILABLE)
        );
        assert_eq!(
            available.message,
            "Deployment does not have minimum availability."
        );
    }

    #[test]
    fn progressing_reflects_the_rollout() {
        struct Case {
            name: &'static str,
            status: Value,
            new_status: Value,
            now: i64,
            reason: &'static str,
            condition_status: &'static str,
            message: &'static str,
        }
        let cases = [
            Case {
                name: "complete",
                status: json!({"conditions": [progressing_since(REPLICA_SET_UPDATED, 0)]}),
                new_status: json!({"replicas": 2, "availableReplicas": 2, "observedGeneration": 1}),
                now: 10,
                reason: NEW_REPLICA_SET_AVAILABLE,
                condition_status: "True",
                message: "ReplicaSet \"web-abc\" has successfully progressed.",
            },
            Case {
                name: "more pods updated",
                status: json!({"replicas": 3, "updatedReplicas": 0,
                    "conditions": [progressing_since(NEW_REPLICA_SET_CREATED, 0)]}),
                new_status: json!({"replicas": 1}),
                now: 10,
                reason: REPLICA_SET_UPDATED,
                condition_status: "True",
                message: "ReplicaSet \"web-abc\" is progressing.",
            },
            Case {
                name: "no progress within the deadline",
                status: json!({"replicas": 1, "updatedReplicas": 1,
                    "conditions": [progressing_since(REPLICA_SET_UPDATED, 0)]}),
                new_status: json!({"replicas": 1}),
                now: 61,
                reason: PROGRESS_DEADLINE_EXCEEDED,
                condition_status: "False",
                message: "ReplicaSet \"web-abc\" has timed out progressing.",
            },
            Case {
                name: "no progress, deadline not reached",
                status: json!({"replicas": 1, "updatedReplicas": 1,
                    "conditions": [progressing_since(REPLICA_SET_UPDATED, 0)]}),
                new_status: json!({"replicas": 1}),
                now: 59,
                reason: REPLICA_SET_UPDATED,
                condition_status: "True",
                message: "m",
            },
        ];
        for case in cases {
            let d = deployment(2, case.status);
            let new = replica_set("web-abc", 2, case.new_status);
            let (status, _) = rollout_status(&d, &[&new], Some(&new), at(case.now));
            let condition = status.condition(PROGRESSING).expect("Progressing");
            assert_eq!(
                (
                    condition.reason.as_str(),
                    condition.status.as_str(),
                    condition.message.as_str()
                ),
                (case.reason, case.condition_status, case.message),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn progress_keeps_the_transition_time_and_moves_the_update_time() {
        let d = deployment(
            2,
            json!({"replicas": 2, "conditions": [progressing_since(NEW_REPLICA_SET_CREATED, 0)]}),
        );
        let new = replica_set("web-abc", 2, json!({"replicas": 2}));
        let (status, requeue) = rollout_status(&d, &[&new], Some(&new), at(30));
        let condition = status.condition(PROGRESSING).expect("Progressing");
        assert_eq!(
            condition.last_transition_time,
            super::super::model::format_time(at(0))
        );
        assert_eq!(
            condition.last_update_time,
            super::super::model::format_time(at(30))
        );
        assert_eq!(
            requeue, None,
            "the status changed: its write brings the next look"
        );
    }

    #[test]
    fn a_stuck_rollout_is_looked_at_again_at_its_deadline() {
        let time = super::super::model::format_time(at(0));
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
            "unavailableReplicas": 2,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": REPLICA_SET_UPDATED,
                 "message": "ReplicaSet \"web-abc\" is progressing.",
                 "lastUpdateTime": time, "lastTransitionTime": time},
                {"type": "Available", "status": "False", "reason": MINIMUM_REPLICAS_UNAVAILABLE,
                 "message": "Deployment does not have minimum availability.",
                 "lastUpdateTime": time, "lastTransitionTime": time},
            ]}),
        );
        let new = replica_set("web-abc", 2, json!({"replicas": 1}));
        let (status, requeue) = rollout_status(&d, &[&new], Some(&new), at(20));
        assert_eq!(status, d.status, "nothing changed");
        assert_eq!(requeue, Some(Duration::from_secs(41)));
    }

    #[test]
    fn replica_failures_are_copied_from_the_replica_sets() {
        let d = deployment(1, json!({}));
        let failing = replica_set(
            "web-abc",
            1,
            json!({"conditions": [{"type": "ReplicaFailure", "status": "True",
                "reason": "FailedCreate", "message": "quota", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}),
        );
        let (status, _) = rollout_status(&d, &[&failing], Some(&failing), at(0));
        let failure = status.condition(REPLICA_FAILURE).expect("ReplicaFailure");
        assert_eq!(
            (failure.reason.as_str(), failure.message.as_str()),
            ("FailedCreate", "quota")
        );
        assert_eq!(failure.last_update_time, "2025-01-01T00:00:00Z");
    }

    #[test]
    fn pausing_and_resuming_mark_progress_unknown() {
        let mut d = deployment(
            1,
            json!({"conditions": [progressing_since(REPLICA_SET_UPDATED, 0)]}),
        );
        d.paused = true;
        let mut status = d.status.clone();
        paused_condition(&d, &mut status, at(5));
        let condition = status.condition(PROGRESSING).expect("Progressing");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("Unknown", DEPLOYMENT_PAUSED)
        );
        assert_eq!(condition.message, "Deployment is paused");
        d.paused = false;
        paused_condition(&d, &mut status, at(6));
        let condition = status.condition(PROGRESSING).expect("Progressing");
        assert_eq!(
            (condition.reason.as_str(), condition.message.as_str()),
            (DEPLOYMENT_RESUMED, "Deployment is resumed")
        );
    }
}
