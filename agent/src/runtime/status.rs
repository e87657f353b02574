//! A pod's status, from what the runtime shows and why containers wait:
//! [`pod_status`]. Pure, like kubelet's `generateAPIPodStatus` and
//! `getPhase`.
//!
//! Every time in the result is read from the runtime (sandbox creation,
//! container start and finish), never from the clock, so the same
//! observation always renders the same status and the agent reports only
//! real changes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observed::{ContainerState, ObservedContainer, ObservedPod};
use super::plan::Waiting;
use super::spec::{Desired, RestartPolicy};

/// Facts from outside the pod.
#[derive(Debug, Clone, Copy)]
pub struct StatusContext<'a> {
    /// The node's InternalIP.
    pub host_ip: Option<&'a str>,
    /// The runtime's name, the scheme of container IDs (`containerd`).
    pub runtime_name: &'a str,
    /// Why containers that do not run are waiting, by container name.
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// Readiness probe results by container ID; a running container
    /// without an entry is ready.
    pub readiness: &'a BTreeMap<String, bool>,
    /// Startup probe results by container ID; a running container without
    /// an entry has started.
    pub started: &'a BTreeMap<String, bool>,
}

fn time(timestamp: Option<Timestamp>) -> Option<Time> {
    timestamp.map(Time)
}

fn terminated(container: &ObservedContainer, runtime: &str) -> ContainerStateTerminated {
    let details = &container.details;
    let reason = if !details.reason.is_empty() {
        details.reason.clone()
    } else if details.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: details.exit_code,
        reason: Some(reason),
        message: Some(details.message.clone()).filter(|m| !m.is_empty()),
        started_at: time(details.started_at),
        finished_at: time(details.finished_at),
        container_id: Some(format!("{runtime}://{}", container.id)),
        ..Default::default()
    }
}

fn waiting_state(waiting: Option<&Waiting>) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(
                waiting
                    .map(|w| w.reason.clone())
                    .unwrap_or_else(|| "ContainerCreating".into()),
            ),
            message: waiting.map(|w| w.message.clone()).filter(|m| !m.is_empty()),
        }),
        ..Default::default()
    }
}

fn container_status(
    spec: &k8s_openapi::api::core::v1::Container,
    observed: &ObservedPod,
    context: &StatusContext<'_>,
) -> ContainerStatus {
    let runtime = if context.runtime_name.is_empty() {
        "containerd"
    } else {
        context.runtime_name
    };
    let history = observed.containers_named(&spec.name);
    let latest = history.first().copied();
    let waiting = context.waiting.get(&spec.name);
    let as_terminated = |c: &ObservedContainer| K8sState {
        terminated: Some(terminated(c, runtime)),
        ..Default::default()
    };
    let (state, last_state) = match latest {
        None => (waiting_state(waiting), None),
        Some(current) => match current.state {
            ContainerState::Running => (
                K8sState {
                    running: Some(ContainerStateRunning {
                        started_at: time(current.details.started_at),
                    }),
                    ..Default::default()
                },
                history
                    .get(1)
                    .filter(|c| c.state == ContainerState::Exited)
                    .map(|c| as_terminated(c)),
            ),
            ContainerState::Exited if waiting.is_some() => {
                (waiting_state(waiting), Some(as_terminated(current)))
            }
            ContainerState::Exited => (
                as_terminated(current),
                history
                    .get(1)
                    .filter(|c| c.state == ContainerState::Exited)
                    .map(|c| as_terminated(c)),
            ),
            ContainerState::Created | ContainerState::Unknown => (
                waiting_state(waiting),
                history
                    .get(1)
                    .filter(|c| c.state == ContainerState::Exited)
                    .map(|c| as_terminated(c)),
            ),
        },
    };
    let started = latest
        .is_some_and(|c| c.is_running() && context.started.get(&c.id).copied().unwrap_or(true));
    let ready =
        started && latest.is_some_and(|c| context.readiness.get(&c.id).copied().unwrap_or(true));
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest
            .map(|c| c.details.image_ref.clone())
            .unwrap_or_default(),
        container_id: latest.map(|c| format!("{runtime}://{}", c.id)),
        ready,
        started: Some(started),
        restart_count: latest.map_or(0, |c| c.attempt as i32),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// Kubernetes' `getPhase`, for pods without init containers.
fn phase(policy: RestartPolicy, statuses: &[ContainerStatus]) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in statuses {
        let state = status.state.clone().unwrap_or_default();
        let ran_before = status
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some());
        if state.running.is_some() {
            running += 1;
        } else if let Some(terminated) = &state.terminated {
            stopped += 1;
            if terminated.exit_code == 0 {
                succeeded += 1;
            }
        } else if ran_before {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 || statuses.is_empty() {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        };
    }
    "Pending"
}

fn condition(
    kind: &str,
    ok: bool,
    since: Option<Timestamp>,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        last_transition_time: time(since),
        reason: reason.map(str::to_owned),
        message,
        ..Default::default()
    }
}

/// Kubernetes' QoS class from the containers' requests and limits.
fn qos_class(desired: &Desired) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for container in &desired.spec.containers {
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let request = requests.get(name).or(limits.get(name));
            let limit = limits.get(name);
            any |= request.is_some() || limit.is_some();
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The status to report for a pod.
pub fn pod_status(
    desired: &Desired,
    observed: &ObservedPod,
    context: &StatusContext<'_>,
) -> PodStatus {
    let statuses: Vec<ContainerStatus> = desired
        .spec
        .containers
        .iter()
        .map(|spec| container_status(spec, observed, context))
        .collect();
    let phase = phase(desired.restart_policy(), &statuses);
    let start_time = observed.sandboxes.iter().filter_map(|s| s.created_at).min();
    let sandbox = observed.latest_sandbox();
    let ips: Vec<String> = if desired.host_network() {
        context.host_ip.map(str::to_owned).into_iter().collect()
    } else {
        sandbox.map(|s| s.ips.clone()).unwrap_or_default()
    };

    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let all_ready = unready.is_empty() && !statuses.is_empty();
    let latest_start = observed
        .containers
        .iter()
        .filter(|c| c.is_running())
        .filter_map(|c| c.details.started_at)
        .max();
    let latest_finish = observed
        .containers
        .iter()
        .filter_map(|c| c.details.finished_at)
        .max();
    let ready_since = if all_ready {
        latest_start
    } else {
        latest_finish.or(start_time)
    };
    let (ready_reason, ready_message) = if all_ready {
        (None, None)
    } else if phase == "Succeeded" {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let sandbox_ready = sandbox.is_some_and(|s| s.ready);
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox_ready,
            sandbox.and_then(|s| s.created_at),
            None,
            None,
        ),
        condition("Initialized", true, start_time, None, None),
        condition(
            "Ready",
            all_ready,
            ready_since,
            ready_reason,
            ready_message.clone(),
        ),
        condition(
            "ContainersReady",
            all_ready,
            ready_since,
            ready_reason,
            ready_message,
        ),
        condition("PodScheduled", true, start_time, None, None),
    ];
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: context.host_ip.map(str::to_owned),
        host_ips: context.host_ip.map(|ip| vec![HostIP { ip: ip.to_owned() }]),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: time(start_time),
        container_statuses: Some(statuses),
        qos_class: Some(qos_class(desired).to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::observed::{ContainerDetails, ObservedSandbox};
    use crate::runtime::spec::tests_support::desired;
    use serde_json::{json, Value};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    fn sandbox(ready: bool) -> ObservedSandbox {
        ObservedSandbox {
            id: "s0".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            attempt: 0,
            ready,
            created_at: Some(at(0)),
            ips: vec!["10.244.0.5".into()],
        }
    }

    fn container(
        id: &str,
        attempt: u32,
        state: ContainerState,
        exit: Option<(i32, i64)>,
    ) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            sandbox_id: "s0".into(),
            uid: "u1".into(),
            name: "web".into(),
            attempt,
            state,
            created_at: Some(at(attempt as i64)),
            image: "img".into(),
            hash: String::new(),
            details: ContainerDetails {
                started_at: Some(at(1 + attempt as i64)),
                finished_at: exit.map(|(_, t)| at(t)),
                exit_code: exit.map_or(0, |(c, _)| c),
                reason: String::new(),
                message: String::new(),
                image_ref: "sha256:feed".into(),
            },
        }
    }

    fn render(policy: &str, observed: &ObservedPod, waiting: &BTreeMap<String, Waiting>) -> Value {
        let pod = desired(
            json!({"restartPolicy": policy, "containers": [{"name": "web", "image": "skiff.local/webapp:1.0"}]}),
        );
        let readiness = BTreeMap::new();
        let started = BTreeMap::new();
        let context = StatusContext {
            host_ip: Some("10.0.0.5"),
            runtime_name: "containerd",
            waiting,
            readiness: &readiness,
            started: &started,
        };
        serde_json::to_value(pod_status(&pod, observed, &context)).expect("json")
    }

    fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind))
            .expect("condition")
    }

    #[test]
    fn a_new_pod_is_pending_with_containers_creating() {
        let status = render("Always", &ObservedPod::default(), &BTreeMap::new());
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["hostIP"], "10.0.0.5");
        assert!(status.get("podIP").is_none());
        let web = &status["containerStatuses"][0];
        assert_eq!(web["state"]["waiting"]["reason"], "ContainerCreating");
        assert_eq!(web["ready"], false);
        assert_eq!(web["restartCount"], 0);
        assert_eq!(condition(&status, "Ready")["status"], "False");
        assert_eq!(condition(&status, "PodScheduled")["status"], "True");
        assert_eq!(status["qosClass"], "BestEffort");
    }

    #[test]
    fn a_running_pod_has_ip_ready_and_ids() {
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![container("c0", 0, ContainerState::Running, None)],
        };
        let status = render("Always", &observed, &BTreeMap::new());
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.244.0.5");
        assert_eq!(status["podIPs"][0]["ip"], "10.244.0.5");
        assert_eq!(status["startTime"], "2023-11-14T22:13:20Z");
        let web = &status["containerStatuses"][0];
        assert_eq!(web["containerID"], "containerd://c0");
        assert_eq!(web["imageID"], "sha256:feed");
        assert_eq!(web["image"], "skiff.local/webapp:1.0");
        assert_eq!(web["ready"], true);
        assert_eq!(web["state"]["running"]["startedAt"], "2023-11-14T22:13:21Z");
        assert_eq!(condition(&status, "Ready")["status"], "True");
        assert_eq!(condition(&status, "ContainersReady")["status"], "True");
    }

    #[test]
    fn restarts_show_count_and_last_state() {
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![
                container("c0", 0, ContainerState::Exited, Some((137, 5))),
                container("c1", 1, ContainerState::Running, None),
            ],
        };
        let status = render("Always", &observed, &BTreeMap::new());
        let web = &status["containerStatuses"][0];
        assert_eq!(web["restartCount"], 1);
        assert_eq!(web["lastState"]["terminated"]["exitCode"], 137);
        assert_eq!(web["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(
            web["lastState"]["terminated"]["containerID"],
            "containerd://c0"
        );
    }

    #[test]
    fn crash_loops_wait_with_the_last_termination() {
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![container("c3", 3, ContainerState::Exited, Some((1, 9)))],
        };
        let waiting: BTreeMap<String, Waiting> = [(
            "web".to_owned(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 40s".into(),
            },
        )]
        .into_iter()
        .collect();
        let status = render("Always", &observed, &waiting);
        assert_eq!(status["phase"], "Running");
        let web = &status["containerStatuses"][0];
        assert_eq!(web["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(web["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(web["restartCount"], 3);
    }

    #[test]
    fn pods_that_ran_to_completion_succeed_or_fail() {
        let done = |code| ObservedPod {
            sandboxes: vec![sandbox(false)],
            containers: vec![container("c0", 0, ContainerState::Exited, Some((code, 4)))],
        };
        let ok = render("Never", &done(0), &BTreeMap::new());
        assert_eq!(ok["phase"], "Succeeded");
        assert_eq!(condition(&ok, "Ready")["reason"], "PodCompleted");
        assert_eq!(
            ok["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(
            render("Never", &done(2), &BTreeMap::new())["phase"],
            "Failed"
        );
        assert_eq!(
            render("OnFailure", &done(0), &BTreeMap::new())["phase"],
            "Succeeded"
        );
        assert_eq!(
            render("OnFailure", &done(2), &BTreeMap::new())["phase"],
            "Running"
        );
    }

    #[test]
    fn image_pull_failures_show_in_the_waiting_reason() {
        let waiting: BTreeMap<String, Waiting> = [(
            "web".to_owned(),
            Waiting {
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image".into(),
            },
        )]
        .into_iter()
        .collect();
        let status = render(
            "Always",
            &ObservedPod {
                sandboxes: vec![sandbox(true)],
                containers: vec![],
            },
            &waiting,
        );
        assert_eq!(status["phase"], "Pending");
        assert_eq!(
            status["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
    }

    #[test]
    fn the_same_observation_renders_the_same_status() {
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![container("c0", 0, ContainerState::Running, None)],
        };
        assert_eq!(
            render("Always", &observed, &BTreeMap::new()),
            render("Always", &observed, &BTreeMap::new())
        );
    }
}
