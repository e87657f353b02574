//! How many pods each of a deployment's ReplicaSets should have now: the
//! arithmetic of Kubernetes' rolling update and proportional scaling,
//! without I/O and without the objects themselves.
//!
//! - `maxSurge` rounds up and `maxUnavailable` rounds down; if both come
//!   to zero, one pod may be unavailable (`resolve_fenceposts`).
//! - The new ReplicaSet grows while the total stays within replicas plus
//!   surge ([`new_replica_set_size`]).
//! - Old ReplicaSets shrink first by their unavailable pods, then while
//!   enough pods stay available ([`old_replica_set_sizes`]); both steps
//!   take the oldest ReplicaSet first.
//! - Scaling a deployment in the middle of a rollout spreads the change
//!   over its ReplicaSets in proportion to their size
//!   ([`proportional_sizes`]).

use std::cmp::Ordering;

use jiff::Timestamp;

use super::model::{Deployment, IntOrPercent, Strategy};

/// Kubernetes' `ResolveFenceposts`: the absolute surge and unavailability
/// for `desired` replicas.
pub fn resolve_fenceposts(
    max_surge: IntOrPercent,
    max_unavailable: IntOrPercent,
    desired: i64,
) -> (i64, i64) {
    let surge = max_surge.scaled(desired, true);
    let unavailable = max_unavailable.scaled(desired, false);
    if surge == 0 && unavailable == 0 {
        // Validation forbids both being zero, but rounding down can make
        // them so; surge may be impossible (quota), so allow one down.
        return (0, 1);
    }
    (surge, unavailable)
}

/// The most pods above `spec.replicas` a rolling update may run.
pub fn max_surge(deployment: &Deployment) -> i64 {
    match deployment.strategy {
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => resolve_fenceposts(max_surge, max_unavailable, deployment.replicas).0,
        Strategy::Recreate => 0,
    }
}

/// The most pods below `spec.replicas` a rolling update may leave
/// unavailable; never more than the replicas.
pub fn max_unavailable(deployment: &Deployment) -> i64 {
    match deployment.strategy {
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } if deployment.replicas > 0 => {
            resolve_fenceposts(max_surge, max_unavailable, deployment.replicas)
                .1
                .min(deployment.replicas)
        }
        _ => 0,
    }
}

/// Kubernetes' `NewRSNewReplicas`: the size of the new ReplicaSet now,
/// given the sum of `spec.replicas` over all of the deployment's
/// ReplicaSets (the new one included) and the new one's current size.
pub fn new_replica_set_size(deployment: &Deployment, total: i64, current: i64) -> i64 {
    match deployment.strategy {
        Strategy::Recreate => deployment.replicas,
        Strategy::RollingUpdate { .. } => {
            let max_total = deployment.replicas + max_surge(deployment);
            if total >= max_total {
                return current;
            }
            let up = (max_total - total).min(deployment.replicas - current);
            current + up
        }
    }
}

/// A ReplicaSet's size and available pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// `spec.replicas`.
    pub replicas: i64,
    /// `status.availableReplicas`.
    pub available: i64,
}

/// Kubernetes' `reconcileOldReplicaSets` (with `cleanupUnhealthyReplicas`
/// and `scaleDownOldReplicaSetsForRollingUpdate`): the new sizes of the
/// active old ReplicaSets `old`, given oldest first, during a rolling
/// update towards `new`.
pub fn old_replica_set_sizes(deployment: &Deployment, old: &[Counts], new: Counts) -> Vec<i64> {
    let mut sizes: Vec<i64> = old.iter().map(|c| c.replicas).collect();
    let old_total: i64 = sizes.iter().sum();
    if old_total == 0 {
        return sizes;
    }
    let all_total = old_total + new.replicas;
    let min_available = deployment.replicas - max_unavailable(deployment);
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return sizes;
    }

    // Unavailable old pods go first: removing them costs no availability,
    // and they would otherwise block the rollout.
    let mut cleaned = 0;
    for (size, counts) in sizes.iter_mut().zip(old) {
        if cleaned >= max_scaled_down {
            break;
        }
        if *size == 0 || *size == counts.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(*size - counts.available);
        if down < 0 {
            // More available than wanted (a scale-down in flight):
            // Kubernetes refuses to scale up here and does nothing.
            return old.iter().map(|c| c.replicas).collect();
        }
        *size -= down;
        cleaned += down;
    }

    // Then as many as availability allows.
    let available: i64 = old.iter().map(|c| c.available).sum::<i64>() + new.available;
    if available <= min_available {
        return sizes;
    }
    let allowed = available - min_available;
    let mut scaled = 0;
    for size in sizes.iter_mut() {
        if scaled >= allowed {
            break;
        }
        if *size == 0 {
            continue;
        }
        let down = (*size).min(allowed - scaled);
        *size -= down;
        scaled += down;
    }
    sizes
}

/// What proportional scaling needs to know of an active ReplicaSet.
#[derive(Debug, Clone)]
pub struct ActiveSet<'a> {
    pub name: &'a str,
    pub created: Option<Timestamp>,
    pub replicas: i64,
    /// Its `deployment.kubernetes.io/max-replicas` annotation.
    pub max_replicas: Option<i64>,
}

fn by_creation(a: &ActiveSet, b: &ActiveSet) -> Ordering {
    a.created.cmp(&b.created).then_with(|| a.name.cmp(b.name))
}

/// Kubernetes' `getReplicaSetFraction`: how much of the change this
/// ReplicaSet takes, from its share of the deployment's previous maximum.
fn fraction(rs: &ActiveSet, deployment: &Deployment, status_replicas: i64) -> i64 {
    if deployment.replicas == 0 {
        return -rs.replicas;
    }
    let max_now = deployment.replicas + max_surge(deployment);
    let max_before = match rs.max_replicas {
        Some(max) if max != 0 => max,
        // Scaled by hand, or new: fall back to the deployment's size,
        // which is not an accurate proportion.
        _ if status_replicas == 0 => return 0,
        _ => status_replicas,
    };
    let scaled = (rs.replicas as f64 * max_now as f64 / max_before as f64).round() as i64;
    scaled - rs.replicas
}

/// Kubernetes' proportional scaling of a rolling deployment whose active
/// ReplicaSets are `active`: returns `(index into active, new size)` in
/// the order to apply them. The total becomes replicas plus surge; the
/// change goes to the larger ReplicaSets first (newer ones first when
/// growing, older ones first when shrinking), leftovers to the first.
pub fn proportional_sizes(
    deployment: &Deployment,
    active: &[ActiveSet],
    status_replicas: i64,
) -> Vec<(usize, i64)> {
    let current: i64 = active.iter().map(|rs| rs.replicas).sum();
    let allowed = if deployment.replicas > 0 {
        deployment.replicas + max_surge(deployment)
    } else {
        0
    };
    let to_add = allowed - current;
    let mut order: Vec<usize> = (0..active.len()).collect();
    match to_add.cmp(&0) {
        Ordering::Greater => order.sort_by(|&a, &b| {
            let (a, b) = (&active[a], &active[b]);
            b.replicas.cmp(&a.replicas).then_with(|| by_creation(b, a))
        }),
        Ordering::Less => order.sort_by(|&a, &b| {
            let (a, b) = (&active[a], &active[b]);
            b.replicas.cmp(&a.replicas).then_with(|| by_creation(a, b))
        }),
        Ordering::Equal => {}
    }

    let mut added = 0;
    let mut sizes: Vec<(usize, i64)> = Vec::with_capacity(order.len());
    for &i in &order {
        let rs = &active[i];
        let proportion = if to_add == 0 || rs.replicas == 0 || to_add == added {
            0
        } else {
            let share = fraction(rs, deployment, status_replicas);
            let left = to_add - added;
            if to_add > 0 {
                share.min(left)
            } else {
                share.max(left)
            }
        };
        sizes.push((i, rs.replicas + proportion));
        added += proportion;
    }
    if let Some(first) = sizes.first_mut() {
        if to_add != 0 {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn deployment(replicas: i64, strategy: Value) -> Deployment {
        Deployment::from_object(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy},
        }))
        .expect("deployment")
    }

    fn rolling(replicas: i64, surge: Value, unavailable: Value) -> Deployment {
        deployment(
            replicas,
            json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}),
        )
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let cases = [
            // (replicas, maxSurge, maxUnavailable, surge, unavailable)
            (4, json!("25%"), json!("25%"), 1, 1),
            (10, json!("25%"), json!("25%"), 3, 2),
            (1, json!("25%"), json!("25%"), 1, 0),
            (3, json!(0), json!("10%"), 0, 1), // both zero: one may go
            (3, json!(2), json!(5), 2, 3),     // capped at the replicas
            (0, json!("25%"), json!("25%"), 0, 0),
        ];
        for (replicas, surge, unavailable, want_surge, want_unavailable) in cases {
            let d = rolling(replicas, surge.clone(), unavailable.clone());
            assert_eq!(
                (max_surge(&d), max_unavailable(&d)),
                (want_surge, want_unavailable),
                "{replicas} replicas, surge {surge}, unavailable {unavailable}"
            );
        }
        let recreate = deployment(3, json!({"type": "Recreate"}));
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        let cases = [
            // (replicas, surge, total incl. new, new now, expected new)
            (4, 1, 4, 0, 1), // start of a rollout
            (4, 1, 5, 1, 1), // at the ceiling
            (4, 1, 4, 1, 2), // an old pod went: one more
            (4, 2, 4, 0, 2),
            (4, 1, 3, 3, 4), // never beyond the replicas
            (4, 1, 7, 4, 4), // over the ceiling: stays
            (4, 0, 3, 0, 1), // no surge: only into the gaps
        ];
        for (replicas, surge, total, current, expected) in cases {
            let d = rolling(replicas, json!(surge), json!(1));
            assert_eq!(
                new_replica_set_size(&d, total, current),
                expected,
                "replicas {replicas}, surge {surge}, total {total}, new {current}"
            );
        }
        let recreate = deployment(3, json!({"type": "Recreate"}));
        assert_eq!(new_replica_set_size(&recreate, 10, 0), 3);
    }

    fn counts(replicas: i64, available: i64) -> Counts {
        Counts {
            replicas,
            available,
        }
    }

    #[test]
    fn old_replica_sets_shrink_within_the_availability_budget() {
        struct Case {
            name: &'static str,
            replicas: i64,
            unavailable: i64,
            old: Vec<Counts>,
            new: Counts,
            expected: Vec<i64>,
        }
        let cases = [
            Case {
                name: "all old ready, new not yet: one may go",
                replicas: 4,
                unavailable: 1,
                old: vec![counts(4, 4)],
                new: counts(1, 0),
                expected: vec![3],
            },
            Case {
                name: "nothing ready anywhere: unavailable old pods go first",
                replicas: 4,
                unavailable: 1,
                old: vec![counts(4, 0)],
                new: counts(1, 0),
                expected: vec![3],
            },
            Case {
                name: "nothing ready and the new set used the budget: stuck",
                replicas: 4,
                unavailable: 1,
                old: vec![counts(3, 0)],
                new: counts(2, 0),
                expected: vec![3],
            },
            Case {
                name: "no unavailability allowed and nothing new ready: wait",
                replicas: 3,
                unavailable: 0,
                old: vec![counts(3, 3)],
                new: counts(1, 0),
                expected: vec![3],
            },
            Case {
                name: "new pods ready: old ones follow",
                replicas: 3,
                unavailable: 0,
                old: vec![counts(3, 3)],
                new: counts(1, 1),
                expected: vec![2],
            },
            Case {
                name: "several old sets: oldest first",
                replicas: 4,
                unavailable: 1,
                old: vec![counts(2, 2), counts(2, 2)],
                new: counts(2, 2),
                expected: vec![0, 1],
            },
            Case {
                name: "unhealthy pods in the newer old set are cleaned too",
                replicas: 4,
                unavailable: 1,
                old: vec![counts(2, 2), counts(2, 0)],
                new: counts(1, 0),
                expected: vec![2, 1],
            },
            Case {
                name: "nothing left to scale",
                replicas: 4,
                unavailable: 1,
                old: vec![counts(0, 0)],
                new: counts(4, 4),
                expected: vec![0],
            },
        ];
        for case in cases {
            let d = rolling(case.replicas, json!(1), json!(case.unavailable));
            assert_eq!(
                old_replica_set_sizes(&d, &case.old, case.new),
                case.expected,
                "{}",
                case.name
            );
        }
    }

    /// Runs the rolling update to its fixed point with pods that never
    /// become available, as the end-to-end tests see it.
    #[test]
    fn a_rollout_of_pods_that_never_become_ready_stops_at_the_budget() {
        let d = rolling(4, json!("25%"), json!("25%"));
        let (mut old, mut new) = (4, 0);
        for _ in 0..10 {
            let grown = new_replica_set_size(&d, old + new, new);
            if grown != new {
                new = grown;
                continue;
            }
            old = old_replica_set_sizes(&d, &[counts(old, 0)], counts(new, 0))[0];
        }
        assert_eq!((new, old), (2, 3));
    }

    fn sized(
        name: &'static str,
        created: i64,
        replicas: i64,
        max: Option<i64>,
    ) -> ActiveSet<'static> {
        ActiveSet {
            name,
            created: Some(Timestamp::from_second(created).expect("time")),
            replicas,
            max_replicas: max,
        }
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        struct Case {
            name: &'static str,
            replicas: i64,
            active: Vec<ActiveSet<'static>>,
            status_replicas: i64,
            expected: Vec<(usize, i64)>,
        }
        let cases = [
            Case {
                name: "4 -> 5 with 3 old and 2 new (max was 5, now 7)",
                replicas: 5,
                active: vec![sized("old", 1, 3, Some(5)), sized("new", 2, 2, Some(5))],
                status_replicas: 5,
                expected: vec![(0, 4), (1, 3)],
            },
            Case {
                name: "10 -> 20, equal halves: the newer grows first",
                replicas: 20,
                active: vec![sized("old", 1, 6, Some(12)), sized("new", 2, 6, Some(12))],
                status_replicas: 12,
                expected: vec![(1, 13), (0, 12)],
            },
            Case {
                name: "scaling down: the older shrinks first, leftovers to it",
                replicas: 2,
                active: vec![sized("old", 1, 3, Some(5)), sized("new", 2, 3, Some(5))],
                status_replicas: 6,
                expected: vec![(0, 1), (1, 2)],
            },
            Case {
                name: "to zero",
                replicas: 0,
                active: vec![sized("old", 1, 3, Some(5)), sized("new", 2, 2, Some(5))],
                status_replicas: 5,
                expected: vec![(0, 0), (1, 0)],
            },
            Case {
                name: "no annotation: the deployment's size is the base",
                replicas: 5,
                active: vec![sized("a", 1, 2, None), sized("b", 2, 2, None)],
                status_replicas: 4,
                expected: vec![(1, 4), (0, 3)],
            },
            Case {
                name: "nothing to add: sizes stay, annotations get refreshed",
                replicas: 4,
                active: vec![sized("a", 1, 3, Some(5)), sized("b", 2, 2, Some(5))],
                status_replicas: 5,
                expected: vec![(0, 3), (1, 2)],
            },
        ];
        for case in cases {
            let d = rolling(case.replicas, json!("25%"), json!("25%"));
            assert_eq!(
                proportional_sizes(&d, &case.active, case.status_replicas),
                case.expected,
                "{}",
                case.name
            );
        }
    }
}
