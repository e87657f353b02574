//! ClusterIP and NodePort allocation for Services.
//!
//! The stored Services are the durable record of what is allocated: the
//! allocator is rebuilt from them at start-up, and every allocation is
//! written as part of the Service itself. The API server holds one lock
//! across "allocate, then store the Service", so two Services can never be
//! given the same IP or port, and a crash between the two steps leaves
//! nothing allocated. This is how kube-apiserver's repair loop treats its
//! bitmaps, without the separate bitmap object.
//!
//! The allocators themselves are plain data structures with no I/O.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::api::errors::FieldError;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AllocatorError {
    #[error("invalid CIDR {0:?}: expected an IPv4 network such as 10.96.0.0/12")]
    InvalidCidr(String),
    #[error("invalid port range {0:?}: expected FIRST-LAST such as 30000-32767")]
    InvalidPortRange(String),
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, AllocatorError> {
        let invalid = || AllocatorError::InvalidCidr(text.to_owned());
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if !(8..=30).contains(&prefix) {
            return Err(invalid());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            network: u32::from(address) & mask,
            prefix,
        })
    }

    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.network
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + offset)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// Which ClusterIPs are taken. The network and broadcast addresses are
/// never handed out, and the first usable one is the `kubernetes`
/// Service's.
#[derive(Debug, Clone)]
pub struct ClusterIpAllocator {
    cidr: Cidr,
    used: BTreeSet<u32>,
    /// Where the next search starts, so that freed IPs are not immediately
    /// reused (a client may still hold the old one).
    cursor: u32,
}

impl ClusterIpAllocator {
    pub fn new(cidr: Cidr) -> Self {
        ClusterIpAllocator {
            cidr,
            used: BTreeSet::new(),
            cursor: 2,
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The ClusterIP reserved for the API server's own Service.
    pub fn api_service_ip(&self) -> Ipv4Addr {
        self.cidr.nth(1)
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(ip).wrapping_sub(self.cidr.network);
        (self.cidr.contains(ip) && offset != 0 && offset != self.cidr.size() - 1).then_some(offset)
    }

    /// Marks an IP that a stored Service already holds.
    pub fn mark(&mut self, ip: Ipv4Addr) {
        if let Some(offset) = self.offset(ip) {
            self.used.insert(offset);
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(offset) = self.offset(ip) {
            self.used.remove(&offset);
        }
    }

    /// Claims a specific IP, with the apiserver's messages when it can't.
    pub fn claim(&mut self, ip: Ipv4Addr, field: &str) -> Result<(), FieldError> {
        let Some(offset) = self.offset(ip) else {
            return Err(FieldError::invalid(
                field,
                ip,
                format!(
                    "failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}",
                    self.cidr
                ),
            ));
        };
        if !self.used.insert(offset) {
            return Err(FieldError::invalid(
                field,
                ip,
                format!("failed to allocate IP {ip}: provided IP is already allocated"),
            ));
        }
        Ok(())
    }

    /// Takes the next free IP.
    pub fn allocate(&mut self, field: &str) -> Result<Ipv4Addr, FieldError> {
        let usable = self.cidr.size() - 2;
        for step in 0..usable {
            let offset = 1 + (self.cursor - 1 + step) % usable;
            if self.used.insert(offset) {
                self.cursor = offset + 1;
                return Ok(self.cidr.nth(offset));
            }
        }
        Err(FieldError::invalid(
            field,
            "",
            format!(
                "failed to allocate a serviceIP: range {} is full",
                self.cidr
            ),
        ))
    }
}

/// Which NodePorts are taken, within the configured range.
#[derive(Debug, Clone)]
pub struct NodePortAllocator {
    first: u16,
    last: u16,
    used: BTreeSet<u16>,
    cursor: u16,
}

impl NodePortAllocator {
    pub fn parse_range(text: &str) -> Result<(u16, u16), AllocatorError> {
        let invalid = || AllocatorError::InvalidPortRange(text.to_owned());
        let (first, last) = text.split_once('-').ok_or_else(invalid)?;
        let first: u16 = first.trim().parse().map_err(|_| invalid())?;
        let last: u16 = last.trim().parse().map_err(|_| invalid())?;
        if first == 0 || first > last {
            return Err(invalid());
        }
        Ok((first, last))
    }

    pub fn new(first: u16, last: u16) -> Self {
        NodePortAllocator {
            first,
            last,
            used: BTreeSet::new(),
            cursor: first,
        }
    }

    pub fn mark(&mut self, port: u16) {
        if (self.first..=self.last).contains(&port) {
            self.used.insert(port);
        }
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    pub fn claim(&mut self, port: i32, field: &str) -> Result<(), FieldError> {
        let in_range = u16::try_from(port)
            .ok()
            .filter(|port| (self.first..=self.last).contains(port));
        let Some(port16) = in_range else {
            return Err(FieldError::invalid(
                field,
                port,
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    self.first, self.last
                ),
            ));
        };
        if !self.used.insert(port16) {
            return Err(FieldError::invalid(
                field,
                port,
                "provided port is already allocated",
            ));
        }
        Ok(())
    }

    pub fn allocate(&mut self, field: &str) -> Result<u16, FieldError> {
        let size = u32::from(self.last - self.first) + 1;
        for step in 0..size {
            let port = self.first + ((u32::from(self.cursor - self.first) + step) % size) as u16;
            if self.used.insert(port) {
                self.cursor = if port == self.last {
                    self.first
                } else {
                    port + 1
                };
                return Ok(port);
            }
        }
        Err(FieldError::invalid(
            field,
            "",
            format!("range {}-{} is full", self.first, self.last),
        ))
    }
}

/// Both allocators, as held by the API server.
#[derive(Debug, Clone)]
pub struct ServiceAllocations {
    pub cluster_ips: ClusterIpAllocator,
    pub node_ports: NodePortAllocator,
}

/// What a Service holds: its ClusterIP (unless headless or ExternalName)
/// and its NodePorts.
pub fn held_by(service: &Value) -> (Option<Ipv4Addr>, Vec<u16>) {
    let ip = service
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok());
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|port| port.get("nodePort").and_then(Value::as_u64))
                .filter_map(|port| u16::try_from(port).ok())
                .collect()
        })
        .unwrap_or_default();
    (ip, ports)
}

impl ServiceAllocations {
    pub fn mark_service(&mut self, service: &Value) {
        let (ip, ports) = held_by(service);
        if let Some(ip) = ip {
            self.cluster_ips.mark(ip);
        }
        for port in ports {
            self.node_ports.mark(port);
        }
    }

    pub fn release_service(&mut self, service: &Value) {
        let (ip, ports) = held_by(service);
        if let Some(ip) = ip {
            self.cluster_ips.release(ip);
        }
        for port in ports {
            self.node_ports.release(port);
        }
    }

    /// Fills in a new or updated Service's ClusterIP and NodePorts.
    /// `old` is the stored Service on update: what it held stays held, and
    /// what the update drops is released. On error nothing changes.
    pub fn assign(
        &mut self,
        service: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let mut trial = self.clone();
        if let Some(old) = old {
            trial.release_service(old);
        }
        let mut errors = Vec::new();
        let service_type = service
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        let old_ip = old
            .and_then(|old| old.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let spec = match service.get_mut("spec").and_then(Value::as_object_mut) {
            Some(spec) => spec,
            None => return Ok(()),
        };

        if service_type == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        } else {
            let requested = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(old_ip) = old_ip.as_deref().filter(|old_ip| !old_ip.is_empty()) {
                if !requested.is_empty() && requested != old_ip {
                    errors.push(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        &requested,
                        "may not change once set",
                    ));
                }
            }
            let requested = if requested.is_empty() {
                old_ip.clone().unwrap_or_default()
            } else {
                requested
            };
            let assigned = match requested.as_str() {
                "None" => Some("None".to_owned()),
                "" => match trial.cluster_ips.allocate("spec.clusterIPs") {
                    Ok(ip) => Some(ip.to_string()),
                    Err(error) => {
                        errors.push(error);
                        None
                    }
                },
                text => match text.parse::<Ipv4Addr>() {
                    Ok(ip) => match trial.cluster_ips.claim(ip, "spec.clusterIPs") {
                        Ok(()) => Some(ip.to_string()),
                        Err(error) => {
                            errors.push(error);
                            None
                        }
                    },
                    Err(_) => {
                        errors.push(FieldError::invalid(
                            "spec.clusterIPs[0]",
                            text,
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        ));
                        None
                    }
                },
            };
            if let Some(ip) = assigned {
                spec.insert("clusterIP".into(), Value::String(ip.clone()));
                spec.insert("clusterIPs".into(), Value::Array(vec![Value::String(ip)]));
            }
        }

        let wants_node_ports = matches!(service_type.as_str(), "NodePort" | "LoadBalancer");
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (index, port) in ports.iter_mut().enumerate() {
                let Some(port) = port.as_object_mut() else {
                    continue;
                };
                let field = format!("spec.ports[{index}].nodePort");
                if !wants_node_ports {
                    port.remove("nodePort");
                    continue;
                }
                match port.get("nodePort").and_then(Value::as_i64) {
                    Some(requested) if requested != 0 => {
                        let requested = i32::try_from(requested).unwrap_or(-1);
                        if let Err(error) = trial.node_ports.claim(requested, &field) {
                            errors.push(error);
                        }
                    }
                    _ => match trial.node_ports.allocate(&field) {
                        Ok(allocated) => {
                            port.insert("nodePort".into(), Value::from(allocated));
                        }
                        Err(error) => errors.push(error),
                    },
                }
            }
        }
        if errors.is_empty() {
            *self = trial;
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allocations() -> ServiceAllocations {
        let cidr = Cidr::parse("10.96.0.0/12").expect("cidr");
        let mut allocations = ServiceAllocations {
            cluster_ips: ClusterIpAllocator::new(cidr),
            node_ports: NodePortAllocator::new(30000, 32767),
        };
        let api_ip = allocations.cluster_ips.api_service_ip();
        allocations.cluster_ips.mark(api_ip);
        allocations
    }

    #[test]
    fn cidr_parsing_masks_host_bits_and_rejects_garbage() {
        let cidr = Cidr::parse("10.96.5.1/12").expect("cidr");
        assert_eq!(cidr.to_string(), "10.96.0.0/12");
        assert!(Cidr::parse("10.96.0.0").is_err());
        assert!(Cidr::parse("nope/12").is_err());
    }

    #[test]
    fn cluster_ips_are_unique_and_skip_the_api_ip() {
        let mut allocations = allocations();
        let mut first = json!({"spec": {"ports": [{"port": 80}]}});
        let mut second = json!({"spec": {"ports": [{"port": 80}]}});
        allocations.assign(&mut first, None).expect("first");
        allocations.assign(&mut second, None).expect("second");
        assert_eq!(first["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(second["spec"]["clusterIP"], "10.96.0.3");
        assert_eq!(first["spec"]["clusterIPs"], json!(["10.96.0.2"]));
    }

    #[test]
    fn explicit_ip_is_honoured_or_rejected_clearly() {
        let mut allocations = allocations();
        let mut service = json!({"spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}});
        allocations.assign(&mut service, None).expect("explicit");
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.50");

        let mut taken = json!({"spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}});
        let errors = allocations.assign(&mut taken, None).expect_err("taken");
        assert!(
            errors[0]
                .message()
                .contains("provided IP is already allocated"),
            "{:?}",
            errors
        );

        let mut outside = json!({"spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}});
        let errors = allocations.assign(&mut outside, None).expect_err("outside");
        assert!(
            errors[0]
                .message()
                .contains("The range of valid IPs is 10.96.0.0/12"),
            "{:?}",
            errors
        );
    }

    #[test]
    fn headless_and_external_name_get_no_ip() {
        let mut allocations = allocations();
        let mut headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        allocations.assign(&mut headless, None).expect("headless");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let mut external = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        allocations.assign(&mut external, None).expect("external");
        assert!(external["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn node_ports_conflict_with_a_clear_error_and_nothing_leaks() {
        let mut allocations = allocations();
        let mut first =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}});
        allocations.assign(&mut first, None).expect("first");
        let before = allocations.cluster_ips.used.len();
        let mut second =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}});
        let errors = allocations.assign(&mut second, None).expect_err("conflict");
        assert_eq!(
            errors[0].message(),
            "spec.ports[0].nodePort: Invalid value: \"30001\": provided port is already allocated"
        );
        assert_eq!(
            allocations.cluster_ips.used.len(),
            before,
            "a failed assign allocates nothing"
        );

        let mut out_of_range =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        let errors = allocations
            .assign(&mut out_of_range, None)
            .expect_err("range");
        assert!(errors[0]
            .message()
            .contains("The range of valid ports is 30000-32767"));
    }

    #[test]
    fn update_keeps_what_it_held_and_releases_what_it_dropped() {
        let mut allocations = allocations();
        let mut service = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocations.assign(&mut service, None).expect("create");
        let ip = service["spec"]["clusterIP"].clone();
        let node_port = service["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .expect("port") as u16;

        let mut as_cluster_ip = service.clone();
        as_cluster_ip["spec"]["type"] = json!("ClusterIP");
        allocations
            .assign(&mut as_cluster_ip, Some(&service))
            .expect("update");
        assert_eq!(
            as_cluster_ip["spec"]["clusterIP"], ip,
            "the ClusterIP is kept"
        );
        assert!(as_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert!(
            !allocations.node_ports.used.contains(&node_port),
            "the NodePort is released"
        );
    }
}
