//! The service table as the proxy sees it: validated domain types,
//! converted from the node API's protobuf messages at the edge.
//!
//! Only what forwarding needs survives the conversion: a service without a
//! ClusterIP (headless, ExternalName) is kept but gets no rules, and
//! endpoints that are not ready are kept out of the rules by the renderer.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use skiff_proto::node::v1 as proto;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("service {service}: cluster IP {value:?} is not an IPv4 address (IPv6 services are not proxied yet)")]
    InvalidClusterIp { service: String, value: String },
    #[error("service {service}: endpoint IP {value:?} is not an IPv4 address")]
    InvalidEndpointIp { service: String, value: String },
    #[error("service {service}: {field} {value} is out of range (1-65535)")]
    PortOutOfRange {
        service: String,
        field: &'static str,
        value: u32,
    },
    #[error("service {service}: unknown protocol {value:?} (expected TCP, UDP or SCTP)")]
    UnknownProtocol { service: String, value: String },
    #[error("service {service}: unknown type {value:?} (expected ClusterIP, NodePort, LoadBalancer or ExternalName)")]
    UnknownType { service: String, value: String },
    #[error("service {service}: unknown session affinity {value:?} (expected None or ClientIP)")]
    UnknownSessionAffinity { service: String, value: String },
    #[error("service {service}: namespace and name must not be empty")]
    MissingName { service: String },
}

/// `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// As iptables' `-p` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAffinity {
    None,
    ClientIp { timeout_seconds: u32 },
}

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty for a single unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    pub fn ready_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.ready)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    pub kind: ServiceType,
    /// None for headless and ExternalName services, which get no rules.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    pub affinity: SessionAffinity,
}

/// Every service of the cluster, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    pub services: BTreeMap<ServiceKey, Service>,
}

impl ServiceTable {
    /// Builds the table from a snapshot. Services that fail validation are
    /// left out and returned with their error, so one bad object does not
    /// stop the proxy for every other service.
    pub fn from_snapshot(services: &[proto::Service]) -> (Self, Vec<ServiceError>) {
        let mut table = ServiceTable::default();
        let errors = table.apply_delta(services, &[]);
        (table, errors)
    }

    /// Applies a delta: upserts replace whole services, removals are
    /// `namespace/name` keys. A service that fails validation is removed
    /// (its old rules would be stale) and its error returned.
    pub fn apply_delta(
        &mut self,
        upserted: &[proto::Service],
        removed: &[String],
    ) -> Vec<ServiceError> {
        let mut errors = Vec::new();
        for key in removed {
            if let Some((namespace, name)) = key.split_once('/') {
                self.services.remove(&ServiceKey {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
        }
        for message in upserted {
            let key = ServiceKey {
                namespace: message.namespace.clone(),
                name: message.name.clone(),
            };
            match Service::try_from(message) {
                Ok(service) => {
                    self.services.insert(key, service);
                }
                Err(error) => {
                    self.services.remove(&key);
                    errors.push(error);
                }
            }
        }
        errors
    }

    pub fn insert(&mut self, service: Service) {
        self.services.insert(service.key.clone(), service);
    }
}

fn port(service: &str, field: &'static str, value: u32) -> Result<u16, ServiceError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ServiceError::PortOutOfRange {
            service: service.to_owned(),
            field,
            value,
        })
}

impl TryFrom<&proto::Service> for Service {
    type Error = ServiceError;

    fn try_from(message: &proto::Service) -> Result<Self, Self::Error> {
        let service = format!("{}/{}", message.namespace, message.name);
        if message.namespace.is_empty() || message.name.is_empty() {
            return Err(ServiceError::MissingName { service });
        }
        let kind = match message.r#type.as_str() {
            "" | "ClusterIP" => ServiceType::ClusterIp,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            other => {
                return Err(ServiceError::UnknownType {
                    service,
                    value: other.to_owned(),
                })
            }
        };
        let cluster_ip = match message.cluster_ip.as_str() {
            "" | "None" => None,
            _ if kind == ServiceType::ExternalName => None,
            value => {
                Some(
                    value
                        .parse::<Ipv4Addr>()
                        .map_err(|_| ServiceError::InvalidClusterIp {
                            service: service.clone(),
                            value: value.to_owned(),
                        })?,
                )
            }
        };
        let affinity = match message.session_affinity.as_str() {
            "" | "None" => SessionAffinity::None,
            "ClientIP" => SessionAffinity::ClientIp {
                timeout_seconds: match message.session_affinity_timeout_seconds {
                    0 => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                    seconds => seconds,
                },
            },
            other => {
                return Err(ServiceError::UnknownSessionAffinity {
                    service,
                    value: other.to_owned(),
                })
            }
        };
        let mut ports = Vec::with_capacity(message.ports.len());
        for p in &message.ports {
            let protocol = match p.protocol.as_str() {
                "" | "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                other => {
                    return Err(ServiceError::UnknownProtocol {
                        service,
                        value: other.to_owned(),
                    })
                }
            };
            let node_port = match p.node_port {
                0 => None,
                value => Some(port(&service, "nodePort", value)?),
            };
            let mut endpoints = Vec::with_capacity(p.endpoints.len());
            for e in &p.endpoints {
                endpoints.push(Endpoint {
                    ip: e.ip.parse().map_err(|_| ServiceError::InvalidEndpointIp {
                        service: service.clone(),
                        value: e.ip.clone(),
                    })?,
                    port: port(&service, "endpoint port", e.port)?,
                    ready: e.ready,
                });
            }
            ports.push(ServicePort {
                name: p.name.clone(),
                protocol,
                port: port(&service, "port", p.port)?,
                node_port,
                endpoints,
            });
        }
        Ok(Service {
            key: ServiceKey {
                namespace: message.namespace.clone(),
                name: message.name.clone(),
            },
            kind,
            cluster_ip,
            ports,
            affinity,
        })
    }
}

impl TryFrom<proto::Service> for Service {
    type Error = ServiceError;

    fn try_from(message: proto::Service) -> Result<Self, Self::Error> {
        Service::try_from(&message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> proto::Service {
        proto::Service {
            namespace: "default".into(),
            name: "web".into(),
            r#type: "NodePort".into(),
            cluster_ip: "10.96.0.10".into(),
            ports: vec![proto::ServicePort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 80,
                node_port: 30080,
                endpoints: vec![proto::ServiceEndpoint {
                    ip: "10.244.1.5".into(),
                    port: 8080,
                    ready: true,
                    ..Default::default()
                }],
            }],
            session_affinity: "ClientIP".into(),
            ..Default::default()
        }
    }

    #[test]
    fn converts_a_valid_service() {
        let service = Service::try_from(message()).expect("valid");
        assert_eq!(service.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(service.kind, ServiceType::NodePort);
        assert_eq!(service.ports[0].node_port, Some(30080));
        assert_eq!(service.ports[0].endpoints[0].port, 8080);
        assert_eq!(
            service.affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS
            }
        );
    }

    #[test]
    fn headless_services_have_no_cluster_ip() {
        let mut m = message();
        m.cluster_ip = "None".into();
        assert_eq!(Service::try_from(m).expect("valid").cluster_ip, None);
    }

    #[test]
    fn bad_input_gets_typed_errors() {
        let mut m = message();
        m.cluster_ip = "10.96.0.300".into();
        assert!(matches!(
            Service::try_from(m),
            Err(ServiceError::InvalidClusterIp { .. })
        ));

        let mut m = message();
        m.ports[0].endpoints[0].ip = "fd00::1".into();
        assert!(matches!(
            Service::try_from(m),
            Err(ServiceError::InvalidEndpointIp { .. })
        ));

        let mut m = message();
        m.ports[0].port = 70000;
        assert!(matches!(
            Service::try_from(m),
            Err(ServiceError::PortOutOfRange {
                field: "port",
                value: 70000,
                ..
            })
        ));

        let mut m = message();
        m.ports[0].endpoints[0].port = 0;
        assert!(matches!(
            Service::try_from(m),
            Err(ServiceError::PortOutOfRange { .. })
        ));

        let mut m = message();
        m.ports[0].protocol = "ICMP".into();
        let error = Service::try_from(m).expect_err("unknown protocol");
        assert_eq!(
            error.to_string(),
            "service default/web: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)"
        );

        let mut m = message();
        m.session_affinity = "Cookie".into();
        assert!(matches!(
            Service::try_from(m),
            Err(ServiceError::UnknownSessionAffinity { .. })
        ));
    }

    #[test]
    fn a_bad_upsert_removes_the_old_service() {
        let (mut table, errors) = ServiceTable::from_snapshot(&[message()]);
        assert!(errors.is_empty());
        let mut bad = message();
        bad.cluster_ip = "nonsense".into();
        let errors = table.apply_delta(&[bad], &[]);
        assert_eq!(errors.len(), 1);
        assert!(table.services.is_empty());
        let errors = table.apply_delta(&[message()], &["default/web".into()]);
        assert!(errors.is_empty());
        assert_eq!(table.services.len(), 1);
        table.apply_delta(&[], &["default/web".into()]);
        assert!(table.services.is_empty());
    }
}
