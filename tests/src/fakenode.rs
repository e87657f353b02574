//! Simulated nodes: node agents without containers, speaking the real node
//! API, so that controllers and the scheduler can be tested end to end
//! without containerd (in the manner of Kubernetes' kubemark).
//!
//! A [`FakeNode`] joins with a token (a CSR answered with its node
//! certificate), connects, says Hello, and then heartbeats every
//! [`FakeNodeOptions::heartbeat`] until stopped. Every pod it is given is
//! reported `Running` and Ready at once, unless one of its containers'
//! command or args contains [`SUCCEED_MARKER`] (reported `Succeeded`) or
//! [`FAIL_MARKER`] (reported `Failed`, exit code 1). A pod being deleted is
//! reported terminated, which completes its deletion as a real agent's
//! report does.
//!
//! Each node runs on its own thread with its own single-threaded runtime;
//! [`FakeNode::stop`] (or dropping it) ends the session abruptly, as a
//! crashed or unplugged host would: no more heartbeats, no goodbye.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_proto::node::v1 as proto;
use skiff_proto::node::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// In a container's command or args: report the pod `Succeeded`.
pub const SUCCEED_MARKER: &str = "fakenode:succeed";
/// In a container's command or args: report the pod `Failed`.
pub const FAIL_MARKER: &str = "fakenode:fail";

#[derive(Debug, Clone)]
pub struct FakeNodeOptions {
    /// How often to heartbeat; the control plane asks for 10 s, tests want
    /// faster.
    pub heartbeat: Duration,
}

impl Default for FakeNodeOptions {
    fn default() -> Self {
        FakeNodeOptions {
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// One simulated node, running until stopped or dropped.
pub struct FakeNode {
    name: String,
    stopping: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a node finds the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneAddress {
    pub node_api_port: u16,
    pub ca_pem: String,
    pub token: String,
}

impl ControlPlaneAddress {
    /// The address of a test control plane, with a fresh join token.
    pub fn of(cp: &crate::ControlPlane) -> ControlPlaneAddress {
        let ca_path = cp.data_dir().join("pki").join("ca.crt");
        ControlPlaneAddress {
            node_api_port: cp.node_api_port(),
            ca_pem: std::fs::read_to_string(&ca_path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", ca_path.display())),
            token: cp.create_token(),
        }
    }
}

impl FakeNode {
    /// Starts a node named `name`; it joins and registers in the
    /// background (wait for it with kubectl).
    pub fn start(address: &ControlPlaneAddress, name: &str, options: FakeNodeOptions) -> FakeNode {
        let stopping = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (address, name, stopping, log) = (
                address.clone(),
                name.to_owned(),
                stopping.clone(),
                log.clone(),
            );
            std::thread::Builder::new()
                .name(format!("fakenode-{name}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            note(&log, format!("cannot start a runtime: {error}"));
                            return;
                        }
                    };
                    runtime.block_on(run(address, name, options, stopping, log));
                })
                .expect("cannot spawn a fake node thread")
        };
        FakeNode {
            name: name.to_owned(),
            stopping,
            log,
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the node did, one line per step (for failure messages).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// Ends the session at once: heartbeats and reports stop.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn note(log: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut lines) = log.lock() {
        lines.push(line);
    }
}

async fn run(
    address: ControlPlaneAddress,
    name: String,
    options: FakeNodeOptions,
    stopping: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let identity = match join(&address, &name).await {
        Ok(identity) => identity,
        Err(error) => {
            note(&log, format!("join failed: {error}"));
            return;
        }
    };
    note(&log, "joined".into());
    // Reconnect after a dropped stream, as an agent does, until stopped.
    while !stopping.load(Ordering::SeqCst) {
        if let Err(error) = session(&address, &name, &identity, &options, &stopping, &log).await {
            note(&log, format!("session ended: {error}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    note(&log, "stopped".into());
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn join(address: &ControlPlaneAddress, name: &str) -> Result<Identity, BoxError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
    let csr = params.serialize_request(&key)?;
    let mut client = NodeServiceClient::new(channel(address, None).await?);
    let response = client
        .join(proto::JoinRequest {
            token: address.token.clone(),
            node_name: name.to_owned(),
            csr_pem: csr.pem()?,
        })
        .await?
        .into_inner();
    Ok(Identity::from_pem(
        response.certificate_pem,
        key.serialize_pem(),
    ))
}

async fn channel(
    address: &ControlPlaneAddress,
    identity: Option<&Identity>,
) -> Result<Channel, BoxError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&address.ca_pem))
        .domain_name("127.0.0.1");
    if let Some(identity) = identity {
        tls = tls.identity(identity.clone());
    }
    Ok(
        Endpoint::from_shared(format!("https://127.0.0.1:{}", address.node_api_port))?
            .tls_config(tls)?
            .connect()
            .await?,
    )
}

fn hello(name: &str) -> proto::AgentMessage {
    let resources: HashMap<String, String> = [("cpu", "8"), ("memory", "16Gi"), ("pods", "110")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Hello(proto::Hello {
            protocol_version: 1,
            node: Some(proto::NodeInfo {
                name: name.into(),
                addresses: vec![proto::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: "127.0.0.1".into(),
                }],
                capacity: resources.clone(),
                allocatable: resources,
                container_runtime_version: "fake://0".into(),
                os_image: "simulated".into(),
                kernel_version: "0.0.0".into(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                agent_version: "v1.33.0-skiff.fake".into(),
                ..Default::default()
            }),
        })),
    }
}

fn heartbeat() -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Heartbeat(proto::Heartbeat {
            conditions: vec![proto::NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "KubeletReady".into(),
                message: "kubelet is posting ready status".into(),
            }],
            ..Default::default()
        })),
    }
}

/// The phase a simulated pod ends in, by the markers in its containers.
pub fn simulated_phase(spec: &Value) -> &'static str {
    let text = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            ["command", "args"]
                .into_iter()
                .filter_map(move |field| c.get(field).and_then(Value::as_array))
                .flatten()
        })
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    if text.contains(FAIL_MARKER) {
        "Failed"
    } else if text.contains(SUCCEED_MARKER) {
        "Succeeded"
    } else {
        "Running"
    }
}

/// The status a simulated pod reports.
pub fn simulated_status(spec: &Value, now: &str) -> Value {
    let phase = simulated_phase(spec);
    let running = phase == "Running";
    let condition = |kind: &str, status: bool| {
        json!({"type": kind, "status": if status { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": now})
    };
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let state = match phase {
                "Running" => json!({"running": {"startedAt": now}}),
                other => json!({"terminated": {
                    "exitCode": if other == "Failed" { 1 } else { 0 },
                    "reason": if other == "Failed" { "Error" } else { "Completed" },
                    "startedAt": now, "finishedAt": now}}),
            };
            json!({"name": c.get("name").cloned().unwrap_or(Value::Null),
                "image": c.get("image").cloned().unwrap_or(Value::Null),
                "imageID": "", "ready": running, "started": running,
                "restartCount": 0, "state": state})
        })
        .collect();
    json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", true),
            condition("Initialized", true),
            condition("Ready", running),
            condition("ContainersReady", running),
            condition("PodScheduled", true),
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": now,
        "containerStatuses": containers,
    })
}

fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days from the civil calendar, without a date crate (Howard Hinnant's
    // algorithm).
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn report(pod: &proto::Pod, now: &str) -> Option<proto::AgentMessage> {
    let spec: Value = serde_json::from_str(&pod.spec_json).ok()?;
    let terminated = pod.deletion_grace_period_seconds.is_some();
    let status = if terminated {
        let mut status = simulated_status(&spec, now);
        if status["phase"] == "Running" {
            status["phase"] = json!("Failed");
        }
        status
    } else {
        simulated_status(&spec, now)
    };
    Some(proto::AgentMessage {
        message: Some(proto::agent_message::Message::PodStatus(
            proto::PodStatusReport {
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                status_json: status.to_string(),
                terminated,
            },
        )),
    })
}

async fn session(
    address: &ControlPlaneAddress,
    name: &str,
    identity: &Identity,
    options: &FakeNodeOptions,
    stopping: &AtomicBool,
    log: &Mutex<Vec<String>>,
) -> Result<(), BoxError> {
    let mut client = NodeServiceClient::new(channel(address, Some(identity)).await?);
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    sender.send(hello(name)).await?;
    let outbound = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut inbound = client.connect(outbound).await?.into_inner();
    let mut ticker = tokio::time::interval(options.heartbeat);
    // Pods reported, by uid, with whether the deletion was reported.
    let mut reported: HashMap<String, bool> = HashMap::new();
    loop {
        if stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        tokio::select! {
            _ = ticker.tick() => {
                sender.send(heartbeat()).await?;
            }
            message = inbound.message() => {
                let Some(message) = message? else {
                    return Err("the control plane closed the stream".into());
                };
                let pods: Vec<proto::Pod> = match message.message {
                    Some(proto::control_message::Message::Welcome(_)) => {
                        note(log, "welcomed".into());
                        Vec::new()
                    }
                    Some(proto::control_message::Message::Snapshot(snapshot)) => snapshot.pods,
                    Some(proto::control_message::Message::Delta(delta)) => {
                        for uid in &delta.removed {
                            reported.remove(uid);
                        }
                        delta.upserted
                    }
                    None => Vec::new(),
                };
                let now = now_rfc3339();
                for pod in pods {
                    let deleting = pod.deletion_grace_period_seconds.is_some();
                    if reported.get(&pod.uid) == Some(&deleting) {
                        continue;
                    }
                    if let Some(message) = report(&pod, &now) {
                        note(log, format!("reporting {}/{} (deleting: {deleting})", pod.namespace, pod.name));
                        sender.send(message).await?;
                        reported.insert(pod.uid.clone(), deleting);
                    }
                }
            }
            // Look at the stop flag now and then even when all is quiet.
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_pick_the_phase() {
        let spec = |command: Value| json!({"containers": [{"name": "c", "image": "i", "command": command}]});
        assert_eq!(simulated_phase(&spec(json!(["sleep", "1"]))), "Running");
        assert_eq!(
            simulated_phase(&spec(json!(["sh", "-c", "fakenode:succeed"]))),
            "Succeeded"
        );
        assert_eq!(simulated_phase(&spec(json!(["fakenode:fail"]))), "Failed");
        let status = simulated_status(&spec(json!(["fakenode:fail"])), "2025-01-01T00:00:00Z");
        assert_eq!(
            status["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            1
        );
        assert_eq!(status["conditions"][2]["status"], "False");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }
}
