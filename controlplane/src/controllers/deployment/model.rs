//! Deployments and ReplicaSets as the deployment controller reads them.
//!
//! The stored JSON is parsed once into these views, with Kubernetes'
//! defaults for anything the registry has not filled in; the planner works
//! on the views only. A ReplicaSet view can be turned back into the object
//! to write ([`ReplicaSet::to_object`]): the fields the controller manages
//! (replicas, `minReadySeconds`, annotations, owner references) replace
//! those of the stored object, everything else is kept as stored.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{json, Map, Value};
use skiff_apimachinery::labels::{LabelSelector, SelectorError};

use crate::api::objects::str_at;
use crate::controllers::replicas::ControllerRef;

/// How Kubernetes writes condition times.
pub fn format_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_time(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{kind} has no {field}")]
    Incomplete {
        kind: &'static str,
        field: &'static str,
    },
    #[error("deployment {namespace}/{name} has an invalid selector: {source}")]
    Selector {
        namespace: String,
        name: String,
        source: SelectorError,
    },
    #[error("deployment {namespace}/{name}: {field}: {message}")]
    Strategy {
        namespace: String,
        name: String,
        field: &'static str,
        message: String,
    },
}

/// `maxSurge` / `maxUnavailable`: a count, or a percentage of the desired
/// replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(i64),
    Percent(i64),
}

impl IntOrPercent {
    /// Parses the JSON form, as Kubernetes' `GetScaledValueFromIntOrPercent`
    /// accepts it: an integer, or a string ending in `%`.
    pub fn parse(value: &Value) -> Result<IntOrPercent, String> {
        match value {
            Value::Number(number) => number
                .as_i64()
                .map(IntOrPercent::Int)
                .ok_or_else(|| format!("invalid value {number}: not an integer")),
            Value::String(text) => {
                let Some(digits) = text.strip_suffix('%') else {
                    return Err("invalid type: string is not a percentage".into());
                };
                digits
                    .parse()
                    .map(IntOrPercent::Percent)
                    .map_err(|error| format!("invalid value {text:?}: {error}"))
            }
            other => Err(format!("invalid type: neither int nor percentage: {other}")),
        }
    }

    /// The absolute value against `total`; percentages round up or down.
    pub fn scaled(self, total: i64, round_up: bool) -> i64 {
        match self {
            IntOrPercent::Int(value) => value,
            IntOrPercent::Percent(percent) => {
                let product = percent * total;
                if round_up {
                    product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
                } else {
                    product.div_euclid(100)
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: IntOrPercent,
        max_unavailable: IntOrPercent,
    },
}

/// A deployment condition, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_update_time: String,
    pub last_transition_time: String,
}

impl Condition {
    pub fn new(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> Self {
        let now = format_time(now);
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_update_time: now.clone(),
            last_transition_time: now,
        }
    }

    fn from_value(value: &Value) -> Condition {
        let text = |field: &str| {
            str_at(value, &format!("/{field}"))
                .unwrap_or_default()
                .to_owned()
        };
        Condition {
            type_: text("type"),
            status: text("status"),
            reason: text("reason"),
            message: text("message"),
            last_update_time: text("lastUpdateTime"),
            last_transition_time: text("lastTransitionTime"),
        }
    }

    fn to_value(&self) -> Value {
        let mut condition = json!({"type": self.type_, "status": self.status});
        for (field, value) in [
            ("lastUpdateTime", &self.last_update_time),
            ("lastTransitionTime", &self.last_transition_time),
            ("reason", &self.reason),
            ("message", &self.message),
        ] {
            if !value.is_empty() {
                condition[field] = json!(value);
            }
        }
        condition
    }
}

/// `DeploymentStatus`, with the counts Kubernetes keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub observed_generation: i64,
    pub replicas: i64,
    pub updated_replicas: i64,
    pub ready_replicas: i64,
    pub available_replicas: i64,
    pub unavailable_replicas: i64,
    pub conditions: Vec<Condition>,
    pub collision_count: Option<i64>,
}

fn number(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

impl DeploymentStatus {
    pub fn from_value(status: &Value) -> DeploymentStatus {
        let count = |field: &str| number(status, &format!("/{field}")).unwrap_or(0);
        DeploymentStatus {
            observed_generation: count("observedGeneration"),
            replicas: count("replicas"),
            updated_replicas: count("updatedReplicas"),
            ready_replicas: count("readyReplicas"),
            available_replicas: count("availableReplicas"),
            unavailable_replicas: count("unavailableReplicas"),
            conditions: status
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(Condition::from_value)
                .collect(),
            collision_count: number(status, "/collisionCount"),
        }
    }

    /// The stored form; zero counts are left out, as Kubernetes'
    /// `omitempty` does.
    pub fn to_value(&self) -> Value {
        let mut status = json!({});
        for (field, value) in [
            ("observedGeneration", self.observed_generation),
            ("replicas", self.replicas),
            ("updatedReplicas", self.updated_replicas),
            ("readyReplicas", self.ready_replicas),
            ("availableReplicas", self.available_replicas),
            ("unavailableReplicas", self.unavailable_replicas),
        ] {
            if value != 0 {
                status[field] = json!(value);
            }
        }
        if !self.conditions.is_empty() {
            status["conditions"] = self.conditions.iter().map(Condition::to_value).collect();
        }
        if let Some(count) = self.collision_count {
            status["collisionCount"] = json!(count);
        }
        status
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Kubernetes' `SetDeploymentCondition`: a condition with the same
    /// status and reason is left as it is; otherwise it replaces the old
    /// one (moving to the end), keeping the transition time if the status
    /// did not change.
    pub fn set_condition(&mut self, mut condition: Condition) {
        if let Some(current) = self.condition(&condition.type_) {
            if current.status == condition.status && current.reason == condition.reason {
                return;
            }
            if current.status == condition.status {
                condition.last_transition_time = current.last_transition_time.clone();
            }
        }
        self.remove_condition(&condition.type_);
        self.conditions.push(condition);
    }

    pub fn remove_condition(&mut self, type_: &str) {
        self.conditions.retain(|c| c.type_ != type_);
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
        .collect()
}

/// The controller among owner references.
pub fn controller_of(references: &[Value]) -> Option<ControllerRef> {
    references
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| ControllerRef {
            api_version: str_at(r, "/apiVersion").unwrap_or_default().to_owned(),
            kind: str_at(r, "/kind").unwrap_or_default().to_owned(),
            name: str_at(r, "/name").unwrap_or_default().to_owned(),
            uid: str_at(r, "/uid").unwrap_or_default().to_owned(),
        })
}

fn required(
    object: &Value,
    pointer: &str,
    kind: &'static str,
    field: &'static str,
) -> Result<String, ModelError> {
    str_at(object, pointer)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(ModelError::Incomplete { kind, field })
}

/// A Deployment, as the controller needs it.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
    pub replicas: i64,
    pub selector: LabelSelector,
    /// `spec.selector` as stored, which new ReplicaSets extend.
    pub selector_value: Value,
    pub template: Value,
    pub strategy: Strategy,
    pub min_ready_seconds: i64,
    pub revision_history_limit: Option<i64>,
    pub progress_deadline_seconds: Option<i64>,
    pub paused: bool,
    pub deleting: bool,
    pub annotations: BTreeMap<String, String>,
    pub status: DeploymentStatus,
    /// The stored object, for writes and event references.
    pub object: Value,
}

impl Deployment {
    pub fn from_object(object: Value) -> Result<Deployment, ModelError> {
        const KIND: &str = "Deployment";
        let namespace = required(&object, "/metadata/namespace", KIND, "metadata.namespace")?;
        let name = required(&object, "/metadata/name", KIND, "metadata.name")?;
        let uid = required(&object, "/metadata/uid", KIND, "metadata.uid")?;
        let selector_value = object
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        let selector =
            LabelSelector::from_api(&selector_value).map_err(|source| ModelError::Selector {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        let strategy_error = |field: &'static str, message: String| ModelError::Strategy {
            namespace: namespace.clone(),
            name: name.clone(),
            field,
            message,
        };
        let strategy = match str_at(&object, "/spec/strategy/type").unwrap_or("RollingUpdate") {
            "Recreate" => Strategy::Recreate,
            "RollingUpdate" => {
                let parse = |field: &'static str, pointer: &str| match object.pointer(pointer) {
                    None | Some(Value::Null) => Ok(IntOrPercent::Percent(25)),
                    Some(value) => {
                        IntOrPercent::parse(value).map_err(|message| strategy_error(field, message))
                    }
                };
                Strategy::RollingUpdate {
                    max_surge: parse(
                        "spec.strategy.rollingUpdate.maxSurge",
                        "/spec/strategy/rollingUpdate/maxSurge",
                    )?,
                    max_unavailable: parse(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        "/spec/strategy/rollingUpdate/maxUnavailable",
                    )?,
                }
            }
            other => {
                return Err(strategy_error(
                    "spec.strategy.type",
                    format!("unsupported strategy {other:?}"),
                ))
            }
        };
        Ok(Deployment {
            generation: number(&object, "/metadata/generation").unwrap_or(0),
            replicas: number(&object, "/spec/replicas").unwrap_or(1).max(0),
            template: object
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({})),
            min_ready_seconds: number(&object, "/spec/minReadySeconds").unwrap_or(0).max(0),
            revision_history_limit: number(&object, "/spec/revisionHistoryLimit"),
            progress_deadline_seconds: number(&object, "/spec/progressDeadlineSeconds"),
            paused: object.pointer("/spec/paused").and_then(Value::as_bool) == Some(true),
            deleting: object.pointer("/metadata/deletionTimestamp").is_some(),
            annotations: string_map(object.pointer("/metadata/annotations")),
            status: DeploymentStatus::from_value(object.get("status").unwrap_or(&Value::Null)),
            namespace,
            name,
            uid,
            selector,
            selector_value,
            strategy,
            object,
        })
    }

    pub fn is_rolling_update(&self) -> bool {
        matches!(self.strategy, Strategy::RollingUpdate { .. })
    }

    /// Kubernetes' `HasProgressDeadline`: set, and not the "never" value.
    pub fn progress_deadline(&self) -> Option<i64> {
        self.progress_deadline_seconds
            .filter(|&seconds| seconds != i64::from(i32::MAX))
    }
}

/// The counts a ReplicaSet reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaSetStatus {
    pub replicas: i64,
    pub ready_replicas: i64,
    pub available_replicas: i64,
    pub observed_generation: i64,
}

/// A ReplicaSet, as the deployment controller needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSet {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub generation: i64,
    /// `spec.replicas`.
    pub replicas: i64,
    pub min_ready_seconds: i64,
    pub labels: Map<String, Value>,
    pub annotations: BTreeMap<String, String>,
    pub template: Value,
    pub controller: Option<ControllerRef>,
    /// `metadata.ownerReferences` as stored, for adoption and release.
    pub owner_references: Vec<Value>,
    pub deleting: bool,
    pub status: ReplicaSetStatus,
    /// Its `ReplicaFailure` condition, if any.
    pub failure: Option<Condition>,
    pub object: Value,
}

impl ReplicaSet {
    pub fn from_object(object: Value) -> Result<ReplicaSet, ModelError> {
        const KIND: &str = "ReplicaSet";
        let failure = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Condition::from_value)
            .find(|c| c.type_ == "ReplicaFailure");
        let owner_references = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(ReplicaSet {
            namespace: required(&object, "/metadata/namespace", KIND, "metadata.namespace")?,
            name: required(&object, "/metadata/name", KIND, "metadata.name")?,
            uid: required(&object, "/metadata/uid", KIND, "metadata.uid")?,
            created: parse_time(str_at(&object, "/metadata/creationTimestamp")),
            generation: number(&object, "/metadata/generation").unwrap_or(0),
            replicas: number(&object, "/spec/replicas").unwrap_or(1).max(0),
            min_ready_seconds: number(&object, "/spec/minReadySeconds").unwrap_or(0),
            labels: object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            annotations: string_map(object.pointer("/metadata/annotations")),
            template: object
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({})),
            controller: controller_of(&owner_references),
            owner_references,
            deleting: object.pointer("/metadata/deletionTimestamp").is_some(),
            status: ReplicaSetStatus {
                replicas: number(&object, "/status/replicas").unwrap_or(0),
                ready_replicas: number(&object, "/status/readyReplicas").unwrap_or(0),
                available_replicas: number(&object, "/status/availableReplicas").unwrap_or(0),
                observed_generation: number(&object, "/status/observedGeneration").unwrap_or(0),
            },
            failure,
            object,
        })
    }

    /// The `deployment.kubernetes.io/revision` number; absent is 0, as in
    /// Kubernetes' `deploymentutil.Revision`.
    pub fn revision(&self) -> Result<i64, std::num::ParseIntError> {
        match self.annotations.get(super::revisions::REVISION) {
            None => Ok(0),
            Some(text) => text.parse(),
        }
    }

    /// Whether the controller reference names `owner_uid`.
    pub fn is_controlled_by(&self, owner_uid: &str) -> bool {
        self.controller.as_ref().is_some_and(|c| c.uid == owner_uid)
    }

    /// The object to write: the stored one with the managed fields
    /// replaced.
    pub fn to_object(&self) -> Value {
        let mut object = self.object.clone();
        object["spec"]["replicas"] = json!(self.replicas);
        object["spec"]["minReadySeconds"] = json!(self.min_ready_seconds);
        object["metadata"]["annotations"] = json!(self.annotations);
        if self.owner_references.is_empty() {
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("ownerReferences");
            }
        } else {
            object["metadata"]["ownerReferences"] = Value::Array(self.owner_references.clone());
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_kubernetes_does() {
        let cases = [
            // (value, total, round up, expected)
            (IntOrPercent::Percent(25), 4, true, 1),
            (IntOrPercent::Percent(25), 4, false, 1),
            (IntOrPercent::Percent(25), 5, true, 2),
            (IntOrPercent::Percent(25), 5, false, 1),
            (IntOrPercent::Percent(25), 1, true, 1),
            (IntOrPercent::Percent(25), 1, false, 0),
            (IntOrPercent::Percent(100), 3, false, 3),
            (IntOrPercent::Percent(0), 10, true, 0),
            (IntOrPercent::Int(2), 10, false, 2),
        ];
        for (value, total, up, expected) in cases {
            assert_eq!(
                value.scaled(total, up),
                expected,
                "{value:?} of {total}, up={up}"
            );
        }
    }

    #[test]
    fn int_or_percent_parses_like_kubernetes() {
        assert_eq!(IntOrPercent::parse(&json!(3)), Ok(IntOrPercent::Int(3)));
        assert_eq!(
            IntOrPercent::parse(&json!("30%")),
            Ok(IntOrPercent::Percent(30))
        );
        assert!(IntOrPercent::parse(&json!("3")).is_err_and(|e| e.contains("not a percentage")));
        assert!(IntOrPercent::parse(&json!("x%")).is_err());
        assert!(IntOrPercent::parse(&json!(true)).is_err());
    }

    #[test]
    fn deployments_default_as_the_api_does() {
        let d = Deployment::from_object(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
        }))
        .expect("valid");
        assert_eq!(d.replicas, 1);
        assert_eq!(
            d.strategy,
            Strategy::RollingUpdate {
                max_surge: IntOrPercent::Percent(25),
                max_unavailable: IntOrPercent::Percent(25)
            }
        );
        assert_eq!(d.progress_deadline(), None);
        let never = Deployment::from_object(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "progressDeadlineSeconds": 2147483647},
        }))
        .expect("valid");
        assert_eq!(never.progress_deadline(), None);
        assert!(Deployment::from_object(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "1"}}},
        }))
        .is_err());
    }

    #[test]
    fn conditions_keep_their_transition_time_while_the_status_holds() {
        let t0: Timestamp = "2025-01-01T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2025-01-01T00:01:00Z".parse().expect("time");
        let mut status = DeploymentStatus::default();
        status.set_condition(Condition::new("Progressing", "True", "A", "a".into(), t0));
        status.set_condition(Condition::new("Available", "False", "X", "x".into(), t0));
        // Same status and reason: nothing changes.
        status.set_condition(Condition::new(
            "Progressing",
            "True",
            "A",
            "other".into(),
            t1,
        ));
        assert_eq!(status.conditions[0].message, "a");
        // Same status, new reason: replaced, moved last, transition kept.
        status.set_condition(Condition::new("Progressing", "True", "B", "b".into(), t1));
        let progressing = &status.conditions[1];
        assert_eq!(
            (progressing.reason.as_str(), progressing.type_.as_str()),
            ("B", "Progressing")
        );
        assert_eq!(progressing.last_transition_time, "2025-01-01T00:00:00Z");
        assert_eq!(progressing.last_update_time, "2025-01-01T00:01:00Z");
        let round_trip = DeploymentStatus::from_value(&status.to_value());
        assert_eq!(round_trip, status);
    }
}
