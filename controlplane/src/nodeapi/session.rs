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

use super::network::NodeNetwork;
use super::node::{self, ConditionReport, NodeRegistration, OverlayEndpoint};
use super::peers::{self, Peer};
use super::pods::{
    self, NamespaceConfigs, NodePods, PodChange, PodError, PodEventReport, ReportCheck,
    StatusReport,
};
use super::resolve::ConfigKind;
use super::service::ControlStream;
use super::service_env;
use super::services::SessionServices;
use super::{HEARTBEAT_INTERVAL, PROTOCOL_VERSION};
use crate::api::errors::ApiError;
use crate::api::objects::{self, now_rfc3339};
use crate::api::registry::{DeleteOptions, PatchType, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};
use crate::controllers::events::{
    EventRecord, EventRecorder, EventType as EventKind, InvolvedObject, ReportedEvent,
};

/// The component a node's events are recorded under, as kubelet's are.
const NODE_EVENT_COMPONENT: &str = "kubelet";

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
    /// One watch over the core resources, so pod, ConfigMap and Secret
    /// events arrive in one revision order and every Delta's revision is
    /// higher than the one before it.
    watcher: Watcher,
    /// The pods as sent, and the configuration they were resolved against.
    node_pods: NodePods,
    /// Every Service with its endpoints, as sent; also the source of the
    /// pods' service link variables.
    services: SessionServices,
    events: EventRecorder,
    network: NodeSession,
}

/// The pod-network part of a session: the node's subnet as its Welcome
/// said, and the peers of its Snapshot. Peer deltas come from Node events
/// on the session's one watch, so their revisions interleave correctly
/// with the pods'.
struct NodeSession {
    settings: Arc<NodeNetwork>,
    pod_cidr: Option<ipnet::Ipv4Net>,
    peers: Vec<Peer>,
}

impl NodeSession {
    async fn open(
        network: Arc<NodeNetwork>,
        registry: &Registry,
        registration: &NodeRegistration,
    ) -> Result<NodeSession, Status> {
        let pod_cidr = network
            .register(registry, registration)
            .await
            .map_err(internal)?;
        Ok(NodeSession {
            settings: network,
            pod_cidr,
            peers: Vec::new(),
        })
    }

    /// Records a heartbeat's overlay endpoint. A subnet that changed under
    /// the node (its Node was deleted and its lease given away) ends the
    /// session, so the agent reconnects and is told the new one.
    async fn heartbeat(
        &self,
        registry: &Registry,
        node: &str,
        overlay: Option<&OverlayEndpoint>,
    ) -> Result<(), Status> {
        match self.settings.heartbeat(registry, node, overlay).await {
            Ok(subnet) if subnet != self.pod_cidr => Err(Status::unavailable(format!(
                "this node's pod subnet changed from {} to {}; reconnect",
                self.pod_cidr
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into()),
                subnet
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into()),
            ))),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%node, %error, "cannot record the node's network state");
                Ok(())
            }
        }
    }
}

impl Session {
    pub async fn open(
        registry: Arc<Registry>,
        registration: NodeRegistration,
        network: Arc<NodeNetwork>,
    ) -> Result<Session, Status> {
        register(&registry, &registration).await.map_err(internal)?;
        let mut network = NodeSession::open(network, &registry, &registration).await?;
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
        let mut snapshot =
            pods::snapshot(&listed, &registration.name, revision).map_err(internal)?;
        let watcher = registry
            .store
            .watch(&core_prefix().map_err(internal)?, revision)
            .map_err(internal)?;
        // Listed after the watch's start revision: a Node change in
        // between is both in the list and on the watch, which only repeats
        // an upsert; none is missed.
        network.peers = peers::list_peers(&registry, &registration.name)
            .await
            .map_err(internal)?;
        let services = SessionServices::load(&registry).await.map_err(internal)?;
        let created = pods_created(&listed);
        let mut node_pods = NodePods::default();
        for pod in &snapshot.pods {
            if let Some(namespace) = node_pods.namespace_to_load(pod) {
                let configs = load_configs(&registry, &namespace)
                    .await
                    .map_err(internal)?;
                node_pods.load_namespace(&namespace, configs);
            }
            let wire = node_pods.send_with_service_env(pod.clone(), |pod| {
                service_env::env_source(
                    &pod.namespace,
                    &pod.spec,
                    created.get(&pod.uid).map(String::as_str),
                    services.table().services(),
                )
            });
            snapshot.resolved.insert(pod.uid.clone(), wire);
        }
        Ok(Session {
            events: EventRecorder::new(registry.clone(), NODE_EVENT_COMPONENT),
            registry,
            registration,
            snapshot,
            watcher,
            node_pods,
            services,
            network,
        })
    }

    /// Starts serving the stream; returns what the agent receives.
    pub fn run(self, inbound: Streaming<proto::AgentMessage>) -> ControlStream {
        let (sender, receiver) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = proto::ControlMessage {
            message: Some(proto::control_message::Message::Welcome(proto::Welcome {
                protocol_version: PROTOCOL_VERSION,
                pod_cidr: self
                    .network
                    .pod_cidr
                    .map(|subnet| subnet.to_string())
                    .unwrap_or_default(),
                heartbeat_interval_seconds: HEARTBEAT_INTERVAL.as_secs() as u32,
                network: Some(self.network.settings.settings().to_proto()),
            })),
        };
        tracing::info!(node = %self.registration.name, pods = self.snapshot.pods.len(), revision = self.snapshot.revision, "sending the node its snapshot");
        let mut snapshot: proto::Snapshot = self.snapshot.clone().into();
        snapshot.peers = self.network.peers.iter().cloned().map(Into::into).collect();
        snapshot.services = self.services.table().entries();
        let snapshot = proto::ControlMessage {
            message: Some(proto::control_message::Message::Snapshot(snapshot)),
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
                    match self.delta_for_event(&event).await {
                        Ok(Some(delta)) => {
                            let message = proto::ControlMessage {
                                message: Some(proto::control_message::Message::Delta(delta)),
                            };
                            if sender.send(Ok(message)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Ok(None) => {}
                        // One unreadable object must not cut the node off.
                        Err(error) => tracing::warn!(node = %self.registration.name, key = %event.kv.key, %error, "skipping a store event"),
                    }
                }
                _ = sender.closed() => return Ok(()),
            }
        }
    }

    /// The Delta (if any) one store event makes for this node: a pod
    /// change, or the pods a ConfigMap or Secret change must be re-sent.
    async fn delta_for_event(
        &mut self,
        event: &skiff_store::Event,
    ) -> Result<Option<proto::Delta>, PodError> {
        let key = event.kv.key.as_str();
        let config_kind = [ConfigKind::ConfigMap, ConfigKind::Secret]
            .into_iter()
            .find(|kind| key.starts_with(&format!("/registry/core/{}/", kind.plural())));
        if let Some(kind) = config_kind {
            let upserted = self.node_pods.config_event(kind, event)?;
            return Ok((!upserted.is_empty()).then(|| proto::Delta {
                revision: event.revision(),
                upserted,
                ..Default::default()
            }));
        }
        if self.services.concerns(key) {
            return Ok(self.services.delta_for_event(event)?);
        }
        if key.starts_with(&resource("nodes")?.key_prefix(None)) {
            let change = peers::peer_change_for_event(event, &self.registration.name)?;
            return Ok(change.map(Into::into));
        }
        if !key.starts_with(&resource("pods")?.key_prefix(None)) {
            return Ok(None);
        }
        let Some(delta) = pods::change_for_event(event, &self.registration.name)? else {
            return Ok(None);
        };
        let (upserted, removed) = match delta.change {
            PodChange::Upsert(pod) => {
                if let Some(namespace) = self.node_pods.namespace_to_load(&pod) {
                    let configs = load_configs(&self.registry, &namespace).await?;
                    self.node_pods.load_namespace(&namespace, configs);
                }
                let services = &self.services;
                let wire = self.node_pods.send_with_service_env(pod, |pod| {
                    let object = objects::value(&event.kv).ok();
                    let created = object
                        .as_ref()
                        .and_then(|o| objects::str_at(o, "/metadata/creationTimestamp"));
                    service_env::env_source(
                        &pod.namespace,
                        &pod.spec,
                        created,
                        services.table().services(),
                    )
                });
                (vec![wire], Vec::new())
            }
            PodChange::Remove(uid) => {
                self.node_pods.forget(&uid);
                (Vec::new(), vec![uid])
            }
        };
        Ok(Some(proto::Delta {
            revision: delta.revision,
            upserted,
            removed,
            ..Default::default()
        }))
    }

    /// Records an event the node observed, if it is about a pod the node
    /// runs; events are best effort, so failures are logged and dropped.
    async fn record_event(&self, event: PodEventReport) {
        let node = &self.registration.name;
        let pod = match resource("pods") {
            Ok(info) => self
                .registry
                .get(info, Some(&event.namespace), &event.name)
                .await
                .ok(),
            Err(_) => None,
        };
        if !pods::event_is_about_own_pod(pod.as_ref(), &event, node) {
            tracing::warn!(%node, pod = %format!("{}/{}", event.namespace, event.name), uid = %event.uid, reason = %event.reason, "dropping an event about a pod this node does not run");
            return;
        }
        let reported = ReportedEvent {
            record: EventRecord {
                involved: InvolvedObject {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: event.namespace,
                    name: event.name,
                    uid: event.uid,
                },
                event_type: if event.warning {
                    EventKind::Warning
                } else {
                    EventKind::Normal
                },
                reason: event.reason,
                message: event.message,
            },
            field_path: event.field_path,
            component: NODE_EVENT_COMPONENT.into(),
            host: node.clone(),
            count: event.count,
            first_timestamp: event.first_timestamp,
            last_timestamp: event.last_timestamp,
        };
        let reason = reported.record.reason.clone();
        if let Err(error) = self.events.record_reported(reported).await {
            tracing::warn!(%node, %error, %reason, "cannot record a node's event");
        }
    }

    async fn handle(&mut self, message: proto::AgentMessage) -> Result<(), Status> {
        use proto::agent_message::Message;
        let node = &self.registration.name;
        match message.message {
            Some(Message::Events(report)) => {
                let events = report
                    .events
                    .into_iter()
                    .map(PodEventReport::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| Status::invalid_argument(error.to_string()))?;
                for event in events {
                    self.record_event(event).await;
                }
                Ok(())
            }
            Some(Message::Hello(_)) => Err(Status::invalid_argument(
                "Hello may only be sent once, as the first message of a Connect stream",
            )),
            Some(Message::Heartbeat(heartbeat)) => {
                let overlay =
                    OverlayEndpoint::from_proto(heartbeat.overlay.clone()).map_err(|error| {
                        Status::invalid_argument(format!("invalid Heartbeat: {error}"))
                    })?;
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
                self.network
                    .heartbeat(&self.registry, node, overlay.as_ref())
                    .await
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

/// The storage prefix shared by pods, ConfigMaps and Secrets.
fn core_prefix() -> Result<String, ApiError> {
    let prefixes = ["pods", "configmaps", "secrets", "nodes"]
        .into_iter()
        .map(|plural| resource(plural).map(|info| info.key_prefix(None)))
        .collect::<Result<Vec<_>, _>>()?;
    let first = prefixes[0].as_str();
    let common = prefixes.iter().fold(first.len(), |len, prefix| {
        first
            .bytes()
            .zip(prefix.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count()
    });
    Ok(first[..common].to_owned())
}

/// Each listed pod's `creationTimestamp`, by UID, for its service link
/// variables.
fn pods_created(listed: &[KeyValue]) -> std::collections::HashMap<String, String> {
    listed
        .iter()
        .filter_map(|kv| objects::value(kv).ok())
        .filter_map(|pod| {
            Some((
                objects::str_at(&pod, "/metadata/uid")?.to_owned(),
                objects::str_at(&pod, "/metadata/creationTimestamp")?.to_owned(),
            ))
        })
        .collect()
}

/// Reads the ConfigMaps and Secrets of a namespace, for resolving pods.
async fn load_configs(registry: &Registry, namespace: &str) -> Result<NamespaceConfigs, ApiError> {
    let everything = LabelSelector::everything();
    let no_fields = fields::FieldSelector::everything();
    let mut lists = Vec::new();
    for kind in [ConfigKind::ConfigMap, ConfigKind::Secret] {
        let (items, revision) = registry
            .list(
                resource(kind.plural())?,
                Some(namespace),
                &everything,
                &no_fields,
            )
            .await?;
        lists.push((kind, revision, items));
    }
    Ok(NamespaceConfigs::from_listed(lists))
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
    async fn config_changes_resend_the_pods_using_them_and_node_events_are_recorded() {
        let (_dir, registry) = registry().await;
        let config_maps = resource("configmaps").expect("configmaps");
        registry
            .create(
                config_maps,
                Some("default"),
                json!({"metadata": {"name": "app"}, "data": {"mode": "fast"}}),
                false,
            )
            .await
            .expect("configmap");
        let pod = json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx",
                "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}}]}],
                "volumes": [{"name": "cfg", "configMap": {"name": "app"}}]},
        });
        let kv = registry
            .create(resource("pods").expect("pods"), Some("default"), pod, false)
            .await
            .expect("pod");
        let web = objects::value(&kv).expect("value");
        let uid = objects::str_at(&web, "/metadata/uid")
            .expect("uid")
            .to_owned();
        create_pod(&registry, "plain", "n1").await;
        let (network, _) = NodeNetwork::load(
            &registry,
            super::super::network::ClusterNetworkSettings::defaults(),
        )
        .await
        .expect("network");
        let mut session = Session::open(registry.clone(), registration("n1"), network)
            .await
            .expect("open");
        let sent = &session.snapshot.resolved[&uid];
        assert_eq!(sent.volume_contents[0].files["mode"], b"fast");
        assert!(
            sent.spec_json.contains(r#""value":"fast""#),
            "{}",
            sent.spec_json
        );

        registry
            .patch(
                config_maps,
                Some("default"),
                "app",
                PatchType::Merge,
                &json!({"data": {"mode": "slow"}}),
                WriteMode::default(),
            )
            .await
            .expect("patch");
        let delta = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let event = session.watcher.next().await.expect("event");
                if let Some(delta) = session.delta_for_event(&event).await.expect("delta") {
                    if !delta.upserted.is_empty() {
                        return delta;
                    }
                }
            }
        })
        .await
        .expect("a delta for the ConfigMap change");
        assert_eq!(delta.upserted.len(), 1, "only the pod that uses it");
        assert_eq!(delta.upserted[0].uid, uid);
        assert_eq!(delta.upserted[0].volume_contents[0].files["mode"], b"slow");

        let event = |uid: &str, count| PodEventReport {
            uid: uid.to_owned(),
            namespace: "default".into(),
            name: "web".into(),
            field_path: "spec.containers{c}".into(),
            warning: true,
            reason: "BackOff".into(),
            message: "Back-off restarting failed container c".into(),
            count,
            first_timestamp: "2025-01-01T00:00:00Z".into(),
            last_timestamp: "2025-01-01T00:00:10Z".into(),
        };
        session.record_event(event(&uid, 2)).await;
        session.record_event(event(&uid, 3)).await;
        session.record_event(event("another-pod", 1)).await;
        let (events, _) = registry
            .list(
                resource("events").expect("events"),
                Some("default"),
                &LabelSelector::everything(),
                &fields::FieldSelector::everything(),
            )
            .await
            .expect("events");
        let events: Vec<Value> = events
            .iter()
            .map(|kv| objects::value(kv).expect("event"))
            .filter(|e| e["reason"] == "BackOff")
            .collect();
        assert_eq!(events.len(), 1, "folded, and the stale uid dropped");
        assert_eq!(events[0]["count"], 5);
        assert_eq!(
            events[0]["involvedObject"]["fieldPath"],
            "spec.containers{c}"
        );
        assert_eq!(events[0]["source"]["component"], "kubelet");
        assert_eq!(events[0]["source"]["host"], "n1");
        assert_eq!(events[0]["type"], "Warning");
    }

    #[tokio::test]
    async fn a_session_opens_with_the_nodes_pods() {
        let (_dir, registry) = registry().await;
        create_pod(&registry, "mine", "n1").await;
        create_pod(&registry, "theirs", "n2").await;
        let (network, _) = NodeNetwork::load(
            &registry,
            super::super::network::ClusterNetworkSettings::defaults(),
        )
        .await
        .expect("network");
        let session = Session::open(registry.clone(), registration("n1"), network)
            .await
            .expect("open");
        assert_eq!(
            session.network.pod_cidr.map(|s| s.to_string()).as_deref(),
            Some("10.244.0.0/24")
        );
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
