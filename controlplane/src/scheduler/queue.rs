//! The queue of pods waiting to be scheduled, shaped like Kubernetes'
//! scheduling queue: three places a pending pod can be.
//!
//! - **active**: ready to be tried, highest priority first, then oldest.
//! - **backoff**: failed recently; becomes active when its backoff ends
//!   (1 s, doubling per failed attempt, at most 10 s).
//! - **unschedulable**: fit nowhere; nothing will change that until the
//!   cluster does. A node or pod change moves these back (through backoff,
//!   if theirs has not ended), and so does having waited five minutes, in
//!   case a change was missed.
//!
//! Time is passed in, never read, so the queue is tested without waiting.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod stays unschedulable without a cluster change before it
/// is tried again anyway.
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active {
        sequence: u64,
    },
    Backoff {
        until: Instant,
    },
    Unschedulable {
        since: Instant,
        backoff_until: Instant,
    },
    /// Popped and being scheduled.
    InFlight,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    priority: i32,
    attempts: u32,
    place: Place,
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BTreeSet<(Reverse<i32>, u64, String)>,
    backoff: BTreeSet<(Instant, String)>,
    next_sequence: u64,
}

fn backoff_for(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

impl SchedulingQueue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn leave(&mut self, key: &str, entry: &Entry) {
        match entry.place {
            Place::Active { sequence } => {
                self.active
                    .remove(&(Reverse(entry.priority), sequence, key.to_owned()));
            }
            Place::Backoff { until } => {
                self.backoff.remove(&(until, key.to_owned()));
            }
            Place::Unschedulable { .. } | Place::InFlight => {}
        }
    }

    fn place(&mut self, key: &str, mut entry: Entry, place: Place) {
        match place {
            Place::Active { .. } => {
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                self.active
                    .insert((Reverse(entry.priority), sequence, key.to_owned()));
                entry.place = Place::Active { sequence };
            }
            Place::Backoff { until } => {
                self.backoff.insert((until, key.to_owned()));
                entry.place = place;
            }
            Place::Unschedulable { .. } | Place::InFlight => entry.place = place,
        }
        self.entries.insert(key.to_owned(), entry);
    }

    /// A pod that needs scheduling was added or changed. A new pod becomes
    /// active; a changed unschedulable one may fit now, so it is retried
    /// once its backoff ends; one already waiting keeps its place.
    pub fn add(&mut self, key: &str, priority: i32, now: Instant) {
        match self.entries.get(key).copied() {
            None => self.place(
                key,
                Entry {
                    priority,
                    attempts: 0,
                    place: Place::InFlight,
                },
                Place::Active { sequence: 0 },
            ),
            Some(entry) => {
                if let Place::Unschedulable { backoff_until, .. } = entry.place {
                    self.requeue(key, entry, backoff_until, now);
                }
            }
        }
    }

    fn requeue(&mut self, key: &str, entry: Entry, backoff_until: Instant, now: Instant) {
        self.leave(key, &entry);
        if backoff_until <= now {
            self.place(key, entry, Place::Active { sequence: 0 });
        } else {
            self.place(
                key,
                entry,
                Place::Backoff {
                    until: backoff_until,
                },
            );
        }
    }

    /// The pod no longer needs scheduling (bound, deleted, handed to
    /// another scheduler).
    pub fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.leave(key, &entry);
        }
    }

    /// The next pod to try, if any is ready at `now`. It stays known to
    /// the queue (so an event about it does not queue it twice) until
    /// [`remove`](Self::remove), [`unschedulable`](Self::unschedulable) or
    /// [`retry`](Self::retry).
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        self.promote(now);
        let first = self.active.iter().next().cloned()?;
        self.active.remove(&first);
        let (_, _, key) = first;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.place = Place::InFlight;
        }
        Some(key)
    }

    /// Backoffs that have ended, and unschedulable pods that have waited
    /// too long, become active.
    fn promote(&mut self, now: Instant) {
        while let Some((until, key)) = self.backoff.iter().next().cloned() {
            if until > now {
                break;
            }
            self.backoff.remove(&(until, key.clone()));
            if let Some(entry) = self.entries.get(&key).copied() {
                self.place(&key, entry, Place::Active { sequence: 0 });
            }
        }
        let stale: Vec<(String, Entry, Instant)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry.place {
                Place::Unschedulable {
                    since,
                    backoff_until,
                } if now.saturating_duration_since(since) >= MAX_UNSCHEDULABLE => {
                    Some((key.clone(), *entry, backoff_until))
                }
                _ => None,
            })
            .collect();
        for (key, entry, backoff_until) in stale {
            self.requeue(&key, entry, backoff_until, now);
        }
    }

    /// The popped pod fit nowhere: park it until the cluster changes.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let Some(mut entry) = self.entries.get(key).copied() else {
            return;
        };
        self.leave(key, &entry);
        entry.attempts += 1;
        let backoff_until = now + backoff_for(entry.attempts);
        self.place(
            key,
            entry,
            Place::Unschedulable {
                since: now,
                backoff_until,
            },
        );
    }

    /// The popped pod could not be bound for a passing reason (a conflict,
    /// a store error): try again after its backoff, change or no change.
    pub fn retry(&mut self, key: &str, now: Instant) {
        let Some(mut entry) = self.entries.get(key).copied() else {
            return;
        };
        self.leave(key, &entry);
        entry.attempts += 1;
        let until = now + backoff_for(entry.attempts);
        self.place(key, entry, Place::Backoff { until });
    }

    /// A node or a bound pod changed, so a pod that fit nowhere might fit
    /// now: every unschedulable pod is retried, after its backoff.
    pub fn cluster_changed(&mut self, now: Instant) {
        let parked: Vec<(String, Entry, Instant)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry.place {
                Place::Unschedulable { backoff_until, .. } => {
                    Some((key.clone(), *entry, backoff_until))
                }
                _ => None,
            })
            .collect();
        for (key, entry, backoff_until) in parked {
            self.requeue(&key, entry, backoff_until, now);
        }
    }

    /// When the queue next needs attention without any event: the first
    /// backoff to end, or the first unschedulable pod to go stale.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.iter().next().map(|(until, _)| *until);
        let stale = self
            .entries
            .values()
            .filter_map(|entry| match entry.place {
                Place::Unschedulable { since, .. } => Some(since + MAX_UNSCHEDULABLE),
                _ => None,
            })
            .min();
        match (backoff, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a pod is active now (for tests and logs).
    pub fn has_ready(&self) -> bool {
        !self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut SchedulingQueue, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| queue.pop(now)).collect()
    }

    #[test]
    fn higher_priority_first_then_first_come() {
        let now = Instant::now();
        let mut queue = SchedulingQueue::default();
        queue.add("low-1", 0, now);
        queue.add("high", 100, now);
        queue.add("low-2", 0, now);
        queue.add("low-1", 0, now);
        assert_eq!(drain(&mut queue, now), ["high", "low-1", "low-2"]);
        assert_eq!(queue.len(), 3, "popped pods stay known until settled");
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_then_their_backoff() {
        let start = Instant::now();
        let mut queue = SchedulingQueue::default();
        queue.add("p", 0, start);
        assert_eq!(queue.pop(start).as_deref(), Some("p"));
        queue.unschedulable("p", start);
        let later = start + Duration::from_secs(60);
        assert_eq!(queue.pop(later), None, "no change, no retry");

        queue.cluster_changed(start + Duration::from_millis(500));
        assert_eq!(
            queue.pop(start + Duration::from_millis(500)),
            None,
            "still backing off"
        );
        assert_eq!(queue.next_wakeup(), Some(start + Duration::from_secs(1)));
        assert_eq!(
            queue.pop(start + Duration::from_secs(1)).as_deref(),
            Some("p")
        );
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(500), Duration::from_secs(10));

        let start = Instant::now();
        let mut queue = SchedulingQueue::default();
        queue.add("p", 0, start);
        let mut now = start;
        for attempt in 1..=3u32 {
            assert_eq!(queue.pop(now).as_deref(), Some("p"));
            queue.retry("p", now);
            let wait = Duration::from_secs(1 << (attempt - 1));
            assert_eq!(queue.pop(now + wait - Duration::from_millis(1)), None);
            now += wait;
        }
        assert_eq!(queue.pop(now).as_deref(), Some("p"));
    }

    #[test]
    fn an_update_to_an_unschedulable_pod_retries_it() {
        let start = Instant::now();
        let mut queue = SchedulingQueue::default();
        queue.add("p", 0, start);
        queue.pop(start);
        queue.unschedulable("p", start);
        let later = start + Duration::from_secs(5);
        queue.add("p", 0, later);
        assert_eq!(queue.pop(later).as_deref(), Some("p"));
    }

    #[test]
    fn stale_unschedulable_pods_are_retried_after_five_minutes() {
        let start = Instant::now();
        let mut queue = SchedulingQueue::default();
        queue.add("p", 0, start);
        queue.pop(start);
        queue.unschedulable("p", start);
        assert_eq!(queue.next_wakeup(), Some(start + MAX_UNSCHEDULABLE));
        assert_eq!(queue.pop(start + MAX_UNSCHEDULABLE).as_deref(), Some("p"));
    }

    #[test]
    fn removed_pods_are_forgotten_wherever_they_wait() {
        let now = Instant::now();
        let mut queue = SchedulingQueue::default();
        for key in ["a", "b", "c"] {
            queue.add(key, 0, now);
        }
        queue.pop(now);
        queue.retry("a", now);
        queue.pop(now);
        queue.unschedulable("b", now);
        for key in ["a", "b", "c"] {
            queue.remove(key);
        }
        assert!(queue.is_empty());
        queue.cluster_changed(now);
        assert_eq!(queue.pop(now + MAX_UNSCHEDULABLE), None);
        assert_eq!(queue.next_wakeup(), None);
    }
}
