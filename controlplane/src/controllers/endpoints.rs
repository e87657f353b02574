//! The Endpoints controller: for every Service with a selector, an
//! `Endpoints` object of the same name listing the pods behind it; and for
//! every Service, `discovery.k8s.io/v1` EndpointSlices mirroring its
//! Endpoints (kubectl 1.31 and later read slices in `describe service`).
//!
//! Mechanism. Four watches (Services, Pods, Endpoints, EndpointSlices)
//! feed a cache ([`Caches`]) and a [`WorkQueue`] of service keys. The
//! handlers only record what changed and which Services care:
//!
//! - a Service added, changed or deleted queues its own key;
//! - a pod queues every Service of its namespace whose selector matches
//!   its labels before or after the change;
//! - an Endpoints object queues the Service of the same name, and an
//!   EndpointSlice the Service its `kubernetes.io/service-name` label
//!   names, so that a hand edit is undone (or, for a Service without a
//!   selector, mirrored).
//!
//! [`plan`] then decides, from the cache alone, what to write for one
//! Service; [`EndpointsController::reconcile`] applies it through the
//! registry. The decision follows Kubernetes' Endpoints controller:
//!
//! - a pod is listed when it has an IP, is not terminal (Succeeded or
//!   Failed) and is not terminating (unless `publishNotReadyAddresses`);
//!   a pod with the Ready condition True goes under `addresses`, any other
//!   under `notReadyAddresses` (or `addresses` when
//!   `publishNotReadyAddresses`);
//! - per service port, a named `targetPort` is looked up in the pod's
//!   containers' ports (same name and protocol); a pod without it is left
//!   out for that port only. A numeric one is taken as is;
//! - the addresses are repacked as Kubernetes' `RepackSubsets` does: each
//!   port maps to the set of addresses offering it, and ports with the
//!   same address set share one subset. Addresses are sorted by IP and pod
//!   UID and ports by name, port and protocol; subsets are sorted by their
//!   addresses (Kubernetes sorts them by a hash, an order nobody relies
//!   on);
//! - a Service without a selector is left to its users; a deleted Service
//!   has its Endpoints deleted;
//! - the `kubernetes` Service of `default` lists the API server's advertise
//!   address and port ([`ApiEndpoint`]), as the API server keeps it.
//!
//! Slices mirror the Endpoints (the computed one, or the one users keep
//! for a Service without a selector): one slice per subset, 100 endpoints
//! at most per slice, named `<service>-<hash of its ports and position>`
//! (the `kubernetes` Service's is named `kubernetes`, as the API server
//! names it). Terminating pods are in neither, as in the Endpoints.
//!
//! Ordering rules:
//! - The Endpoints is written before the slices, and slices are created
//!   and updated before surplus ones are deleted, so a reader of slices
//!   never sees a Service with fewer endpoints than both states had.
//! - Nothing is written when the stored content already matches: a
//!   reconcile caused by the controller's own write is a no-op.
//! - A write that conflicts means the cache is behind; the watch brings
//!   the newer object and queues the Service again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use skiff_apimachinery::labels::LabelSelector;
use skiff_store::{Event, EventType as StoreEventType, StoreError};
use tokio::time::Instant;

use super::replication::{parse, split_key};
use super::workqueue::WorkQueue;
use crate::api::errors::ApiError;
use crate::api::objects::str_at;
use crate::api::registry::{DeleteOptions, Registry, WriteMode};
use crate::api::resources::{self, ResourceInfo};

/// How often everything is relisted and every Service reconciled.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// Kubernetes' default `--max-endpoints-per-slice`.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Slices of Services with a selector.
pub const MANAGED_BY_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// Slices mirrored from Endpoints that users keep.
pub const MANAGED_BY_MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("service {key}: {message}")]
    InvalidService { key: String, message: String },
}

/// A Service by namespace and name (its Endpoints and slices share them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a service port sends traffic on each pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(i64),
    /// A container port name, resolved per pod.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: String,
    pub port: i64,
    pub target: TargetPort,
    pub app_protocol: Option<String>,
}

/// What the controller needs of a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    pub key: ServiceKey,
    pub uid: String,
    pub labels: Map<String, Value>,
    /// `None` for a Service without a selector (absent or empty).
    pub selector: Option<LabelSelector>,
    pub ports: Vec<ServicePort>,
    pub headless: bool,
    pub publish_not_ready: bool,
}

fn text(object: &Value, pointer: &str) -> String {
    str_at(object, pointer).unwrap_or_default().to_owned()
}

fn protocol_of(object: &Value) -> String {
    str_at(object, "/protocol")
        .filter(|p| !p.is_empty())
        .unwrap_or("TCP")
        .to_owned()
}

fn labels_of(object: &Value) -> Map<String, Value> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

impl ServiceInfo {
    pub fn from_object(object: &Value) -> Result<ServiceInfo, EndpointsError> {
        let key = ServiceKey {
            namespace: text(object, "/metadata/namespace"),
            name: text(object, "/metadata/name"),
        };
        let selector = match object.pointer("/spec/selector").and_then(Value::as_object) {
            Some(map) if !map.is_empty() => {
                Some(
                    LabelSelector::from_map(map).map_err(|e| EndpointsError::InvalidService {
                        key: key.to_string(),
                        message: format!("spec.selector: {e}"),
                    })?,
                )
            }
            _ => None,
        };
        let ports = object
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|port| {
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                let target = match port.get("targetPort") {
                    Some(Value::String(name)) => match name.parse::<i64>() {
                        Ok(number) => TargetPort::Number(number),
                        Err(_) => TargetPort::Name(name.clone()),
                    },
                    Some(Value::Number(n)) => {
                        TargetPort::Number(n.as_i64().filter(|n| *n > 0).unwrap_or(number))
                    }
                    _ => TargetPort::Number(number),
                };
                ServicePort {
                    name: text(port, "/name"),
                    protocol: protocol_of(port),
                    port: number,
                    target,
                    app_protocol: str_at(port, "/appProtocol").map(str::to_owned),
                }
            })
            .collect();
        Ok(ServiceInfo {
            uid: text(object, "/metadata/uid"),
            labels: labels_of(object),
            selector,
            ports,
            headless: str_at(object, "/spec/clusterIP") == Some("None"),
            publish_not_ready: object
                .pointer("/spec/publishNotReadyAddresses")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            key,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub protocol: String,
    pub port: i64,
}

/// What the controller needs of a pod; kept instead of the whole pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Map<String, Value>,
    pub ip: Option<String>,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    pub terminal: bool,
    pub ports: Vec<ContainerPort>,
}

impl PodInfo {
    pub fn from_object(object: &Value) -> PodInfo {
        let non_empty = |pointer: &str| {
            str_at(object, pointer)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let ip = non_empty("/status/podIP").or_else(|| non_empty("/status/podIPs/0/ip"));
        let ready = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| str_at(c, "/type") == Some("Ready") && str_at(c, "/status") == Some("True"));
        let phase = str_at(object, "/status/phase").unwrap_or_default();
        let ports = object
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .map(|p| ContainerPort {
                name: text(p, "/name"),
                protocol: protocol_of(p),
                port: p.get("containerPort").and_then(Value::as_i64).unwrap_or(0),
            })
            .collect();
        PodInfo {
            namespace: text(object, "/metadata/namespace"),
            name: text(object, "/metadata/name"),
            uid: text(object, "/metadata/uid"),
            labels: labels_of(object),
            ip,
            node_name: non_empty("/spec/nodeName"),
            hostname: non_empty("/spec/hostname"),
            subdomain: non_empty("/spec/subdomain"),
            ready,
            terminating: object.pointer("/metadata/deletionTimestamp").is_some(),
            terminal: matches!(phase, "Succeeded" | "Failed"),
            ports,
        }
    }

    /// Kubernetes' `FindPort`: the container port a service port reaches
    /// on this pod.
    fn find_port(&self, port: &ServicePort) -> Option<i64> {
        match &port.target {
            TargetPort::Number(number) => Some(*number),
            TargetPort::Name(name) => self
                .ports
                .iter()
                .find(|p| &p.name == name && p.protocol == port.protocol)
                .map(|p| p.port),
        }
    }
}

/// One address of an Endpoints subset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub ip: String,
    /// The pod's UID; with the IP, what tells two addresses apart.
    pub uid: String,
    pub pod_name: String,
    pub namespace: String,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
}

impl Address {
    fn to_json(&self) -> Value {
        let mut address = json!({
            "ip": self.ip,
            "targetRef": {"kind": "Pod", "namespace": self.namespace, "name": self.pod_name, "uid": self.uid},
        });
        if let Some(node) = &self.node_name {
            address["nodeName"] = json!(node);
        }
        if let Some(hostname) = &self.hostname {
            address["hostname"] = json!(hostname);
        }
        address
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointPort {
    pub name: String,
    pub port: i64,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl EndpointPort {
    fn to_json(&self) -> Value {
        let mut port = json!({"port": self.port, "protocol": self.protocol});
        if !self.name.is_empty() {
            port["name"] = json!(self.name);
        }
        if let Some(app) = &self.app_protocol {
            port["appProtocol"] = json!(app);
        }
        port
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subset {
    pub addresses: Vec<Address>,
    pub not_ready: Vec<Address>,
    pub ports: Vec<EndpointPort>,
}

/// Kubernetes' `ShouldPodBeInEndpoints`.
fn listed(pod: &PodInfo, include_terminating: bool) -> bool {
    !pod.terminal && pod.ip.is_some() && (include_terminating || !pod.terminating)
}

/// The subsets of a Service with a selector, from the pods of its
/// namespace (see the module documentation).
pub fn desired_subsets<'a>(
    service: &ServiceInfo,
    pods: impl IntoIterator<Item = &'a PodInfo>,
) -> Vec<Subset> {
    let Some(selector) = &service.selector else {
        return Vec::new();
    };
    // Port (None: the no-port sentinel of a headless Service without
    // ports) -> address -> ready; a ready sighting wins.
    let mut by_port: BTreeMap<Option<EndpointPort>, BTreeMap<Address, bool>> = BTreeMap::new();
    for pod in pods {
        if pod.namespace != service.key.namespace
            || !selector.matches(&pod.labels)
            || !listed(pod, service.publish_not_ready)
        {
            continue;
        }
        let Some(ip) = &pod.ip else { continue };
        let address = Address {
            ip: ip.clone(),
            uid: pod.uid.clone(),
            pod_name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            node_name: pod.node_name.clone(),
            hostname: pod
                .hostname
                .clone()
                .filter(|_| pod.subdomain.as_deref() == Some(service.key.name.as_str())),
        };
        let ready = service.publish_not_ready || pod.ready;
        let mut record = |port: Option<EndpointPort>| {
            let entry = by_port
                .entry(port)
                .or_default()
                .entry(address.clone())
                .or_insert(ready);
            *entry |= ready;
        };
        if service.ports.is_empty() {
            if service.headless {
                record(None);
            }
            continue;
        }
        for port in &service.ports {
            if let Some(number) = pod.find_port(port) {
                record(Some(EndpointPort {
                    name: port.name.clone(),
                    port: number,
                    protocol: port.protocol.clone(),
                    app_protocol: port.app_protocol.clone(),
                }));
            }
        }
    }
    repack(by_port)
}

/// Ports with identical address sets share a subset.
fn repack(by_port: BTreeMap<Option<EndpointPort>, BTreeMap<Address, bool>>) -> Vec<Subset> {
    let mut grouped: BTreeMap<Vec<(Address, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (port, addresses) in by_port {
        let ports = grouped.entry(addresses.into_iter().collect()).or_default();
        ports.extend(port);
    }
    grouped
        .into_iter()
        .map(|(addresses, mut ports)| {
            ports.sort_by(|a, b| {
                (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol))
            });
            let (ready, not_ready): (Vec<_>, Vec<_>) =
                addresses.into_iter().partition(|(_, ready)| *ready);
            Subset {
                addresses: ready.into_iter().map(|(a, _)| a).collect(),
                not_ready: not_ready.into_iter().map(|(a, _)| a).collect(),
                ports,
            }
        })
        .collect()
}

pub fn subsets_json(subsets: &[Subset]) -> Value {
    Value::Array(
        subsets
            .iter()
            .map(|subset| {
                let mut entry = Map::new();
                if !subset.addresses.is_empty() {
                    entry.insert(
                        "addresses".into(),
                        subset.addresses.iter().map(Address::to_json).collect(),
                    );
                }
                if !subset.not_ready.is_empty() {
                    entry.insert(
                        "notReadyAddresses".into(),
                        subset.not_ready.iter().map(Address::to_json).collect(),
                    );
                }
                if !subset.ports.is_empty() {
                    entry.insert(
                        "ports".into(),
                        subset.ports.iter().map(EndpointPort::to_json).collect(),
                    );
                }
                Value::Object(entry)
            })
            .collect(),
    )
}

/// The labels Kubernetes gives a Service's Endpoints: the Service's own,
/// plus the headless marker.
fn endpoints_labels(service: &ServiceInfo) -> Map<String, Value> {
    let mut labels = service.labels.clone();
    if service.headless {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

fn subsets_of(object: &Value) -> Value {
    match object.get("subsets") {
        Some(Value::Array(items)) => Value::Array(items.clone()),
        _ => Value::Array(Vec::new()),
    }
}

/// Sets `metadata.labels`, leaving it out when empty as Kubernetes does.
fn set_labels(object: &mut Value, labels: Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if labels.as_object().is_some_and(Map::is_empty) {
            metadata.remove("labels");
        } else {
            metadata.insert("labels".into(), labels);
        }
    }
}

fn set_subsets(object: &mut Value, subsets: Value) {
    if let Some(map) = object.as_object_mut() {
        if subsets.as_array().is_some_and(Vec::is_empty) {
            map.remove("subsets");
        } else {
            map.insert("subsets".into(), subsets);
        }
    }
}

/// A write of one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Create(Value),
    /// The whole object, carrying the resourceVersion it was planned from.
    Update(Value),
    Delete(String),
}

/// Everything to write for one Service, in the order to write it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub endpoints: Option<Write>,
    pub slices: Vec<Write>,
}

/// What the cache holds for one Service.
pub struct Observed<'a> {
    pub key: &'a ServiceKey,
    pub service: Option<&'a ServiceInfo>,
    pub endpoints: Option<&'a Value>,
    /// This Service's slices that this controller manages, by name.
    pub slices: BTreeMap<&'a str, &'a Value>,
    /// The subsets the Endpoints must have whatever the selector says:
    /// the API server's own address for the `kubernetes` Service.
    pub fixed_subsets: Option<Value>,
}

/// Decides what to write for one Service.
pub fn plan<'a>(observed: &Observed<'a>, pods: impl IntoIterator<Item = &'a PodInfo>) -> Plan {
    let mut plan = Plan::default();
    let Some(service) = observed.service else {
        if observed.endpoints.is_some() {
            plan.endpoints = Some(Write::Delete(observed.key.name.clone()));
        }
        plan.slices = observed
            .slices
            .keys()
            .map(|name| Write::Delete((*name).to_owned()))
            .collect();
        return plan;
    };
    let computed = match &observed.fixed_subsets {
        Some(fixed) => Some((fixed.clone(), MANAGED_BY_MIRRORING)),
        None if service.selector.is_some() => Some((
            subsets_json(&desired_subsets(service, pods)),
            MANAGED_BY_CONTROLLER,
        )),
        None => None,
    };
    let (subsets, managed_by) = if let Some((subsets, managed_by)) = computed {
        // The API server's own Endpoints keep the labels they were made
        // with (the bootstrap's skip-mirror marker among them).
        let labels = match (&observed.fixed_subsets, observed.endpoints) {
            (Some(_), Some(current)) => current
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({})),
            _ => Value::Object(endpoints_labels(service)),
        };
        plan.endpoints = match observed.endpoints {
            None => {
                let mut object = json!({
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {"name": service.key.name, "namespace": service.key.namespace},
                });
                set_labels(&mut object, labels.clone());
                set_subsets(&mut object, subsets.clone());
                Some(Write::Create(object))
            }
            Some(current) => {
                let current_labels = current
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                if current_labels == labels && subsets_of(current) == subsets {
                    None
                } else {
                    let mut object = current.clone();
                    set_labels(&mut object, labels);
                    set_subsets(&mut object, subsets.clone());
                    Some(Write::Update(object))
                }
            }
        };
        (subsets, managed_by)
    } else {
        let subsets = observed
            .endpoints
            .map(subsets_of)
            .unwrap_or_else(|| json!([]));
        (subsets, MANAGED_BY_MIRRORING)
    };
    let desired = desired_slices(service, &subsets, managed_by);
    let mut surplus: BTreeSet<&str> = observed.slices.keys().copied().collect();
    for slice in desired {
        let name = text(&slice, "/metadata/name");
        surplus.remove(name.as_str());
        match observed.slices.get(name.as_str()) {
            None => plan.slices.push(Write::Create(slice)),
            Some(current) => {
                if !slice_matches(current, &slice) {
                    let mut object = (*current).clone();
                    for field in ["addressType", "endpoints", "ports"] {
                        object[field] = slice[field].clone();
                    }
                    object["metadata"]["labels"] = slice["metadata"]["labels"].clone();
                    object["metadata"]["ownerReferences"] =
                        slice["metadata"]["ownerReferences"].clone();
                    plan.slices.push(Write::Update(object));
                }
            }
        }
    }
    plan.slices.extend(
        surplus
            .into_iter()
            .map(|name| Write::Delete(name.to_owned())),
    );
    plan
}

fn slice_matches(current: &Value, desired: &Value) -> bool {
    [
        "/addressType",
        "/endpoints",
        "/ports",
        "/metadata/labels",
        "/metadata/ownerReferences",
    ]
    .iter()
    .all(|pointer| current.pointer(pointer) == desired.pointer(pointer))
}

/// The alphabet of Kubernetes' generated name suffixes (no vowels, no
/// look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A stable five-character suffix for `seed` (FNV-1a).
fn name_suffix(seed: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..5)
        .map(|_| {
            let index = (hash % SUFFIX_ALPHABET.len() as u64) as usize;
            hash /= SUFFIX_ALPHABET.len() as u64;
            char::from(SUFFIX_ALPHABET[index])
        })
        .collect()
}

fn address_type(ip: &str) -> &'static str {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => "IPv6",
        _ => "IPv4",
    }
}

/// One slice endpoint from an Endpoints address.
fn slice_endpoint(address: &Value, ready: bool) -> Value {
    let mut endpoint = json!({
        "addresses": [text(address, "/ip")],
        "conditions": {"ready": ready, "serving": ready, "terminating": false},
    });
    for field in ["hostname", "nodeName", "targetRef"] {
        if let Some(value) = address.get(field) {
            endpoint[field] = value.clone();
        }
    }
    endpoint
}

/// The slices mirroring `subsets` (an Endpoints' `subsets`).
pub fn desired_slices(service: &ServiceInfo, subsets: &Value, managed_by: &str) -> Vec<Value> {
    let mut slices = Vec::new();
    let mut labels = service.labels.clone();
    labels.insert(SERVICE_NAME_LABEL.into(), json!(service.key.name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(managed_by));
    if service.headless {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    let owner = json!([{
        "apiVersion": "v1", "kind": "Service", "name": service.key.name,
        "uid": service.uid, "controller": true, "blockOwnerDeletion": true,
    }]);
    for subset in subsets.as_array().into_iter().flatten() {
        let ports: Vec<Value> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|port| {
                // kubectl reads every slice port's name, so it is always set.
                let mut entry = json!({
                    "name": text(port, "/name"),
                    "port": port.get("port").cloned().unwrap_or(Value::Null),
                    "protocol": protocol_of(port),
                });
                if let Some(app) = port.get("appProtocol") {
                    entry["appProtocol"] = app.clone();
                }
                entry
            })
            .collect();
        let list = |field: &str| {
            subset
                .get(field)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut by_family: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (address, ready) in list("addresses")
            .iter()
            .map(|a| (a, true))
            .chain(list("notReadyAddresses").iter().map(|a| (a, false)))
            .map(|(a, r)| (a.clone(), r))
            .collect::<Vec<_>>()
        {
            by_family
                .entry(address_type(str_at(&address, "/ip").unwrap_or_default()))
                .or_default()
                .push(slice_endpoint(&address, ready));
        }
        let signature = Value::Array(ports.clone()).to_string();
        for (family, endpoints) in by_family {
            for (chunk_index, chunk) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
                slices.push(json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "namespace": service.key.namespace,
                        "labels": labels,
                        "ownerReferences": owner,
                    },
                    "addressType": family,
                    "endpoints": chunk,
                    "ports": ports,
                    "__seed": format!("{signature}/{family}/{chunk_index}"),
                }));
            }
        }
    }
    let single = slices.len() == 1;
    for slice in &mut slices {
        let seed = slice
            .as_object_mut()
            .and_then(|m| m.remove("__seed"))
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_default();
        // The API server names the `kubernetes` Service's slice after it.
        let name =
            if single && service.key.namespace == "default" && service.key.name == "kubernetes" {
                "kubernetes".to_owned()
            } else {
                format!("{}-{}", service.key.name, name_suffix(&seed))
            };
        slice["metadata"]["name"] = json!(name);
    }
    slices
}

/// Services, pods, Endpoints and slices as the watches last showed them.
#[derive(Debug, Default)]
pub struct Caches {
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    /// Pods by namespace, then name.
    pub pods: HashMap<String, BTreeMap<String, PodInfo>>,
    pub endpoints: BTreeMap<ServiceKey, Value>,
    /// Slices by namespace and slice name.
    pub slices: BTreeMap<(String, String), Value>,
}

impl Caches {
    /// What the cache holds for `key`.
    pub fn observed<'a>(&'a self, key: &'a ServiceKey) -> Observed<'a> {
        let start = (key.namespace.clone(), String::new());
        let slices = self
            .slices
            .range(start..)
            .take_while(|((namespace, _), _)| *namespace == key.namespace)
            .filter(|(_, slice)| {
                str_at(
                    slice,
                    &format!("/metadata/labels/{}", escape(SERVICE_NAME_LABEL)),
                ) == Some(key.name.as_str())
                    && matches!(
                        str_at(
                            slice,
                            &format!("/metadata/labels/{}", escape(MANAGED_BY_LABEL))
                        ),
                        Some(MANAGED_BY_CONTROLLER | MANAGED_BY_MIRRORING)
                    )
            })
            .map(|((_, name), slice)| (name.as_str(), slice))
            .collect();
        Observed {
            key,
            service: self.services.get(key),
            endpoints: self.endpoints.get(key),
            slices,
            fixed_subsets: None,
        }
    }

    fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PodInfo> {
        self.pods
            .get(namespace)
            .into_iter()
            .flat_map(BTreeMap::values)
    }
}

/// A label key as a JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The controller's whole state between events.
#[derive(Debug, Default)]
pub struct State {
    pub caches: Caches,
    pub queue: WorkQueue<ServiceKey>,
}

impl State {
    /// Folds in a Service's new state (`None`: deleted).
    pub fn apply_service(&mut self, key: ServiceKey, object: Option<&Value>) {
        match object.map(ServiceInfo::from_object) {
            Some(Ok(service)) => {
                self.caches.services.insert(key.clone(), service);
            }
            Some(Err(error)) => {
                tracing::warn!(%key, %error, "the endpoints controller ignores a service it cannot read");
                self.caches.services.remove(&key);
            }
            None => {
                self.caches.services.remove(&key);
            }
        }
        self.queue.add(key);
    }

    /// Folds in a pod's new state (`None`: deleted).
    pub fn apply_pod(&mut self, namespace: &str, name: &str, object: Option<&Value>) {
        let old = self
            .caches
            .pods
            .get_mut(namespace)
            .and_then(|pods| pods.remove(name));
        let new = object.map(PodInfo::from_object);
        if old.as_ref() == new.as_ref() {
            if let Some(pod) = new {
                self.caches
                    .pods
                    .entry(namespace.to_owned())
                    .or_default()
                    .insert(name.to_owned(), pod);
            }
            return;
        }
        let mut keys = Vec::new();
        for pod in old.iter().chain(new.iter()) {
            let first = ServiceKey {
                namespace: namespace.to_owned(),
                name: String::new(),
            };
            let in_namespace = self
                .caches
                .services
                .range(first..)
                .take_while(|(key, _)| key.namespace == namespace);
            for (key, service) in in_namespace {
                if service
                    .selector
                    .as_ref()
                    .is_some_and(|s| s.matches(&pod.labels))
                {
                    keys.push(key.clone());
                }
            }
        }
        match new {
            Some(pod) => {
                self.caches
                    .pods
                    .entry(namespace.to_owned())
                    .or_default()
                    .insert(name.to_owned(), pod);
            }
            None => {
                if self
                    .caches
                    .pods
                    .get(namespace)
                    .is_some_and(BTreeMap::is_empty)
                {
                    self.caches.pods.remove(namespace);
                }
            }
        }
        for key in keys {
            self.queue.add(key);
        }
    }

    /// Folds in an Endpoints object's new state (`None`: deleted).
    pub fn apply_endpoints(&mut self, key: ServiceKey, object: Option<Value>) {
        match object {
            Some(object) => self.caches.endpoints.insert(key.clone(), object),
            None => self.caches.endpoints.remove(&key),
        };
        self.queue.add(key);
    }

    /// Folds in a slice's new state (`None`: deleted).
    pub fn apply_slice(&mut self, namespace: &str, name: &str, object: Option<Value>) {
        let slot = (namespace.to_owned(), name.to_owned());
        let old = match object {
            Some(object) => self.caches.slices.insert(slot.clone(), object),
            None => self.caches.slices.remove(&slot),
        };
        let pointer = format!("/metadata/labels/{}", escape(SERVICE_NAME_LABEL));
        let owners: BTreeSet<String> = old
            .iter()
            .chain(self.caches.slices.get(&slot))
            .filter_map(|slice| str_at(slice, &pointer).map(str::to_owned))
            .collect();
        for service in owners {
            self.queue.add(ServiceKey {
                namespace: namespace.to_owned(),
                name: service,
            });
        }
    }
}

fn info(group: &str, plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("resource {plural} is not served")))
}

/// The four collections the controller follows, in the order they are
/// listed: Services first, so the pods listed next find who wants them.
struct Prefixes {
    services: String,
    pods: String,
    endpoints: String,
    slices: String,
}

impl Prefixes {
    fn new() -> Result<Prefixes, ApiError> {
        Ok(Prefixes {
            services: info("", "services")?.key_prefix(None),
            pods: info("", "pods")?.key_prefix(None),
            endpoints: info("", "endpoints")?.key_prefix(None),
            slices: info("discovery.k8s.io", "endpointslices")?.key_prefix(None),
        })
    }
}

fn service_key(key: &str, prefix: &str) -> Option<ServiceKey> {
    split_key(key, prefix).map(|(namespace, name)| ServiceKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

fn event_object(event: &Event) -> Option<Value> {
    match event.event_type {
        StoreEventType::Put => parse(&event.kv),
        StoreEventType::Delete => None,
    }
}

fn apply_event(state: &mut State, prefixes: &Prefixes, event: &Event) {
    let key = &event.kv.key;
    if let Some(service) = service_key(key, &prefixes.services) {
        state.apply_service(service, event_object(event).as_ref());
    } else if let Some((namespace, name)) = split_key(key, &prefixes.pods) {
        state.apply_pod(namespace, name, event_object(event).as_ref());
    } else if let Some(service) = service_key(key, &prefixes.endpoints) {
        state.apply_endpoints(service, event_object(event));
    } else if let Some((namespace, name)) = split_key(key, &prefixes.slices) {
        state.apply_slice(namespace, name, event_object(event));
    }
}

/// Where the API server is reached: what the `kubernetes` Service's
/// Endpoints list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    pub address: String,
    pub port: u16,
}

impl ApiEndpoint {
    /// The `kubernetes` Service's subsets, as the API server writes them.
    pub fn subsets(&self) -> Value {
        json!([{
            "addresses": [{"ip": self.address}],
            "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
        }])
    }
}

/// The Service that points in-cluster clients at the API server.
fn is_api_service(key: &ServiceKey) -> bool {
    key.namespace == "default" && key.name == "kubernetes"
}

pub struct EndpointsController {
    registry: Arc<Registry>,
    api: Option<ApiEndpoint>,
}

impl EndpointsController {
    pub fn new(registry: Arc<Registry>) -> EndpointsController {
        EndpointsController {
            registry,
            api: None,
        }
    }

    /// Keeps the `kubernetes` Service's Endpoints at `api` (the bootstrap
    /// only creates them, so a changed advertise address would otherwise
    /// leave them stale).
    pub fn with_api_endpoint(mut self, api: ApiEndpoint) -> EndpointsController {
        self.api = Some(api);
        self
    }

    /// Runs forever, starting over from a fresh list after any watch
    /// failure and every [`RESYNC_PERIOD`].
    pub async fn run(self) {
        loop {
            if let Err(error) = self.sync_and_follow().await {
                tracing::warn!(%error, "endpoints controller restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Lists the four collections into a fresh [`State`], returning it
    /// with the revision each list was read at.
    async fn load(&self, prefixes: &Prefixes) -> Result<(State, [i64; 4]), EndpointsError> {
        let store = &self.registry.store;
        let mut state = State::default();
        let services = store.range(&prefixes.services).await?;
        let pods = store.range(&prefixes.pods).await?;
        let endpoints = store.range(&prefixes.endpoints).await?;
        let slices = store.range(&prefixes.slices).await?;
        for kv in &services.items {
            if let Some(key) = service_key(&kv.key, &prefixes.services) {
                state.apply_service(key, parse(kv).as_ref());
            }
        }
        for kv in &pods.items {
            if let Some((namespace, name)) = split_key(&kv.key, &prefixes.pods) {
                state.apply_pod(namespace, name, parse(kv).as_ref());
            }
        }
        for kv in &endpoints.items {
            if let Some(key) = service_key(&kv.key, &prefixes.endpoints) {
                state.apply_endpoints(key, parse(kv));
            }
        }
        for kv in &slices.items {
            if let Some((namespace, name)) = split_key(&kv.key, &prefixes.slices) {
                state.apply_slice(namespace, name, parse(kv));
            }
        }
        Ok((
            state,
            [
                services.revision,
                pods.revision,
                endpoints.revision,
                slices.revision,
            ],
        ))
    }

    async fn sync_and_follow(&self) -> Result<(), EndpointsError> {
        let prefixes = Prefixes::new()?;
        let (mut state, revisions) = self.load(&prefixes).await?;
        let store = &self.registry.store;
        let mut service_watch = store.watch(&prefixes.services, revisions[0])?;
        let mut pod_watch = store.watch(&prefixes.pods, revisions[1])?;
        let mut endpoints_watch = store.watch(&prefixes.endpoints, revisions[2])?;
        let mut slice_watch = store.watch(&prefixes.slices, revisions[3])?;
        let resync = tokio::time::sleep(RESYNC_PERIOD);
        tokio::pin!(resync);
        loop {
            while let Some(key) = state.queue.pop(Instant::now()) {
                let result = self.reconcile(&key, &state).await;
                let now = Instant::now();
                state.queue.done(&key);
                match result {
                    Ok(()) => state.queue.forget(&key),
                    Err(error) => {
                        tracing::warn!(%key, %error, "endpoints reconcile failed; will retry");
                        state.queue.add_rate_limited(key, now);
                    }
                }
            }
            let wakeup = state
                .queue
                .next_wakeup()
                .unwrap_or_else(|| Instant::now() + RESYNC_PERIOD);
            tokio::select! {
                event = service_watch.next() => apply_event(&mut state, &prefixes, event?.as_ref()),
                event = pod_watch.next() => apply_event(&mut state, &prefixes, event?.as_ref()),
                event = endpoints_watch.next() => apply_event(&mut state, &prefixes, event?.as_ref()),
                event = slice_watch.next() => apply_event(&mut state, &prefixes, event?.as_ref()),
                _ = tokio::time::sleep_until(wakeup) => {}
                _ = &mut resync => return Ok(()),
            }
        }
    }

    /// Brings one Service's Endpoints and slices in line with the cache.
    pub async fn reconcile(&self, key: &ServiceKey, state: &State) -> Result<(), EndpointsError> {
        let mut observed = state.caches.observed(key);
        if is_api_service(key) {
            observed.fixed_subsets = self.api.as_ref().map(ApiEndpoint::subsets);
        }
        let plan = plan(&observed, state.caches.pods_in(&key.namespace));
        if let Some(write) = &plan.endpoints {
            self.apply(info("", "endpoints")?, &key.namespace, write)
                .await?;
        }
        let slices = info("discovery.k8s.io", "endpointslices")?;
        for write in &plan.slices {
            self.apply(slices, &key.namespace, write).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        write: &Write,
    ) -> Result<(), ApiError> {
        let namespace = Some(namespace);
        let result = match write {
            Write::Create(object) => self
                .registry
                .create(info, namespace, object.clone(), false)
                .await
                .map(drop),
            Write::Update(object) => {
                let name = text(object, "/metadata/name");
                self.registry
                    .update(info, namespace, &name, object.clone(), WriteMode::default())
                    .await
                    .map(drop)
            }
            Write::Delete(name) => self
                .registry
                .delete(info, namespace, name, &DeleteOptions::default())
                .await
                .map(drop),
        };
        match result {
            // The cache is behind (or the namespace is going away); the
            // watch brings the newer state and the Service comes back.
            Err(ApiError::NotFound { .. })
            | Err(ApiError::Conflict { .. })
            | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(spec: Value) -> ServiceInfo {
        ServiceInfo::from_object(&json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .expect("service")
    }

    fn web_service() -> ServiceInfo {
        service(json!({
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
            ],
        }))
    }

    fn pod(name: &str, ip: &str, ready: bool, ports: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    fn pods(objects: &[Value]) -> Vec<PodInfo> {
        objects.iter().map(PodInfo::from_object).collect()
    }

    fn ips(addresses: &[Address]) -> Vec<&str> {
        addresses.iter().map(|a| a.ip.as_str()).collect()
    }

    /// Ready IPs, unready IPs, and (name, port) of one subset.
    type SubsetSummary<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<(&'a str, i64)>);

    #[test]
    fn ready_and_unready_pods_with_named_ports_resolved_per_pod() {
        let http8080 = json!([{"name": "http", "containerPort": 8080}]);
        let http9000 = json!([{"name": "http", "containerPort": 9000}]);
        let pods = pods(&[
            pod("a", "10.244.0.2", true, http8080.clone()),
            pod("b", "10.244.0.3", false, http8080),
            pod("c", "10.244.0.4", true, http9000),
            pod("d", "10.244.0.5", true, json!([])),
        ]);
        let subsets = desired_subsets(&web_service(), &pods);
        // http→8080 is offered by a (ready) and b (not ready); http→9000 by
        // c; metrics→9090 by all four. Each distinct address set is a subset.
        let summary: Vec<SubsetSummary> = subsets
            .iter()
            .map(|s| {
                (
                    ips(&s.addresses),
                    ips(&s.not_ready),
                    s.ports.iter().map(|p| (p.name.as_str(), p.port)).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec!["10.244.0.2"], vec!["10.244.0.3"], vec![("http", 8080)]),
                (
                    vec!["10.244.0.2", "10.244.0.4", "10.244.0.5"],
                    vec!["10.244.0.3"],
                    vec![("metrics", 9090)]
                ),
                (vec!["10.244.0.4"], vec![], vec![("http", 9000)]),
            ]
        );
        let first = &subsets[0].addresses[0];
        assert_eq!(first.node_name.as_deref(), Some("n1"));
        assert_eq!(first.uid, "a-uid");
        let json = subsets_json(&subsets);
        assert_eq!(
            json[0]["addresses"][0]["targetRef"],
            json!({"kind": "Pod", "namespace": "default", "name": "a", "uid": "a-uid"})
        );
        assert_eq!(
            json[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
    }

    #[test]
    fn ports_offered_by_the_same_pods_share_one_subset() {
        let service = service(json!({
            "selector": {"app": "web"},
            "ports": [{"name": "b", "port": 81, "targetPort": 8081}, {"name": "a", "port": 80}],
        }));
        let pods = pods(&[
            pod("x", "10.244.0.9", true, json!([])),
            pod("y", "10.244.0.8", true, json!([])),
        ]);
        let subsets = desired_subsets(&service, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.244.0.8", "10.244.0.9"]);
        let ports: Vec<(&str, i64)> = subsets[0]
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("a", 80), ("b", 8081)],
            "targetPort defaults to port"
        );
    }

    #[test]
    fn terminating_terminal_ipless_and_unmatched_pods_are_left_out() {
        let mut terminating = pod("t", "10.244.0.2", true, json!([]));
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut done = pod("s", "10.244.0.3", false, json!([]));
        done["status"]["phase"] = json!("Succeeded");
        let mut no_ip = pod("n", "", false, json!([]));
        no_ip["status"]
            .as_object_mut()
            .expect("status")
            .remove("podIP");
        let mut other = pod("o", "10.244.0.5", true, json!([]));
        other["metadata"]["labels"] = json!({"app": "db"});
        let mut elsewhere = pod("e", "10.244.0.6", true, json!([]));
        elsewhere["metadata"]["namespace"] = json!("other");
        let service = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let all = pods(&[terminating.clone(), done, no_ip, other, elsewhere]);
        assert!(desired_subsets(&service, &all).is_empty());

        // publishNotReadyAddresses keeps a terminating pod, and lists an
        // unready one as ready.
        let mut publish = service.clone();
        publish.publish_not_ready = true;
        let unready = pod("u", "10.244.0.7", false, json!([]));
        let subsets = desired_subsets(&publish, &pods(&[terminating, unready]));
        assert_eq!(ips(&subsets[0].addresses), ["10.244.0.2", "10.244.0.7"]);
        assert!(subsets[0].not_ready.is_empty());
    }

    #[test]
    fn hostnames_and_headless_services_without_ports() {
        let mut named = pod("a", "10.244.0.2", true, json!([]));
        named["spec"]["hostname"] = json!("a0");
        named["spec"]["subdomain"] = json!("web");
        let mut other_subdomain = pod("b", "10.244.0.3", true, json!([]));
        other_subdomain["spec"]["hostname"] = json!("b0");
        other_subdomain["spec"]["subdomain"] = json!("db");
        let headless = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let subsets = desired_subsets(&headless, &pods(&[named, other_subdomain]));
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_empty());
        assert_eq!(subsets[0].addresses[0].hostname.as_deref(), Some("a0"));
        assert_eq!(subsets[0].addresses[1].hostname, None);
        let json = subsets_json(&subsets);
        assert!(json[0].get("ports").is_none());
        assert_eq!(json[0]["addresses"][0]["hostname"], "a0");

        // A ClusterIP service without ports lists nothing.
        let plain = service(json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.3"}));
        let one = pods(&[pod("c", "10.244.0.4", true, json!([]))]);
        assert!(desired_subsets(&plain, &one).is_empty());
    }

    fn key() -> ServiceKey {
        ServiceKey {
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn plans_create_then_nothing_then_update_and_delete_with_the_service() {
        let service = web_service();
        let pods = pods(&[pod(
            "a",
            "10.244.0.2",
            true,
            json!([{"name": "http", "containerPort": 8080}]),
        )]);
        let key = key();
        let mut caches = Caches::default();
        caches.services.insert(key.clone(), service.clone());
        let first = plan(&caches.observed(&key), &pods);
        let Some(Write::Create(endpoints)) = first.endpoints.clone() else {
            panic!("expected a create: {first:?}");
        };
        assert_eq!(endpoints["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "10.244.0.2");
        assert_eq!(first.slices.len(), 1, "both ports share the one subset");
        let Write::Create(slice) = &first.slices[0] else {
            panic!("expected a slice create");
        };
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
        assert!(text(slice, "/metadata/name").starts_with("web-"));

        // Stored as planned: nothing more to write.
        let mut stored = endpoints.clone();
        stored["metadata"]["resourceVersion"] = json!("5");
        caches.endpoints.insert(key.clone(), stored);
        for write in &first.slices {
            let Write::Create(slice) = write else {
                continue;
            };
            caches.slices.insert(
                ("default".into(), text(slice, "/metadata/name")),
                slice.clone(),
            );
        }
        assert_eq!(plan(&caches.observed(&key), &pods), Plan::default());

        // The pod goes unready: an update carrying the resourceVersion.
        let mut unready = pods[0].clone();
        unready.ready = false;
        let second = plan(&caches.observed(&key), [&unready]);
        let Some(Write::Update(updated)) = second.endpoints else {
            panic!("expected an update");
        };
        assert_eq!(updated["metadata"]["resourceVersion"], "5");
        assert!(updated["subsets"][0].get("addresses").is_none());
        assert_eq!(
            updated["subsets"][0]["notReadyAddresses"][0]["ip"],
            "10.244.0.2"
        );
        assert!(second.slices.iter().all(
            |w| matches!(w, Write::Update(s) if s["endpoints"][0]["conditions"]["ready"] == false)
        ));

        // The Service is deleted: so are its Endpoints and slices.
        caches.services.remove(&key);
        let gone = plan(&caches.observed(&key), &pods);
        assert_eq!(gone.endpoints, Some(Write::Delete("web".into())));
        assert_eq!(gone.slices.len(), 1);
        assert!(gone.slices.iter().all(|w| matches!(w, Write::Delete(_))));
    }

    #[test]
    fn a_service_without_a_selector_keeps_its_users_endpoints_mirrored() {
        let service = service(json!({"ports": [{"port": 5432}]}));
        assert!(service.selector.is_none());
        let key = key();
        let mut caches = Caches::default();
        caches.services.insert(key.clone(), service);
        assert_eq!(
            plan(&caches.observed(&key), std::iter::empty()),
            Plan::default(),
            "no Endpoints, nothing to write or mirror"
        );
        caches.endpoints.insert(
            key.clone(),
            json!({"metadata": {"name": "web", "namespace": "default"},
                "subsets": [{"addresses": [{"ip": "192.168.1.5"}], "ports": [{"port": 5432}]}]}),
        );
        let mirrored = plan(&caches.observed(&key), std::iter::empty());
        assert_eq!(mirrored.endpoints, None, "users' Endpoints left alone");
        let [Write::Create(slice)] = mirrored.slices.as_slice() else {
            panic!("expected one slice: {mirrored:?}");
        };
        assert_eq!(
            slice["metadata"]["labels"][MANAGED_BY_LABEL],
            MANAGED_BY_MIRRORING
        );
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.5");
        assert_eq!(
            slice["ports"],
            json!([{"name": "", "port": 5432, "protocol": "TCP"}])
        );
    }

    #[test]
    fn pod_events_queue_only_the_services_that_select_them() {
        let mut state = State::default();
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
        state.apply_service(key(), Some(&svc));
        let now = Instant::now();
        assert_eq!(state.queue.pop(now), Some(key()));
        state.queue.done(&key());

        let mut other = pod("o", "10.244.0.5", true, json!([]));
        other["metadata"]["labels"] = json!({"app": "db"});
        state.apply_pod("default", "o", Some(&other));
        assert_eq!(state.queue.pop(now), None);

        // A pod leaving the selector still queues the service.
        state.apply_pod(
            "default",
            "o",
            Some(&pod("o", "10.244.0.5", true, json!([]))),
        );
        assert_eq!(state.queue.pop(now), Some(key()));
        state.queue.done(&key());
        state.apply_pod("default", "o", Some(&other));
        assert_eq!(state.queue.pop(now), Some(key()));
        state.queue.done(&key());
        // An unchanged pod queues nothing.
        state.apply_pod("default", "o", Some(&other));
        assert_eq!(state.queue.pop(now), None);
    }

    #[test]
    fn the_kubernetes_endpoints_follow_the_advertised_address() {
        let key = ServiceKey {
            namespace: "default".into(),
            name: "kubernetes".into(),
        };
        let service = ServiceInfo::from_object(&json!({
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": "u",
                "labels": {"component": "apiserver"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        }))
        .expect("service");
        let mut caches = Caches::default();
        caches.services.insert(key.clone(), service);
        caches.endpoints.insert(
            key.clone(),
            json!({"metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver"}, "resourceVersion": "3"},
                "subsets": ApiEndpoint { address: "192.168.1.1".into(), port: 6443 }.subsets()}),
        );
        let moved = ApiEndpoint {
            address: "192.168.1.2".into(),
            port: 6443,
        };
        let mut observed = caches.observed(&key);
        observed.fixed_subsets = Some(moved.subsets());
        let planned = plan(&observed, std::iter::empty());
        let Some(Write::Update(updated)) = planned.endpoints.clone() else {
            panic!("expected an update: {planned:?}");
        };
        assert_eq!(updated["subsets"][0]["addresses"][0]["ip"], "192.168.1.2");
        assert_eq!(updated["metadata"]["resourceVersion"], "3");
        let [Write::Create(slice)] = planned.slices.as_slice() else {
            panic!("expected one slice: {planned:?}");
        };
        assert_eq!(slice["metadata"]["name"], "kubernetes");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.2");

        // Already there: nothing to write.
        caches.endpoints.insert(key.clone(), updated);
        let mut observed = caches.observed(&key);
        observed.fixed_subsets = Some(moved.subsets());
        assert_eq!(plan(&observed, std::iter::empty()).endpoints, None);
    }

    #[test]
    fn slice_names_are_stable_and_the_kubernetes_service_keeps_its_own() {
        let api = ServiceInfo::from_object(&json!({
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": "u"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        }))
        .expect("service");
        let subsets = json!([{"addresses": [{"ip": "192.168.1.2"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]);
        let slices = desired_slices(&api, &subsets, MANAGED_BY_MIRRORING);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0]["metadata"]["name"], "kubernetes");
        let web = web_service();
        let a = desired_slices(&web, &subsets, MANAGED_BY_CONTROLLER);
        let b = desired_slices(&web, &subsets, MANAGED_BY_CONTROLLER);
        assert_eq!(a[0]["metadata"]["name"], b[0]["metadata"]["name"]);
        assert_eq!(name_suffix("x").len(), 5);
        assert_ne!(name_suffix("x"), name_suffix("y"));
    }
}
