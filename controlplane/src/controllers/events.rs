//! Recording core/v1 Events, as Kubernetes' event recorder does, so that
//! `kubectl describe` shows what the scheduler and controllers did.
//!
//! Repeats are folded: an event with the same object, type, reason and
//! message as one recorded before bumps that event's `count` and
//! `lastTimestamp` (`kubectl describe` prints `(x3 over 2m)`) instead of
//! creating another object. The recorder remembers which event it made for
//! each such key in memory only, as Kubernetes' correlator does; after a
//! restart, the first repeat starts a new event.
//!
//! Events another component observed are recorded the same way
//! ([`EventRecorder::record_reported`]): a node's agent reports kubelet's
//! events with the container they concern (`involvedObject.fieldPath`),
//! its node as `source.host`, and a count of its own, which is added to
//! the folded event's.
//!
//! Building an event is pure ([`new_event`], [`reported_event`],
//! [`bumped`]); only [`EventRecorder::record`] and
//! [`EventRecorder::record_reported`] write, through the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::{Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

/// How many event keys are remembered for folding before forgetting all
/// of them (Kubernetes keeps an LRU of 4096).
const REMEMBERED: usize = 4096;
/// How often a write is retried when the event changed under it.
const RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about (`involvedObject`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InvolvedObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl InvolvedObject {
    /// The reference to a stored object (which carries `apiVersion` and
    /// `kind`, as everything the registry stores does).
    pub fn of(object: &Value) -> InvolvedObject {
        let text = |pointer: &str| str_at(object, pointer).unwrap_or_default().to_owned();
        InvolvedObject {
            api_version: text("/apiVersion"),
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
        }
    }
}

/// What happened, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventRecord {
    pub involved: InvolvedObject,
    pub event_type: EventType,
    pub reason: String,
    pub message: String,
}

/// An event another component observed, with its own count and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedEvent {
    pub record: EventRecord,
    /// The part of the object it concerns (`spec.containers{web}`); empty
    /// for the object as a whole.
    pub field_path: String,
    /// `source.component` / `reportingComponent`, e.g. `kubelet`.
    pub component: String,
    /// `source.host` / `reportingInstance`: the node it happened on.
    pub host: String,
    /// How many times it happened (at least 1).
    pub count: u32,
    /// RFC 3339.
    pub first_timestamp: String,
    pub last_timestamp: String,
}

/// What repeats fold into one event by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    record: EventRecord,
    field_path: String,
    host: String,
}

/// A new Event object for `record`, first seen at `now`.
pub fn new_event(component: &str, record: &EventRecord, name: &str, now: &str) -> Value {
    let involved = &record.involved;
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": involved.namespace},
        "involvedObject": {
            "apiVersion": involved.api_version,
            "kind": involved.kind,
            "namespace": involved.namespace,
            "name": involved.name,
            "uid": involved.uid,
        },
        "type": record.event_type.as_str(),
        "reason": record.reason,
        "message": record.message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// A new Event object for a reported event.
pub fn reported_event(reported: &ReportedEvent, name: &str) -> Value {
    let mut event = new_event(
        &reported.component,
        &reported.record,
        name,
        &reported.first_timestamp,
    );
    if !reported.field_path.is_empty() {
        event["involvedObject"]["fieldPath"] = json!(reported.field_path);
    }
    if !reported.host.is_empty() {
        event["source"]["host"] = json!(reported.host);
        event["reportingInstance"] = json!(reported.host);
    }
    event["lastTimestamp"] = json!(reported.last_timestamp);
    event["count"] = json!(reported.count.max(1));
    event
}

/// `existing` seen once more at `now`.
pub fn bumped(existing: &Value, now: &str) -> Value {
    bumped_by(existing, 1, now)
}

/// `existing` seen `times` more, the last time at `last`.
pub fn bumped_by(existing: &Value, times: u32, last: &str) -> Value {
    let mut event = existing.clone();
    let count = existing.get("count").and_then(Value::as_i64).unwrap_or(1);
    event["count"] = json!(count + i64::from(times.max(1)));
    event["lastTimestamp"] = json!(last);
    event
}

/// The name Kubernetes gives an event: the object's name and the time in
/// hexadecimal nanoseconds.
pub fn event_name(involved_name: &str, nanos: i128) -> String {
    format!("{involved_name}.{nanos:x}")
}

pub struct EventRecorder {
    registry: Arc<Registry>,
    component: &'static str,
    /// The event last recorded for each record, by namespace and name.
    recorded: Mutex<HashMap<FoldKey, String>>,
}

fn events_info() -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", "v1", "events").ok_or_else(|| ApiError::Internal("no events".into()))
}

impl EventRecorder {
    pub fn new(registry: Arc<Registry>, component: &'static str) -> EventRecorder {
        EventRecorder {
            registry,
            component,
            recorded: Mutex::new(HashMap::new()),
        }
    }

    fn remembered(&self, key: &FoldKey) -> Option<String> {
        self.recorded
            .lock()
            .ok()
            .and_then(|map| map.get(key).cloned())
    }

    fn remember(&self, record: FoldKey, name: String) {
        if let Ok(mut map) = self.recorded.lock() {
            if map.len() >= REMEMBERED {
                map.clear();
            }
            map.insert(record, name);
        }
    }

    /// Records an event: bumps the one made for the same record before, if
    /// it still exists, else creates one.
    pub async fn record(&self, record: EventRecord) -> Result<(), EventError> {
        let now = objects::now_rfc3339();
        let component = self.component;
        let key = FoldKey {
            record,
            field_path: String::new(),
            host: String::new(),
        };
        self.fold_or_create(
            key,
            |existing| bumped(existing, &now),
            |key, name| new_event(component, &key.record, name, &now),
        )
        .await
    }

    /// Records an event another component reported: adds its count to the
    /// event made for the same record (and part and node) before, if it
    /// still exists, else creates one with the reported count and times.
    pub async fn record_reported(&self, reported: ReportedEvent) -> Result<(), EventError> {
        let key = FoldKey {
            record: reported.record.clone(),
            field_path: reported.field_path.clone(),
            host: reported.host.clone(),
        };
        self.fold_or_create(
            key,
            |existing| bumped_by(existing, reported.count, &reported.last_timestamp),
            |_, name| reported_event(&reported, name),
        )
        .await
    }

    async fn fold_or_create(
        &self,
        key: FoldKey,
        bump: impl Fn(&Value) -> Value,
        create: impl Fn(&FoldKey, &str) -> Value,
    ) -> Result<(), EventError> {
        let info = events_info()?;
        let namespace = key.record.involved.namespace.clone();
        if let Some(name) = self.remembered(&key) {
            for _ in 0..RETRIES {
                let existing = match self.registry.get(info, Some(&namespace), &name).await {
                    Ok(existing) => existing,
                    Err(ApiError::NotFound { .. }) => break,
                    Err(other) => return Err(other.into()),
                };
                match self
                    .registry
                    .update(
                        info,
                        Some(&namespace),
                        &name,
                        bump(&existing),
                        WriteMode::default(),
                    )
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(ApiError::Conflict { .. }) => continue,
                    Err(ApiError::NotFound { .. }) => break,
                    Err(other) => return Err(other.into()),
                }
            }
        }
        let mut nanos = jiff::Timestamp::now().as_nanosecond();
        for _ in 0..RETRIES {
            let name = event_name(&key.record.involved.name, nanos);
            let event = create(&key, &name);
            match self
                .registry
                .create(info, Some(&namespace), event, false)
                .await
            {
                Ok(_) => {
                    self.remember(key, name);
                    return Ok(());
                }
                // Two events for one object in the same nanosecond.
                Err(ApiError::AlreadyExists { .. }) => nanos += 1,
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    /// [`record`](Self::record), logging instead of failing: an event that
    /// cannot be written must not stop the work it describes.
    pub async fn emit(&self, record: EventRecord) {
        let reason = record.reason.clone();
        if let Err(error) = self.record(record).await {
            tracing::warn!(%error, %reason, component = self.component, "cannot record event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EventRecord {
        EventRecord {
            involved: InvolvedObject::of(&json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
            })),
            event_type: EventType::Warning,
            reason: "FailedScheduling".into(),
            message: "0/1 nodes are available".into(),
        }
    }

    #[test]
    fn a_new_event_points_at_its_object() {
        let event = new_event(
            "default-scheduler",
            &record(),
            "web-1.17",
            "2025-01-01T00:00:00Z",
        );
        assert_eq!(event["involvedObject"]["uid"], "u1");
        assert_eq!(event["involvedObject"]["kind"], "Pod");
        assert_eq!(event["metadata"]["namespace"], "default");
        assert_eq!(event["source"]["component"], "default-scheduler");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["count"], 1);
        assert_eq!(event["firstTimestamp"], event["lastTimestamp"]);
    }

    #[test]
    fn a_repeat_bumps_count_and_last_timestamp_only() {
        let first = new_event("c", &record(), "web-1.17", "2025-01-01T00:00:00Z");
        let again = bumped(&first, "2025-01-01T00:05:00Z");
        assert_eq!(again["count"], 2);
        assert_eq!(again["firstTimestamp"], "2025-01-01T00:00:00Z");
        assert_eq!(again["lastTimestamp"], "2025-01-01T00:05:00Z");
        assert_eq!(bumped(&again, "x")["count"], 3);
    }

    #[test]
    fn a_reported_event_names_its_container_node_and_count() {
        let reported = ReportedEvent {
            record: EventRecord {
                event_type: EventType::Normal,
                reason: "Started".into(),
                message: "Started container web".into(),
                ..record()
            },
            field_path: "spec.containers{web}".into(),
            component: "kubelet".into(),
            host: "node-1".into(),
            count: 3,
            first_timestamp: "2025-01-01T00:00:00Z".into(),
            last_timestamp: "2025-01-01T00:01:00Z".into(),
        };
        let event = reported_event(&reported, "web-1.1");
        assert_eq!(event["involvedObject"]["fieldPath"], "spec.containers{web}");
        assert_eq!(event["source"]["component"], "kubelet");
        assert_eq!(event["source"]["host"], "node-1");
        assert_eq!(event["reportingInstance"], "node-1");
        assert_eq!(event["count"], 3);
        assert_eq!(event["firstTimestamp"], "2025-01-01T00:00:00Z");
        assert_eq!(event["lastTimestamp"], "2025-01-01T00:01:00Z");
        let again = bumped_by(&event, 2, "2025-01-01T00:02:00Z");
        assert_eq!(again["count"], 5);
        assert_eq!(again["lastTimestamp"], "2025-01-01T00:02:00Z");
    }

    #[test]
    fn names_are_the_object_and_hex_nanoseconds() {
        assert_eq!(event_name("web-1", 255), "web-1.ff");
    }
}
