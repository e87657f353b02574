//! The pod network's part of a node's registration: its subnet lease, its
//! overlay endpoint, and the `NetworkUnavailable` condition.
//!
//! Mechanism. One [`NodeNetwork`] per control plane holds the cluster
//! network settings and the [`SubnetAllocator`]. It is rebuilt from the
//! stored Nodes' `spec.podCIDR` at start ([`NodeNetwork::load`]) and kept in
//! step with the store by [`NodeNetwork::follow_nodes`], which releases the
//! subnet of a deleted Node and records leases written by anyone else.
//!
//! Ordering rules:
//! - At registration the lease is taken in memory first, then written to
//!   `spec.podCIDR`; the Welcome carries it only once it is stored, so a
//!   node never uses a subnet the store does not record.
//! - On exhaustion the Node gets `NetworkUnavailable=True`
//!   (`NoSubnetAvailable`) and the Welcome an empty subnet; the node keeps
//!   running pods that need no pod network.
//! - The overlay endpoint is written to flannel's annotations when the
//!   agent reports it (Hello or heartbeat), and only then does the Node get
//!   `NetworkUnavailable=False`: before it, no peer can reach the node.
//!
//! The decisions (which subnet, which patch, which condition) are pure
//! functions in [`crate::subnets`] and [`super::node`]; this module only
//! reads and writes through the registry.

use std::sync::Arc;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use skiff_proto::node::v1 as proto;
use skiff_store::{EventType, StoreError};
use tokio::sync::Mutex;

use super::node::{self, pod_cidr_of, ConditionReport, OverlayEndpoint};
use crate::api::errors::ApiError;
use crate::api::objects::{self, now_rfc3339, str_at};
use crate::api::registry::{PatchType, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};
use crate::subnets::{SubnetAllocator, SubnetError};

/// Optimistic-concurrency retries for one condition write.
const WRITE_RETRIES: usize = 5;

/// Cluster-wide network settings every node is given in its Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNetworkSettings {
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub node_cidr_mask_size: u8,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    pub cluster_domain: String,
}

impl ClusterNetworkSettings {
    /// Flannel's and Kubernetes' defaults.
    pub fn defaults() -> ClusterNetworkSettings {
        ClusterNetworkSettings {
            cluster_cidr: Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16)
                .unwrap_or_default(),
            service_cidr: Ipv4Net::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 12)
                .unwrap_or_default(),
            node_cidr_mask_size: 24,
            vxlan_vni: 1,
            vxlan_port: 8472,
            cluster_domain: "cluster.local".into(),
        }
    }

    pub fn to_proto(&self) -> proto::ClusterNetwork {
        proto::ClusterNetwork {
            cluster_cidr: self.cluster_cidr.to_string(),
            service_cidr: self.service_cidr.to_string(),
            vxlan_vni: self.vxlan_vni,
            vxlan_port: u32::from(self.vxlan_port),
            cluster_domain: self.cluster_domain.clone(),
            // Each agent picks a node-local DNS address until the control
            // plane runs a cluster DNS service.
            cluster_dns: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    #[error(transparent)]
    Stored(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn nodes_resource() -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes are not served".into()))
}

/// The control plane's pod-network state: settings and subnet leases.
pub struct NodeNetwork {
    settings: ClusterNetworkSettings,
    subnets: Mutex<SubnetAllocator>,
}

impl NodeNetwork {
    /// Rebuilds the leases from the stored Nodes; returns the revision they
    /// were read at, from which [`NodeNetwork::follow_nodes`] continues.
    pub async fn load(
        registry: &Registry,
        settings: ClusterNetworkSettings,
    ) -> Result<(Arc<NodeNetwork>, i64), NetworkError> {
        let mut subnets =
            SubnetAllocator::new(settings.cluster_cidr, settings.node_cidr_mask_size)?;
        let listed = registry
            .store
            .range(&nodes_resource()?.key_prefix(None))
            .await?;
        for kv in &listed.items {
            let stored = objects::value(kv)?;
            restore_lease(&mut subnets, &stored);
        }
        Ok((
            Arc::new(NodeNetwork {
                settings,
                subnets: Mutex::new(subnets),
            }),
            listed.revision,
        ))
    }

    pub fn settings(&self) -> &ClusterNetworkSettings {
        &self.settings
    }

    /// Keeps the leases in step with the Nodes until the process ends: a
    /// deleted Node's subnet is freed, a subnet written by anyone else is
    /// recorded.
    pub async fn follow_nodes(self: Arc<NodeNetwork>, registry: Arc<Registry>, revision: i64) {
        let mut revision = revision;
        loop {
            let prefix = match nodes_resource() {
                Ok(info) => info.key_prefix(None),
                Err(error) => {
                    tracing::error!(%error, "cannot follow Nodes for subnet leases");
                    return;
                }
            };
            let mut watcher = match registry.store.watch(&prefix, revision) {
                Ok(watcher) => watcher,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch Nodes for subnet leases; reloading them");
                    match self.reload(&registry).await {
                        Ok(now) => revision = now,
                        Err(error) => tracing::error!(%error, "cannot reload subnet leases"),
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let event = match watcher.next().await {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, "the Node watch for subnet leases ended; reloading them");
                        match self.reload(&registry).await {
                            Ok(now) => revision = now,
                            Err(error) => tracing::error!(%error, "cannot reload subnet leases"),
                        }
                        break;
                    }
                };
                revision = event.revision();
                let Ok(stored) = objects::value(&event.kv) else {
                    continue;
                };
                let mut subnets = self.subnets.lock().await;
                match event.event_type {
                    EventType::Delete => {
                        if let Some(name) = str_at(&stored, "/metadata/name") {
                            if let Some(freed) = subnets.release(name) {
                                tracing::info!(node = %name, subnet = %freed, "Node deleted: its pod subnet is free");
                            }
                        }
                    }
                    EventType::Put => restore_lease(&mut subnets, &stored),
                }
            }
        }
    }

    /// Rebuilds the leases from scratch after the watch was lost.
    async fn reload(&self, registry: &Registry) -> Result<i64, NetworkError> {
        let listed = registry
            .store
            .range(&nodes_resource()?.key_prefix(None))
            .await?;
        let mut fresh = SubnetAllocator::new(
            self.settings.cluster_cidr,
            self.settings.node_cidr_mask_size,
        )?;
        for kv in &listed.items {
            restore_lease(&mut fresh, &objects::value(kv)?);
        }
        *self.subnets.lock().await = fresh;
        Ok(listed.revision)
    }

    /// Gives the registered Node `name` its subnet and writes it to
    /// `spec.podCIDR`. `None` when no subnet is free: the Node then says so
    /// in its `NetworkUnavailable` condition.
    pub async fn lease_subnet(
        &self,
        registry: &Registry,
        name: &str,
    ) -> Result<Option<Ipv4Net>, NetworkError> {
        let nodes = nodes_resource()?;
        let leased = self.subnets.lock().await.lease(name);
        let subnet = match leased {
            Ok(subnet) => subnet,
            Err(error @ SubnetError::Exhausted { cluster, mask }) => {
                tracing::error!(node = %name, %error, "node registered without a pod subnet: pods on it get no pod network");
                write_condition(registry, name, &node::no_subnet_condition(cluster, mask)).await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        let existing = registry.get(nodes, None, name).await?;
        if let Some(patch) = node::pod_cidr_patch(&existing, subnet) {
            let written = registry
                .patch(
                    nodes,
                    None,
                    name,
                    PatchType::Merge,
                    &patch,
                    WriteMode::default(),
                )
                .await;
            if let Err(error) = written {
                if matches!(error, ApiError::NotFound { .. }) {
                    self.subnets.lock().await.release(name);
                }
                return Err(error.into());
            }
            tracing::info!(node = %name, %subnet, "leased a pod subnet");
        }
        Ok(Some(subnet))
    }

    /// Records the node's overlay endpoint on its Node, and marks its
    /// network available when it also has a subnet.
    pub async fn record_overlay(
        &self,
        registry: &Registry,
        name: &str,
        endpoint: &OverlayEndpoint,
    ) -> Result<(), NetworkError> {
        let nodes = nodes_resource()?;
        let existing = registry.get(nodes, None, name).await?;
        if let Some(patch) =
            node::overlay_annotation_patch(&existing, endpoint, self.settings.vxlan_vni)
        {
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
            tracing::info!(node = %name, public_ip = %endpoint.public_ip, vtep_mac = %endpoint.vtep_mac, "recorded the node's overlay endpoint");
        }
        if pod_cidr_of(&existing).is_some() {
            write_condition(registry, name, &node::network_ready_condition()).await?;
        }
        Ok(())
    }
}

impl NodeNetwork {
    /// The pod-network part of a registration: the node's subnet, and the
    /// overlay endpoint its Hello carries, if any.
    pub async fn register(
        &self,
        registry: &Registry,
        registration: &node::NodeRegistration,
    ) -> Result<Option<Ipv4Net>, NetworkError> {
        let subnet = self.lease_subnet(registry, &registration.name).await?;
        if let Some(endpoint) = &registration.overlay {
            self.record_overlay(registry, &registration.name, endpoint)
                .await?;
        }
        Ok(subnet)
    }

    /// The pod-network part of a heartbeat: a Node deleted and registered
    /// again gets its subnet back (or a new one), and a reported endpoint
    /// is recorded. Returns the node's subnet now.
    pub async fn heartbeat(
        &self,
        registry: &Registry,
        name: &str,
        overlay: Option<&OverlayEndpoint>,
    ) -> Result<Option<Ipv4Net>, NetworkError> {
        let subnet = self.lease_subnet(registry, name).await?;
        if let Some(endpoint) = overlay {
            self.record_overlay(registry, name, endpoint).await?;
        }
        Ok(subnet)
    }
}

/// Records the lease a stored Node carries, if any; a lease that does not
/// fit is logged and left for the node's next registration to replace.
fn restore_lease(subnets: &mut SubnetAllocator, stored: &Value) {
    let (Some(name), Some(subnet)) = (str_at(stored, "/metadata/name"), pod_cidr_of(stored)) else {
        return;
    };
    if subnets.lease_of(name) == Some(subnet) {
        return;
    }
    if let Err(error) = subnets.restore(name, subnet) {
        tracing::warn!(node = %name, %error, "ignoring a Node's pod subnet; the node gets a fresh one when it registers");
    }
}

/// Sets one Node condition, unless it already reads so.
async fn write_condition(
    registry: &Registry,
    name: &str,
    condition: &ConditionReport,
) -> Result<(), ApiError> {
    let nodes = nodes_resource()?;
    let mut last = None;
    for _ in 0..WRITE_RETRIES {
        let current = registry.get(nodes, None, name).await?;
        let previous = current.get("status").cloned().unwrap_or(Value::Null);
        let Some(status) =
            node::condition_status(&previous, std::slice::from_ref(condition), &now_rfc3339())
        else {
            return Ok(());
        };
        let body = json!({
            "metadata": {
                "name": name,
                "resourceVersion": str_at(&current, "/metadata/resourceVersion"),
            },
            "status": status,
        });
        let mode = WriteMode {
            status_only: true,
            dry_run: false,
        };
        match registry.update(nodes, None, name, body, mode).await {
            Err(error @ ApiError::Conflict { .. }) => last = Some(error),
            other => return other.map(|_| ()),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::conflict(nodes, name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::{Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations};
    use crate::api::registry::DeleteOptions;
    use skiff_store::{RedbStore, RedbStoreOptions};

    async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default())
            .expect("store");
        let allocations = ServiceAllocations {
            cluster_ips: ClusterIpAllocator::new(Cidr::parse("10.96.0.0/12").expect("cidr")),
            node_ports: NodePortAllocator::new(30000, 32767),
        };
        (dir, Arc::new(Registry::new(Arc::new(store), allocations)))
    }

    async fn create_node(registry: &Registry, name: &str, spec: Value) {
        let node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec});
        registry
            .create(nodes_resource().expect("nodes"), None, node, false)
            .await
            .expect("create");
    }

    fn small_network() -> ClusterNetworkSettings {
        ClusterNetworkSettings {
            cluster_cidr: "10.244.0.0/23".parse().expect("cidr"),
            ..ClusterNetworkSettings::defaults()
        }
    }

    #[tokio::test]
    async fn leases_are_written_kept_and_reported_when_exhausted() {
        let (_dir, registry) = registry().await;
        create_node(&registry, "old", json!({"podCIDR": "10.244.1.0/24"})).await;
        create_node(&registry, "a", json!({})).await;
        create_node(&registry, "b", json!({})).await;
        let (network, _) = NodeNetwork::load(&registry, small_network())
            .await
            .expect("load");
        let nodes = nodes_resource().expect("nodes");

        let leased = network.lease_subnet(&registry, "a").await.expect("lease");
        assert_eq!(
            leased.map(|s| s.to_string()).as_deref(),
            Some("10.244.0.0/24")
        );
        let a = registry.get(nodes, None, "a").await.expect("a");
        assert_eq!(a["spec"]["podCIDR"], "10.244.0.0/24");
        assert_eq!(a["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
        assert_eq!(
            network
                .lease_subnet(&registry, "old")
                .await
                .expect("lease")
                .map(|s| s.to_string())
                .as_deref(),
            Some("10.244.1.0/24"),
            "a stored lease is kept"
        );

        assert_eq!(
            network.lease_subnet(&registry, "b").await.expect("lease"),
            None
        );
        let b = registry.get(nodes, None, "b").await.expect("b");
        let condition = &b["status"]["conditions"][0];
        assert_eq!(condition["type"], "NetworkUnavailable");
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "NoSubnetAvailable");
        assert!(condition["message"]
            .as_str()
            .unwrap_or("")
            .contains("10.244.0.0/23"));
        assert!(b["spec"].get("podCIDR").is_none());
    }

    #[tokio::test]
    async fn overlay_endpoints_become_annotations_and_a_ready_network() {
        let (_dir, registry) = registry().await;
        create_node(&registry, "a", json!({})).await;
        let (network, _) = NodeNetwork::load(&registry, ClusterNetworkSettings::defaults())
            .await
            .expect("load");
        network.lease_subnet(&registry, "a").await.expect("lease");
        let endpoint = OverlayEndpoint {
            public_ip: "192.168.50.2".parse().expect("ip"),
            vtep_mac: "aa:bb:cc:dd:ee:ff".into(),
        };
        network
            .record_overlay(&registry, "a", &endpoint)
            .await
            .expect("record");
        let a = registry
            .get(nodes_resource().expect("nodes"), None, "a")
            .await
            .expect("a");
        let annotations = &a["metadata"]["annotations"];
        assert_eq!(
            annotations["flannel.alpha.coreos.com/public-ip"],
            "192.168.50.2"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-type"],
            "vxlan"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-data"],
            r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#
        );
        assert_eq!(a["status"]["conditions"][0]["type"], "NetworkUnavailable");
        assert_eq!(a["status"]["conditions"][0]["status"], "False");
        assert_eq!(a["status"]["conditions"][0]["reason"], "SkiffVxlanReady");
        assert_eq!(OverlayEndpoint::of_node(&a), Some(endpoint));
    }

    #[tokio::test]
    async fn a_deleted_node_frees_its_subnet() {
        let (_dir, registry) = registry().await;
        create_node(&registry, "a", json!({})).await;
        create_node(&registry, "b", json!({})).await;
        create_node(&registry, "c", json!({})).await;
        let (network, revision) = NodeNetwork::load(&registry, small_network())
            .await
            .expect("load");
        tokio::spawn(network.clone().follow_nodes(registry.clone(), revision));
        network.lease_subnet(&registry, "a").await.expect("lease");
        network.lease_subnet(&registry, "b").await.expect("lease");
        assert_eq!(
            network.lease_subnet(&registry, "c").await.expect("lease"),
            None
        );
        registry
            .delete(
                nodes_resource().expect("nodes"),
                None,
                "a",
                &DeleteOptions::default(),
            )
            .await
            .expect("delete");
        let mut freed = None;
        for _ in 0..100 {
            freed = network.lease_subnet(&registry, "c").await.expect("lease");
            if freed.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            freed.map(|s| s.to_string()).as_deref(),
            Some("10.244.0.0/24")
        );
    }
}
