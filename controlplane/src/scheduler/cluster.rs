//! The scheduler's picture of the cluster: the nodes, and what the pods
//! bound to each take from it. It is updated one event at a time, so that
//! placing a pod costs one pass over the nodes however many pods exist.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use super::filters::{self, Usage};
use super::fit_error::FitError;
use super::scoring::{self, Candidate};
use super::view::{NodeView, PodOnNode, PodRequest};

#[derive(Debug, Default)]
pub struct Cluster {
    /// By name, so that iteration (and so tie-breaking) is in name order.
    nodes: BTreeMap<String, NodeView>,
    /// By node name. Kept for nodes not (or no longer) known too: a pod can
    /// be seen before its node, and its footprint must count when the node
    /// appears.
    usage: HashMap<String, Usage>,
}

impl Cluster {
    pub fn new(nodes: &[NodeView], placed: &[PodOnNode]) -> Cluster {
        let mut cluster = Cluster::default();
        for node in nodes {
            cluster.upsert_node(node.clone());
        }
        for pod in placed {
            cluster.add_pod(pod);
        }
        cluster
    }

    pub fn upsert_node(&mut self, node: NodeView) {
        self.nodes.insert(node.name.clone(), node);
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn usage(&self, node: &str) -> Option<&Usage> {
        self.usage.get(node)
    }

    pub fn add_pod(&mut self, pod: &PodOnNode) {
        let usage = self.usage.entry(pod.node.clone()).or_default();
        usage.requested = usage.requested.plus(pod.requests);
        usage.nonzero = usage.nonzero.plus(pod.nonzero);
        usage.pods += 1;
        usage.host_ports.extend(pod.host_ports.iter().cloned());
        if let Some(uid) = &pod.controller_uid {
            *usage.by_controller.entry(uid.clone()).or_default() += 1;
        }
    }

    /// Undoes [`add_pod`](Self::add_pod) for the same footprint.
    pub fn remove_pod(&mut self, pod: &PodOnNode) {
        let Some(usage) = self.usage.get_mut(&pod.node) else {
            return;
        };
        usage.requested = usage.requested.minus(pod.requests);
        usage.nonzero = usage.nonzero.minus(pod.nonzero);
        usage.pods -= 1;
        for port in &pod.host_ports {
            if let Some(position) = usage.host_ports.iter().position(|p| p == port) {
                usage.host_ports.swap_remove(position);
            }
        }
        if let Some(uid) = &pod.controller_uid {
            if let Some(count) = usage.by_controller.get_mut(uid) {
                *count -= 1;
                if *count == 0 {
                    usage.by_controller.remove(uid);
                }
            }
        }
        if usage.pods <= 0 {
            self.usage.remove(&pod.node);
        }
    }

    /// The node `pod` should be bound to, or why there is none.
    pub fn schedule(&self, pod: &Pod) -> Result<String, FitError> {
        if self.nodes.is_empty() {
            return Err(FitError::NoNodes);
        }
        let request = PodRequest::from_pod(pod);
        let empty = Usage::default();
        let mut candidates = Vec::new();
        let mut failures = BTreeMap::new();
        for (name, node) in &self.nodes {
            let usage = self.usage.get(name).unwrap_or(&empty);
            match filters::check(&request, node, usage) {
                None => candidates.push(Candidate { node, usage }),
                Some(failure) => {
                    failures.insert(name.clone(), failure);
                }
            }
        }
        match scoring::best(&request, &candidates) {
            Some(node) => Ok(node.name.clone()),
            None => Err(FitError::NoFit {
                failures,
                never_preempts: request.never_preempts,
            }),
        }
    }
}
