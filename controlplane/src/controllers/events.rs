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
//! Building an event is pure ([`new_event`], [`bumped`]); only
//! [`EventRecorder::record`] writes, through the registry.

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

/// `existing` seen once more at `now`.
pub fn bumped(existing: &Value, now: &str) -> Value {
    let mut event = existing.clone();
    let count = existing.get("count").and_then(Value::as_i64).unwrap_or(1);
    event["count"] = json!(count + 1);
    event["lastTimestamp"] = json!(now);
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
    recorded: Mutex<HashMap<EventRecord, String>>,
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

    fn remembered(&self, record: &EventRecord) -> Option<String> {
        self.recorded
            .lock()
            .ok()
            .and_then(|map| map.get(record).cloned())
    }

    fn remember(&self, record: EventRecord, name: String) {
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
        let info = events_info()?;
        let now = objects::now_rfc3339();
        let namespace = record.involved.namespace.clone();
        if let Some(name) = self.remembered(&record) {
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
                        bumped(&existing, &now),
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
            let name = event_name(&record.involved.name, nanos);
            let event = new_event(self.component, &record, &name, &now);
            match self
                .registry
                .create(info, Some(&namespace), event, false)
                .await
            {
                Ok(_) => {
                    self.remember(record, name);
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
    fn names_are_the_object_and_hex_nanoseconds() {
        assert_eq!(event_name("web-1", 255), "web-1.ff");
    }
}
