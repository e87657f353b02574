//! One agent's `Connect` session once its `Hello` is validated.
//!
//! [`Session::open`] registers the Node, reads the node's pods at store
//! revision R and starts a pod watch after R; [`Session::run`] then queues
//! `Welcome` and the `Snapshot` and spawns one task that serves the stream
//! until either side ends it. The task waits on three things at once: the
//! agent's next message, the next pod event, and the agent hanging up.
//! Messages are handled one at a time, in order, so a status report can
//! never overtake the heartbeat before it.
//!
//! A message that fails validation ends the stream with INVALID_ARGUMENT
//! (nothing of it is written); a report about another node's pod ends it
//! with PERMISSION_DENIED. A write that fails for a transient reason (a
//! conflict that outlived its retries, a store error) is logged and the
//! session goes on: the next heartbeat or report carries the same facts.

use std::sync::Arc;

use serde_json::{json, Value};
use skiff_apimachinery::{fields, labels::LabelSelector};
use skiff_proto::node::v1 as proto;
use skiff_store::{KeyValue, StoreError, Watcher};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::node::{self, ConditionReport, NodeRegistration};
use super::pods::{self, PodError, ReportCheck, StatusReport};
use super::service::ControlStream;
use super::{HEARTBEAT_INTERVAL, PROTOCOL_VERSION};
use crate::api::errors::ApiError;
use crate::api::objects::{self, now_rfc3339};
use crate::api::registry::{DeleteOptions, PatchType, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

/// Optimistic-concurrency retries for one status write. Only the agent and
/// users write a Node's status, so conflicts are rare and short-lived.
const WRITE_RETRIES: usize = 5;

/// Messages queued for the agent before the session task blocks on it.
const OUTBOUND_QUEUE: usize = 64;

fn resource(plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("resource {plural} is not served")))
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "node session failed");
    Status::internal(format!("the control plane failed: {error}"))
}

/// A validated, registered session, ready to run.
pub struct Session {
    registry: Arc<Registry>,
    registration: NodeRegistration,
    snapshot: pods::PodSnapshot,
    watcher: Watcher,
}

impl Session {
    pub async fn open(
        registry: Arc<Registry>,
        registration: NodeRegistration,
    ) -> Result<Session, Status> {
        register(&registry, &registration).await.map_err(internal)?;
        let pods = resource("pods").map_err(internal)?;
        let selector = fields::FieldSelector::parse(&format!(
            "spec.nodeName={}",
            fields::escape_value(&registration.name)
        ))
        .map_err(internal)?;
        let (listed, revision) = registry
            .list(pods, None, &LabelSelector::everything(), &selector)
            .await
            .map_err(internal)?;
        let snapshot = pods::snapshot(&listed, &registration.name, revision).map_err(internal)?;
        let watcher = registry
            .store
            .watch(&pods.key_prefix(None), revision)
            .map_err(internal)?;
        Ok(Session {
            registry,
            registration,
            snapshot,
            watcher,
        })
    }

    /// Starts serving the stream; returns what the agent receives.
    pub fn run(self, inbound: Streaming<proto::AgentMessage>) -> ControlStream {
        let (sender, receiver) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = proto::ControlMessage {
            message: Some(proto::control_message::Message::Welcome(proto::Welcome {
                protocol_version: PROTOCOL_VERSION,
                pod_cidr: String::new(),
                heartbeat_interval_seconds: HEARTBEAT_INTERVAL.as_secs() as u32,
                network: None,
            })),
        };
        tracing::info!(node = %self.registration.name, pods = self.snapshot.pods.len(), revision = self.snapshot.revision, "sending the node its snapshot");
        let snapshot = proto::ControlMessage {
            message: Some(proto::control_message::Message::Snapshot(
                self.snapshot.clone().into(),
            )),
        };
        // The queue is empty and larger than two, so these cannot fail.
        let _ = sender.try_send(Ok(welcome));
        let _ = sender.try_send(Ok(snapshot));
        tokio::spawn(self.serve(inbound, sender));
        Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        ))
    }

    async fn serve(
        mut self,
        mut inbound: Streaming<proto::AgentMessage>,
        sender: mpsc::Sender<Result<proto::ControlMessage, Status>>,
    ) {
        let node = self.registration.name.clone();
        match self.drive(&mut inbound, &sender).await {
            Ok(()) => tracing::info!(%node, "node disconnected"),
            Err(status) => {
                tracing::warn!(%node, code = ?status.code(), message = status.message(), "ending the node's session");
                let _ = sender.send(Err(status)).await;
            }
        }
    }

    async fn drive(
        &mut self,
        inbound: &mut Streaming<proto::AgentMessage>,
        sender: &mpsc::Sender<Result<proto::ControlMessage, Status>>,
    ) -> Result<(), Status> {
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message).await?,
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        tracing::debug!(node = %self.registration.name, %status, "the agent's stream broke");
                        return Ok(());
                    }
                },
                event = self.watcher.next() => {
                    let event = match event {
                        Ok(event) => event,
                        Err(StoreError::WatcherTooSlow) => return Err(Status::unavailable(
                            "this node's pod watch fell behind; reconnect for a fresh snapshot",
                        )),
                        Err(error) => return Err(Status::unavailable(format!(
                            "the control plane's pod watch ended ({error}); reconnect",
                        ))),
                    };
                    match pods::change_for_event(&event, &self.registration.name) {
                        Ok(Some(delta)) => {
                            let message = proto::ControlMessage {
                                message: Some(proto::control_message::Message::Delta(delta.into())),
                            };
                            if sender.send(Ok(message)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Ok(None) => {}
                        // One unreadable object must not cut the node off.
                        Err(error) => tracing::warn!(node = %self.registration.name, %error, "skipping a pod event"),
                    }
                }
                _ = sender.closed() => return Ok(()),
            }
        }
    }

    async fn handle(&mut self, message: proto::AgentMessage) -> Result<(), Status> {
        use proto::agent_message::Message;
        let node = &self.registration.name;
        match message.message {
            // Recorded once the agent reports events; until then accepted
            // and dropped, as an unknown message would be.
            Some(Message::Events(_)) => Ok(()),
            Some(Message::Hello(_)) => Err(Status::invalid_argument(
                "Hello may only be sent once, as the first message of a Connect stream",
            )),
            Some(Message::Heartbeat(heartbeat)) => {
                let reports = heartbeat
                    .conditions
                    .into_iter()
                    .map(ConditionReport::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| {
                        Status::invalid_argument(format!("invalid Heartbeat: {error}"))
                    })?;
                if let Err(error) =
                    heartbeat_write(&self.registry, &self.registration, &reports).await
                {
                    tracing::warn!(%node, %error, "cannot record a heartbeat");
                }
                Ok(())
            }
            Some(Message::PodStatus(report)) => {
                let report = StatusReport::try_from(report)
                    .map_err(|error| Status::invalid_argument(error.to_string()))?;
                match status_write(&self.registry, node, &report).await {
                    Ok(()) => Ok(()),
                    Err(error @ PodError::NotBoundHere { .. }) => {
                        Err(Status::permission_denied(error.to_string()))
                    }
                    Err(error) => {
                        tracing::warn!(%node, pod = %format!("{}/{}", report.namespace, report.name), %error, "cannot record a pod status");
                        Ok(())
                    }
                }
            }
            // A newer agent's message kind: ignored, as the versioning
            // rules require.
            None => Ok(()),
        }
    }
}

/// Updates the status of an object with `compute(current object)`, retrying
/// on conflicts. `compute` returning `None` means there is nothing to write.
async fn update_status(
    registry: &Registry,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    compute: impl Fn(&Value) -> Option<Value>,
) -> Result<(), ApiError> {
    let mut last = None;
    for _ in 0..WRITE_RETRIES {
        let current = registry.get(info, namespace, name).await?;
        let Some(status) = compute(&current) else {
            return Ok(());
        };
        let mut body = json!({
            "metadata": {
                "name": name,
                "resourceVersion": objects::str_at(&current, "/metadata/resourceVersion"),
            },
            "status": status,
        });
        if let Some(namespace) = namespace {
            body["metadata"]["namespace"] = json!(namespace);
        }
        let mode = WriteMode {
            status_only: true,
            dry_run: false,
        };
        match registry.update(info, namespace, name, body, mode).await {
            Err(error @ ApiError::Conflict { .. }) => last = Some(error),
            other => return other.map(|_: KeyValue| ()),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::conflict(info, name)))
}

/// Creates the Node, or brings an existing one up to date with the
/// registration (its labels, then its status).
async fn register(registry: &Registry, registration: &NodeRegistration) -> Result<(), ApiError> {
    let nodes = resource("nodes")?;
    let name = &registration.name;
    for _ in 0..WRITE_RETRIES {
        let existing = match registry.get(nodes, None, name).await {
            Ok(existing) => existing,
            Err(ApiError::NotFound { .. }) => {
                let node = node::new_node(registration, &now_rfc3339());
                match registry.create(nodes, None, node, false).await {
                    Ok(_) => {
                        tracing::info!(node = %name, "registered a new node");
                        return Ok(());
                    }
                    // Another session of the same node won the race.
                    Err(ApiError::AlreadyExists { .. }) => continue,
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        };
        if let Some(patch) = node::label_patch(&existing, registration) {
            registry
                .patch(
                    nodes,
                    None,
                    name,
                    PatchType::Merge,
                    &patch,
                    WriteMode::default(),
                )
                .await?;
        }
        update_status(registry, nodes, None, name, |current| {
            Some(node::registered_status(
                registration,
                current.get("status"),
                &now_rfc3339(),
            ))
        })
        .await?;
        tracing::info!(node = %name, "updated the registration of a known node");
        return Ok(());
    }
    Err(ApiError::conflict(nodes, name))
}

/// Records a heartbeat. A Node deleted while its agent is connected is
/// registered again, as kubelet does.
async fn heartbeat_write(
    registry: &Registry,
    registration: &NodeRegistration,
    reports: &[ConditionReport],
) -> Result<(), ApiError> {
    let nodes = resource("nodes")?;
    let result = update_status(registry, nodes, None, &registration.name, |current| {
        Some(node::heartbeat_status(
            current.get("status").unwrap_or(&Value::Null),
            reports,
            &now_rfc3339(),
        ))
    })
    .await;
    match result {
        Err(ApiError::NotFound { .. }) => register(registry, registration).await,
        other => other,
    }
}

/// Writes a pod's reported status, if the pod is this node's and still the
/// pod the report is about. A terminated pod that is being deleted is then
/// removed, which completes its graceful deletion.
async fn status_write(
    registry: &Registry,
    node: &str,
    report: &StatusReport,
) -> Result<(), PodError> {
    let pods_info = resource("pods")?;
    let namespace = Some(report.namespace.as_str());
    let current = match registry.get(pods_info, namespace, &report.name).await {
        Ok(pod) => Some(pod),
        Err(ApiError::NotFound { .. }) => None,
        Err(error) => return Err(error.into()),
    };
    if pods::check_report(current.as_ref(), report, node)? == ReportCheck::Stale {
        tracing::debug!(%node, pod = %format!("{}/{}", report.namespace, report.name), "dropping a report about a pod that is gone");
        return Ok(());
    }
    let result = update_status(registry, pods_info, namespace, &report.name, |current| {
        // Re-checked on every attempt: the pod may have been replaced.
        (objects::str_at(current, "/metadata/uid") == Some(report.uid.as_str()))
            .then(|| report.status.clone())
    })
    .await;
    match result {
        Ok(()) | Err(ApiError::NotFound { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let deleting = current
        .as_ref()
        .is_some_and(|pod| pod.pointer("/metadata/deletionTimestamp").is_some());
    if report.terminated && deleting {
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: Some(report.uid.clone()),
            ..DeleteOptions::default()
        };
        match registry
            .delete(pods_info, namespace, &report.name, &options)
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::{Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations};
    use skiff_store::{RedbStore, RedbStoreOptions};

    async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default())
            .expect("store");
        let allocations = ServiceAllocations {
            cluster_ips: ClusterIpAllocator::new(Cidr::parse("10.96.0.0/12").expect("cidr")),
            node_ports: NodePortAllocator::new(30000, 32767),
        };
        let registry = Arc::new(Registry::new(Arc::new(store), allocations));
        crate::bootstrap::ensure_defaults(&registry, "127.0.0.1", 6443)
            .await
            .expect("defaults");
        (dir, registry)
    }

    fn registration(name: &str) -> NodeRegistration {
        NodeRegistration::try_from(proto::NodeInfo {
            name: name.into(),
            addresses: vec![proto::NodeAddress {
                r#type: "InternalIP".into(),
                address: "127.0.0.1".into(),
            }],
            capacity: [("cpu".to_owned(), "2".to_owned())].into(),
            allocatable: [("cpu".to_owned(), "2".to_owned())].into(),
            operating_system: "linux".into(),
            architecture: "amd64".into(),
            agent_version: "v1.33.0-skiff.0.1.0".into(),
            ..Default::default()
        })
        .expect("valid")
    }

    async fn create_pod(registry: &Registry, name: &str, node: &str) -> Value {
        let pod = json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        });
        let kv = registry
            .create(resource("pods").expect("pods"), Some("default"), pod, false)
            .await
            .expect("create");
        objects::value(&kv).expect("value")
    }

    fn report(pod: &Value, status: Value, terminated: bool) -> StatusReport {
        StatusReport {
            uid: objects::str_at(pod, "/metadata/uid")
                .expect("uid")
                .to_owned(),
            namespace: "default".into(),
            name: objects::str_at(pod, "/metadata/name")
                .expect("name")
                .to_owned(),
            status,
            terminated,
        }
    }

    #[tokio::test]
    async fn registration_creates_then_updates_and_heartbeats_renew() {
        let (_dir, registry) = registry().await;
        let nodes = resource("nodes").expect("nodes");
        register(&registry, &registration("n1"))
            .await
            .expect("register");
        let node = registry.get(nodes, None, "n1").await.expect("node");
        assert_eq!(node["status"]["capacity"]["cpu"], "2");
        assert_eq!(node["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n1");

        // A user's label survives the node registering again.
        let patch = json!({"metadata": {"labels": {"team": "blue"}}});
        registry
            .patch(
                nodes,
                None,
                "n1",
                PatchType::Merge,
                &patch,
                WriteMode::default(),
            )
            .await
            .expect("label");
        let mut bigger = registration("n1");
        bigger.capacity.insert("cpu".into(), "4".into());
        register(&registry, &bigger).await.expect("re-register");
        let node = registry.get(nodes, None, "n1").await.expect("node");
        assert_eq!(node["status"]["capacity"]["cpu"], "4");
        assert_eq!(node["metadata"]["labels"]["team"], "blue");

        heartbeat_write(&registry, &bigger, &[])
            .await
            .expect("heartbeat");
        let node = registry.get(nodes, None, "n1").await.expect("node");
        assert_eq!(node["status"]["conditions"][0]["status"], "True");

        // A deleted Node comes back with the next heartbeat.
        registry
            .delete(nodes, None, "n1", &DeleteOptions::default())
            .await
            .expect("delete");
        heartbeat_write(&registry, &bigger, &[])
            .await
            .expect("heartbeat");
        assert!(registry.get(nodes, None, "n1").await.is_ok());
    }

    #[tokio::test]
    async fn status_reports_reach_only_this_nodes_pods() {
        let (_dir, registry) = registry().await;
        let pods_info = resource("pods").expect("pods");
        let mine = create_pod(&registry, "mine", "n1").await;
        let theirs = create_pod(&registry, "theirs", "n2").await;

        status_write(
            &registry,
            "n1",
            &report(&mine, json!({"phase": "Running"}), false),
        )
        .await
        .expect("written");
        let stored = registry
            .get(pods_info, Some("default"), "mine")
            .await
            .expect("pod");
        assert_eq!(stored["status"]["phase"], "Running");
        assert_eq!(
            stored["spec"]["containers"][0]["image"], "nginx",
            "spec untouched"
        );

        let refused = status_write(
            &registry,
            "n1",
            &report(&theirs, json!({"phase": "Failed"}), false),
        )
        .await;
        assert!(
            matches!(refused, Err(PodError::NotBoundHere { .. })),
            "{refused:?}"
        );
        let stored = registry
            .get(pods_info, Some("default"), "theirs")
            .await
            .expect("pod");
        assert_eq!(stored["status"]["phase"], "Pending");

        let mut stale = report(&mine, json!({"phase": "Failed"}), false);
        stale.uid = "an-older-pod".into();
        status_write(&registry, "n1", &stale)
            .await
            .expect("dropped");
        let stored = registry
            .get(pods_info, Some("default"), "mine")
            .await
            .expect("pod");
        assert_eq!(stored["status"]["phase"], "Running");
    }

    #[tokio::test]
    async fn a_terminated_report_completes_a_graceful_deletion() {
        let (_dir, registry) = registry().await;
        let pods_info = resource("pods").expect("pods");
        register(&registry, &registration("n1"))
            .await
            .expect("register");
        let pod = create_pod(&registry, "web", "n1").await;
        registry
            .delete(pods_info, Some("default"), "web", &DeleteOptions::default())
            .await
            .expect("delete");
        let deleting = registry
            .get(pods_info, Some("default"), "web")
            .await
            .expect("pod");
        assert!(deleting.pointer("/metadata/deletionTimestamp").is_some());

        status_write(
            &registry,
            "n1",
            &report(&pod, json!({"phase": "Succeeded"}), true),
        )
        .await
        .expect("written");
        assert!(matches!(
            registry.get(pods_info, Some("default"), "web").await,
            Err(ApiError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_session_opens_with_the_nodes_pods() {
        let (_dir, registry) = registry().await;
        create_pod(&registry, "mine", "n1").await;
        create_pod(&registry, "theirs", "n2").await;
        let session = Session::open(registry.clone(), registration("n1"))
            .await
            .expect("open");
        let names: Vec<&str> = session
            .snapshot
            .pods
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["mine"]);
        assert!(registry
            .get(resource("nodes").expect("nodes"), None, "n1")
            .await
            .is_ok());
    }
}
