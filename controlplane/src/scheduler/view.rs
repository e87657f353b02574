//! What the scheduler needs to know about nodes and pods, extracted once
//! from the API objects so that filtering and scoring never re-parse
//! quantities or walk containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity;

/// Taint keys the scheduler reasons about.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Requests that the scheduler counts. Other resources (ephemeral storage,
/// extended resources) are not accounted for yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
}

impl Resources {
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(other.milli_cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(other.milli_cpu),
            memory: self.memory.saturating_sub(other.memory),
        }
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

/// A port a pod takes on its node's network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    /// `0.0.0.0` when the pod did not name an address.
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods asking for these ports could not share a node:
    /// the same protocol and port, on the same address or on all of them.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `spec.taints`, plus the taints its Ready condition implies.
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    /// Allocatable `pods`.
    pub allowed_pods: i64,
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        value: None,
        time_added: None,
    }
}

fn quantity_or_zero(
    map: Option<&BTreeMap<String, Quantity>>,
    resource: &str,
    parse: fn(&str) -> Result<i64, quantity::QuantityError>,
) -> i64 {
    // A node whose allocatable cannot be read is trusted with nothing.
    map.and_then(|map| map.get(resource))
        .and_then(|q| parse(&q.0).ok())
        .unwrap_or(0)
        .max(0)
}

impl NodeView {
    pub fn from_node(node: &Node) -> NodeView {
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let mut taints = spec.taints.unwrap_or_default();
        // The node lifecycle controller taints a node by its Ready condition
        // (Kubernetes' TaintNodesByCondition); the taints are implied here
        // as well, so that a node is filtered the moment its condition
        // changes and a pod that tolerates them may still go there.
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == "Ready")
            .map(|condition| condition.status.as_str());
        let implied = match ready {
            Some("True") => None,
            Some("False") => Some(TAINT_NOT_READY),
            Some(_) => Some(TAINT_UNREACHABLE),
            // A node that never reported is not ready yet, as kubelet marks
            // a node at registration.
            None => Some(TAINT_NOT_READY),
        };
        if let Some(key) = implied {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                taints.push(taint(key, "NoSchedule"));
            }
        }
        let allocatable = status.allocatable.as_ref();
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            unschedulable: spec.unschedulable.unwrap_or(false),
            taints,
            allocatable: Resources {
                milli_cpu: quantity_or_zero(allocatable, "cpu", quantity::milli_value),
                memory: quantity_or_zero(allocatable, "memory", quantity::value),
            },
            allowed_pods: quantity_or_zero(allocatable, "pods", quantity::value),
        }
    }
}

/// What a pod bound to a node takes from it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodOnNode {
    pub node: String,
    pub requests: Resources,
    /// Requests with the scoring defaults filled in (see
    /// [`PodRequest::nonzero`]).
    pub nonzero: Resources,
    pub host_ports: Vec<HostPort>,
    /// The uid of the pod's controller, for spreading.
    pub controller_uid: Option<String>,
}

impl PodOnNode {
    /// The pod's footprint, if it is bound and not finished (a pod that
    /// succeeded or failed holds nothing any more).
    pub fn from_pod(pod: &Pod) -> Option<PodOnNode> {
        let node = pod
            .spec
            .as_ref()?
            .node_name
            .clone()
            .filter(|n| !n.is_empty())?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            return None;
        }
        let request = PodRequest::from_pod(pod);
        Some(PodOnNode {
            node,
            requests: request.requests,
            nonzero: request.nonzero,
            host_ports: request.host_ports,
            controller_uid: request.controller_uid,
        })
    }
}

/// The cpu and memory a container is assumed to use when scoring, if it
/// requests none (Kubernetes' `DefaultMilliCPURequest` and
/// `DefaultMemoryRequest`): otherwise pods without requests would all pile
/// onto one node.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Everything about a pod that placing it depends on.
#[derive(Debug, Clone, Default)]
pub struct PodRequest {
    pub requests: Resources,
    pub nonzero: Resources,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: the node must match one term. `None` when
    /// the pod has no such affinity.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    pub preferred_terms: Vec<(i32, NodeSelectorTerm)>,
    pub tolerations: Vec<Toleration>,
    pub controller_uid: Option<String>,
    /// `preemptionPolicy: Never`.
    pub never_preempts: bool,
}

/// A container's request for a resource: its request, else its limit
/// (the API server defaults a missing request to the limit).
fn container_request(container: &Container, resource: &str) -> Option<i64> {
    let resources = container.resources.as_ref()?;
    let quantity = resources
        .requests
        .as_ref()
        .and_then(|r| r.get(resource))
        .or_else(|| resources.limits.as_ref().and_then(|l| l.get(resource)))?;
    let parsed = if resource == "cpu" {
        quantity::milli_value(&quantity.0)
    } else {
        quantity::value(&quantity.0)
    };
    // Validation rejects malformed and negative requests; one that got
    // past it counts as nothing rather than as a negative amount.
    parsed.ok().map(|v| v.max(0))
}

fn container_resources(container: &Container) -> (Resources, Resources) {
    let cpu = container_request(container, "cpu");
    let memory = container_request(container, "memory");
    (
        Resources {
            milli_cpu: cpu.unwrap_or(0),
            memory: memory.unwrap_or(0),
        },
        Resources {
            milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU),
            memory: memory.unwrap_or(DEFAULT_MEMORY),
        },
    )
}

impl PodRequest {
    pub fn from_pod(pod: &Pod) -> PodRequest {
        let Some(spec) = pod.spec.as_ref() else {
            return PodRequest::default();
        };
        // Containers run together, so their requests add up; init
        // containers run one at a time before them, so the pod needs the
        // larger of the sum and any one init container.
        let mut requests = Resources::default();
        let mut nonzero = Resources::default();
        for container in &spec.containers {
            let (r, n) = container_resources(container);
            requests = requests.plus(r);
            nonzero = nonzero.plus(n);
        }
        for container in spec.init_containers.iter().flatten() {
            let (r, n) = container_resources(container);
            requests = requests.max(r);
            nonzero = nonzero.max(n);
        }
        if let Some(overhead) = spec.overhead.as_ref() {
            let extra = Resources {
                milli_cpu: quantity_or_zero(Some(overhead), "cpu", quantity::milli_value),
                memory: quantity_or_zero(Some(overhead), "memory", quantity::value),
            };
            requests = requests.plus(extra);
            nonzero = nonzero.plus(extra);
        }

        let host_network = spec.host_network.unwrap_or(false);
        let mut host_ports = Vec::new();
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for port in container.ports.iter().flatten() {
                // On the host network a container port is a host port.
                let host_port = match port.host_port {
                    Some(p) if p > 0 => p,
                    _ if host_network => port.container_port,
                    _ => continue,
                };
                host_ports.push(HostPort {
                    protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ip: port
                        .host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    port: host_port,
                });
            }
        }

        let node_affinity = spec
            .affinity
            .as_ref()
            .and_then(|affinity| affinity.node_affinity.as_ref());
        let required_terms = node_affinity
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|selector| selector.node_selector_terms.clone());
        let preferred_terms = node_affinity
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|terms| {
                terms
                    .iter()
                    .map(|t| (t.weight, t.preference.clone()))
                    .collect()
            })
            .unwrap_or_default();

        PodRequest {
            requests,
            nonzero,
            host_ports,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_terms,
            preferred_terms,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            controller_uid: controller_uid(pod),
            never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
        }
    }
}

/// The uid in the pod's `controller: true` owner reference.
pub fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true))
        .map(|reference| reference.uid.clone())
}
