//! Watch: store events turned into Kubernetes watch events.
//!
//! A watch is one long chunked response of newline-separated
//! `{"type":..., "object":...}` lines. It starts after a `resourceVersion`;
//! without one (or with "0") it first replays the current objects as ADDED,
//! as the apiserver does. With selectors, an object that stops matching is
//! reported as DELETED and one that starts matching as ADDED, so a client's
//! cache of "what matches" stays right.
//!
//! Translation ([`translate`]) is pure; [`run`] only moves bytes from the
//! store's watcher to the response channel, and stops when the client hangs
//! up, when `timeoutSeconds` passes, or when the store drops the watcher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_apimachinery::{fields::FieldSelector, labels::LabelSelector, tables};
use skiff_store::{Event, EventType, KvStore, StoreError};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::objects;
use super::resources::ResourceInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// What the client wants to see.
pub struct WatchFilter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches_object(object)
    }
}

/// How each event's object is rendered.
#[derive(Clone, Copy)]
pub enum Rendering {
    Object,
    Table { resource: &'static str },
}

/// The Kubernetes event (if any) for one store event, given the filter.
pub fn translate(
    event: &Event,
    filter: &WatchFilter,
) -> Result<Option<(EventKind, Value)>, ApiError> {
    let mut current = objects::value(&event.kv)?;
    let previous_matches = match &event.previous {
        Some(previous) => filter.matches(&objects::value(previous)?),
        None => false,
    };
    let kind = match event.event_type {
        EventType::Delete => previous_matches.then_some(EventKind::Deleted),
        EventType::Put => match (previous_matches, filter.matches(&current)) {
            (true, true) => Some(EventKind::Modified),
            (false, true) => Some(EventKind::Added),
            (true, false) => Some(EventKind::Deleted),
            (false, false) => None,
        },
    };
    if let Some(metadata) = current.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert(
            "resourceVersion".into(),
            Value::String(event.revision().to_string()),
        );
    }
    Ok(kind.map(|kind| (kind, current)))
}

/// The event line for an unfiltered, plain-object watch, built from the
/// stored bytes without parsing them: the common case (informers, `kubectl
/// get -w`) and the one a hundred watchers of one write all take.
fn raw_line(event: &Event) -> Bytes {
    let kind = match (event.event_type, &event.previous) {
        (EventType::Delete, _) => EventKind::Deleted,
        (EventType::Put, Some(_)) => EventKind::Modified,
        (EventType::Put, None) => EventKind::Added,
    };
    let object = objects::json_bytes(&event.kv);
    let mut text = Vec::with_capacity(object.len() + 32);
    text.extend_from_slice(b"{\"type\":\"");
    text.extend_from_slice(kind.as_str().as_bytes());
    text.extend_from_slice(b"\",\"object\":");
    text.extend_from_slice(&object);
    text.extend_from_slice(b"}\n");
    Bytes::from(text)
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

fn render(rendering: Rendering, object: Value, first: &mut bool) -> Value {
    match rendering {
        Rendering::Object => object,
        Rendering::Table { resource } => {
            let version = objects::str_at(&object, "/metadata/resourceVersion")
                .unwrap_or_default()
                .to_owned();
            let include_columns = std::mem::take(first);
            tables::table(
                resource,
                &[object],
                &version,
                jiff::Timestamp::now(),
                include_columns,
            )
        }
    }
}

/// Where a watch starts.
pub enum Start {
    /// After this revision.
    After(i64),
    /// From the current state: replay it as ADDED first.
    Now,
}

pub struct WatchRequest {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub filter: WatchFilter,
    pub rendering: Rendering,
    pub start: Start,
    pub timeout: Option<Duration>,
}

/// Starts a watch and returns the channel of response chunks.
pub async fn start(
    store: Arc<dyn KvStore>,
    request: WatchRequest,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let prefix = request.info.key_prefix(request.namespace.as_deref());
    let (initial, after) = match request.start {
        Start::After(revision) => (Vec::new(), revision),
        Start::Now => {
            let range = store.range(&prefix).await?;
            (range.items, range.revision)
        }
    };
    let (sender, receiver) = mpsc::channel(256);
    let mut first = true;
    for kv in initial {
        let object = objects::value(&kv)?;
        if request.filter.matches(&object) {
            let rendered = render(request.rendering, object, &mut first);
            if sender.send(line("ADDED", &rendered)).await.is_err() {
                return Ok(receiver);
            }
        }
    }
    match store.watch(&prefix, after) {
        Ok(watcher) => {
            tokio::spawn(run(
                watcher,
                sender,
                request.filter,
                request.rendering,
                request.timeout,
                first,
            ));
        }
        Err(error @ StoreError::Compacted { .. }) => {
            // The apiserver answers 200 and then a single ERROR event; the
            // client relists on 410.
            let status = ApiError::from(error).status();
            let _ = sender.send(line("ERROR", &status)).await;
        }
        Err(other) => return Err(other.into()),
    }
    Ok(receiver)
}

async fn run(
    mut watcher: skiff_store::Watcher,
    sender: mpsc::Sender<Bytes>,
    filter: WatchFilter,
    rendering: Rendering,
    timeout: Option<Duration>,
    mut first: bool,
) {
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let unfiltered_objects = filter.is_everything() && matches!(rendering, Rendering::Object);
    loop {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, watcher.next()).await.ok(),
                None => Some(watcher.next().await),
            }
        };
        let event = tokio::select! {
            event = next => event,
            _ = sender.closed() => return,
        };
        let event = match event {
            None => return,
            Some(Ok(event)) => event,
            Some(Err(StoreError::WatcherTooSlow)) => {
                let status = ApiError::Gone(
                    "the watch fell behind and must be restarted from a fresh list".into(),
                )
                .status();
                let _ = sender.send(line("ERROR", &status)).await;
                return;
            }
            Some(Err(_)) => return,
        };
        if unfiltered_objects {
            if sender.send(raw_line(&event)).await.is_err() {
                return;
            }
            continue;
        }
        match translate(&event, &filter) {
            Ok(Some((kind, object))) => {
                let rendered = render(rendering, object, &mut first);
                if sender.send(line(kind.as_str(), &rendered)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "skipping an undecodable watch event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::KeyValue;

    fn kv(revision: i64, labels: Value) -> KeyValue {
        let object = json!({"kind": "Pod", "metadata": {"name": "p", "labels": labels}});
        KeyValue {
            key: "/registry/core/pods/default/p".into(),
            value: Bytes::from(serde_json::to_vec(&object).expect("json")),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    fn filter(selector: &str) -> WatchFilter {
        WatchFilter {
            labels: LabelSelector::parse(selector).expect("selector"),
            fields: FieldSelector::everything(),
        }
    }

    #[test]
    fn the_unparsed_fast_path_says_what_translate_says() {
        let everything = filter("");
        let events = [
            Event { event_type: EventType::Put, kv: kv(1, json!({"app": "web"})), previous: None },
            Event { event_type: EventType::Put, kv: kv(2, json!({"app": "db"})), previous: Some(kv(1, json!({}))) },
            Event { event_type: EventType::Delete, kv: kv(3, json!({})), previous: Some(kv(2, json!({}))) },
        ];
        for event in &events {
            let (kind, object) = translate(event, &everything).expect("ok").expect("event");
            let fast: Value = serde_json::from_slice(&raw_line(event)).expect("json line");
            assert_eq!(fast, json!({"type": kind.as_str(), "object": object}));
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let put = |previous: Option<KeyValue>, current: KeyValue| Event {
            event_type: EventType::Put,
            kv: current,
            previous,
        };
        let app = filter("app=web");

        let created = translate(&put(None, kv(1, json!({"app": "web"}))), &app).expect("ok");
        assert_eq!(created.map(|(kind, _)| kind), Some(EventKind::Added));

        let relabelled = translate(
            &put(
                Some(kv(1, json!({"app": "web"}))),
                kv(2, json!({"app": "db"})),
            ),
            &app,
        )
        .expect("ok");
        let (kind, object) = relabelled.expect("event");
        assert_eq!(kind, EventKind::Deleted);
        assert_eq!(object["metadata"]["resourceVersion"], "2");

        let unrelated = translate(
            &put(
                Some(kv(1, json!({"app": "db"}))),
                kv(2, json!({"app": "db"})),
            ),
            &app,
        )
        .expect("ok");
        assert!(unrelated.is_none());

        let delete = Event {
            event_type: EventType::Delete,
            kv: kv(3, json!({"app": "web"})),
            previous: Some(kv(2, json!({"app": "web"}))),
        };
        assert_eq!(
            translate(&delete, &app).expect("ok").map(|(kind, _)| kind),
            Some(EventKind::Deleted)
        );
    }
}
