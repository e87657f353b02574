//! A container runtime in memory, for tests: it keeps sandboxes,
//! containers and images as a CRI runtime would, and records every call
//! (`"StartContainer web/0"`, `"StopContainer web/0 timeout=30"`), so tests
//! assert on what the agent did.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_cri::v1 as cri;

use crate::cri::{Cri, CriError, RuntimeVersion};

#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    metadata: cri::PodSandboxMetadata,
    labels: HashMap<String, String>,
    ready: bool,
    created_at: i64,
    ip: String,
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    sandbox_id: String,
    metadata: cri::ContainerMetadata,
    labels: HashMap<String, String>,
    image: String,
    state: cri::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: Vec<Sandbox>,
    containers: Vec<Container>,
    images: BTreeSet<String>,
    calls: Vec<String>,
    clock: i64,
    next_id: u32,
}

impl State {
    fn tick(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.clock = now.max(self.clock + 1);
        self.clock
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:04}", self.next_id)
    }

    fn container_label(&self, id: &str) -> String {
        self.containers.iter().find(|c| c.id == id).map_or_else(
            || id.to_owned(),
            |c| format!("{}/{}", c.metadata.name, c.metadata.attempt),
        )
    }
}

#[derive(Clone, Default)]
pub struct FakeCri {
    state: Arc<Mutex<State>>,
}

fn matches(labels: &HashMap<String, String>, wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

fn not_found(call: &'static str, id: &str) -> CriError {
    CriError::NotFound {
        call,
        message: format!("{id} not found"),
    }
}

impl FakeCri {
    pub fn with_images(images: &[&str]) -> FakeCri {
        let fake = FakeCri::default();
        fake.state().images = images.iter().map(|i| (*i).to_owned()).collect();
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    pub fn running_containers(&self) -> usize {
        self.state()
            .containers
            .iter()
            .filter(|c| c.state == cri::ContainerState::ContainerRunning)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        let state = self.state();
        state.sandboxes.is_empty() && state.containers.is_empty()
    }

    /// The container `name` with restart count `attempt` exits.
    pub fn exit_container(&self, name: &str, attempt: u32, code: i32) {
        let mut state = self.state();
        let now = state.tick();
        for container in &mut state.containers {
            if container.metadata.name == name && container.metadata.attempt == attempt {
                container.state = cri::ContainerState::ContainerExited;
                container.finished_at = now;
                container.exit_code = code;
            }
        }
    }
}

impl Cri for FakeCri {
    async fn version(&self) -> Result<RuntimeVersion, CriError> {
        Ok(RuntimeVersion {
            name: "containerd".into(),
            version: "fake".into(),
        })
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, CriError> {
        let mut state = self.state();
        let metadata = config.metadata.unwrap_or_default();
        state.calls.push(format!(
            "RunPodSandbox {}/{}",
            metadata.name, metadata.attempt
        ));
        let id = state.id("sandbox-");
        let created_at = state.tick();
        let ip = format!("10.244.0.{}", state.sandboxes.len() + 2);
        state.sandboxes.push(Sandbox {
            id: id.clone(),
            metadata,
            labels: config.labels,
            ready: true,
            created_at,
            ip,
        });
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut state = self.state();
        state.calls.push(format!("StopPodSandbox {id}"));
        let now = state.tick();
        let sandbox = state
            .sandboxes
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| not_found("StopPodSandbox", id))?;
        sandbox.ready = false;
        for container in state.containers.iter_mut().filter(|c| c.sandbox_id == id) {
            if container.state == cri::ContainerState::ContainerRunning {
                container.state = cri::ContainerState::ContainerExited;
                container.finished_at = now;
                container.exit_code = 137;
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut state = self.state();
        state.calls.push(format!("RemovePodSandbox {id}"));
        state.sandboxes.retain(|s| s.id != id);
        state.containers.retain(|c| c.sandbox_id != id);
        Ok(())
    }

    async fn pod_sandbox_ips(&self, id: &str) -> Result<Vec<String>, CriError> {
        let mut state = self.state();
        state.calls.push(format!("StatusPodSandbox {id}"));
        state
            .sandboxes
            .iter()
            .find(|s| s.id == id)
            .map(|s| vec![s.ip.clone()])
            .ok_or_else(|| not_found("PodSandboxStatus", id))
    }

    async fn list_pod_sandboxes(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<cri::PodSandbox>, CriError> {
        let mut state = self.state();
        state.calls.push("ListPodSandbox".into());
        Ok(state
            .sandboxes
            .iter()
            .filter(|s| matches(&s.labels, labels))
            .map(|s| cri::PodSandbox {
                id: s.id.clone(),
                metadata: Some(s.metadata.clone()),
                state: if s.ready {
                    cri::PodSandboxState::SandboxReady as i32
                } else {
                    cri::PodSandboxState::SandboxNotready as i32
                },
                created_at: s.created_at,
                labels: s.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        _sandbox: cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut state = self.state();
        let metadata = config.metadata.unwrap_or_default();
        state.calls.push(format!(
            "CreateContainer {}/{}",
            metadata.name, metadata.attempt
        ));
        if !state
            .sandboxes
            .iter()
            .any(|s| s.id == sandbox_id && s.ready)
        {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        let id = state.id("container-");
        let created_at = state.tick();
        state.containers.push(Container {
            id: id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            metadata,
            labels: config.labels,
            image: config.image.map(|i| i.image).unwrap_or_default(),
            state: cri::ContainerState::ContainerCreated,
            created_at,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
        });
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut state = self.state();
        let label = state.container_label(id);
        state.calls.push(format!("StartContainer {label}"));
        let now = state.tick();
        let container = state
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found("StartContainer", id))?;
        container.state = cri::ContainerState::ContainerRunning;
        container.started_at = now;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), CriError> {
        let mut state = self.state();
        let label = state.container_label(id);
        state
            .calls
            .push(format!("StopContainer {label} timeout={timeout_seconds}"));
        let now = state.tick();
        let container = state
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found("StopContainer", id))?;
        if container.state != cri::ContainerState::ContainerExited {
            container.state = cri::ContainerState::ContainerExited;
            container.finished_at = now;
            container.exit_code = 143;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut state = self.state();
        let label = state.container_label(id);
        state.calls.push(format!("RemoveContainer {label}"));
        state.containers.retain(|c| c.id != id);
        Ok(())
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<cri::Container>, CriError> {
        let mut state = self.state();
        state.calls.push("ListContainers".into());
        Ok(state
            .containers
            .iter()
            .filter(|c| matches(&c.labels, labels))
            .map(|c| cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: Some(c.metadata.clone()),
                image: Some(cri::ImageSpec {
                    image: c.image.clone(),
                    ..Default::default()
                }),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, CriError> {
        let mut state = self.state();
        let label = state.container_label(id);
        state.calls.push(format!("StatusContainer {label}"));
        let container = state
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found("ContainerStatus", id))?;
        Ok(cri::ContainerStatus {
            id: container.id.clone(),
            metadata: Some(container.metadata.clone()),
            state: container.state as i32,
            created_at: container.created_at,
            started_at: container.started_at,
            finished_at: container.finished_at,
            exit_code: container.exit_code,
            image_ref: format!("sha256:{}", container.image.len()),
            labels: container.labels.clone(),
            ..Default::default()
        })
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, CriError> {
        let mut state = self.state();
        state.calls.push(format!("ImageStatus {image}"));
        Ok(state
            .images
            .contains(image)
            .then(|| format!("sha256:{}", image.len())))
    }

    async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        let mut state = self.state();
        state.calls.push(format!("PullImage {image}"));
        Err(CriError::Failed {
            call: "PullImage",
            message: format!("failed to resolve reference \"{image}\": no registry here"),
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        _timeout: std::time::Duration,
    ) -> Result<i32, CriError> {
        let mut state = self.state();
        let label = state.container_label(id);
        state
            .calls
            .push(format!("ExecSync {label} {}", command.join(" ")));
        // `false` fails, anything else succeeds, as a shell would say.
        Ok(i32::from(
            command.first().map(String::as_str) == Some("false"),
        ))
    }

    async fn exec_url(&self, request: cri::ExecRequest) -> Result<String, CriError> {
        let mut state = self.state();
        state.calls.push(format!("Exec {}", request.container_id));
        Ok(format!("http://127.0.0.1:1/exec/{}", request.container_id))
    }

    async fn attach_url(&self, request: cri::AttachRequest) -> Result<String, CriError> {
        let mut state = self.state();
        state.calls.push(format!("Attach {}", request.container_id));
        Ok(format!(
            "http://127.0.0.1:1/attach/{}",
            request.container_id
        ))
    }

    async fn port_forward_url(&self, request: cri::PortForwardRequest) -> Result<String, CriError> {
        let mut state = self.state();
        state
            .calls
            .push(format!("PortForward {}", request.pod_sandbox_id));
        Ok(format!(
            "http://127.0.0.1:1/portforward/{}",
            request.pod_sandbox_id
        ))
    }
}
