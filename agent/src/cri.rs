//! The container runtime, as the agent sees it: the few CRI `runtime.v1`
//! calls the pod runtime makes, behind the narrow [`Cri`] trait.
//!
//! [`GrpcCri`] is the real implementation: tonic over containerd's unix
//! socket. The channel is lazy and reconnects by itself, so the agent starts
//! (and keeps its node registered) while containerd is down or restarting;
//! calls made meanwhile fail with [`CriError::Unavailable`]. Tests use a fake
//! that keeps a model of sandboxes and containers (`runtime::fake`, test
//! builds only).
//!
//! Requests and answers are CRI's own messages: the trait is the boundary,
//! and `runtime::observed` turns what comes back into domain types.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Label keys every sandbox and container the agent creates carries; they
/// are how a restarted agent finds its pods again. Kubernetes' own keys,
/// so `crictl` and other tools show them the usual way.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// A hash of the container's spec: a running container whose hash differs
/// from the desired one is restarted.
pub const LABEL_CONTAINER_HASH: &str = "io.skiff.container.hash";

/// Ordinary calls; anything slower means the runtime is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pulls move whole images.
const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// StopContainer waits for the grace period itself; this is on top of it.
const STOP_SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("the container runtime is unavailable ({call}): {message}")]
    Unavailable { call: &'static str, message: String },
    #[error("{call}: not found: {message}")]
    NotFound { call: &'static str, message: String },
    #[error("{call} failed: {message}")]
    Failed { call: &'static str, message: String },
    #[error("{call}: the runtime's answer lacks {field}")]
    Incomplete {
        call: &'static str,
        field: &'static str,
    },
}

impl CriError {
    fn from_status(call: &'static str, status: tonic::Status) -> CriError {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                CriError::Unavailable { call, message }
            }
            tonic::Code::NotFound => CriError::NotFound { call, message },
            // containerd says "not found" in the message of other codes too.
            _ if message.contains("not found") => CriError::NotFound { call, message },
            _ => CriError::Failed { call, message },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::NotFound { .. })
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, CriError::Unavailable { .. })
    }
}

/// The runtime's name and version, e.g. `containerd` and `1.6.20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub name: String,
    pub version: String,
}

/// What the pod runtime asks of a container runtime.
pub trait Cri: Send + Sync + 'static {
    fn version(&self) -> impl Future<Output = Result<RuntimeVersion, CriError>> + Send;

    fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    /// The sandbox's IPs, primary first (empty with host networking).
    fn pod_sandbox_ips(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<String>, CriError>> + Send;
    /// Sandboxes carrying `labels` (all of them if empty).
    fn list_pod_sandboxes(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<cri::PodSandbox>, CriError>> + Send;

    fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    /// SIGTERM, then SIGKILL after `timeout_seconds`.
    fn stop_container(
        &self,
        id: &str,
        timeout_seconds: i64,
    ) -> impl Future<Output = Result<(), CriError>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    /// Containers carrying `labels` (all of them if empty).
    fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<cri::Container>, CriError>> + Send;
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<cri::ContainerStatus, CriError>> + Send;

    /// The image's ID if the image is present locally.
    fn image_id(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<String>, CriError>> + Send;
    /// Pulls an image; returns its reference (ID).
    fn pull_image(&self, image: &str) -> impl Future<Output = Result<String, CriError>> + Send;
    /// Runs `command` in a container and returns its exit code.
    fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<i32, CriError>> + Send;
    /// A single-use URL on the runtime's stream server that runs `request`.
    fn exec_url(
        &self,
        request: cri::ExecRequest,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    /// A single-use URL on the stream server that attaches to a container.
    fn attach_url(
        &self,
        request: cri::AttachRequest,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    /// A single-use URL on the stream server that forwards to a sandbox's ports.
    fn port_forward_url(
        &self,
        request: cri::PortForwardRequest,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
}

/// CRI over containerd's (or any CRI runtime's) unix socket.
#[derive(Clone)]
pub struct GrpcCri {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl GrpcCri {
    /// A client for the runtime at `socket`. Connects on first use, and
    /// again whenever the connection is lost.
    pub fn new(socket: &Path) -> Result<GrpcCri, CriError> {
        let path = socket.to_owned();
        // The URI is required by the API but unused: the connector below
        // decides where the bytes go.
        let endpoint =
            Endpoint::from_static("http://cri.invalid").connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        Ok(GrpcCri {
            socket: socket.to_owned(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn label_map(labels: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Cri for GrpcCri {
    async fn version(&self) -> Result<RuntimeVersion, CriError> {
        const CALL: &str = "Version";
        let answer = self
            .runtime
            .clone()
            .version(request(cri::VersionRequest::default(), CALL_TIMEOUT))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(RuntimeVersion {
            name: answer.runtime_name,
            version: answer.runtime_version,
        })
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, CriError> {
        const CALL: &str = "RunPodSandbox";
        let answer = self
            .runtime
            .clone()
            .run_pod_sandbox(request(
                cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        const CALL: &str = "StopPodSandbox";
        self.runtime
            .clone()
            .stop_pod_sandbox(request(
                cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        const CALL: &str = "RemovePodSandbox";
        self.runtime
            .clone()
            .remove_pod_sandbox(request(
                cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?;
        Ok(())
    }

    async fn pod_sandbox_ips(&self, id: &str) -> Result<Vec<String>, CriError> {
        const CALL: &str = "PodSandboxStatus";
        let answer = self
            .runtime
            .clone()
            .pod_sandbox_status(request(
                cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_owned(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        let network = answer.status.and_then(|status| status.network);
        Ok(network
            .map(|network| {
                std::iter::once(network.ip)
                    .chain(network.additional_ips.into_iter().map(|ip| ip.ip))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list_pod_sandboxes(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<cri::PodSandbox>, CriError> {
        const CALL: &str = "ListPodSandbox";
        let answer = self
            .runtime
            .clone()
            .list_pod_sandbox(request(
                cri::ListPodSandboxRequest {
                    filter: Some(cri::PodSandboxFilter {
                        label_selector: label_map(labels),
                        ..Default::default()
                    }),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        const CALL: &str = "CreateContainer";
        let answer = self
            .runtime
            .clone()
            .create_container(request(
                cri::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.to_owned(),
                    config: Some(config),
                    sandbox_config: Some(sandbox),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        const CALL: &str = "StartContainer";
        self.runtime
            .clone()
            .start_container(request(
                cri::StartContainerRequest {
                    container_id: id.to_owned(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), CriError> {
        const CALL: &str = "StopContainer";
        let grace = Duration::from_secs(timeout_seconds.max(0) as u64);
        self.runtime
            .clone()
            .stop_container(request(
                cri::StopContainerRequest {
                    container_id: id.to_owned(),
                    timeout: timeout_seconds.max(0),
                },
                grace + STOP_SLACK,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        const CALL: &str = "RemoveContainer";
        self.runtime
            .clone()
            .remove_container(request(
                cri::RemoveContainerRequest {
                    container_id: id.to_owned(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?;
        Ok(())
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<cri::Container>, CriError> {
        const CALL: &str = "ListContainers";
        let answer = self
            .runtime
            .clone()
            .list_containers(request(
                cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        label_selector: label_map(labels),
                        ..Default::default()
                    }),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.containers)
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, CriError> {
        const CALL: &str = "ContainerStatus";
        self.runtime
            .clone()
            .container_status(request(
                cri::ContainerStatusRequest {
                    container_id: id.to_owned(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner()
            .status
            .ok_or(CriError::Incomplete {
                call: CALL,
                field: "status",
            })
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, CriError> {
        const CALL: &str = "ImageStatus";
        let answer = self
            .images
            .clone()
            .image_status(request(
                cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image: image.to_owned(),
                        ..Default::default()
                    }),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.image.map(|image| image.id))
    }

    async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        const CALL: &str = "PullImage";
        let answer = self
            .images
            .clone()
            .pull_image(request(
                cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: image.to_owned(),
                        ..Default::default()
                    }),
                    auth: None,
                    sandbox_config: None,
                },
                PULL_TIMEOUT,
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.image_ref)
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<i32, CriError> {
        const CALL: &str = "ExecSync";
        let answer = self
            .runtime
            .clone()
            .exec_sync(request(
                cri::ExecSyncRequest {
                    container_id: id.to_owned(),
                    cmd: command.to_vec(),
                    timeout: timeout.as_secs().max(1) as i64,
                },
                timeout + Duration::from_secs(5),
            ))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.exit_code)
    }

    async fn exec_url(&self, exec: cri::ExecRequest) -> Result<String, CriError> {
        const CALL: &str = "Exec";
        let answer = self
            .runtime
            .clone()
            .exec(request(exec, CALL_TIMEOUT))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.url)
    }

    async fn attach_url(&self, attach: cri::AttachRequest) -> Result<String, CriError> {
        const CALL: &str = "Attach";
        let answer = self
            .runtime
            .clone()
            .attach(request(attach, CALL_TIMEOUT))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.url)
    }

    async fn port_forward_url(&self, forward: cri::PortForwardRequest) -> Result<String, CriError> {
        const CALL: &str = "PortForward";
        let answer = self
            .runtime
            .clone()
            .port_forward(request(forward, CALL_TIMEOUT))
            .await
            .map_err(|s| CriError::from_status(CALL, s))?
            .into_inner();
        Ok(answer.url)
    }
}
