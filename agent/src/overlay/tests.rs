//! The public entry points and the executor, against a fake kernel that
//! keeps a model of the device and its tables and records every write.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::netlink::InterfaceInfo;
use super::plan::{
    ObservedDevice, ObservedFdbEntry, ObservedNeighbour, ObservedRoute, OverlayAction,
};
use super::*;

#[derive(Default)]
struct FakeKernel {
    links: BTreeMap<u32, InterfaceInfo>,
    addresses: BTreeMap<u32, Vec<Ipv4Net>>,
    default_route: Option<u32>,
    device: Option<ObservedDevice>,
    neighbours: Vec<ObservedNeighbour>,
    fdb: Vec<ObservedFdbEntry>,
    routes: Vec<ObservedRoute>,
    next_index: u32,
    writes: Vec<OverlayAction>,
    /// Writes whose `Display` contains one of these fail with EPERM.
    failing: Vec<String>,
}

fn kernel_error(errno: nix::errno::Errno) -> OverlayError {
    OverlayError::Netlink {
        operation: "fake".to_string(),
        source: io::Error::from_raw_os_error(errno as i32),
    }
}

impl FakeKernel {
    fn with_external() -> Self {
        let mut kernel = FakeKernel {
            next_index: 10,
            default_route: Some(2),
            ..FakeKernel::default()
        };
        kernel.links.insert(
            2,
            InterfaceInfo {
                name: "eth0".to_string(),
                index: 2,
                mtu: 1500,
            },
        );
        kernel
            .addresses
            .insert(2, vec!["192.168.1.10/24".parse().unwrap()]);
        kernel
    }

    fn device_index(&self) -> Result<u32, OverlayError> {
        self.device
            .as_ref()
            .map(|d| d.index)
            .ok_or_else(|| OverlayError::DeviceMissing("skiff.1".to_string()))
    }
}

impl OverlayNetlink for FakeKernel {
    async fn default_route_interface(&mut self) -> Result<Option<u32>, OverlayError> {
        Ok(self.default_route)
    }

    async fn interface_by_name(
        &mut self,
        name: &str,
    ) -> Result<Option<InterfaceInfo>, OverlayError> {
        Ok(self.links.values().find(|l| l.name == name).cloned())
    }

    async fn interface_by_index(
        &mut self,
        index: u32,
    ) -> Result<Option<InterfaceInfo>, OverlayError> {
        Ok(self.links.get(&index).cloned())
    }

    async fn ipv4_addresses(&mut self, index: u32) -> Result<Vec<Ipv4Net>, OverlayError> {
        Ok(self.addresses.get(&index).cloned().unwrap_or_default())
    }

    async fn device(&mut self, _name: &str) -> Result<Option<ObservedDevice>, OverlayError> {
        Ok(self.device.clone())
    }

    async fn neighbours(&mut self, _index: u32) -> Result<Vec<ObservedNeighbour>, OverlayError> {
        Ok(self.neighbours.clone())
    }

    async fn fdb(&mut self, _index: u32) -> Result<Vec<ObservedFdbEntry>, OverlayError> {
        Ok(self.fdb.clone())
    }

    async fn routes(&mut self, _index: u32) -> Result<Vec<ObservedRoute>, OverlayError> {
        Ok(self.routes.clone())
    }

    async fn apply(&mut self, _device: &str, action: &OverlayAction) -> Result<(), OverlayError> {
        let text = action.to_string();
        if self.failing.iter().any(|f| text.contains(f.as_str())) {
            return Err(kernel_error(nix::errno::Errno::EPERM));
        }
        match action {
            OverlayAction::DeleteDevice { .. } => {
                self.device = None;
                self.neighbours.clear();
                self.fdb.clear();
                self.routes.clear();
            }
            OverlayAction::CreateDevice(spec) => {
                self.next_index += 1;
                self.addresses.insert(self.next_index, Vec::new());
                self.device = Some(ObservedDevice {
                    index: self.next_index,
                    is_vxlan: true,
                    vni: Some(spec.vni),
                    port: Some(spec.port),
                    local: Some(spec.local),
                    vtep_index: Some(spec.vtep_index),
                    learning: Some(spec.learning),
                    mtu: spec.mtu,
                    mac: Some(spec.mac),
                    up: false,
                });
            }
            OverlayAction::SetMtu { mtu } => {
                let index = self.device_index()?;
                if let Some(d) = self.device.as_mut().filter(|d| d.index == index) {
                    d.mtu = *mtu;
                }
            }
            OverlayAction::SetUp => {
                self.device_index()?;
                if let Some(d) = self.device.as_mut() {
                    d.up = true;
                }
            }
            OverlayAction::AddAddress(net) => {
                let index = self.device_index()?;
                self.addresses.entry(index).or_default().push(*net);
            }
            OverlayAction::DeleteAddress(net) => {
                let index = self.device_index()?;
                self.addresses
                    .entry(index)
                    .or_default()
                    .retain(|a| a != net);
            }
            OverlayAction::ReplaceNeighbour(n) => {
                self.device_index()?;
                self.neighbours.retain(|o| o.ip != n.ip);
                self.neighbours.push(ObservedNeighbour {
                    ip: n.ip,
                    mac: Some(n.mac),
                    permanent: true,
                });
            }
            OverlayAction::DeleteNeighbour { ip } => {
                self.device_index()?;
                let before = self.neighbours.len();
                self.neighbours.retain(|o| o.ip != *ip);
                if before == self.neighbours.len() {
                    return Err(kernel_error(nix::errno::Errno::ENOENT));
                }
            }
            OverlayAction::ReplaceFdb(e) => {
                self.device_index()?;
                match self.fdb.iter_mut().find(|o| o.mac == e.mac) {
                    Some(existing) => existing.remote = Some(e.remote),
                    None => self.fdb.push(ObservedFdbEntry {
                        mac: e.mac,
                        remote: Some(e.remote),
                        permanent: true,
                    }),
                }
            }
            OverlayAction::DeleteFdb(e) => {
                self.device_index()?;
                self.fdb
                    .retain(|o| !(o.mac == e.mac && o.remote == Some(e.remote)));
            }
            OverlayAction::ReplaceRoute(r) => {
                self.device_index()?;
                self.routes.retain(|o| o.destination != r.destination);
                self.routes.push(ObservedRoute {
                    destination: r.destination,
                    gateway: Some(r.gateway),
                    onlink: true,
                    kernel: false,
                });
            }
            OverlayAction::DeleteRoute(r) => {
                self.device_index()?;
                self.routes.retain(|o| o.destination != r.destination);
            }
        }
        self.writes.push(action.clone());
        Ok(())
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn config() -> OverlayConfig {
    OverlayConfig::new(
        1,
        DEFAULT_VXLAN_PORT,
        ExternalInterface {
            name: "eth0".to_string(),
            index: 2,
            ip: "192.168.1.10".parse().unwrap(),
            mtu: 1500,
        },
        "10.244.1.0/24".parse().unwrap(),
    )
}

fn peer(name: &str, third_octet: u8) -> Peer {
    Peer {
        node_name: name.to_string(),
        subnet: Ipv4Net::new(Ipv4Addr::new(10, 244, third_octet, 0), 24).unwrap(),
        public_ip: Ipv4Addr::new(192, 168, 1, third_octet),
        vtep_mac: [0x0e, 0x18, 10, 244, third_octet, 0],
    }
}

#[test]
fn detect_external_follows_the_default_route() {
    let mut kernel = FakeKernel::with_external();
    let external = block_on(detect_external(&mut kernel, None)).unwrap();
    assert_eq!(
        external,
        ExternalInterface {
            name: "eth0".to_string(),
            index: 2,
            ip: "192.168.1.10".parse().unwrap(),
            mtu: 1500,
        }
    );
}

#[test]
fn detect_external_takes_the_named_interface() {
    let mut kernel = FakeKernel::with_external();
    kernel.links.insert(
        3,
        InterfaceInfo {
            name: "eth1".to_string(),
            index: 3,
            mtu: 9000,
        },
    );
    kernel.addresses.insert(
        3,
        vec![
            "172.16.0.5/16".parse().unwrap(),
            "172.16.0.6/16".parse().unwrap(),
        ],
    );
    let external = block_on(detect_external(&mut kernel, Some("eth1"))).unwrap();
    assert_eq!(external.index, 3);
    assert_eq!(external.ip, "172.16.0.5".parse::<Ipv4Addr>().unwrap());
    assert_eq!(external.mtu, 9000);
}

#[test]
fn detect_external_explains_what_is_missing() {
    let mut kernel = FakeKernel::with_external();
    let error = block_on(detect_external(&mut kernel, Some("eth9"))).unwrap_err();
    assert_eq!(error.to_string(), "external interface eth9 does not exist");

    kernel.default_route = None;
    let error = block_on(detect_external(&mut kernel, None)).unwrap_err();
    assert!(matches!(error, OverlayError::NoDefaultRoute), "{error}");

    kernel.default_route = Some(2);
    kernel.addresses.insert(2, Vec::new());
    let error = block_on(detect_external(&mut kernel, None)).unwrap_err();
    assert!(
        error.to_string().contains("eth0 has no IPv4 address"),
        "{error}"
    );
}

#[test]
fn ensure_device_creates_then_keeps_the_device() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    let vtep = block_on(overlay.ensure_device()).unwrap();
    assert_eq!(vtep.mac, plan::vtep_mac("10.244.1.0/24".parse().unwrap()));
    assert_eq!(vtep.mtu, 1450);
    assert_eq!(overlay.netlink.writes.len(), 3);
    let device = overlay.netlink.device.clone().unwrap();
    assert!(device.up);
    assert_eq!(
        overlay.netlink.addresses[&device.index],
        vec!["10.244.1.0/32".parse::<Ipv4Net>().unwrap()]
    );

    // A restart: the same device and MAC, no writes.
    let again = block_on(overlay.ensure_device()).unwrap();
    assert_eq!(again, vtep);
    assert_eq!(overlay.netlink.writes.len(), 3);
    assert_eq!(overlay.netlink.device.as_ref().unwrap().index, device.index);
}

#[test]
fn ensure_device_leaves_peer_entries_alone() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    block_on(overlay.reconcile(&[peer("a", 2)])).unwrap();
    let writes = overlay.netlink.writes.len();
    block_on(overlay.ensure_device()).unwrap();
    assert_eq!(overlay.netlink.writes.len(), writes);
    assert_eq!(overlay.netlink.routes.len(), 1);
}

#[test]
fn reconcile_installs_then_does_nothing() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    let peers = [peer("a", 2), peer("b", 3), peer("c", 4)];
    let report = block_on(overlay.reconcile(&peers)).unwrap();
    assert_eq!(report.writes, 3 + 9);
    assert_eq!(report.peers, 3);
    assert!(report.device_recreated);
    assert!(report.failures.is_empty());

    let report = block_on(overlay.reconcile(&peers)).unwrap();
    assert_eq!(report.writes, 0);
    assert!(!report.device_recreated);
}

#[test]
fn reconcile_reports_skipped_peers() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    let mut no_mac = peer("no-mac", 5);
    no_mac.vtep_mac = [0; 6];
    let report = block_on(overlay.reconcile(&[peer("a", 2), no_mac])).unwrap();
    assert_eq!(report.peers, 1);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].node_name, "no-mac");
}

#[test]
fn a_failing_peer_gets_no_route_and_others_go_on() {
    let mut kernel = FakeKernel::with_external();
    kernel
        .failing
        .push("replace fdb 0e:18:0a:f4:03:00".to_string());
    let mut overlay = Overlay::new(kernel, config());
    let peers = [peer("a", 2), peer("b", 3), peer("c", 4)];
    let report = block_on(overlay.reconcile(&peers)).unwrap();
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].error.contains("not permitted"));
    let destinations: Vec<String> = overlay
        .netlink
        .routes
        .iter()
        .map(|r| r.destination.to_string())
        .collect();
    assert_eq!(destinations, ["10.244.2.0/24", "10.244.4.0/24"]);

    // Once the kernel accepts it, the next reconcile completes the peer.
    overlay.netlink.failing.clear();
    let report = block_on(overlay.reconcile(&peers)).unwrap();
    assert_eq!(report.writes, 2);
    assert_eq!(overlay.netlink.routes.len(), 3);
}

#[test]
fn removal_goes_on_past_a_failure() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    block_on(overlay.reconcile(&[peer("a", 2), peer("b", 3)])).unwrap();
    overlay.netlink.failing.push("delete route".to_string());
    let report = block_on(overlay.reconcile(&[])).unwrap();
    assert_eq!(report.failures.len(), 2);
    // Neighbours and FDB entries went although the routes could not.
    assert!(overlay.netlink.neighbours.is_empty());
    assert!(overlay.netlink.fdb.is_empty());
    assert_eq!(overlay.netlink.routes.len(), 2);
}

#[test]
fn a_removal_of_something_already_gone_is_not_a_failure() {
    let mut kernel = FakeKernel::with_external();
    let actions = vec![plan::PlannedAction {
        group: plan::ActionGroup::Removal,
        action: OverlayAction::DeleteNeighbour {
            ip: "10.244.9.0".parse().unwrap(),
        },
    }];
    kernel.device = Some(ObservedDevice {
        index: 4,
        ..ObservedDevice::default()
    });
    let outcome = block_on(apply_actions(&mut kernel, "skiff.1", &actions)).unwrap();
    assert_eq!(outcome, ApplyOutcome::default());
}

#[test]
fn a_failing_device_action_ends_the_reconcile() {
    let mut kernel = FakeKernel::with_external();
    kernel.failing.push("create vxlan device".to_string());
    let mut overlay = Overlay::new(kernel, config());
    let error = block_on(overlay.reconcile(&[peer("a", 2)])).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("programming overlay device skiff.1: create vxlan device skiff.1"),
        "{error}"
    );
    assert!(overlay.netlink.writes.is_empty());
}

#[test]
fn a_device_deleted_behind_our_back_is_restored_with_its_entries() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    let peers = [peer("a", 2), peer("b", 3)];
    block_on(overlay.reconcile(&peers)).unwrap();
    let index = overlay.netlink.device.as_ref().unwrap().index;
    block_on(overlay.netlink.apply(
        "skiff.1",
        &OverlayAction::DeleteDevice {
            index,
            reason: "test".to_string(),
        },
    ))
    .unwrap();
    let report = block_on(overlay.reconcile(&peers)).unwrap();
    assert_eq!(report.writes, 3 + 6);
    assert_eq!(overlay.netlink.routes.len(), 2);
}

#[test]
fn cleanup_deletes_the_device_once() {
    let mut overlay = Overlay::new(FakeKernel::with_external(), config());
    block_on(overlay.reconcile(&[peer("a", 2)])).unwrap();
    let mut kernel = overlay.netlink;
    assert!(block_on(cleanup(&mut kernel, "skiff.1")).unwrap());
    assert!(kernel.device.is_none());
    assert!(kernel.routes.is_empty());
    assert!(!block_on(cleanup(&mut kernel, "skiff.1")).unwrap());
}

#[test]
fn ip_forwarding_is_written_under_the_given_proc_sys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
    enable_ip_forwarding_in(dir.path()).unwrap();
    let written = std::fs::read_to_string(dir.path().join("net/ipv4/ip_forward")).unwrap();
    assert_eq!(written.trim(), "1");

    let missing = dir.path().join("nowhere");
    let error = enable_ip_forwarding_in(&missing).unwrap_err();
    assert!(error.to_string().contains("nowhere/net/ipv4/ip_forward"));
}

#[test]
fn local_vtep_is_reported_as_the_node_api_spells_it() {
    let vtep = LocalVtep {
        mac: [0x0e, 0x18, 0x0a, 0xf4, 0x01, 0x00],
        mtu: 1450,
    };
    let endpoint = vtep.endpoint("192.168.1.10".parse().unwrap());
    assert_eq!(endpoint.public_ip, "192.168.1.10");
    assert_eq!(endpoint.vtep_mac, "0e:18:0a:f4:01:00");
}

#[test]
fn peers_convert_from_the_node_api() {
    let wire = proto::OverlayPeer {
        node_name: "node-b".to_string(),
        pod_cidr: "10.244.3.0/24".to_string(),
        public_ip: "192.168.1.12".to_string(),
        vtep_mac: "0e:18:0a:f4:03:00".to_string(),
    };
    let peer = Peer::try_from(&wire).unwrap();
    assert_eq!(peer.subnet, "10.244.3.0/24".parse::<Ipv4Net>().unwrap());
    assert_eq!(peer.public_ip, Ipv4Addr::new(192, 168, 1, 12));
    assert_eq!(peer.vtep_mac, [0x0e, 0x18, 0x0a, 0xf4, 0x03, 0x00]);

    let no_mac = proto::OverlayPeer {
        vtep_mac: String::new(),
        ..wire.clone()
    };
    let error = Peer::try_from(&no_mac).unwrap_err();
    assert_eq!(
        error.to_string(),
        "overlay peer node-b: VTEP MAC \"\" is not like aa:bb:cc:dd:ee:ff"
    );
    let bad_cidr = proto::OverlayPeer {
        pod_cidr: "fd00::/64".to_string(),
        ..wire.clone()
    };
    assert!(Peer::try_from(&bad_cidr).is_err());
    let bad_ip = proto::OverlayPeer {
        public_ip: "node-b.example".to_string(),
        ..wire
    };
    assert!(Peer::try_from(&bad_ip).is_err());
}
