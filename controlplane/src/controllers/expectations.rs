//! Expectations, as Kubernetes' controllers keep them: after creating or
//! deleting pods, a controller must not count pods again until its cache
//! has seen those writes, or a burst of watch events would make it create
//! (or delete) the same pods twice.
//!
//! Each owner has the creations and deletions it still waits to observe.
//! The owner's pods are managed only when nothing is outstanding, or when
//! the expectations are so old ([`EXPECTATION_TIMEOUT`]) that an event
//! must have been missed. Time is passed in.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// After this long, outstanding expectations are given up on.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
struct Expectation {
    creations: i64,
    /// Uids of the pods whose deletion is awaited.
    deletions: HashSet<String>,
    set_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Expectations<K: Eq + Hash + Clone> {
    by_owner: HashMap<K, Expectation>,
}

impl<K: Eq + Hash + Clone> Default for Expectations<K> {
    fn default() -> Self {
        Expectations {
            by_owner: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Expectations<K> {
    /// Whether `owner`'s pods may be counted and managed now.
    pub fn satisfied(&self, owner: &K, now: Instant) -> bool {
        match self.by_owner.get(owner) {
            None => true,
            Some(e) => {
                (e.creations <= 0 && e.deletions.is_empty())
                    || e.set_at
                        .is_some_and(|at| now.saturating_duration_since(at) >= EXPECTATION_TIMEOUT)
            }
        }
    }

    /// `owner` is about to create `creations` pods and delete the pods
    /// with `deletions` uids.
    pub fn expect(&mut self, owner: &K, creations: usize, deletions: Vec<String>, now: Instant) {
        self.by_owner.insert(
            owner.clone(),
            Expectation {
                creations: creations as i64,
                deletions: deletions.into_iter().collect(),
                set_at: Some(now),
            },
        );
    }

    /// A pod of `owner` appeared, or a creation failed and will never
    /// appear.
    pub fn creation_observed(&mut self, owner: &K) {
        if let Some(e) = self.by_owner.get_mut(owner) {
            e.creations -= 1;
        }
    }

    /// The pod `uid` of `owner` is going or gone, or its deletion failed.
    pub fn deletion_observed(&mut self, owner: &K, uid: &str) {
        if let Some(e) = self.by_owner.get_mut(owner) {
            e.deletions.remove(uid);
        }
    }

    /// The owner is gone.
    pub fn forget(&mut self, owner: &K) {
        self.by_owner.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managing_waits_until_every_write_is_observed() {
        let now = Instant::now();
        let mut expectations = Expectations::default();
        assert!(expectations.satisfied(&"rc", now));
        expectations.expect(&"rc", 2, vec!["old".into()], now);
        assert!(!expectations.satisfied(&"rc", now));
        expectations.creation_observed(&"rc");
        expectations.creation_observed(&"rc");
        assert!(
            !expectations.satisfied(&"rc", now),
            "a deletion is outstanding"
        );
        expectations.deletion_observed(&"rc", "other");
        assert!(!expectations.satisfied(&"rc", now));
        expectations.deletion_observed(&"rc", "old");
        assert!(expectations.satisfied(&"rc", now));
        // Observations past zero do no harm.
        expectations.creation_observed(&"rc");
        assert!(expectations.satisfied(&"rc", now));
    }

    #[test]
    fn stale_expectations_expire() {
        let now = Instant::now();
        let mut expectations = Expectations::default();
        expectations.expect(&"rc", 1, Vec::new(), now);
        assert!(!expectations.satisfied(&"rc", now + Duration::from_secs(299)));
        assert!(expectations.satisfied(&"rc", now + EXPECTATION_TIMEOUT));
        expectations.forget(&"rc");
        assert!(expectations.satisfied(&"rc", now));
    }
}
