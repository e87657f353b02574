//! What to do next for one pod: [`pod_actions`], after kubelet's
//! `computePodActions`. Pure: the executor applies the result.
//!
//! The decision, in order:
//! 1. A pod that must stop (deleted, or nobody's): stop every container
//!    with the grace period, then remove containers and sandboxes. Once the
//!    runtime holds nothing of it, its stop is complete.
//! 2. Which containers must run: a container never started starts; an
//!    exited one restarts if the restart policy says so (Always; OnFailure
//!    with a non-zero exit); a running one whose spec hash changed is
//!    replaced. A restart waits out the container's crash-loop backoff.
//! 3. Without a ready sandbox, something must run, so a new sandbox is
//!    made (after stopping whatever is left of the old one) and every
//!    container that may run again starts in it, as the old network is gone.
//!    With nothing left to run, the pod is done: its sandbox is stopped, its
//!    containers kept for their status.
//! 4. Garbage: per container name the newest two are kept (the current one
//!    and the one `lastState` and `logs --previous` describe); older exited
//!    ones, and old sandboxes no kept container lives in, are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use super::observed::{ContainerState, ObservedContainer, ObservedPod};
#[cfg(test)]
use super::spec::container_hash;
use super::spec::{hash_matches, Desired, RestartPolicy};

/// Crash-loop backoff, as kubelet's: the first restart is immediate, then
/// 10 s, doubling to 5 minutes.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How many containers per name are kept.
const KEEP_PER_NAME: usize = 2;

fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    later
        .duration_since(earlier)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackoffEntry {
    delay: Duration,
    last_update: Timestamp,
}

/// Per-key exponential backoff (kubelet's `flowcontrol.Backoff`). Keys are
/// container names for restarts, and image names for pulls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackoffBook {
    entries: BTreeMap<String, BackoffEntry>,
}

impl BackoffBook {
    /// An entry not renewed for twice the maximum is forgotten: the thing
    /// it tracked has been fine for long enough.
    fn live(&self, key: &str, event: Timestamp) -> Option<&BackoffEntry> {
        self.entries
            .get(key)
            .filter(|entry| since(event, entry.last_update) <= 2 * BACKOFF_MAX)
    }

    /// How much longer `key` must wait after an event (a container's exit,
    /// a failed pull) at `event`; `None` if it may go ahead.
    pub fn remaining(&self, key: &str, event: Timestamp, now: Timestamp) -> Option<Duration> {
        let entry = self.live(key, event)?;
        let waited = since(now, event);
        (waited < entry.delay).then(|| entry.delay - waited)
    }

    /// The delay `key` is under, if any.
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Records that `key` goes ahead now, after an event at `event`: the
    /// next wait doubles (or starts at the initial delay).
    pub fn next(&mut self, key: &str, event: Timestamp, now: Timestamp) {
        let delay = match self.live(key, event) {
            Some(entry) => (entry.delay * 2).min(BACKOFF_MAX),
            None => BACKOFF_INITIAL,
        };
        self.entries.insert(
            key.to_owned(),
            BackoffEntry {
                delay,
                last_update: now,
            },
        );
    }
}

/// A container to create and start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContainer {
    pub name: String,
    /// Its restart count.
    pub attempt: u32,
    /// When the container it replaces exited, for the backoff.
    pub previous_exit: Option<Timestamp>,
}

/// A container to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillContainer {
    pub id: String,
    pub name: String,
    pub grace_seconds: i64,
    pub reason: &'static str,
}

/// Stopping the whole pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillPod {
    pub grace_seconds: i64,
    /// Remove containers and sandboxes too (the pod is going away).
    pub remove: bool,
}

/// Why a container is not running yet, as its waiting state says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    pub kill_pod: Option<KillPod>,
    /// Make a sandbox with this attempt number.
    pub create_sandbox: Option<u32>,
    /// The ready sandbox the containers start in, when none is created.
    pub sandbox_id: Option<String>,
    pub kill: Vec<KillContainer>,
    pub start: Vec<StartContainer>,
    pub remove_containers: Vec<String>,
    pub remove_sandboxes: Vec<String>,
    /// Containers held back by their backoff.
    pub waiting: BTreeMap<String, Waiting>,
    /// Plan again after this long even if nothing else happens.
    pub resync_after: Option<Duration>,
    /// Nothing of the pod is left in the runtime and nothing should be.
    pub terminated: bool,
}

impl PodActions {
    /// Whether applying this changes anything in the runtime.
    pub fn has_work(&self) -> bool {
        self.kill_pod.is_some()
            || self.create_sandbox.is_some()
            || !self.kill.is_empty()
            || !self.start.is_empty()
            || !self.remove_containers.is_empty()
            || !self.remove_sandboxes.is_empty()
    }
}

/// Whether a container in this state should run again under `policy`.
fn may_run_again(policy: RestartPolicy, latest: Option<&ObservedContainer>) -> bool {
    match (policy, latest) {
        (_, None) => true,
        (RestartPolicy::Always, Some(_)) => true,
        (RestartPolicy::Never, Some(_)) => false,
        (RestartPolicy::OnFailure, Some(c)) => {
            !(c.state == ContainerState::Exited && c.details.exit_code == 0)
        }
    }
}

fn backoff_waiting(desired: &Desired, name: &str, delay: Duration) -> Waiting {
    Waiting {
        reason: "CrashLoopBackOff".into(),
        message: format!(
            "back-off {}s restarting failed container={name} pod={}_{}({})",
            delay.as_secs(),
            desired.name,
            desired.namespace,
            desired.uid
        ),
    }
}

/// The next step for one pod (see the module documentation).
pub fn pod_actions(
    desired: &Desired,
    observed: &ObservedPod,
    backoff: &BackoffBook,
    now: Timestamp,
) -> PodActions {
    let mut actions = PodActions::default();
    let grace = desired.grace_seconds();
    if desired.stopping() {
        if observed.is_empty() {
            actions.terminated = true;
        } else {
            actions.kill_pod = Some(KillPod {
                grace_seconds: grace,
                remove: true,
            });
        }
        return actions;
    }

    let policy = desired.restart_policy();
    let sandbox = observed.latest_sandbox().filter(|s| s.ready);
    let in_sandbox = |c: &&ObservedContainer| sandbox.is_some_and(|s| s.id == c.sandbox_id);

    // Step 2: what should run, ignoring the sandbox for now.
    let mut to_start = Vec::new();
    let mut keep_running = BTreeSet::new();
    let mut soonest: Option<Duration> = None;
    for container in &desired.spec.containers {
        let name = container.name.as_str();
        let latest = observed.latest_container(name);
        let attempt = latest.map_or(0, |c| c.attempt + 1);
        if let Some(current) = latest.filter(|c| c.is_running()) {
            let same_spec = current.hash.is_empty() || hash_matches(&current.hash, container);
            if same_spec && in_sandbox(&current) {
                keep_running.insert(current.id.clone());
                continue;
            }
            if same_spec && sandbox.is_none() {
                // The sandbox is gone from under it; handled with the
                // sandbox below.
                to_start.push(StartContainer {
                    name: name.to_owned(),
                    attempt,
                    previous_exit: None,
                });
                continue;
            }
            actions.kill.push(KillContainer {
                id: current.id.clone(),
                name: name.to_owned(),
                grace_seconds: grace,
                reason: "its spec changed",
            });
            to_start.push(StartContainer {
                name: name.to_owned(),
                attempt,
                previous_exit: None,
            });
            continue;
        }
        if !may_run_again(policy, latest) {
            continue;
        }
        let previous_exit = latest.and_then(|c| c.details.finished_at.or(c.created_at));
        if let Some(exit) = previous_exit {
            if let Some(wait) = backoff.remaining(name, exit, now) {
                let delay = backoff.delay(name).unwrap_or(BACKOFF_INITIAL);
                actions
                    .waiting
                    .insert(name.to_owned(), backoff_waiting(desired, name, delay));
                soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                continue;
            }
        }
        to_start.push(StartContainer {
            name: name.to_owned(),
            attempt,
            previous_exit,
        });
    }
    actions.resync_after = soonest;

    // Containers that run but are not (or no longer) in the spec.
    let names: BTreeSet<&str> = desired
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for container in observed.containers.iter().filter(|c| c.is_running()) {
        let superseded = !keep_running.contains(&container.id)
            && !actions.kill.iter().any(|k| k.id == container.id);
        if superseded && (!names.contains(container.name.as_str()) || sandbox.is_some()) {
            actions.kill.push(KillContainer {
                id: container.id.clone(),
                name: container.name.clone(),
                grace_seconds: grace,
                reason: "it is not the pod's current container",
            });
        }
    }

    // Step 3: the sandbox.
    match sandbox {
        Some(sandbox) => {
            actions.sandbox_id = Some(sandbox.id.clone());
            actions.start = to_start;
            let running_after = keep_running.len() + actions.start.len();
            if running_after == 0 && actions.waiting.is_empty() {
                // Everything ran to completion under the policy.
                actions.kill = Vec::new();
                actions.kill_pod = Some(KillPod {
                    grace_seconds: grace,
                    remove: false,
                });
            }
        }
        None if !to_start.is_empty() => {
            let any_left = observed.containers.iter().any(|c| c.is_running())
                || observed.sandboxes.iter().any(|s| s.ready);
            if any_left {
                actions.kill = Vec::new();
                actions.kill_pod = Some(KillPod {
                    grace_seconds: grace,
                    remove: false,
                });
            }
            actions.create_sandbox = Some(
                observed
                    .latest_sandbox()
                    .map_or(0, |s| s.attempt.saturating_add(1)),
            );
            actions.start = to_start;
        }
        None => {
            // Nothing to start (done, or every container backing off):
            // make sure nothing of an old sandbox still runs.
            if observed.containers.iter().any(|c| c.is_running()) {
                actions.kill = Vec::new();
                actions.kill_pod = Some(KillPod {
                    grace_seconds: grace,
                    remove: false,
                });
            }
        }
    }

    // Step 4: garbage.
    let mut kept = BTreeSet::new();
    let mut by_name: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for container in &observed.containers {
        by_name.entry(&container.name).or_default().push(container);
    }
    for (name, _) in by_name {
        for (index, container) in observed.containers_named(name).into_iter().enumerate() {
            // Running containers are killed first and collected later.
            let keep = container.is_running() || (names.contains(name) && index < KEEP_PER_NAME);
            if keep {
                kept.insert(container.sandbox_id.clone());
            } else {
                actions.remove_containers.push(container.id.clone());
            }
        }
    }
    let latest_sandbox = observed.latest_sandbox().map(|s| s.id.clone());
    for old in &observed.sandboxes {
        if Some(&old.id) != latest_sandbox.as_ref() && !old.ready && !kept.contains(&old.id) {
            actions.remove_sandboxes.push(old.id.clone());
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::observed::{ContainerDetails, ObservedSandbox};
    use crate::runtime::spec::tests_support::desired;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    fn sandbox(id: &str, attempt: u32, ready: bool) -> ObservedSandbox {
        ObservedSandbox {
            id: id.into(),
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            attempt,
            ready,
            created_at: Some(at(attempt as i64)),
            ips: vec!["10.244.0.5".into()],
        }
    }

    fn container(
        id: &str,
        sandbox: &str,
        name: &str,
        attempt: u32,
        state: ContainerState,
        exit: Option<(i32, i64)>,
        desired: &Desired,
    ) -> ObservedContainer {
        let spec = desired.spec.containers.iter().find(|c| c.name == name);
        ObservedContainer {
            id: id.into(),
            sandbox_id: sandbox.into(),
            uid: "u1".into(),
            name: name.into(),
            attempt,
            state,
            created_at: Some(at(attempt as i64)),
            image: "img".into(),
            hash: spec.map(container_hash).unwrap_or_default(),
            details: ContainerDetails {
                started_at: Some(at(attempt as i64)),
                finished_at: exit.map(|(_, t)| at(t)),
                exit_code: exit.map_or(0, |(code, _)| code),
                reason: String::new(),
                message: String::new(),
                image_ref: "sha256:abc".into(),
            },
        }
    }

    fn web(policy: &str) -> Desired {
        desired(json!({
            "restartPolicy": policy,
            "containers": [{"name": "a", "image": "img"}, {"name": "b", "image": "img"}],
        }))
    }

    fn names(start: &[StartContainer]) -> Vec<(&str, u32)> {
        start.iter().map(|s| (s.name.as_str(), s.attempt)).collect()
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_and_all_its_containers() {
        let pod = web("Always");
        let actions = pod_actions(
            &pod,
            &ObservedPod::default(),
            &BackoffBook::default(),
            at(0),
        );
        assert_eq!(actions.create_sandbox, Some(0));
        assert_eq!(names(&actions.start), [("a", 0), ("b", 0)]);
        assert_eq!(actions.kill_pod, None);
        assert!(!actions.terminated);
    }

    #[test]
    fn a_running_pod_is_left_alone() {
        let pod = web("Always");
        let observed = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, true)],
            containers: vec![
                container("a0", "s0", "a", 0, ContainerState::Running, None, &pod),
                container("b0", "s0", "b", 0, ContainerState::Running, None, &pod),
            ],
        };
        let actions = pod_actions(&pod, &observed, &BackoffBook::default(), at(5));
        assert!(!actions.has_work(), "{actions:?}");
        assert_eq!(actions.sandbox_id.as_deref(), Some("s0"));
    }

    #[test]
    fn exited_containers_restart_by_policy() {
        let observed = |pod: &Desired, code: i32| ObservedPod {
            sandboxes: vec![sandbox("s0", 0, true)],
            containers: vec![
                container(
                    "a0",
                    "s0",
                    "a",
                    0,
                    ContainerState::Exited,
                    Some((code, 3)),
                    pod,
                ),
                container("b0", "s0", "b", 0, ContainerState::Running, None, pod),
            ],
        };
        let book = BackoffBook::default();
        let always = web("Always");
        let actions = pod_actions(&always, &observed(&always, 0), &book, at(4));
        assert_eq!(names(&actions.start), [("a", 1)]);
        assert_eq!(actions.start[0].previous_exit, Some(at(3)));

        let on_failure = web("OnFailure");
        assert!(
            pod_actions(&on_failure, &observed(&on_failure, 0), &book, at(4))
                .start
                .is_empty()
        );
        assert_eq!(
            names(&pod_actions(&on_failure, &observed(&on_failure, 2), &book, at(4)).start),
            [("a", 1)]
        );

        let never = web("Never");
        let actions = pod_actions(&never, &observed(&never, 2), &book, at(4));
        assert!(actions.start.is_empty());
        assert_eq!(actions.kill_pod, None, "b still runs");
    }

    #[test]
    fn a_finished_pod_stops_its_sandbox_and_keeps_its_containers() {
        let pod = web("Never");
        let observed = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, true)],
            containers: vec![
                container(
                    "a0",
                    "s0",
                    "a",
                    0,
                    ContainerState::Exited,
                    Some((0, 3)),
                    &pod,
                ),
                container(
                    "b0",
                    "s0",
                    "b",
                    0,
                    ContainerState::Exited,
                    Some((1, 3)),
                    &pod,
                ),
            ],
        };
        let actions = pod_actions(&pod, &observed, &BackoffBook::default(), at(4));
        assert_eq!(
            actions.kill_pod,
            Some(KillPod {
                grace_seconds: 30,
                remove: false
            })
        );
        assert!(actions.remove_containers.is_empty());

        // Once stopped, there is nothing left to do; no new sandbox.
        let stopped = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, false)],
            ..observed
        };
        let actions = pod_actions(&pod, &stopped, &BackoffBook::default(), at(5));
        assert!(!actions.has_work(), "{actions:?}");
    }

    #[test]
    fn crash_loops_back_off_doubling_per_container() {
        let pod = web("Always");
        let mut book = BackoffBook::default();
        let crashed = |attempt: u32, exit: i64| ObservedPod {
            sandboxes: vec![sandbox("s0", 0, true)],
            containers: vec![
                container(
                    "a",
                    "s0",
                    "a",
                    attempt,
                    ContainerState::Exited,
                    Some((1, exit)),
                    &pod,
                ),
                container("b0", "s0", "b", 0, ContainerState::Running, None, &pod),
            ],
        };
        // First crash: restart at once; the backoff starts at 10 s.
        let actions = pod_actions(&pod, &crashed(0, 10), &book, at(10));
        assert_eq!(names(&actions.start), [("a", 1)]);
        book.next("a", at(10), at(10));

        // Second crash 2 s later: wait out 10 s from the exit.
        let actions = pod_actions(&pod, &crashed(1, 12), &book, at(13));
        assert!(actions.start.is_empty());
        assert_eq!(actions.waiting["a"].reason, "CrashLoopBackOff");
        assert!(actions.waiting["a"].message.contains("back-off 10s"));
        assert_eq!(actions.resync_after, Some(Duration::from_secs(9)));
        assert!(actions.kill_pod.is_none());

        let actions = pod_actions(&pod, &crashed(1, 12), &book, at(22));
        assert_eq!(names(&actions.start), [("a", 2)]);
        book.next("a", at(12), at(22));
        assert_eq!(book.delay("a"), Some(Duration::from_secs(20)));
        for n in 0..10 {
            book.next("a", at(23 + n), at(23 + n));
        }
        assert_eq!(book.delay("a"), Some(BACKOFF_MAX));
        assert_eq!(book.delay("b"), None, "keyed per container");

        // A container that ran fine for long starts over.
        book.next("a", at(2000), at(2000));
        assert_eq!(book.delay("a"), Some(BACKOFF_INITIAL));
    }

    #[test]
    fn a_lost_sandbox_is_replaced_and_containers_start_again() {
        let pod = web("Always");
        let observed = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, false)],
            containers: vec![
                container("a0", "s0", "a", 0, ContainerState::Running, None, &pod),
                container(
                    "b0",
                    "s0",
                    "b",
                    0,
                    ContainerState::Exited,
                    Some((137, 3)),
                    &pod,
                ),
            ],
        };
        let actions = pod_actions(&pod, &observed, &BackoffBook::default(), at(4));
        assert_eq!(actions.create_sandbox, Some(1));
        assert!(
            actions.kill_pod.is_some(),
            "a0 still runs in the old sandbox"
        );
        assert_eq!(names(&actions.start), [("a", 1), ("b", 1)]);
    }

    #[test]
    fn changed_specs_replace_running_containers() {
        let pod = web("Always");
        let mut stale = container("a0", "s0", "a", 0, ContainerState::Running, None, &pod);
        stale.hash = "0000000000000000".into();
        let observed = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, true)],
            containers: vec![
                stale,
                container("b0", "s0", "b", 0, ContainerState::Running, None, &pod),
            ],
        };
        let actions = pod_actions(&pod, &observed, &BackoffBook::default(), at(4));
        assert_eq!(actions.kill.len(), 1);
        assert_eq!(actions.kill[0].id, "a0");
        assert_eq!(names(&actions.start), [("a", 1)]);
    }

    #[test]
    fn deletion_stops_everything_then_reports_terminated() {
        let mut pod = web("Always");
        pod.stop_grace_seconds = Some(5);
        let observed = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, true)],
            containers: vec![container(
                "a0",
                "s0",
                "a",
                0,
                ContainerState::Running,
                None,
                &pod,
            )],
        };
        let actions = pod_actions(&pod, &observed, &BackoffBook::default(), at(4));
        assert_eq!(
            actions.kill_pod,
            Some(KillPod {
                grace_seconds: 5,
                remove: true
            })
        );
        assert!(actions.start.is_empty() && actions.create_sandbox.is_none());
        assert!(!actions.terminated);

        let gone = pod_actions(
            &pod,
            &ObservedPod::default(),
            &BackoffBook::default(),
            at(9),
        );
        assert!(gone.terminated);
        assert!(!gone.has_work());
    }

    #[test]
    fn old_containers_and_sandboxes_are_collected() {
        let pod = web("Always");
        let observed = ObservedPod {
            sandboxes: vec![sandbox("s0", 0, false), sandbox("s1", 1, true)],
            containers: vec![
                container(
                    "a0",
                    "s0",
                    "a",
                    0,
                    ContainerState::Exited,
                    Some((1, 1)),
                    &pod,
                ),
                container(
                    "a1",
                    "s1",
                    "a",
                    1,
                    ContainerState::Exited,
                    Some((1, 2)),
                    &pod,
                ),
                container("a2", "s1", "a", 2, ContainerState::Running, None, &pod),
                container("b0", "s1", "b", 0, ContainerState::Running, None, &pod),
            ],
        };
        let actions = pod_actions(&pod, &observed, &BackoffBook::default(), at(4));
        assert_eq!(actions.remove_containers, ["a0"]);
        assert_eq!(actions.remove_sandboxes, ["s0"]);
        assert!(actions.start.is_empty() && actions.kill.is_empty());
    }
}
