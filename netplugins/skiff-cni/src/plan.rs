//! Pure decisions: names and MACs, the attach/detach plans, the result of an
//! ADD, and CHECK's comparison of `prevResult` with what the kernel has.
//!
//! Naming rules. The host end of a pod's veth is `veth` plus 8 hex digits of
//! a hash of (container ID, ifname): deterministic, so DEL finds it without
//! any saved state, and within the 15-byte limit. The pod end gets the MAC
//! `0a:58:<IPv4 address>` (locally administered, unicast) and the bridge
//! `0a:58:<gateway>`: an address handed out again after a DEL keeps mapping
//! to the same MAC, so neighbours' ARP caches are never wrong. The host end
//! gets `0a:59:<pod address>`: unique on the node, and known without asking
//! the kernel.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};

use crate::config::NetConf;
use crate::dataplane::{
    AttachPlan, Attached, BridgeSpec, DetachPlan, Mac, ObserveQuery, Observed, RouteSpec,
};
use crate::invocation::Attachment;
use crate::result::{CniResult, Interface, IpConfig, Route};

/// FNV-1a, 32 bits: a stable, dependency-free hash for names (not for
/// security; a collision needs two live attachments on one node).
fn fnv1a(parts: &[&str]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    // A NUL after each part keeps ("ab", "c") apart from ("a", "bc").
    for byte in parts
        .iter()
        .flat_map(|part| part.bytes().chain(std::iter::once(0)))
    {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{:08x}", fnv1a(&[container_id, ifname]))
}

pub fn mac_for(address: Ipv4Addr) -> Mac {
    let [a, b, c, d] = address.octets();
    [0x0a, 0x58, a, b, c, d]
}

pub fn host_veth_mac_for(pod_address: Ipv4Addr) -> Mac {
    let [a, b, c, d] = pod_address.octets();
    [0x0a, 0x59, a, b, c, d]
}

pub fn format_mac(mac: Mac) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn gateway_cidr(conf: &NetConf) -> Ipv4Net {
    // The prefix comes from a validated subnet, so this cannot fail; fall
    // back to a host route rather than panic.
    Ipv4Net::new(conf.gateway, conf.subnet.prefix_len())
        .unwrap_or_else(|_| Ipv4Net::from(conf.gateway))
}

fn default_route() -> Ipv4Net {
    Ipv4Net::default()
}

pub fn attach_plan(
    conf: &NetConf,
    attachment: &Attachment,
    netns: &Path,
    address: Ipv4Addr,
) -> AttachPlan {
    let pod_address =
        Ipv4Net::new(address, conf.subnet.prefix_len()).unwrap_or_else(|_| Ipv4Net::from(address));
    AttachPlan {
        netns: netns.to_path_buf(),
        bridge: BridgeSpec {
            name: conf.bridge.clone(),
            address: gateway_cidr(conf),
            mac: mac_for(conf.gateway),
            mtu: conf.mtu,
        },
        host_veth: host_veth_name(&attachment.container_id, &attachment.ifname),
        host_veth_mac: host_veth_mac_for(address),
        pod_ifname: attachment.ifname.clone(),
        pod_mac: mac_for(address),
        pod_address,
        pod_routes: vec![RouteSpec {
            destination: default_route(),
            gateway: conf.gateway,
        }],
        mtu: conf.mtu,
        hairpin: conf.hairpin_mode,
    }
}

pub fn detach_plan(attachment: &Attachment) -> DetachPlan {
    DetachPlan {
        netns: attachment.netns.clone(),
        host_veth: host_veth_name(&attachment.container_id, &attachment.ifname),
        pod_ifname: attachment.ifname.clone(),
    }
}

pub fn observe_query(conf: &NetConf, attachment: &Attachment, netns: &Path) -> ObserveQuery {
    ObserveQuery {
        netns: netns.to_path_buf(),
        pod_ifname: attachment.ifname.clone(),
        host_veth: host_veth_name(&attachment.container_id, &attachment.ifname),
        bridge: conf.bridge.clone(),
    }
}

/// The ADD result: bridge, host end, pod end (with its sandbox), the pod's
/// address on the pod end, and its routes.
pub fn add_result(plan: &AttachPlan, attached: &Attached, gateway: Ipv4Addr) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: plan.bridge.name.clone(),
                mac: Some(format_mac(attached.bridge_mac)),
                sandbox: None,
            },
            Interface {
                name: plan.host_veth.clone(),
                mac: Some(format_mac(attached.host_veth_mac)),
                sandbox: None,
            },
            Interface {
                name: plan.pod_ifname.clone(),
                mac: Some(format_mac(attached.pod_mac)),
                sandbox: Some(plan.netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            address: IpNet::V4(plan.pod_address),
            gateway: Some(IpAddr::V4(gateway)),
            interface: Some(2),
        }],
        routes: plan
            .pod_routes
            .iter()
            .map(|route| Route {
                dst: IpNet::V4(route.destination),
                gw: Some(IpAddr::V4(route.gateway)),
            })
            .collect(),
        dns: None,
    }
}

/// What CHECK expects of the pod interface, from `prevResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub ifname: String,
    pub mac: Option<String>,
    pub addresses: Vec<Ipv4Net>,
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("prevResult lists no interface {ifname} inside the sandbox")]
    NotInPrevResult { ifname: String },
    #[error("interface {0} is missing from the pod's network namespace")]
    InterfaceMissing(String),
    #[error("interface {0} is down")]
    InterfaceDown(String),
    #[error("interface {ifname} has MAC {actual}, prevResult says {expected}")]
    MacMismatch {
        ifname: String,
        expected: String,
        actual: String,
    },
    #[error("interface {ifname} lacks address {address}")]
    AddressMissing { ifname: String, address: Ipv4Net },
    #[error("route to {destination} via {gateway:?} is missing on {ifname}")]
    RouteMissing {
        ifname: String,
        destination: Ipv4Net,
        gateway: Option<Ipv4Addr>,
    },
    #[error("the host end {0} of the veth pair is missing or not attached to the bridge")]
    HostEndDetached(String),
    #[error("address {address} is not reserved for this container and interface")]
    ReservationMissing { address: Ipv4Addr },
}

pub fn expected_from(prev: &CniResult, ifname: &str) -> Result<Expected, CheckError> {
    let index = prev
        .interfaces
        .iter()
        .position(|interface| interface.name == ifname && interface.sandbox.is_some())
        .ok_or_else(|| CheckError::NotInPrevResult {
            ifname: ifname.to_string(),
        })?;
    let addresses = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .filter_map(|ip| match ip.address {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        })
        .collect();
    let routes = prev
        .routes
        .iter()
        .filter_map(|route| match (route.dst, route.gw) {
            (IpNet::V4(dst), Some(IpAddr::V4(gw))) => Some((dst, Some(gw))),
            (IpNet::V4(dst), None) => Some((dst, None)),
            _ => None,
        })
        .collect();
    Ok(Expected {
        ifname: ifname.to_string(),
        mac: prev.interfaces[index].mac.clone(),
        addresses,
        routes,
    })
}

/// Compares expectation and observation; the first difference is the error.
/// Routes without a gateway in `prevResult` match any gateway.
pub fn compare(
    expected: &Expected,
    observed: &Observed,
    host_veth: &str,
) -> Result<(), CheckError> {
    let ifname = &expected.ifname;
    let link = observed
        .pod_link
        .as_ref()
        .ok_or_else(|| CheckError::InterfaceMissing(ifname.clone()))?;
    if !link.up {
        return Err(CheckError::InterfaceDown(ifname.clone()));
    }
    if let Some(mac) = &expected.mac {
        let actual = format_mac(link.mac);
        if !mac.eq_ignore_ascii_case(&actual) {
            return Err(CheckError::MacMismatch {
                ifname: ifname.clone(),
                expected: mac.clone(),
                actual,
            });
        }
    }
    for address in &expected.addresses {
        if !link.addresses.contains(address) {
            return Err(CheckError::AddressMissing {
                ifname: ifname.clone(),
                address: *address,
            });
        }
    }
    for (destination, gateway) in &expected.routes {
        let present = link
            .routes
            .iter()
            .any(|(dst, gw)| dst == destination && (gateway.is_none() || gw == gateway));
        if !present {
            return Err(CheckError::RouteMissing {
                ifname: ifname.clone(),
                destination: *destination,
                gateway: *gateway,
            });
        }
    }
    if !observed.host_veth_on_bridge {
        return Err(CheckError::HostEndDetached(host_veth.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::ObservedPodLink;

    fn conf() -> NetConf {
        crate::config::parse_config(
            br#"{"cniVersion":"1.0.0","name":"skiff","bridge":"skiff0","subnet":"10.244.1.0/24","mtu":1450}"#,
        )
        .unwrap()
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "c0ffee".into(),
            ifname: "eth0".into(),
            netns: Some("/run/netns/pod".into()),
        }
    }

    #[test]
    fn host_veth_names_are_stable_distinct_and_short() {
        let a = host_veth_name("c0ffee", "eth0");
        assert_eq!(a, host_veth_name("c0ffee", "eth0"));
        assert_ne!(a, host_veth_name("c0ffee", "eth1"));
        assert_ne!(a, host_veth_name("c0ffef", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(crate::invocation::validate_ifname(&a).is_ok());
    }

    #[test]
    fn the_plan_follows_the_config() {
        let plan = attach_plan(
            &conf(),
            &attachment(),
            Path::new("/run/netns/pod"),
            "10.244.1.5".parse().unwrap(),
        );
        assert_eq!(plan.bridge.address.to_string(), "10.244.1.1/24");
        assert_eq!(plan.bridge.mac, [0x0a, 0x58, 10, 244, 1, 1]);
        assert_eq!(plan.pod_address.to_string(), "10.244.1.5/24");
        assert_eq!(format_mac(plan.pod_mac), "0a:58:0a:f4:01:05");
        assert_eq!(plan.mtu, 1450);
        assert_eq!(plan.pod_routes[0].destination.to_string(), "0.0.0.0/0");
        assert!(plan.hairpin);
    }

    fn observed_ok() -> Observed {
        Observed {
            pod_link: Some(ObservedPodLink {
                mac: [0x0a, 0x58, 10, 244, 1, 5],
                up: true,
                addresses: vec!["10.244.1.5/24".parse().unwrap()],
                routes: vec![
                    ("10.244.1.0/24".parse().unwrap(), None),
                    (
                        "0.0.0.0/0".parse().unwrap(),
                        Some("10.244.1.1".parse().unwrap()),
                    ),
                ],
            }),
            host_veth_on_bridge: true,
        }
    }

    #[test]
    fn check_passes_on_what_add_made_and_fails_on_each_difference() {
        let plan = attach_plan(
            &conf(),
            &attachment(),
            Path::new("/run/netns/pod"),
            "10.244.1.5".parse().unwrap(),
        );
        let attached = Attached {
            bridge_mac: plan.bridge.mac,
            host_veth_mac: [2, 0, 0, 0, 0, 1],
            pod_mac: plan.pod_mac,
        };
        let result = add_result(&plan, &attached, conf().gateway);
        let expected = expected_from(&result, "eth0").unwrap();
        assert_eq!(compare(&expected, &observed_ok(), "v"), Ok(()));

        let mut missing = observed_ok();
        missing.pod_link = None;
        assert_eq!(
            compare(&expected, &missing, "v"),
            Err(CheckError::InterfaceMissing("eth0".into()))
        );

        let mut no_address = observed_ok();
        no_address.pod_link.as_mut().unwrap().addresses.clear();
        assert!(matches!(
            compare(&expected, &no_address, "v"),
            Err(CheckError::AddressMissing { .. })
        ));

        let mut no_route = observed_ok();
        no_route.pod_link.as_mut().unwrap().routes.truncate(1);
        assert!(matches!(
            compare(&expected, &no_route, "v"),
            Err(CheckError::RouteMissing { .. })
        ));

        let mut other_mac = observed_ok();
        other_mac.pod_link.as_mut().unwrap().mac = [2, 2, 2, 2, 2, 2];
        assert!(matches!(
            compare(&expected, &other_mac, "v"),
            Err(CheckError::MacMismatch { .. })
        ));

        let mut detached = observed_ok();
        detached.host_veth_on_bridge = false;
        assert_eq!(
            compare(&expected, &detached, "v"),
            Err(CheckError::HostEndDetached("v".into()))
        );

        assert!(matches!(
            expected_from(&result, "eth1"),
            Err(CheckError::NotInPrevResult { .. })
        ));
    }
}
