//! A work queue of object keys, shaped like client-go's: a key waits at
//! most once however many events name it, and a key being worked on is
//! never handed out again until [`WorkQueue::done`]; events that arrive
//! meanwhile mark it dirty, and it is queued once more when done. Bursts
//! of events for one object thus coalesce into one reconcile that sees
//! their sum.
//!
//! Keys can also come back later: after a delay the reconciler asked for,
//! or after a per-key exponential backoff on failure. Time is passed in,
//! never read.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

const BASE_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn backoff(failures: u32) -> Duration {
    (BASE_BACKOFF * 2u32.pow(failures.min(20))).min(MAX_BACKOFF)
}

#[derive(Debug)]
pub struct WorkQueue<K: Clone + Eq + Hash + Ord> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    delayed: BTreeSet<(Instant, K)>,
    delayed_until: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash + Ord> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            delayed: BTreeSet::new(),
            delayed_until: HashMap::new(),
            failures: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// Queues `key` now, unless it already waits.
    pub fn add(&mut self, key: K) {
        if self.processing.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// Queues `key` at `at`; an earlier pending time for it wins.
    pub fn add_at(&mut self, key: K, at: Instant, now: Instant) {
        if at <= now {
            return self.add(key);
        }
        if let Some(&existing) = self.delayed_until.get(&key) {
            if existing <= at {
                return;
            }
            self.delayed.remove(&(existing, key.clone()));
        }
        self.delayed.insert((at, key.clone()));
        self.delayed_until.insert(key, at);
    }

    /// Queues `key` after its backoff, which doubles with each failure
    /// since the last [`forget`](Self::forget).
    pub fn add_rate_limited(&mut self, key: K, now: Instant) {
        let failures = self.failures.entry(key.clone()).or_default();
        let delay = backoff(*failures);
        *failures += 1;
        self.add_at(key, now + delay, now);
    }

    /// The key succeeded: its backoff starts over.
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// The next key to work on, if one is ready at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<K> {
        while let Some((at, key)) = self.delayed.iter().next().cloned() {
            if at > now {
                break;
            }
            self.delayed.remove(&(at, key.clone()));
            self.delayed_until.remove(&key);
            self.add(key);
        }
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// Work on `key` is finished; if it changed meanwhile, it is queued
    /// again.
    pub fn done(&mut self, key: &K) {
        self.processing.remove(key);
        if self.dirty.remove(key) {
            self.add(key.clone());
        }
    }

    /// When a delayed key next becomes ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.delayed.iter().next().map(|(at, _)| *at)
    }

    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.processing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_waits_once_and_is_not_handed_out_twice() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.pop(now), Some("a"));
        // An event for "a" while it is being worked on.
        queue.add("a");
        assert_eq!(queue.pop(now), Some("b"));
        assert_eq!(queue.pop(now), None, "a is still in progress");
        queue.done(&"a");
        assert_eq!(queue.pop(now), Some("a"), "dirty keys come back");
        queue.done(&"a");
        queue.done(&"b");
        assert_eq!(queue.pop(now), None);
        assert!(queue.is_idle());
    }

    #[test]
    fn delayed_keys_come_back_at_their_time_and_the_earliest_wins() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        queue.add_at("a", now + Duration::from_secs(10), now);
        queue.add_at("a", now + Duration::from_secs(3), now);
        queue.add_at("a", now + Duration::from_secs(20), now);
        assert_eq!(queue.next_wakeup(), Some(now + Duration::from_secs(3)));
        assert_eq!(queue.pop(now + Duration::from_secs(2)), None);
        assert_eq!(queue.pop(now + Duration::from_secs(3)), Some("a"));
        assert_eq!(queue.next_wakeup(), None);
    }

    #[test]
    fn failures_back_off_exponentially_until_forgotten() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        let mut waits = Vec::new();
        for _ in 0..4 {
            queue.add_rate_limited("a", now);
            let at = queue.next_wakeup().expect("delayed");
            waits.push(at - now);
            assert_eq!(queue.pop(at), Some("a"));
            queue.done(&"a");
        }
        assert_eq!(waits, [5, 10, 20, 40].map(Duration::from_millis).to_vec());
        queue.forget(&"a");
        queue.add_rate_limited("a", now);
        assert_eq!(queue.next_wakeup(), Some(now + BASE_BACKOFF));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
