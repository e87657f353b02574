//! The agent's side of a `Connect` stream.
//!
//! One session: open a channel with the node's certificate, send `Hello`
//! (always first), expect `Welcome` (the Node is registered by then), then
//! serve three things until the stream breaks: the control plane's messages,
//! applied to the [`PodBook`] and handed to the pod runtime; the pod
//! runtime's status reports, sent up as they appear; and a heartbeat on the
//! interval `Welcome` asked for. The caller reconnects when [`run`] returns.
//!
//! The [`PodBook`] is the node's desired state, and pure: a `Snapshot`
//! replaces it, each `Delta` must carry a higher revision than what came
//! before it on the stream and is applied on top. It outlives sessions, so
//! after a reconnect the fresh snapshot is compared with what the node
//! already knew and only the differences reach the runtime; pods keep
//! running while the control plane is away.
//!
//! Every session starts by re-sending every pod's newest status: the
//! control plane may have missed any of them while the stream was down.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use skiff_proto::node::v1 as proto;
use skiff_proto::node::v1::node_service_client::NodeServiceClient;
use tokio::sync::mpsc;

use crate::credentials::Credentials;
use crate::cri::Cri;
use crate::hostinfo::{self, HostFacts};
use crate::podnet::PodNetworkHandle;
use crate::runtime::events::PodEvent;
use crate::runtime::executor::{PodReport, PodRuntime};
use crate::runtime::volumes::{Unresolved, VolumeFiles};
use crate::server::{self, ServerAddress, ServerError};

/// The node API protocol revision this agent speaks (see `node.proto`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Used when a control plane's Welcome names no interval.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("the control plane refused the session: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the session failed: {0}")]
    Rpc(tonic::Status),
    #[error("the control plane ended the session")]
    Ended,
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl SessionError {
    /// Refusals will not change by retrying: the certificate is not good
    /// for this node or cluster, or the agent speaks nonsense to it.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SessionError::Refused { .. })
    }
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> SessionError {
        match status.code() {
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument => SessionError::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            },
            _ => SessionError::Rpc(status),
        }
    }
}

/// One pod the node is told to run.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub spec: Value,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub deletion_grace_period_seconds: Option<i64>,
    pub resource_version: String,
    /// The files of its configMap and secret volumes, by volume name.
    pub volumes: BTreeMap<String, VolumeFiles>,
    /// What the control plane could not resolve for it.
    pub unresolved: Vec<Unresolved>,
}

impl TryFrom<proto::Pod> for DesiredPod {
    type Error = SessionError;

    fn try_from(pod: proto::Pod) -> Result<DesiredPod, SessionError> {
        if pod.uid.is_empty() {
            return Err(SessionError::Protocol(format!(
                "pod {}/{} has no uid",
                pod.namespace, pod.name
            )));
        }
        let spec = serde_json::from_str(&pod.spec_json).map_err(|error| {
            SessionError::Protocol(format!(
                "the spec of pod {}/{} is not JSON: {error}",
                pod.namespace, pod.name
            ))
        })?;
        let mut volumes = BTreeMap::new();
        for contents in pod.volume_contents {
            let files = VolumeFiles {
                files: contents.files.into_iter().collect(),
                modes: contents.modes.into_iter().collect(),
            };
            files.validate(&contents.volume_name).map_err(|error| {
                SessionError::Protocol(format!("pod {}/{}: {error}", pod.namespace, pod.name))
            })?;
            volumes.insert(contents.volume_name, files);
        }
        let unresolved = pod
            .unresolved
            .into_iter()
            .map(|u| Unresolved {
                container: u.container,
                volume: u.volume,
                message: u.message,
            })
            .collect();
        Ok(DesiredPod {
            uid: pod.uid,
            namespace: pod.namespace,
            name: pod.name,
            spec,
            labels: pod.labels.into_iter().collect(),
            annotations: pod.annotations.into_iter().collect(),
            deletion_grace_period_seconds: pod.deletion_grace_period_seconds,
            resource_version: pod.resource_version,
            volumes,
            unresolved,
        })
    }
}

/// What the control plane sent, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    Welcome {
        heartbeat_interval: Duration,
    },
    Snapshot {
        revision: i64,
        pods: Vec<DesiredPod>,
    },
    Delta {
        revision: i64,
        upserted: Vec<DesiredPod>,
        removed: Vec<String>,
    },
    /// A message kind newer than this agent: ignored, per the versioning
    /// rules.
    Unknown,
}

impl TryFrom<proto::ControlMessage> for ControlEvent {
    type Error = SessionError;

    fn try_from(message: proto::ControlMessage) -> Result<ControlEvent, SessionError> {
        use proto::control_message::Message;
        let pods = |pods: Vec<proto::Pod>| {
            pods.into_iter()
                .map(DesiredPod::try_from)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match message.message {
            Some(Message::Welcome(welcome)) => ControlEvent::Welcome {
                heartbeat_interval: match welcome.heartbeat_interval_seconds {
                    0 => DEFAULT_HEARTBEAT,
                    seconds => Duration::from_secs(u64::from(seconds)),
                },
            },
            Some(Message::Snapshot(snapshot)) => ControlEvent::Snapshot {
                revision: snapshot.revision,
                pods: pods(snapshot.pods)?,
            },
            Some(Message::Delta(delta)) => ControlEvent::Delta {
                revision: delta.revision,
                upserted: pods(delta.upserted)?,
                removed: delta.removed,
            },
            None => ControlEvent::Unknown,
        })
    }
}

/// How a pod changed in the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Changed,
    Removed,
}

/// The node's desired pods, by uid.
#[derive(Debug, Default)]
pub struct PodBook {
    /// The revision of the last snapshot or delta on the current stream;
    /// `None` until a snapshot arrives on it.
    revision: Option<i64>,
    pods: BTreeMap<String, DesiredPod>,
}

impl PodBook {
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Forgets the stream position (not the pods) when a stream ends; the
    /// next stream starts with a snapshot.
    pub fn stream_ended(&mut self) {
        self.revision = None;
    }

    fn upsert(&mut self, pod: DesiredPod, changes: &mut Vec<(Change, DesiredPod)>) {
        let change = match self.pods.get(&pod.uid) {
            None => Change::Added,
            Some(known) if *known == pod => return,
            Some(_) => Change::Changed,
        };
        self.pods.insert(pod.uid.clone(), pod.clone());
        changes.push((change, pod));
    }

    /// Replaces the book; returns what differs from before.
    pub fn apply_snapshot(
        &mut self,
        revision: i64,
        pods: Vec<DesiredPod>,
    ) -> Vec<(Change, DesiredPod)> {
        let mut changes = Vec::new();
        let wanted: std::collections::BTreeSet<&str> =
            pods.iter().map(|pod| pod.uid.as_str()).collect();
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !wanted.contains(uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(pod) = self.pods.remove(&uid) {
                changes.push((Change::Removed, pod));
            }
        }
        for pod in pods {
            self.upsert(pod, &mut changes);
        }
        self.revision = Some(revision);
        changes
    }

    /// Applies a delta; refuses one that arrives before any snapshot or
    /// goes back in revisions, since the book would no longer be right.
    pub fn apply_delta(
        &mut self,
        revision: i64,
        upserted: Vec<DesiredPod>,
        removed: Vec<String>,
    ) -> Result<Vec<(Change, DesiredPod)>, SessionError> {
        match self.revision {
            None => {
                return Err(SessionError::Protocol(
                    "a Delta arrived before the Snapshot".into(),
                ))
            }
            Some(known) if revision <= known => {
                return Err(SessionError::Protocol(format!(
                    "a Delta for revision {revision} arrived after revision {known}"
                )))
            }
            Some(_) => {}
        }
        let mut changes = Vec::new();
        for uid in removed {
            if let Some(pod) = self.pods.remove(&uid) {
                changes.push((Change::Removed, pod));
            }
        }
        for pod in upserted {
            self.upsert(pod, &mut changes);
        }
        self.revision = Some(revision);
        Ok(changes)
    }
}

/// What the agent says about its node in `Hello`.
pub fn node_info(
    name: &str,
    facts: &HostFacts,
    internal_ip: Option<IpAddr>,
    container_runtime_version: &str,
) -> proto::NodeInfo {
    let mut addresses = Vec::new();
    if let Some(ip) = internal_ip {
        addresses.push(proto::NodeAddress {
            r#type: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    if !facts.hostname.is_empty() {
        addresses.push(proto::NodeAddress {
            r#type: "Hostname".into(),
            address: facts.hostname.clone(),
        });
    }
    let capacity: std::collections::HashMap<String, String> =
        hostinfo::capacity(facts).into_iter().collect();
    proto::NodeInfo {
        name: name.to_owned(),
        addresses,
        allocatable: capacity.clone(),
        capacity,
        // Empty while the runtime cannot be reached.
        container_runtime_version: container_runtime_version.to_owned(),
        os_image: facts.os_image.clone(),
        kernel_version: facts.kernel_version.clone(),
        operating_system: std::env::consts::OS.to_owned(),
        architecture: facts.architecture.clone(),
        agent_version: crate::AGENT_VERSION.to_owned(),
        machine_id: facts.machine_id.clone(),
        boot_id: facts.boot_id.clone(),
        system_uuid: facts.system_uuid.clone(),
        overlay: None,
    }
}

fn heartbeat(overlay: Option<proto::OverlayEndpoint>) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Heartbeat(proto::Heartbeat {
            conditions: vec![proto::NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "KubeletReady".into(),
                message: "skiff-agent is posting ready status".into(),
            }],
            overlay,
        })),
    }
}

fn status_message(report: PodReport) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::PodStatus(
            proto::PodStatusReport {
                uid: report.uid,
                namespace: report.namespace,
                name: report.name,
                status_json: report.status.to_string(),
                terminated: report.terminated,
            },
        )),
    }
}

fn events_message(events: Vec<PodEvent>) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Events(proto::EventReport {
            events: events
                .into_iter()
                .map(|event| proto::PodEvent {
                    pod_uid: event.pod.uid,
                    namespace: event.pod.namespace,
                    pod_name: event.pod.name,
                    field_path: event.field_path,
                    r#type: event.event_type.as_str().to_owned(),
                    reason: event.reason,
                    message: event.message,
                    first_timestamp_ms: event.first_ms,
                    last_timestamp_ms: event.last_ms,
                    count: event.count.max(1),
                })
                .collect(),
        })),
    }
}

fn log_changes(changes: &[(Change, DesiredPod)]) {
    for (change, pod) in changes {
        let pod_name = format!("{}/{}", pod.namespace, pod.name);
        match (change, pod.deletion_grace_period_seconds) {
            (Change::Removed, _) => {
                tracing::info!(pod = %pod_name, uid = %pod.uid, "desired pod removed")
            }
            (_, Some(grace)) => tracing::info!(
                pod = %pod_name, uid = %pod.uid, grace_seconds = grace,
                "desired pod is being deleted; stopping it"
            ),
            (Change::Added, None) => {
                tracing::info!(pod = %pod_name, uid = %pod.uid, "desired pod received")
            }
            (Change::Changed, None) => {
                tracing::info!(pod = %pod_name, uid = %pod.uid, "desired pod changed")
            }
        }
    }
}

/// Where to connect and as whom.
pub struct Target<'a> {
    pub server: &'a ServerAddress,
    pub node_api_port: u16,
    pub credentials: &'a Credentials,
}

/// Runs one session until the stream ends. `welcomed` is called once the
/// control plane has accepted the node.
pub async fn run<C: Cri>(
    target: &Target<'_>,
    node: proto::NodeInfo,
    book: &mut PodBook,
    runtime: &PodRuntime<C>,
    network: &PodNetworkHandle,
    mut welcomed: impl FnMut(),
) -> Result<(), SessionError> {
    // The pod network's endpoint, once its device exists: in Hello, and in
    // a heartbeat whenever it changes, so peers learn of it at once.
    let mut overlay_endpoint = network.endpoint();
    let mut node = node;
    node.overlay = overlay_endpoint.borrow_and_update().clone();
    let credentials = target.credentials;
    let channel = server::node_api_channel(
        target.server,
        target.node_api_port,
        &credentials.ca_pem,
        Some((&credentials.cert_pem, &credentials.key_pem)),
    )
    .await?;
    let (sender, receiver) = mpsc::channel::<proto::AgentMessage>(16);
    let hello = proto::AgentMessage {
        message: Some(proto::agent_message::Message::Hello(proto::Hello {
            protocol_version: PROTOCOL_VERSION,
            node: Some(node),
        })),
    };
    // The queue is empty, so this cannot fail.
    let _ = sender.try_send(hello);
    let outbound = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|message| (message, receiver))
    });
    let mut inbound = NodeServiceClient::new(channel)
        .connect(outbound)
        .await?
        .into_inner();

    let first = inbound.message().await?;
    if let Some(message) = &first {
        network.observe(message);
    }
    let heartbeat_interval = match first.map(ControlEvent::try_from) {
        Some(Ok(ControlEvent::Welcome { heartbeat_interval })) => heartbeat_interval,
        Some(Ok(other)) => {
            return Err(SessionError::Protocol(format!(
                "expected Welcome first, got {other:?}"
            )))
        }
        Some(Err(error)) => return Err(error),
        None => return Err(SessionError::Ended),
    };
    welcomed();
    tracing::info!(node = %credentials.node_name, heartbeat_seconds = heartbeat_interval.as_secs(), "connected: the node is registered");

    let mut ticker = tokio::time::interval(heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; Hello has just renewed the node.
    ticker.tick().await;
    runtime.reports().resend_all();
    let result = loop {
        tokio::select! {
            _ = runtime.reports().changed() => {
                let mut sent = Ok(());
                for report in runtime.reports().take_unsent() {
                    if sender.send(status_message(report)).await.is_err() {
                        sent = Err(SessionError::Ended);
                        break;
                    }
                }
                if let Err(error) = sent {
                    // Whatever was taken is sent again on the next stream.
                    break Err(error);
                }
            }
            _ = runtime.events().changed() => {
                let events = runtime.events().take();
                // Best effort: a batch the stream cannot take is lost.
                if !events.is_empty() && sender.send(events_message(events)).await.is_err() {
                    break Err(SessionError::Ended);
                }
            }
            message = inbound.message() => {
                let event = match message {
                    Ok(Some(message)) => {
                        network.observe(&message);
                        ControlEvent::try_from(message)
                    }
                    Ok(None) => break Err(SessionError::Ended),
                    Err(status) => break Err(status.into()),
                };
                let mut snapshot = false;
                let changes = match event {
                    Ok(ControlEvent::Snapshot { revision, pods }) => {
                        let count = pods.len();
                        let changes = book.apply_snapshot(revision, pods);
                        tracing::info!(revision, pods = count, changes = changes.len(), "received the node's snapshot");
                        snapshot = true;
                        changes
                    }
                    Ok(ControlEvent::Delta { revision, upserted, removed }) => {
                        match book.apply_delta(revision, upserted, removed) {
                            Ok(changes) => changes,
                            Err(error) => break Err(error),
                        }
                    }
                    Ok(ControlEvent::Welcome { .. }) => {
                        break Err(SessionError::Protocol("a second Welcome".into()))
                    }
                    Ok(ControlEvent::Unknown) => Vec::new(),
                    Err(error) => break Err(error),
                };
                log_changes(&changes);
                runtime.apply_changes(&changes, snapshot);
            }
            Ok(()) = overlay_endpoint.changed() => {
                let endpoint = overlay_endpoint.borrow_and_update().clone();
                if sender.send(heartbeat(endpoint)).await.is_err() {
                    break Err(SessionError::Ended);
                }
                tracing::info!("reported the overlay endpoint");
            }
            _ = ticker.tick() => {
                if sender.send(heartbeat(overlay_endpoint.borrow().clone())).await.is_err() {
                    break Err(SessionError::Ended);
                }
                tracing::debug!("heartbeat sent");
            }
        }
    };
    book.stream_ended();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, name: &str) -> DesiredPod {
        DesiredPod {
            uid: uid.into(),
            namespace: "default".into(),
            name: name.into(),
            spec: json!({"containers": [{"name": "c", "image": "nginx"}]}),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            deletion_grace_period_seconds: None,
            resource_version: "1".into(),
            volumes: BTreeMap::new(),
            unresolved: Vec::new(),
        }
    }

    fn kinds(changes: &[(Change, DesiredPod)]) -> Vec<(Change, &str)> {
        changes
            .iter()
            .map(|(change, pod)| (*change, pod.name.as_str()))
            .collect()
    }

    #[test]
    fn snapshots_replace_and_report_only_differences() {
        let mut book = PodBook::default();
        let first = book.apply_snapshot(5, vec![pod("u1", "a"), pod("u2", "b")]);
        assert_eq!(kinds(&first), [(Change::Added, "a"), (Change::Added, "b")]);

        // After a reconnect: b is gone, a is unchanged, c is new.
        book.stream_ended();
        let second = book.apply_snapshot(9, vec![pod("u1", "a"), pod("u3", "c")]);
        assert_eq!(
            kinds(&second),
            [(Change::Removed, "b"), (Change::Added, "c")]
        );
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn deltas_apply_in_revision_order_only() {
        let mut book = PodBook::default();
        assert!(book.apply_delta(3, vec![pod("u1", "a")], vec![]).is_err());
        book.apply_snapshot(5, vec![pod("u1", "a")]);

        let mut deleting = pod("u1", "a");
        deleting.deletion_grace_period_seconds = Some(30);
        let changes = book
            .apply_delta(7, vec![deleting, pod("u2", "b")], vec![])
            .expect("applies");
        assert_eq!(
            kinds(&changes),
            [(Change::Changed, "a"), (Change::Added, "b")]
        );

        let removed = book.apply_delta(8, vec![], vec!["u1".into(), "unknown".into()]);
        assert_eq!(kinds(&removed.expect("applies")), [(Change::Removed, "a")]);

        let stale = book.apply_delta(8, vec![], vec!["u2".into()]);
        assert!(matches!(stale, Err(SessionError::Protocol(_))));
        assert_eq!(book.len(), 1, "a refused delta changes nothing");
    }

    #[test]
    fn control_messages_decode_at_the_edge() {
        let welcome = proto::ControlMessage {
            message: Some(proto::control_message::Message::Welcome(proto::Welcome {
                protocol_version: 1,
                pod_cidr: String::new(),
                heartbeat_interval_seconds: 0,
                network: None,
            })),
        };
        assert_eq!(
            ControlEvent::try_from(welcome).expect("decodes"),
            ControlEvent::Welcome {
                heartbeat_interval: DEFAULT_HEARTBEAT
            }
        );
        assert_eq!(
            ControlEvent::try_from(proto::ControlMessage { message: None }).expect("decodes"),
            ControlEvent::Unknown
        );
        let broken = proto::ControlMessage {
            message: Some(proto::control_message::Message::Snapshot(proto::Snapshot {
                revision: 1,
                pods: vec![proto::Pod {
                    uid: "u1".into(),
                    spec_json: "{not json".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        assert!(matches!(
            ControlEvent::try_from(broken),
            Err(SessionError::Protocol(_))
        ));
    }

    #[test]
    fn volume_contents_and_unresolved_references_decode_at_the_edge() {
        let pod = |path: &str| proto::Pod {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            spec_json: "{}".into(),
            volume_contents: vec![proto::VolumeContents {
                volume_name: "cfg".into(),
                files: [(path.to_owned(), b"fast".to_vec())].into_iter().collect(),
                modes: [(path.to_owned(), 0o600)].into_iter().collect(),
            }],
            unresolved: vec![proto::UnresolvedReference {
                container: "c".into(),
                volume: String::new(),
                message: "configmap \"x\" not found".into(),
            }],
            ..Default::default()
        };
        let desired = DesiredPod::try_from(pod("conf/mode")).expect("valid");
        assert_eq!(desired.volumes["cfg"].files["conf/mode"], b"fast");
        assert_eq!(desired.volumes["cfg"].modes["conf/mode"], 0o600);
        assert_eq!(desired.unresolved[0].message, "configmap \"x\" not found");
        assert!(matches!(
            DesiredPod::try_from(pod("../../etc/passwd")),
            Err(SessionError::Protocol(_))
        ));

        let message = events_message(vec![PodEvent {
            pod: crate::runtime::events::PodRef {
                uid: "u1".into(),
                namespace: "default".into(),
                name: "web".into(),
            },
            field_path: "spec.containers{c}".into(),
            event_type: crate::runtime::events::EventType::Warning,
            reason: "BackOff".into(),
            message: "Back-off".into(),
            first_ms: 1,
            last_ms: 2,
            count: 3,
        }]);
        match message.message {
            Some(proto::agent_message::Message::Events(report)) => {
                let event = &report.events[0];
                assert_eq!((event.r#type.as_str(), event.count), ("Warning", 3));
                assert_eq!(event.field_path, "spec.containers{c}");
            }
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn refusals_are_fatal_and_outages_are_not() {
        assert!(SessionError::from(tonic::Status::permission_denied("other node")).is_fatal());
        assert!(!SessionError::from(tonic::Status::unavailable("restarting")).is_fatal());
        assert!(!SessionError::Ended.is_fatal());
    }

    #[test]
    fn hello_describes_the_host() {
        let facts = HostFacts {
            hostname: "worker-1".into(),
            cpus: 2,
            memory_bytes: 4 << 30,
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            system_uuid: String::new(),
            architecture: "amd64".into(),
        };
        let info = node_info(
            "worker-1",
            &facts,
            Some("10.0.0.5".parse().expect("ip")),
            "containerd://1.6.20",
        );
        assert_eq!(info.addresses[0].r#type, "InternalIP");
        assert_eq!(info.addresses[0].address, "10.0.0.5");
        assert_eq!(info.addresses[1].r#type, "Hostname");
        assert_eq!(info.capacity["cpu"], "2");
        assert_eq!(info.capacity["memory"], "4194304Ki");
        assert_eq!(info.allocatable, info.capacity);
        assert!(info.agent_version.starts_with("v1.33.0-skiff."));
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
    }
}
