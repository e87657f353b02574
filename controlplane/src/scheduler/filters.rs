//! Filters: can this pod go on this node, and if not, why.
//!
//! The checks run in the order of Kubernetes' default filter plugins
//! (NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit) and stop at the first that fails, so a node is
//! reported once, under the same reason Kubernetes gives. The reasons are
//! Kubernetes' own wording, because users search for them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

use super::view::{HostPort, NodeView, PodRequest, Resources, TAINT_UNSCHEDULABLE};

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_CPU: &str = "Insufficient cpu";
pub const REASON_MEMORY: &str = "Insufficient memory";

/// Why one node was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    pub reasons: Vec<String>,
    /// Whether evicting pods from the node could make room (Kubernetes'
    /// `Unschedulable`, as opposed to `UnschedulableAndUnresolvable`).
    pub resolvable: bool,
}

impl NodeFailure {
    fn unresolvable(reason: impl Into<String>) -> NodeFailure {
        NodeFailure {
            reasons: vec![reason.into()],
            resolvable: false,
        }
    }
}

/// What is already committed on a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub requested: Resources,
    pub nonzero: Resources,
    pub pods: i64,
    pub host_ports: Vec<HostPort>,
    /// Pods per controller uid, for spreading.
    pub by_controller: BTreeMap<String, u32>,
}

/// Whether one toleration tolerates one taint (Kubernetes'
/// `Toleration.ToleratesTaint`): an empty effect or key matches any, and
/// `Exists` ignores the value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first NoSchedule or NoExecute taint the pod does not tolerate.
pub fn untolerated_taint<'a>(tolerations: &[Toleration], taints: &'a [Taint]) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerated(tolerations, taint)
    })
}

/// How many PreferNoSchedule taints the pod does not tolerate.
pub fn untolerated_preferences(tolerations: &[Toleration], taints: &[Taint]) -> usize {
    // Only tolerations that could apply to PreferNoSchedule count.
    let relevant: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    taints
        .iter()
        .filter(|taint| taint.effect == "PreferNoSchedule")
        .filter(|taint| !relevant.iter().any(|t| tolerates(t, taint)))
        .count()
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt and Lt compare integers; a value that is not one never
        // matches, and validation allows exactly one value.
        "Gt" | "Lt" => {
            let (Some(label), [bound]) = (value, values) else {
                return false;
            };
            match (label.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(label), Ok(bound)) if requirement.operator == "Gt" => label > bound,
                (Ok(label), Ok(bound)) => label < bound,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node matches one term: every expression on its labels and
/// every field requirement (only `metadata.name` exists) on it. A term
/// that says nothing matches nothing, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeView) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            r.key == "metadata.name" && requirement_matches(r, value)
        })
}

/// `nodeSelector` and required node affinity.
pub fn affinity_matches(pod: &PodRequest, node: &NodeView) -> bool {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(key, value)| node.labels.get(key) == Some(value));
    selector_ok
        && pod
            .required_terms
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|term| term_matches(term, node)))
}

/// Runs the filters for one node. `None` means the pod fits.
pub fn check(pod: &PodRequest, node: &NodeView, usage: &Usage) -> Option<NodeFailure> {
    if node.unschedulable {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if !tolerated(&pod.tolerations, &cordon) {
            return Some(NodeFailure::unresolvable(REASON_UNSCHEDULABLE));
        }
    }
    if let Some(taint) = untolerated_taint(&pod.tolerations, &node.taints) {
        return Some(NodeFailure::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or("")
        )));
    }
    if !affinity_matches(pod, node) {
        return Some(NodeFailure::unresolvable(REASON_AFFINITY));
    }
    if pod.host_ports.iter().any(|wanted| {
        usage
            .host_ports
            .iter()
            .any(|taken| wanted.conflicts_with(taken))
    }) {
        return Some(NodeFailure {
            reasons: vec![REASON_PORTS.into()],
            resolvable: true,
        });
    }
    fits(pod, node, usage)
}

/// NodeResourcesFit: the pod count, then cpu and memory. Every shortfall is
/// reported; one that even an empty node could not cover is unresolvable.
fn fits(pod: &PodRequest, node: &NodeView, usage: &Usage) -> Option<NodeFailure> {
    let mut reasons = Vec::new();
    let mut resolvable = true;
    if usage.pods + 1 > node.allowed_pods {
        reasons.push(REASON_TOO_MANY_PODS.to_owned());
    }
    let wanted = pod.requests;
    let free = node.allocatable.minus(usage.requested);
    if wanted.milli_cpu > 0 && wanted.milli_cpu > free.milli_cpu {
        reasons.push(REASON_CPU.to_owned());
        resolvable &= wanted.milli_cpu <= node.allocatable.milli_cpu;
    }
    if wanted.memory > 0 && wanted.memory > free.memory {
        reasons.push(REASON_MEMORY.to_owned());
        resolvable &= wanted.memory <= node.allocatable.memory;
    }
    (!reasons.is_empty()).then_some(NodeFailure {
        reasons,
        resolvable,
    })
}
