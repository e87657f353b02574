//! The Node object an agent's `Hello` and heartbeats produce.
//!
//! `Hello` carries a [`proto::NodeInfo`]; it becomes a validated
//! [`NodeRegistration`] at the edge, and everything after that is pure:
//! [`new_node`] for a first registration, [`label_patch`] and
//! [`registered_status`] for a node that exists (so labels and spec set by
//! users survive a re-registration), [`heartbeat_status`] for each
//! heartbeat. The service writes the results through the registry.
//!
//! The node's end of the overlay (its underlay address and VTEP MAC) is
//! stored as flannel stores it, in annotations ([`overlay_annotation_patch`]),
//! so tools that read flannel's annotations read ours; its pod subnet is
//! `spec.podCIDR`/`spec.podCIDRs` ([`pod_cidr_patch`]). Both are written as
//! merge patches that touch nothing else.
//!
//! Conditions follow kubelet's rules: every report renews
//! `lastHeartbeatTime`; `lastTransitionTime` moves only when the status
//! changes; conditions nobody reported are left as they were.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};
use skiff_apimachinery::names;
use skiff_proto::node::v1 as proto;

pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// flannel's annotations for a node's overlay endpoint; the contract with
/// anything that reads a flannel cluster's Nodes.
pub const PUBLIC_IP_ANNOTATION: &str = "flannel.alpha.coreos.com/public-ip";
pub const BACKEND_TYPE_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-data";
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";

const ADDRESS_TYPES: &[&str] = &[
    "InternalIP",
    "ExternalIP",
    "Hostname",
    "InternalDNS",
    "ExternalDNS",
];
const CONDITION_STATUSES: &[&str] = &["True", "False", "Unknown"];
/// Longest free-text field accepted from an agent; more is a broken agent.
const MAX_TEXT: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeInfoError {
    #[error("Hello carries no node information")]
    Missing,
    #[error("invalid node name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("invalid node address {address:?} of type {kind:?}: the type must be one of InternalIP, ExternalIP, Hostname, InternalDNS, ExternalDNS and the address non-empty")]
    Address { kind: String, address: String },
    #[error("invalid resource {resource:?} = {quantity:?} in {field}: {reason}")]
    Resource {
        field: &'static str,
        resource: String,
        quantity: String,
        reason: String,
    },
    #[error("{field} is required")]
    Required { field: &'static str },
    #[error("{field} is longer than {MAX_TEXT} bytes")]
    TooLong { field: &'static str },
    #[error("invalid condition {kind:?} with status {status:?}: the type must be non-empty and the status True, False or Unknown")]
    Condition { kind: String, status: String },
    #[error("invalid overlay endpoint: public_ip {public_ip:?} must be an IPv4 address and vtep_mac {vtep_mac:?} a MAC address such as aa:bb:cc:dd:ee:ff (both set, or both empty)")]
    Overlay { public_ip: String, vtep_mac: String },
}

/// A node name must be a DNS-1123 subdomain, as Kubernetes requires of Node
/// names; the error lists every problem Kubernetes would.
pub fn validate_node_name(name: &str) -> Result<(), NodeInfoError> {
    let problems = names::is_dns1123_subdomain(name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(NodeInfoError::Name {
            name: name.to_owned(),
            reason: problems.join("; "),
        })
    }
}

/// A node as its agent describes it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    pub name: String,
    /// (type, address) in the agent's order.
    pub addresses: Vec<(String, String)>,
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
    pub container_runtime_version: String,
    pub os_image: String,
    pub kernel_version: String,
    pub operating_system: String,
    pub architecture: String,
    pub agent_version: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    /// Set once the agent has created its VXLAN device.
    pub overlay: Option<OverlayEndpoint>,
}

/// A node's end of the overlay: where other nodes send its VXLAN packets,
/// and its VXLAN device's MAC address (lower-case, colon-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayEndpoint {
    pub public_ip: Ipv4Addr,
    pub vtep_mac: String,
}

/// A MAC address in canonical form (lower-case, colon-separated), or `None`.
fn canonical_mac(text: &str) -> Option<String> {
    let octets: Vec<&str> = text.split(':').collect();
    (octets.len() == 6
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.chars().all(|c| c.is_ascii_hexdigit())))
    .then(|| text.to_ascii_lowercase())
}

impl OverlayEndpoint {
    /// Reads an endpoint from the wire: `None` when both fields are empty
    /// (the agent has no device yet).
    pub fn from_proto(
        endpoint: Option<proto::OverlayEndpoint>,
    ) -> Result<Option<OverlayEndpoint>, NodeInfoError> {
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        if endpoint.public_ip.is_empty() && endpoint.vtep_mac.is_empty() {
            return Ok(None);
        }
        let public_ip = endpoint.public_ip.parse::<Ipv4Addr>().ok();
        let vtep_mac = canonical_mac(&endpoint.vtep_mac);
        match (public_ip, vtep_mac) {
            (Some(public_ip), Some(vtep_mac)) => Ok(Some(OverlayEndpoint {
                public_ip,
                vtep_mac,
            })),
            _ => Err(NodeInfoError::Overlay {
                public_ip: endpoint.public_ip,
                vtep_mac: endpoint.vtep_mac,
            }),
        }
    }

    /// Reads the endpoint back from a stored Node's annotations; `None`
    /// when they are missing or unreadable.
    pub fn of_node(node: &Value) -> Option<OverlayEndpoint> {
        let annotations = node.pointer("/metadata/annotations")?;
        let public_ip = annotations
            .get(PUBLIC_IP_ANNOTATION)?
            .as_str()?
            .parse()
            .ok()?;
        let data: Value =
            serde_json::from_str(annotations.get(BACKEND_DATA_ANNOTATION)?.as_str()?).ok()?;
        let vtep_mac = canonical_mac(data.get("VtepMAC")?.as_str()?)?;
        Some(OverlayEndpoint {
            public_ip,
            vtep_mac,
        })
    }
}

/// A merge patch that records `endpoint` in flannel's annotations, or
/// `None` when the Node already says exactly that.
pub fn overlay_annotation_patch(
    existing: &Value,
    endpoint: &OverlayEndpoint,
    vni: u32,
) -> Option<Value> {
    // flannel writes backend-data as compact JSON with VNI first.
    let backend_data = format!("{{\"VNI\":{vni},\"VtepMAC\":\"{}\"}}", endpoint.vtep_mac);
    let wanted = [
        (PUBLIC_IP_ANNOTATION, endpoint.public_ip.to_string()),
        (BACKEND_TYPE_ANNOTATION, "vxlan".to_owned()),
        (BACKEND_DATA_ANNOTATION, backend_data),
    ];
    let current = existing.pointer("/metadata/annotations");
    let changed: Map<String, Value> = wanted
        .into_iter()
        .filter(|(key, value)| {
            current
                .and_then(|annotations| annotations.get(*key))
                .and_then(Value::as_str)
                != Some(value.as_str())
        })
        .map(|(key, value)| (key.to_owned(), Value::String(value)))
        .collect();
    (!changed.is_empty()).then(|| json!({"metadata": {"annotations": changed}}))
}

/// The pod subnet a stored Node records, if it records a readable one.
pub fn pod_cidr_of(node: &Value) -> Option<Ipv4Net> {
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .and_then(|text| text.parse::<Ipv4Net>().ok())
}

/// A merge patch that sets the Node's pod subnet, or `None` when it is
/// already set to it.
pub fn pod_cidr_patch(existing: &Value, subnet: Ipv4Net) -> Option<Value> {
    let text = subnet.to_string();
    let current = existing.pointer("/spec/podCIDR").and_then(Value::as_str);
    let current_list = existing.pointer("/spec/podCIDRs");
    (current != Some(text.as_str()) || current_list != Some(&json!([text])))
        .then(|| json!({"spec": {"podCIDR": text, "podCIDRs": [text]}}))
}

/// `NetworkUnavailable=False` once the node has a subnet and an overlay
/// endpoint, worded as flannel words it.
pub fn network_ready_condition() -> ConditionReport {
    ConditionReport {
        kind: NETWORK_UNAVAILABLE.into(),
        status: "False".into(),
        reason: "SkiffVxlanReady".into(),
        message: "skiff-agent's VXLAN overlay is running on this node".into(),
    }
}

/// `NetworkUnavailable=True` for a node that could not get a subnet.
pub fn no_subnet_condition(cluster: Ipv4Net, mask: u8) -> ConditionReport {
    ConditionReport {
        kind: NETWORK_UNAVAILABLE.into(),
        status: "True".into(),
        reason: "NoSubnetAvailable".into(),
        message: format!(
            "no /{mask} pod subnet is free in the cluster CIDR {cluster}; delete unused Nodes or restart the control plane with a larger --cluster-cidr or --node-cidr-mask-size"
        ),
    }
}

/// The Node status with `reports` merged into its conditions (nothing
/// else renewed), or `None` when every reported condition already has
/// that status, reason and message.
pub fn condition_status(previous: &Value, reports: &[ConditionReport], now: &str) -> Option<Value> {
    let conditions = conditions_of(Some(previous));
    let unchanged = reports.iter().all(|report| {
        conditions.iter().any(|condition| {
            condition.get("type").and_then(Value::as_str) == Some(report.kind.as_str())
                && condition.get("status").and_then(Value::as_str) == Some(report.status.as_str())
                && condition.get("reason").and_then(Value::as_str) == Some(report.reason.as_str())
                && condition.get("message").and_then(Value::as_str) == Some(report.message.as_str())
        })
    });
    if unchanged {
        return None;
    }
    let mut status = previous.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["conditions"] = Value::Array(merge_conditions(&conditions, reports, now));
    Some(status)
}

/// Whether `text` is a Kubernetes quantity: a decimal number with an
/// optional binary (Ki..Ei), decimal (m, k..E) or exponent suffix.
pub fn is_quantity(text: &str) -> bool {
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exponent| exponent.strip_prefix(['+', '-']).unwrap_or(exponent))
        .is_some_and(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

fn resources(
    field: &'static str,
    map: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, NodeInfoError> {
    let mut out = BTreeMap::new();
    for (resource, quantity) in map {
        let invalid = |reason: String| NodeInfoError::Resource {
            field,
            resource: resource.clone(),
            quantity: quantity.clone(),
            reason,
        };
        let problems = names::is_qualified_name(&resource);
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        if !is_quantity(&quantity) {
            return Err(invalid("not a quantity (e.g. 2, 500m, 16Gi)".into()));
        }
        out.insert(resource, quantity);
    }
    Ok(out)
}

fn text(field: &'static str, value: String) -> Result<String, NodeInfoError> {
    if value.len() > MAX_TEXT {
        Err(NodeInfoError::TooLong { field })
    } else {
        Ok(value)
    }
}

fn required(field: &'static str, value: String) -> Result<String, NodeInfoError> {
    if value.trim().is_empty() {
        Err(NodeInfoError::Required { field })
    } else {
        text(field, value)
    }
}

impl TryFrom<proto::NodeInfo> for NodeRegistration {
    type Error = NodeInfoError;

    fn try_from(info: proto::NodeInfo) -> Result<NodeRegistration, NodeInfoError> {
        validate_node_name(&info.name)?;
        let addresses = info
            .addresses
            .into_iter()
            .map(|address| {
                if ADDRESS_TYPES.contains(&address.r#type.as_str())
                    && !address.address.is_empty()
                    && address.address.len() <= names::DNS1123_SUBDOMAIN_MAX_LENGTH
                {
                    Ok((address.r#type, address.address))
                } else {
                    Err(NodeInfoError::Address {
                        kind: address.r#type,
                        address: address.address,
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeRegistration {
            name: info.name,
            addresses,
            capacity: resources("capacity", info.capacity)?,
            allocatable: resources("allocatable", info.allocatable)?,
            container_runtime_version: text(
                "container_runtime_version",
                info.container_runtime_version,
            )?,
            os_image: text("os_image", info.os_image)?,
            kernel_version: text("kernel_version", info.kernel_version)?,
            operating_system: required("operating_system", info.operating_system)?,
            architecture: required("architecture", info.architecture)?,
            agent_version: required("agent_version", info.agent_version)?,
            machine_id: text("machine_id", info.machine_id)?,
            boot_id: text("boot_id", info.boot_id)?,
            system_uuid: text("system_uuid", info.system_uuid)?,
            overlay: OverlayEndpoint::from_proto(info.overlay)?,
        })
    }
}

/// One condition as an agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionReport {
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl ConditionReport {
    /// What an agent that is up reports, and what registration records.
    pub fn ready() -> ConditionReport {
        ConditionReport {
            kind: "Ready".into(),
            status: "True".into(),
            reason: "KubeletReady".into(),
            message: "skiff-agent is posting ready status".into(),
        }
    }
}

impl TryFrom<proto::NodeCondition> for ConditionReport {
    type Error = NodeInfoError;

    fn try_from(condition: proto::NodeCondition) -> Result<ConditionReport, NodeInfoError> {
        if condition.r#type.is_empty()
            || condition.r#type.len() > names::QUALIFIED_NAME_MAX_LENGTH
            || !CONDITION_STATUSES.contains(&condition.status.as_str())
        {
            return Err(NodeInfoError::Condition {
                kind: condition.r#type,
                status: condition.status,
            });
        }
        Ok(ConditionReport {
            kind: condition.r#type,
            status: condition.status,
            reason: text("condition reason", condition.reason)?,
            message: text("condition message", condition.message)?,
        })
    }
}

/// The labels registration owns.
pub fn labels(registration: &NodeRegistration) -> BTreeMap<String, String> {
    let hostname = registration
        .addresses
        .iter()
        .find(|(kind, _)| kind == "Hostname")
        .map(|(_, address)| address.clone())
        .filter(|hostname| names::is_valid_label_value(hostname).is_empty())
        .unwrap_or_else(|| registration.name.clone());
    BTreeMap::from([
        (HOSTNAME_LABEL.to_owned(), hostname),
        (OS_LABEL.to_owned(), registration.operating_system.clone()),
        (ARCH_LABEL.to_owned(), registration.architecture.clone()),
    ])
}

/// Applies condition reports to the previous conditions (see the module
/// documentation for the rules).
pub fn merge_conditions(previous: &[Value], reports: &[ConditionReport], now: &str) -> Vec<Value> {
    let mut conditions: Vec<Value> = previous.to_vec();
    for report in reports {
        let existing = conditions
            .iter()
            .position(|c| c.get("type").and_then(Value::as_str) == Some(report.kind.as_str()));
        let transition = match existing.map(|index| &conditions[index]) {
            Some(old) if old.get("status").and_then(Value::as_str) == Some(&report.status) => old
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or_else(|| json!(now)),
            _ => json!(now),
        };
        let condition = json!({
            "type": report.kind,
            "status": report.status,
            "reason": report.reason,
            "message": report.message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition,
        });
        match existing {
            Some(index) => conditions[index] = condition,
            None => conditions.push(condition),
        }
    }
    conditions
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn conditions_of(status: Option<&Value>) -> Vec<Value> {
    status
        .and_then(|status| status.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The Node status after a registration: the fields the agent describes
/// replaced, Ready renewed, everything else of `previous` kept.
pub fn registered_status(
    registration: &NodeRegistration,
    previous: Option<&Value>,
    now: &str,
) -> Value {
    let mut status = match previous {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let addresses: Vec<Value> = registration
        .addresses
        .iter()
        .map(|(kind, address)| json!({"type": kind, "address": address}))
        .collect();
    status.insert("addresses".into(), Value::Array(addresses));
    status.insert("capacity".into(), string_map(&registration.capacity));
    status.insert("allocatable".into(), string_map(&registration.allocatable));
    status.insert(
        "nodeInfo".into(),
        json!({
            "machineID": registration.machine_id,
            "systemUUID": registration.system_uuid,
            "bootID": registration.boot_id,
            "kernelVersion": registration.kernel_version,
            "osImage": registration.os_image,
            "containerRuntimeVersion": registration.container_runtime_version,
            "kubeletVersion": registration.agent_version,
            // The agent is kube-proxy too, but Kubernetes deprecated the
            // field and leaves it empty.
            "kubeProxyVersion": "",
            "operatingSystem": registration.operating_system,
            "architecture": registration.architecture,
        }),
    );
    status.insert(
        "conditions".into(),
        Value::Array(merge_conditions(
            &conditions_of(previous),
            &[ConditionReport::ready()],
            now,
        )),
    );
    Value::Object(status)
}

/// A Node registering for the first time.
pub fn new_node(registration: &NodeRegistration, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": registration.name,
            "labels": string_map(&labels(registration)),
        },
        "spec": {},
        "status": registered_status(registration, None, now),
    })
}

/// A merge patch that sets the registration's labels on an existing Node,
/// or `None` when they are already right. Other labels are the users'.
pub fn label_patch(existing: &Value, registration: &NodeRegistration) -> Option<Value> {
    let current = existing.pointer("/metadata/labels");
    let changed: Map<String, Value> = labels(registration)
        .into_iter()
        .filter(|(key, value)| {
            current
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
                != Some(value.as_str())
        })
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    (!changed.is_empty()).then(|| json!({"metadata": {"labels": changed}}))
}

/// The Node status after a heartbeat. An empty report renews Ready.
pub fn heartbeat_status(previous: &Value, reports: &[ConditionReport], now: &str) -> Value {
    let ready = [ConditionReport::ready()];
    let reports = if reports.is_empty() {
        &ready[..]
    } else {
        reports
    };
    let mut status = previous.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["conditions"] = Value::Array(merge_conditions(
        &conditions_of(Some(previous)),
        reports,
        now,
    ));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> proto::NodeInfo {
        proto::NodeInfo {
            name: "worker-1".into(),
            addresses: vec![
                proto::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: "10.0.0.5".into(),
                },
                proto::NodeAddress {
                    r#type: "Hostname".into(),
                    address: "worker-1".into(),
                },
            ],
            capacity: [("cpu", "2"), ("memory", "4030364Ki"), ("pods", "110")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            allocatable: [("cpu", "1500m"), ("memory", "3Gi"), ("pods", "110")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            container_runtime_version: String::new(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            operating_system: "linux".into(),
            architecture: "amd64".into(),
            agent_version: "v1.33.0-skiff.0.1.0".into(),
            machine_id: "0123456789abcdef".into(),
            boot_id: "b0075a1e".into(),
            system_uuid: String::new(),
            overlay: None,
        }
    }

    fn registration() -> NodeRegistration {
        NodeRegistration::try_from(info()).expect("valid")
    }

    #[test]
    fn quantities_are_recognised() {
        for good in [
            "0",
            "2",
            "1500m",
            "0.5",
            "16Gi",
            "4030364Ki",
            "1e3",
            "1E+3",
            "12k",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "two", "1.2.3", "16GB", "1e", "-1", "1 Gi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn node_info_is_validated_at_the_edge() {
        let mut bad_name = info();
        bad_name.name = "Worker_1".into();
        assert!(matches!(
            NodeRegistration::try_from(bad_name),
            Err(NodeInfoError::Name { .. })
        ));

        let mut bad_address = info();
        bad_address.addresses[0].r#type = "Internal".into();
        assert!(matches!(
            NodeRegistration::try_from(bad_address),
            Err(NodeInfoError::Address { .. })
        ));

        let mut bad_quantity = info();
        bad_quantity.capacity.insert("memory".into(), "lots".into());
        let error = NodeRegistration::try_from(bad_quantity).expect_err("quantity");
        assert!(
            error
                .to_string()
                .contains("\"memory\" = \"lots\" in capacity"),
            "{error}"
        );

        let mut no_arch = info();
        no_arch.architecture.clear();
        assert_eq!(
            NodeRegistration::try_from(no_arch),
            Err(NodeInfoError::Required {
                field: "architecture"
            })
        );
    }

    #[test]
    fn a_new_node_carries_labels_status_and_a_ready_condition() {
        let node = new_node(&registration(), "2025-01-01T00:00:00Z");
        assert_eq!(node["metadata"]["name"], "worker-1");
        assert_eq!(
            node["metadata"]["labels"],
            json!({"kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"})
        );
        let status = &node["status"];
        assert_eq!(status["capacity"]["cpu"], "2");
        assert_eq!(status["allocatable"]["cpu"], "1500m");
        assert_eq!(
            status["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.5"})
        );
        assert_eq!(status["nodeInfo"]["kubeletVersion"], "v1.33.0-skiff.0.1.0");
        assert_eq!(
            status["nodeInfo"]["osImage"],
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(status["nodeInfo"]["bootID"], "b0075a1e");
        assert_eq!(
            status["conditions"],
            json!([{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "skiff-agent is posting ready status",
                "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }])
        );
        // The object decodes as a Kubernetes Node (nodeInfo is complete).
        serde_json::from_value::<k8s_openapi::api::core::v1::Node>(node).expect("a Node");
    }

    #[test]
    fn re_registration_keeps_user_labels_and_unchanged_transitions() {
        let first = new_node(&registration(), "2025-01-01T00:00:00Z");
        let mut existing = first.clone();
        existing["metadata"]["labels"]["team"] = json!("blue");
        existing["status"]["images"] = json!([{"names": ["pause"]}]);
        assert_eq!(label_patch(&existing, &registration()), None);

        let mut moved = registration();
        moved.architecture = "arm64".into();
        assert_eq!(
            label_patch(&existing, &moved),
            Some(json!({"metadata": {"labels": {"kubernetes.io/arch": "arm64"}}}))
        );

        let status = registered_status(&moved, existing.get("status"), "2025-01-01T00:05:00Z");
        assert_eq!(status["nodeInfo"]["architecture"], "arm64");
        assert_eq!(
            status["images"],
            json!([{"names": ["pause"]}]),
            "unowned fields survive"
        );
        assert_eq!(
            status["conditions"][0]["lastHeartbeatTime"],
            "2025-01-01T00:05:00Z"
        );
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"],
            "2025-01-01T00:00:00Z"
        );
    }

    #[test]
    fn heartbeats_renew_and_transition_conditions() {
        let node = new_node(&registration(), "2025-01-01T00:00:00Z");
        let renewed = heartbeat_status(&node["status"], &[], "2025-01-01T00:00:10Z");
        assert_eq!(
            renewed["conditions"][0]["lastHeartbeatTime"],
            "2025-01-01T00:00:10Z"
        );
        assert_eq!(
            renewed["conditions"][0]["lastTransitionTime"],
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(renewed["capacity"], node["status"]["capacity"]);

        let pressure = ConditionReport {
            kind: "MemoryPressure".into(),
            status: "False".into(),
            reason: "KubeletHasSufficientMemory".into(),
            message: String::new(),
        };
        let not_ready = ConditionReport {
            status: "False".into(),
            reason: "RuntimeDown".into(),
            ..ConditionReport::ready()
        };
        let changed = heartbeat_status(&renewed, &[not_ready, pressure], "2025-01-01T00:00:20Z");
        let conditions = changed["conditions"].as_array().expect("array");
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["status"], "False");
        assert_eq!(conditions[0]["lastTransitionTime"], "2025-01-01T00:00:20Z");
        assert_eq!(conditions[1]["type"], "MemoryPressure");
    }

    #[test]
    fn condition_reports_are_validated() {
        let report = |kind: &str, status: &str| proto::NodeCondition {
            r#type: kind.into(),
            status: status.into(),
            reason: String::new(),
            message: String::new(),
        };
        assert!(ConditionReport::try_from(report("Ready", "True")).is_ok());
        assert!(ConditionReport::try_from(report("Ready", "yes")).is_err());
        assert!(ConditionReport::try_from(report("", "True")).is_err());
    }
}
