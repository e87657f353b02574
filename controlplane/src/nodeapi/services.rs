//! The service table each node is sent: every Service of the cluster, with
//! the endpoints of each port, as a node's proxy and DNS server need it.
//!
//! Mechanism. An entry is built from a stored Service and its Endpoints
//! object ([`service_entry`]): the Endpoints controller keeps that object
//! for Services with a selector, users keep it for the others. Per service
//! port, the endpoints are the addresses of every Endpoints subset that
//! has a port of the same name and protocol, with that subset's port (a
//! named `targetPort` resolves differently per pod, so the port is per
//! endpoint); `addresses` are ready, `notReadyAddresses` are not. A
//! headless Service without ports has nothing to put its endpoints under,
//! so it gets one port numbered 0 carrying them, for its DNS records.
//!
//! [`ServiceTable`] holds the Services and Endpoints a session has seen
//! and the entries it last sent; it decides from an event alone what the
//! node must hear ([`ServiceTable::apply`]):
//!
//! - an entry that differs from the one last sent → upsert, complete;
//! - a Service gone → remove, by `namespace/name`;
//! - otherwise (an Endpoints write that changes nothing the node sees, an
//!   Endpoints object without its Service) → nothing.
//!
//! Ordering rules:
//! - Services and Endpoints are listed after the session's watch has
//!   started; an event at or below its list's revision is already in the
//!   table and is skipped, so none is missed and none applied twice.
//! - Every node gets every Service: the table does not depend on the node.
//! - Each change is sent on its own, as soon as its event arrives, without
//!   waiting for a pod event.
//!
//! The decisions are pure; [`SessionServices::load`] is the thin part that
//! reads the store.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_proto::node::v1 as proto;
use skiff_store::{Event, EventType, KeyValue, StoreError};

use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::Registry;
use crate::api::resources;

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

#[derive(Debug, thiserror::Error)]
pub enum ServiceTableError {
    #[error(transparent)]
    Stored(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn text(object: &Value, pointer: &str) -> String {
    str_at(object, pointer).unwrap_or_default().to_owned()
}

fn protocol_of(port: &Value) -> String {
    str_at(port, "/protocol")
        .filter(|p| !p.is_empty())
        .unwrap_or("TCP")
        .to_owned()
}

fn port_number(value: Option<&Value>) -> u32 {
    value
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The endpoints of one port: every address of every subset offering a
/// port named `name` with `protocol` (`None`: every subset, for a headless
/// Service without ports).
fn port_endpoints(
    endpoints: Option<&Value>,
    port: Option<(&str, &str)>,
) -> Vec<proto::ServiceEndpoint> {
    let mut list = Vec::new();
    let subsets = endpoints
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array);
    for subset in subsets.into_iter().flatten() {
        let target = match port {
            None => 0,
            Some((name, protocol)) => {
                let found = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| text(p, "/name") == name && protocol_of(p) == protocol);
                match found {
                    Some(p) => port_number(p.get("port")),
                    None => continue,
                }
            }
        };
        for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for address in subset
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let pod_name = match str_at(address, "/targetRef/kind") {
                    Some("Pod") => text(address, "/targetRef/name"),
                    _ => String::new(),
                };
                list.push(proto::ServiceEndpoint {
                    ip: text(address, "/ip"),
                    port: target,
                    ready,
                    node_name: text(address, "/nodeName"),
                    pod_name,
                    hostname: text(address, "/hostname"),
                });
            }
        }
    }
    list
}

/// A Service and its Endpoints (if any) as a node receives them.
pub fn service_entry(service: &Value, endpoints: Option<&Value>) -> proto::Service {
    let spec = service.get("spec").cloned().unwrap_or(Value::Null);
    let service_type = str_at(&spec, "/type")
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP")
        .to_owned();
    let session_affinity = str_at(&spec, "/sessionAffinity")
        .filter(|a| !a.is_empty())
        .unwrap_or("None")
        .to_owned();
    let session_affinity_timeout_seconds = if session_affinity == "ClientIP" {
        spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    } else {
        0
    };
    let cluster_ip = text(&spec, "/clusterIP");
    let mut ports: Vec<proto::ServicePort> = spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|port| {
            let name = text(port, "/name");
            let protocol = protocol_of(port);
            proto::ServicePort {
                endpoints: port_endpoints(endpoints, Some((&name, &protocol))),
                port: port_number(port.get("port")),
                node_port: port_number(port.get("nodePort")),
                name,
                protocol,
            }
        })
        .collect();
    if ports.is_empty() && cluster_ip == "None" {
        ports.push(proto::ServicePort {
            endpoints: port_endpoints(endpoints, None),
            ..Default::default()
        });
    }
    proto::Service {
        namespace: text(service, "/metadata/namespace"),
        name: text(service, "/metadata/name"),
        r#type: service_type,
        cluster_ip,
        ports,
        session_affinity,
        session_affinity_timeout_seconds,
        external_name: text(&spec, "/externalName"),
        resource_version: text(service, "/metadata/resourceVersion"),
    }
}

/// What one event means to a node's service table.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceChange {
    Upsert(proto::Service),
    /// The `namespace/name` of a Service gone.
    Remove(String),
}

/// Which collection an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Services,
    Endpoints,
}

/// The Services and Endpoints a session has seen, and the entries it sent.
#[derive(Debug, Default)]
pub struct ServiceTable {
    services: BTreeMap<String, Value>,
    endpoints: BTreeMap<String, Value>,
    sent: BTreeMap<String, proto::Service>,
}

/// `namespace/name` of an object.
fn key_of(object: &Value) -> String {
    format!(
        "{}/{}",
        text(object, "/metadata/namespace"),
        text(object, "/metadata/name")
    )
}

impl ServiceTable {
    /// The table of listed Services and Endpoints; every entry counts as
    /// sent (it goes into the Snapshot).
    pub fn new(services: Vec<Value>, endpoints: Vec<Value>) -> ServiceTable {
        let mut table = ServiceTable {
            services: services.into_iter().map(|s| (key_of(&s), s)).collect(),
            endpoints: endpoints.into_iter().map(|e| (key_of(&e), e)).collect(),
            sent: BTreeMap::new(),
        };
        let keys: Vec<String> = table.services.keys().cloned().collect();
        for key in keys {
            if let Some(entry) = table.entry(&key) {
                table.sent.insert(key, entry);
            }
        }
        table
    }

    fn entry(&self, key: &str) -> Option<proto::Service> {
        self.services
            .get(key)
            .map(|service| service_entry(service, self.endpoints.get(key)))
    }

    /// Every entry, for a Snapshot.
    pub fn entries(&self) -> Vec<proto::Service> {
        self.sent.values().cloned().collect()
    }

    /// The stored Services, for their environment variables.
    pub fn services(&self) -> impl Iterator<Item = &Value> {
        self.services.values()
    }

    /// Folds in an object of `collection` under `key` (`None`: deleted)
    /// and says what the node must hear.
    pub fn apply(
        &mut self,
        collection: Collection,
        key: &str,
        object: Option<Value>,
    ) -> Option<ServiceChange> {
        let map = match collection {
            Collection::Services => &mut self.services,
            Collection::Endpoints => &mut self.endpoints,
        };
        match object {
            Some(object) => map.insert(key.to_owned(), object),
            None => map.remove(key),
        };
        match self.entry(key) {
            Some(entry) => {
                if self.sent.get(key) == Some(&entry) {
                    return None;
                }
                self.sent.insert(key.to_owned(), entry.clone());
                Some(ServiceChange::Upsert(entry))
            }
            None => self
                .sent
                .remove(key)
                .map(|_| ServiceChange::Remove(key.to_owned())),
        }
    }
}

/// A service change as a Delta at `revision`.
pub fn delta(revision: i64, change: ServiceChange) -> proto::Delta {
    let (services_upserted, services_removed) = match change {
        ServiceChange::Upsert(entry) => (vec![entry], Vec::new()),
        ServiceChange::Remove(key) => (Vec::new(), vec![key]),
    };
    proto::Delta {
        revision,
        services_upserted,
        services_removed,
        ..Default::default()
    }
}

fn parse_all(items: &[KeyValue]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|kv| match objects::value(kv) {
            Ok(object) => Some(object),
            Err(error) => {
                tracing::warn!(key = %kv.key, %error, "the service table skips an object it cannot read");
                None
            }
        })
        .collect()
}

/// `namespace/name` from a store key under `prefix`.
fn store_key<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|rest| rest.contains('/'))
}

/// The store prefixes of Services and Endpoints.
fn prefix(plural: &str) -> Result<String, ApiError> {
    resources::find("", "v1", plural)
        .map(|info| info.key_prefix(None))
        .ok_or_else(|| ApiError::Internal(format!("{plural} are not served")))
}

/// One session's service table, fed by the session's own watch (which
/// covers every core resource, so service deltas take their place in the
/// one revision order of all Deltas).
#[derive(Debug)]
pub struct SessionServices {
    table: ServiceTable,
    services_prefix: String,
    endpoints_prefix: String,
    /// The revisions the two lists were read at: events at or below them
    /// are already in the table.
    listed_at: [i64; 2],
}

impl SessionServices {
    /// Lists Services and Endpoints. Called after the session's watch has
    /// started, so every change after the lists is on the watch.
    pub async fn load(registry: &Registry) -> Result<SessionServices, ServiceTableError> {
        let services_prefix = prefix("services")?;
        let endpoints_prefix = prefix("endpoints")?;
        let services = registry.store.range(&services_prefix).await?;
        let endpoints = registry.store.range(&endpoints_prefix).await?;
        Ok(SessionServices {
            table: ServiceTable::new(parse_all(&services.items), parse_all(&endpoints.items)),
            listed_at: [services.revision, endpoints.revision],
            services_prefix,
            endpoints_prefix,
        })
    }

    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Whether `key` is a Service's or an Endpoints' store key.
    pub fn concerns(&self, key: &str) -> bool {
        key.starts_with(&self.services_prefix) || key.starts_with(&self.endpoints_prefix)
    }

    /// The Delta (if any) a store event on a Service or an Endpoints
    /// makes. An object that cannot be read is an error for the caller to
    /// log; the table is left as it was.
    pub fn delta_for_event(&mut self, event: &Event) -> Result<Option<proto::Delta>, ApiError> {
        let (collection, key, listed_at) =
            if let Some(key) = store_key(&event.kv.key, &self.services_prefix) {
                (Collection::Services, key, self.listed_at[0])
            } else if let Some(key) = store_key(&event.kv.key, &self.endpoints_prefix) {
                (Collection::Endpoints, key, self.listed_at[1])
            } else {
                return Ok(None);
            };
        if event.revision() <= listed_at {
            return Ok(None);
        }
        let object = match event.event_type {
            EventType::Put => Some(objects::value(&event.kv)?),
            EventType::Delete => None,
        };
        Ok(self
            .table
            .apply(collection, key, object)
            .map(|change| delta(event.revision(), change)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {
                "type": "NodePort", "clusterIP": "10.96.0.10",
                "sessionAffinity": "ClientIP",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            },
        })
    }

    fn web_endpoints() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [
                {"addresses": [{"ip": "10.244.0.2", "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "name": "a", "namespace": "default", "uid": "u"}}],
                 "notReadyAddresses": [{"ip": "10.244.1.3", "nodeName": "n2", "hostname": "b0",
                    "targetRef": {"kind": "Pod", "name": "b", "namespace": "default", "uid": "v"}}],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.244.0.4"}],
                 "ports": [{"name": "http", "port": 9000, "protocol": "TCP"},
                           {"name": "dns", "port": 5353, "protocol": "UDP"}]},
            ],
        })
    }

    #[test]
    fn a_service_and_its_endpoints_become_one_entry() {
        let entry = service_entry(&web(), Some(&web_endpoints()));
        assert_eq!(entry.namespace, "default");
        assert_eq!(entry.r#type, "NodePort");
        assert_eq!(entry.cluster_ip, "10.96.0.10");
        assert_eq!(entry.session_affinity, "ClientIP");
        assert_eq!(
            entry.session_affinity_timeout_seconds,
            DEFAULT_AFFINITY_TIMEOUT_SECONDS
        );
        assert_eq!(entry.resource_version, "7");
        let http = &entry.ports[0];
        assert_eq!((http.port, http.node_port), (80, 30080));
        let endpoints: Vec<(&str, u32, bool, &str, &str, &str)> = http
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.ip.as_str(),
                    e.port,
                    e.ready,
                    e.node_name.as_str(),
                    e.pod_name.as_str(),
                    e.hostname.as_str(),
                )
            })
            .collect();
        assert_eq!(
            endpoints,
            [
                ("10.244.0.2", 8080, true, "n1", "a", ""),
                ("10.244.1.3", 8080, false, "n2", "b", "b0"),
                ("10.244.0.4", 9000, true, "", "", ""),
            ]
        );
        let dns = &entry.ports[1];
        assert_eq!((dns.protocol.as_str(), dns.node_port), ("UDP", 0));
        assert_eq!(dns.endpoints.len(), 1);
        assert_eq!(dns.endpoints[0].port, 5353);

        // Without Endpoints: the ports, and no endpoints.
        let bare = service_entry(&web(), None);
        assert!(bare.ports.iter().all(|p| p.endpoints.is_empty()));
    }

    #[test]
    fn external_name_and_headless_services() {
        let external = service_entry(
            &json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
            None,
        );
        assert_eq!(external.cluster_ip, "");
        assert_eq!(external.external_name, "db.example.com");
        assert_eq!(external.session_affinity, "None");
        assert_eq!(external.session_affinity_timeout_seconds, 0);
        assert!(external.ports.is_empty());

        let headless = service_entry(
            &json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"clusterIP": "None", "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}),
            Some(&json!({"subsets": [{"addresses": [{"ip": "10.244.0.9", "hostname": "db-0"}]}]})),
        );
        assert_eq!(headless.r#type, "ClusterIP");
        assert_eq!(headless.session_affinity_timeout_seconds, 60);
        assert_eq!(headless.ports.len(), 1, "a port 0 carries the endpoints");
        assert_eq!(headless.ports[0].port, 0);
        assert_eq!(headless.ports[0].endpoints[0].hostname, "db-0");
    }

    #[test]
    fn the_table_sends_only_what_changed() {
        let mut table = ServiceTable::new(vec![web()], Vec::new());
        assert_eq!(table.entries().len(), 1);
        assert!(table.entries()[0].ports[0].endpoints.is_empty());

        let change = table.apply(Collection::Endpoints, "default/web", Some(web_endpoints()));
        let Some(ServiceChange::Upsert(entry)) = change else {
            panic!("expected an upsert: {change:?}");
        };
        assert_eq!(entry.ports[0].endpoints.len(), 3);
        // The same content again (an Endpoints write that changes
        // nothing the node sees): nothing.
        let mut relabelled = web_endpoints();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        assert_eq!(
            table.apply(Collection::Endpoints, "default/web", Some(relabelled)),
            None
        );
        // Endpoints without a Service: nothing to say.
        assert_eq!(
            table.apply(Collection::Endpoints, "default/orphan", Some(json!({}))),
            None
        );
        let gone = table.apply(Collection::Services, "default/web", None);
        assert_eq!(gone, Some(ServiceChange::Remove("default/web".into())));
        let delta = delta(12, gone.expect("change"));
        assert_eq!(delta.revision, 12);
        assert_eq!(delta.services_removed, ["default/web"]);
        assert!(delta.services_upserted.is_empty());
        assert_eq!(
            table.apply(Collection::Endpoints, "default/web", None),
            None
        );
        assert!(table.entries().is_empty());
    }

    fn event(key: &str, object: &Value, revision: i64) -> Event {
        Event {
            event_type: EventType::Put,
            kv: KeyValue {
                key: key.into(),
                value: bytes::Bytes::from(object.to_string()),
                create_revision: revision,
                mod_revision: revision,
            },
            previous: None,
        }
    }

    #[test]
    fn session_events_at_or_below_the_lists_are_skipped() {
        let mut session = SessionServices {
            table: ServiceTable::new(vec![web()], Vec::new()),
            services_prefix: "/registry/core/services/".into(),
            endpoints_prefix: "/registry/core/endpoints/".into(),
            listed_at: [10, 12],
        };
        assert!(session.concerns("/registry/core/endpoints/default/web"));
        assert!(!session.concerns("/registry/core/pods/default/web"));
        let key = "/registry/core/endpoints/default/web";
        let replayed = session
            .delta_for_event(&event(key, &web_endpoints(), 12))
            .expect("event");
        assert_eq!(replayed, None, "already in the list");
        let delta = session
            .delta_for_event(&event(key, &web_endpoints(), 13))
            .expect("event")
            .expect("a delta");
        assert_eq!(delta.revision, 13);
        assert_eq!(delta.services_upserted[0].ports[0].endpoints.len(), 3);
        assert!(session
            .delta_for_event(&event("/registry/core/pods/default/x", &json!({}), 14))
            .expect("event")
            .is_none());
    }
}
