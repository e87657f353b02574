//! What the container runtime shows of a pod, as domain types.
//!
//! A list call gives sandboxes and containers with their labels and state;
//! the exit code, times and image ID of a container come from a status call
//! ([`ContainerDetails`]), which the observer makes once per container and
//! state (see `executor`). CRI messages are converted here and nowhere else.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_cri::v1 as cri;

use crate::cri::{
    LABEL_CONTAINER_HASH, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

#[derive(Debug, thiserror::Error)]
pub enum ObservedError {
    #[error("{kind} {id} has no {label} label; it was not made by a pod runtime")]
    Unlabelled {
        kind: &'static str,
        id: String,
        label: &'static str,
    },
}

/// A CRI time (nanoseconds since the epoch; 0 for "never").
pub fn timestamp(nanos: i64) -> Option<Timestamp> {
    if nanos <= 0 {
        return None;
    }
    Timestamp::from_nanosecond(i128::from(nanos)).ok()
}

/// One pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSandbox {
    pub id: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: Option<Timestamp>,
    /// Pod IPs, primary first; filled in for ready sandboxes.
    pub ips: Vec<String>,
}

impl TryFrom<cri::PodSandbox> for ObservedSandbox {
    type Error = ObservedError;

    fn try_from(sandbox: cri::PodSandbox) -> Result<ObservedSandbox, ObservedError> {
        let label = |label: &'static str| {
            sandbox
                .labels
                .get(label)
                .cloned()
                .ok_or_else(|| ObservedError::Unlabelled {
                    kind: "sandbox",
                    id: sandbox.id.clone(),
                    label,
                })
        };
        let uid = label(LABEL_POD_UID)?;
        let namespace = label(LABEL_POD_NAMESPACE).unwrap_or_default();
        let name = label(LABEL_POD_NAME).unwrap_or_default();
        Ok(ObservedSandbox {
            attempt: sandbox.metadata.as_ref().map_or(0, |m| m.attempt),
            ready: sandbox.state == cri::PodSandboxState::SandboxReady as i32,
            created_at: timestamp(sandbox.created_at),
            ips: Vec::new(),
            id: sandbox.id,
            uid,
            namespace,
            name,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    pub fn from_cri(state: i32) -> ContainerState {
        match cri::ContainerState::try_from(state) {
            Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
            _ => ContainerState::Unknown,
        }
    }
}

/// The part of a container's state only a status call tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image_ref: String,
}

impl From<cri::ContainerStatus> for ContainerDetails {
    fn from(status: cri::ContainerStatus) -> ContainerDetails {
        ContainerDetails {
            started_at: timestamp(status.started_at),
            finished_at: timestamp(status.finished_at),
            exit_code: status.exit_code,
            reason: status.reason,
            message: status.message,
            image_ref: status.image_ref,
        }
    }
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub sandbox_id: String,
    pub uid: String,
    pub name: String,
    /// The restart count it was created with.
    pub attempt: u32,
    pub state: ContainerState,
    pub created_at: Option<Timestamp>,
    /// The image as asked for.
    pub image: String,
    pub hash: String,
    pub details: ContainerDetails,
}

impl ObservedContainer {
    /// From a list entry; `details` come from a status call.
    pub fn from_cri(
        container: cri::Container,
        details: ContainerDetails,
    ) -> Result<ObservedContainer, ObservedError> {
        let label = |label: &'static str| {
            container
                .labels
                .get(label)
                .cloned()
                .ok_or_else(|| ObservedError::Unlabelled {
                    kind: "container",
                    id: container.id.clone(),
                    label,
                })
        };
        let uid = label(LABEL_POD_UID)?;
        let name = label(LABEL_CONTAINER_NAME).or_else(|_| {
            container
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .ok_or_else(|| ObservedError::Unlabelled {
                    kind: "container",
                    id: container.id.clone(),
                    label: LABEL_CONTAINER_NAME,
                })
        })?;
        let hash = container
            .labels
            .get(LABEL_CONTAINER_HASH)
            .cloned()
            .unwrap_or_default();
        Ok(ObservedContainer {
            attempt: container.metadata.as_ref().map_or(0, |m| m.attempt),
            state: ContainerState::from_cri(container.state),
            created_at: timestamp(container.created_at),
            image: container.image.map(|i| i.image).unwrap_or_default(),
            id: container.id,
            sandbox_id: container.pod_sandbox_id,
            uid,
            name,
            hash,
            details,
        })
    }

    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }
}

/// Everything the runtime holds of one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    pub sandboxes: Vec<ObservedSandbox>,
    pub containers: Vec<ObservedContainer>,
}

impl ObservedPod {
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }

    /// The newest sandbox: highest attempt, then latest creation.
    pub fn latest_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes
            .iter()
            .max_by_key(|s| (s.attempt, s.created_at))
    }

    /// Containers named `name`, newest (highest restart count) first.
    pub fn containers_named(&self, name: &str) -> Vec<&ObservedContainer> {
        let mut found: Vec<&ObservedContainer> =
            self.containers.iter().filter(|c| c.name == name).collect();
        found.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        found
    }

    pub fn latest_container(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers_named(name).into_iter().next()
    }
}

/// Groups a runtime listing by pod uid. Sandboxes and containers without
/// the pod labels are not the agent's and are left out.
pub fn group_by_pod(
    sandboxes: Vec<ObservedSandbox>,
    containers: Vec<ObservedContainer>,
) -> BTreeMap<String, ObservedPod> {
    let mut pods: BTreeMap<String, ObservedPod> = BTreeMap::new();
    for sandbox in sandboxes {
        pods.entry(sandbox.uid.clone())
            .or_default()
            .sandboxes
            .push(sandbox);
    }
    for container in containers {
        pods.entry(container.uid.clone())
            .or_default()
            .containers
            .push(container);
    }
    for pod in pods.values_mut() {
        pod.sandboxes.sort_by(|a, b| a.id.cmp(&b.id));
        pod.containers.sort_by(|a, b| a.id.cmp(&b.id));
    }
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn unlabelled_runtime_objects_are_not_ours() {
        let foreign = cri::PodSandbox {
            id: "s1".into(),
            ..Default::default()
        };
        assert!(ObservedSandbox::try_from(foreign).is_err());

        let ours = cri::PodSandbox {
            id: "s2".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 2,
            }),
            state: cri::PodSandboxState::SandboxReady as i32,
            created_at: 1_700_000_000_000_000_000,
            labels: labels(&[(LABEL_POD_UID, "u1"), (LABEL_POD_NAME, "web")]),
            ..Default::default()
        };
        let sandbox = ObservedSandbox::try_from(ours).expect("ours");
        assert_eq!((sandbox.attempt, sandbox.ready), (2, true));
        assert_eq!(
            sandbox.created_at.map(|t| t.as_second()),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn containers_sort_newest_first_and_group_by_pod() {
        let container = |id: &str, uid: &str, attempt: u32| {
            ObservedContainer::from_cri(
                cri::Container {
                    id: id.into(),
                    pod_sandbox_id: "s".into(),
                    metadata: Some(cri::ContainerMetadata {
                        name: "web".into(),
                        attempt,
                    }),
                    state: cri::ContainerState::ContainerExited as i32,
                    labels: labels(&[(LABEL_POD_UID, uid), (LABEL_CONTAINER_NAME, "web")]),
                    ..Default::default()
                },
                ContainerDetails::default(),
            )
            .expect("labelled")
        };
        let pods = group_by_pod(
            Vec::new(),
            vec![
                container("a", "u1", 0),
                container("b", "u1", 2),
                container("c", "u2", 0),
                container("d", "u1", 1),
            ],
        );
        assert_eq!(pods.len(), 2);
        let ids: Vec<&str> = pods["u1"]
            .containers_named("web")
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["b", "d", "a"]);
        assert_eq!(
            pods["u1"].latest_container("web").map(|c| c.attempt),
            Some(2)
        );
        assert_eq!(timestamp(0), None);
    }
}
