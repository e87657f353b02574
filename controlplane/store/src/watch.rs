//! Watch fan-out: a bounded in-memory history plus a broadcast channel.
//!
//! Ordering rule: the writer publishes a committed batch while holding the
//! hub lock, and a new watcher copies its backlog from history and
//! subscribes to the broadcast under that same lock. So every event with a
//! revision above the watcher's start is delivered exactly once: either from
//! the backlog or from the channel, never both and never neither.
//!
//! History is what lets a client resume from the `resourceVersion` of its
//! last list. It is bounded; a revision older than the oldest retained event
//! is reported as compacted, which the API turns into 410 Gone so clients
//! relist. After a restart history starts empty at the current revision.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::{Event, Revision, StoreError};

pub(crate) struct WatchHub {
    state: Mutex<HubState>,
}

struct HubState {
    history: VecDeque<Arc<Event>>,
    /// Every event with a revision above this one is still in `history`.
    complete_after: Revision,
    history_capacity: usize,
    sender: broadcast::Sender<Arc<Event>>,
}

impl WatchHub {
    pub(crate) fn new(
        start_revision: Revision,
        history_capacity: usize,
        channel_capacity: usize,
    ) -> Self {
        let (sender, _) = broadcast::channel(channel_capacity.max(1));
        WatchHub {
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                complete_after: start_revision,
                history_capacity: history_capacity.max(1),
                sender,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding this lock cannot leave the history
        // half-updated in a way that matters more than losing the process.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn publish(&self, events: Vec<Event>) {
        let mut state = self.lock();
        for event in events {
            let event = Arc::new(event);
            state.history.push_back(event.clone());
            while state.history.len() > state.history_capacity {
                if let Some(evicted) = state.history.pop_front() {
                    state.complete_after = evicted.revision();
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = state.sender.send(event);
        }
    }

    pub(crate) fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
    ) -> Result<Watcher, StoreError> {
        let state = self.lock();
        if after_revision < state.complete_after {
            return Err(StoreError::Compacted {
                requested: after_revision,
                oldest: state.complete_after,
            });
        }
        let backlog = state
            .history
            .iter()
            .filter(|event| event.revision() > after_revision && event.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(Watcher {
            backlog,
            receiver: state.sender.subscribe(),
            prefix: prefix.to_owned(),
            after_revision,
        })
    }
}

/// A stream of events under one prefix, in revision order.
pub struct Watcher {
    backlog: VecDeque<Arc<Event>>,
    receiver: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    after_revision: Revision,
}

impl Watcher {
    /// The next event. Fails with [`StoreError::WatcherTooSlow`] when this
    /// watcher fell so far behind that events were dropped for it, and with
    /// [`StoreError::Closed`] when the store shut down.
    pub async fn next(&mut self) -> Result<Arc<Event>, StoreError> {
        if let Some(event) = self.backlog.pop_front() {
            self.after_revision = event.revision();
            return Ok(event);
        }
        loop {
            match self.receiver.recv().await {
                Ok(event) => {
                    if event.revision() > self.after_revision
                        && event.kv.key.starts_with(&self.prefix)
                    {
                        self.after_revision = event.revision();
                        return Ok(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(StoreError::WatcherTooSlow)
                }
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }

    /// The revision of the last event delivered (or the start revision).
    pub fn revision(&self) -> Revision {
        self.after_revision
    }
}
