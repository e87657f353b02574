//! Events about pods, as kubelet records them (`Pulling`, `Pulled`,
//! `Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`, `Failed`, ...),
//! collected for the session to send up as `EventReport`s.
//!
//! Events are best effort and must never hold pod work up: recording one
//! takes a short lock and never waits. Repeats aggregate: an event with the
//! same pod, part (`fieldPath`), type, reason and message as one not yet
//! sent bumps that entry's count and last time. The buffer is bounded;
//! when it is full the oldest entry is dropped. What the session takes is
//! gone from the buffer: if the stream breaks before it is sent, it is
//! lost, as kubelet's events are when the API server is away too long.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// How many distinct events wait for the session at most.
pub const EVENT_BUFFER: usize = 1000;
/// Kubernetes caps an event's message at this many bytes.
const MESSAGE_LIMIT: usize = 1024;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The pod an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// One event, or several equal ones aggregated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub pod: PodRef,
    /// `spec.containers{name}`, or empty for the pod as a whole.
    pub field_path: String,
    pub event_type: EventType,
    pub reason: String,
    pub message: String,
    /// Milliseconds since the epoch.
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: u32,
}

/// The `fieldPath` of a pod's container, as kubelet writes it.
pub fn container_field_path(container: &str) -> String {
    format!("spec.containers{{{container}}}")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    pod: PodRef,
    field_path: String,
    event_type: EventType,
    reason: String,
    message: String,
}

/// The aggregating, bounded buffer; pure, with time passed in.
#[derive(Debug)]
pub struct EventBuffer {
    capacity: usize,
    /// Entries by arrival of their first occurrence.
    entries: BTreeMap<u64, PodEvent>,
    index: HashMap<EventKey, u64>,
    next: u64,
    dropped: u64,
}

impl EventBuffer {
    pub fn new(capacity: usize) -> EventBuffer {
        EventBuffer {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            index: HashMap::new(),
            next: 0,
            dropped: 0,
        }
    }

    /// Adds one occurrence at `now_ms`.
    pub fn add(
        &mut self,
        pod: &PodRef,
        field_path: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
        now_ms: i64,
    ) {
        let mut message = message.to_owned();
        if message.len() > MESSAGE_LIMIT {
            let mut end = MESSAGE_LIMIT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let key = EventKey {
            pod: pod.clone(),
            field_path: field_path.to_owned(),
            event_type,
            reason: reason.to_owned(),
            message,
        };
        if let Some(entry) = self
            .index
            .get(&key)
            .and_then(|seq| self.entries.get_mut(seq))
        {
            entry.count = entry.count.saturating_add(1);
            entry.last_ms = entry.last_ms.max(now_ms);
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.entries.pop_first() else {
                break;
            };
            self.index.remove(&EventKey {
                pod: oldest.pod,
                field_path: oldest.field_path,
                event_type: oldest.event_type,
                reason: oldest.reason,
                message: oldest.message,
            });
            self.dropped += 1;
        }
        let seq = self.next;
        self.next += 1;
        self.entries.insert(
            seq,
            PodEvent {
                pod: key.pod.clone(),
                field_path: key.field_path.clone(),
                event_type,
                reason: key.reason.clone(),
                message: key.message.clone(),
                first_ms: now_ms,
                last_ms: now_ms,
                count: 1,
            },
        );
        self.index.insert(key, seq);
    }

    /// Everything buffered, oldest first; the buffer is then empty.
    pub fn take(&mut self) -> Vec<PodEvent> {
        self.index.clear();
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// How many entries were dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The runtime's event sink: the executor and probes record, the session
/// takes.
#[derive(Debug)]
pub struct EventSink {
    buffer: Mutex<EventBuffer>,
    changed: Notify,
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink {
            buffer: Mutex::new(EventBuffer::new(EVENT_BUFFER)),
            changed: Notify::new(),
        }
    }
}

impl EventSink {
    fn lock(&self) -> MutexGuard<'_, EventBuffer> {
        // A panic while holding the lock leaves plain data behind.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one occurrence now.
    pub fn record(
        &self,
        pod: &PodRef,
        field_path: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        self.lock()
            .add(pod, field_path, event_type, reason, message, now_ms);
        self.changed.notify_one();
    }

    /// Records an occurrence about one of a pod's containers.
    pub fn container(
        &self,
        pod: &PodRef,
        container: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        self.record(
            pod,
            &container_field_path(container),
            event_type,
            reason,
            message,
        );
    }

    /// Everything not sent yet, oldest first.
    pub fn take(&self) -> Vec<PodEvent> {
        self.lock().take()
    }

    /// Resolves when something was recorded.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> PodRef {
        PodRef {
            uid: uid.into(),
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn repeats_aggregate_into_one_entry_with_a_count() {
        let mut buffer = EventBuffer::new(10);
        let web = container_field_path("web");
        assert_eq!(web, "spec.containers{web}");
        buffer.add(&pod("u1"), &web, EventType::Warning, "BackOff", "m", 1_000);
        buffer.add(&pod("u1"), &web, EventType::Normal, "Started", "m", 1_500);
        buffer.add(&pod("u1"), &web, EventType::Warning, "BackOff", "m", 2_000);
        buffer.add(
            &pod("u1"),
            &web,
            EventType::Warning,
            "BackOff",
            "other",
            2_500,
        );
        buffer.add(&pod("u2"), &web, EventType::Warning, "BackOff", "m", 3_000);
        buffer.add(&pod("u1"), "", EventType::Warning, "BackOff", "m", 3_500);
        let events = buffer.take();
        assert_eq!(events.len(), 5);
        let first = &events[0];
        assert_eq!(
            (
                first.reason.as_str(),
                first.count,
                first.first_ms,
                first.last_ms
            ),
            ("BackOff", 2, 1_000, 2_000)
        );
        assert!(events[1..].iter().all(|e| e.count == 1));
        assert!(buffer.is_empty());

        // Once taken, a repeat starts a new entry.
        buffer.add(&pod("u1"), &web, EventType::Warning, "BackOff", "m", 4_000);
        assert_eq!(buffer.take()[0].count, 1);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest() {
        let mut buffer = EventBuffer::new(2);
        for (i, reason) in ["Pulling", "Pulled", "Created"].iter().enumerate() {
            buffer.add(&pod("u1"), "", EventType::Normal, reason, "", i as i64);
        }
        assert_eq!(buffer.dropped(), 1);
        // The dropped entry's key is forgotten with it.
        buffer.add(&pod("u1"), "", EventType::Normal, "Pulling", "", 9);
        let reasons: Vec<String> = buffer.take().into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["Created", "Pulling"]);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut buffer = EventBuffer::new(2);
        buffer.add(
            &pod("u1"),
            "",
            EventType::Warning,
            "Failed",
            &"é".repeat(700),
            0,
        );
        let event = &buffer.take()[0];
        assert!(event.message.len() <= MESSAGE_LIMIT);
        assert!(event.message.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn the_sink_wakes_the_session() {
        let sink = EventSink::default();
        sink.container(
            &pod("u1"),
            "web",
            EventType::Normal,
            "Started",
            "Started container web",
        );
        sink.changed().await;
        let events = sink.take();
        assert_eq!(events[0].field_path, "spec.containers{web}");
        assert!(sink.take().is_empty());
    }
}
