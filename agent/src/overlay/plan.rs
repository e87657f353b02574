//! The overlay's desired state, what the kernel holds, and the difference
//! between the two as an ordered list of actions. Pure: no I/O, no clock.
//!
//! [`desired_overlay`] turns the node's configuration and the peers the
//! control plane sent into a [`DesiredOverlay`]. The executor reads the
//! device into an [`ObservedOverlay`]. [`diff`] compares them and returns
//! the [`PlannedAction`]s that make the kernel match, in the order they
//! must be applied (see the module documentation of [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Bytes of encapsulation a VXLAN packet carries over IPv4: outer IPv4
/// (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// flannel's UDP port, the Linux default for VXLAN.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// The name of the overlay device for a VNI: `skiff.<vni>`. A 24-bit VNI
/// has at most 8 digits, so the name stays within the kernel's 15 bytes.
pub fn device_name(vni: u32) -> String {
    format!("skiff.{vni}")
}

/// The underlay interface VXLAN packets leave and arrive through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInterface {
    pub name: String,
    pub index: u32,
    /// The source address of outgoing VXLAN packets, and the address
    /// other nodes send theirs to (the node's overlay `public_ip`).
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// Everything about this node the overlay depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    pub vni: u32,
    pub port: u16,
    /// The VXLAN device's name, [`device_name`] of the VNI.
    pub device: String,
    pub external: ExternalInterface,
    /// This node's pod subnet (its `podCIDR`), e.g. `10.244.1.0/24`.
    pub node_subnet: Ipv4Net,
}

impl OverlayConfig {
    /// A configuration with the device named after the VNI.
    pub fn new(vni: u32, port: u16, external: ExternalInterface, node_subnet: Ipv4Net) -> Self {
        OverlayConfig {
            vni,
            port,
            device: device_name(vni),
            external,
            node_subnet: node_subnet.trunc(),
        }
    }
}

/// Another node of the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_name: String,
    /// The peer's pod subnet.
    pub subnet: Ipv4Net,
    /// The peer's underlay address, where its VXLAN packets go.
    pub public_ip: Ipv4Addr,
    /// The MAC address of the peer's VXLAN device.
    pub vtep_mac: Mac,
}

/// The VXLAN device as it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Source address of outgoing packets: the external interface's.
    pub local: Ipv4Addr,
    /// Index of the external interface the device is bound to.
    pub vtep_index: u32,
    /// Always false: every peer is known, so nothing is learned from
    /// incoming packets.
    pub learning: bool,
    pub mtu: u32,
    /// The VTEP MAC, derived from the node subnet ([`vtep_mac`]).
    pub mac: Mac,
    /// The node subnet's network address as a /32.
    pub address: Ipv4Net,
}

/// A permanent neighbour entry on the device: a peer subnet's network
/// address resolves to the peer's VTEP MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent FDB entry on the device (`NTF_SELF`): frames for a VTEP
/// MAC are sent in UDP to that peer's public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: Mac,
    pub remote: Ipv4Addr,
}

/// `destination via gateway dev <device> onlink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRoute {
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// The three kernel entries that make one peer reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntries {
    pub node_name: String,
    pub neighbour: Neighbour,
    pub fdb: FdbEntry,
    pub route: PeerRoute,
}

impl PeerEntries {
    fn for_peer(peer: &Peer) -> Self {
        let subnet = peer.subnet.trunc();
        let gateway = subnet.network();
        PeerEntries {
            node_name: peer.node_name.clone(),
            neighbour: Neighbour {
                ip: gateway,
                mac: peer.vtep_mac,
            },
            fdb: FdbEntry {
                mac: peer.vtep_mac,
                remote: peer.public_ip,
            },
            route: PeerRoute {
                destination: subnet,
                gateway,
            },
        }
    }
}

/// Why a peer gets no entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The peer's subnet is, contains or lies in this node's own.
    OverlapsOwnSubnet,
    /// The peer's public address is this node's.
    OwnPublicIp,
    /// The peer has not reported its VTEP MAC yet (all zeros).
    NoVtepMac,
    /// A multicast MAC cannot be a VTEP's.
    MulticastVtepMac,
    /// The peer has not reported its public address yet (0.0.0.0).
    NoPublicIp,
    /// Not a unicast address VXLAN packets could be sent to.
    InvalidPublicIp,
    /// Another peer, kept, has an overlapping subnet.
    SubnetConflict { with: String },
    /// Another peer, kept, has the same VTEP MAC; one FDB entry per MAC.
    VtepMacConflict { with: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::OverlapsOwnSubnet => f.write_str("its pod subnet overlaps this node's"),
            SkipReason::OwnPublicIp => f.write_str("its public IP is this node's"),
            SkipReason::NoVtepMac => f.write_str("it has not reported its VTEP MAC yet"),
            SkipReason::MulticastVtepMac => f.write_str("its VTEP MAC is a multicast address"),
            SkipReason::NoPublicIp => f.write_str("it has not reported its public IP yet"),
            SkipReason::InvalidPublicIp => f.write_str("its public IP is not a unicast address"),
            SkipReason::SubnetConflict { with } => {
                write!(f, "its pod subnet overlaps that of node {with}")
            }
            SkipReason::VtepMacConflict { with } => {
                write!(f, "its VTEP MAC is also node {with}'s")
            }
        }
    }
}

/// A peer left out of the desired state, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPeer {
    pub node_name: String,
    pub reason: SkipReason,
}

/// The whole overlay as it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredOverlay {
    pub device: DeviceSpec,
    /// Sorted by node name.
    pub peers: Vec<PeerEntries>,
    pub skipped: Vec<SkippedPeer>,
}

/// The VTEP MAC of the node owning `node_subnet`.
///
/// Derived, not random as flannel's, so that it survives agent restarts
/// and device recreation: peers' FDB entries and neighbours stay valid
/// without waiting for the new MAC to travel through the control plane.
/// `0e` is a locally administered unicast first octet; the prefix length
/// and the network address follow, e.g. `0e:18:0a:f4:01:00` for
/// `10.244.1.0/24`. Node subnets do not overlap, so MACs do not collide.
pub fn vtep_mac(node_subnet: Ipv4Net) -> Mac {
    let [a, b, c, d] = node_subnet.network().octets();
    [0x0e, node_subnet.prefix_len(), a, b, c, d]
}

/// The device as the configuration asks for it.
pub fn desired_device(config: &OverlayConfig) -> DeviceSpec {
    let subnet = config.node_subnet.trunc();
    DeviceSpec {
        name: config.device.clone(),
        vni: config.vni,
        port: config.port,
        local: config.external.ip,
        vtep_index: config.external.index,
        learning: false,
        mtu: config.external.mtu.saturating_sub(VXLAN_OVERHEAD),
        mac: vtep_mac(subnet),
        address: Ipv4Net::new_assert(subnet.network(), 32),
    }
}

fn is_multicast_mac(mac: &Mac) -> bool {
    mac[0] & 0x01 != 0
}

fn skip_reason(config: &OverlayConfig, peer: &Peer) -> Option<SkipReason> {
    let own = config.node_subnet.trunc();
    let subnet = peer.subnet.trunc();
    if own.contains(&subnet) || subnet.contains(&own) {
        return Some(SkipReason::OverlapsOwnSubnet);
    }
    if peer.vtep_mac == [0; 6] {
        return Some(SkipReason::NoVtepMac);
    }
    if is_multicast_mac(&peer.vtep_mac) {
        return Some(SkipReason::MulticastVtepMac);
    }
    if peer.public_ip.is_unspecified() {
        return Some(SkipReason::NoPublicIp);
    }
    if peer.public_ip.is_multicast() || peer.public_ip.is_broadcast() {
        return Some(SkipReason::InvalidPublicIp);
    }
    if peer.public_ip == config.external.ip {
        return Some(SkipReason::OwnPublicIp);
    }
    None
}

/// The overlay for `config` with an entry set for every usable peer.
///
/// Peers are taken in node-name order, so when two conflict (overlapping
/// subnets, or one VTEP MAC) the same one is kept on every node and at
/// every reconcile.
pub fn desired_overlay(config: &OverlayConfig, peers: &[Peer]) -> DesiredOverlay {
    let mut sorted: Vec<&Peer> = peers.iter().collect();
    sorted.sort_by(|a, b| a.node_name.cmp(&b.node_name));

    let mut kept: Vec<PeerEntries> = Vec::with_capacity(sorted.len());
    let mut skipped = Vec::new();
    // Subnets kept so far, by network address, to find overlaps in
    // O(log n): an overlap with a kept subnet means one contains the other.
    let mut kept_subnets: BTreeMap<Ipv4Addr, (Ipv4Net, String)> = BTreeMap::new();
    let mut kept_macs: HashMap<Mac, String> = HashMap::new();
    for peer in sorted {
        let reason = skip_reason(config, peer).or_else(|| {
            let subnet = peer.subnet.trunc();
            let overlapping = kept_subnets
                .range(..=subnet.broadcast())
                .next_back()
                .filter(|(_, (kept, _))| kept.contains(&subnet) || subnet.contains(kept))
                .or_else(|| {
                    kept_subnets
                        .range(subnet.network()..=subnet.broadcast())
                        .next()
                });
            if let Some((_, (_, with))) = overlapping {
                return Some(SkipReason::SubnetConflict { with: with.clone() });
            }
            kept_macs
                .get(&peer.vtep_mac)
                .map(|with| SkipReason::VtepMacConflict { with: with.clone() })
        });
        match reason {
            Some(reason) => skipped.push(SkippedPeer {
                node_name: peer.node_name.clone(),
                reason,
            }),
            None => {
                let subnet = peer.subnet.trunc();
                kept_subnets.insert(subnet.network(), (subnet, peer.node_name.clone()));
                kept_macs.insert(peer.vtep_mac, peer.node_name.clone());
                kept.push(PeerEntries::for_peer(peer));
            }
        }
    }
    DesiredOverlay {
        device: desired_device(config),
        peers: kept,
        skipped,
    }
}

/// The VXLAN device as the kernel reports it. Settings the kernel did not
/// report are `None`, and count as different from any wanted value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedDevice {
    pub index: u32,
    /// False when a link of another kind holds the name.
    pub is_vxlan: bool,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    pub vtep_index: Option<u32>,
    pub learning: Option<bool>,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
}

/// One IPv4 neighbour entry on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedNeighbour {
    pub ip: Ipv4Addr,
    pub mac: Option<Mac>,
    /// `NUD_PERMANENT`. Only permanent entries are ours; others are the
    /// kernel's own resolution attempts, left alone.
    pub permanent: bool,
}

/// One bridge FDB entry on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedFdbEntry {
    pub mac: Mac,
    /// The IPv4 destination, if the entry has one.
    pub remote: Option<Ipv4Addr>,
    pub permanent: bool,
}

/// One IPv4 route of the main table whose output device is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRoute {
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub onlink: bool,
    /// Added by the kernel for an address (`proto kernel`); follows the
    /// address and is never touched directly.
    pub kernel: bool,
}

/// What the kernel holds for the overlay device. Without a device the
/// lists are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedOverlay {
    pub device: Option<ObservedDevice>,
    pub addresses: Vec<Ipv4Net>,
    pub neighbours: Vec<ObservedNeighbour>,
    pub fdb: Vec<ObservedFdbEntry>,
    pub routes: Vec<ObservedRoute>,
}

/// One write to the kernel. Actions on the device's contents address the
/// device by name; the executor resolves its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayAction {
    /// Delete a link holding the device's name whose settings differ.
    DeleteDevice {
        index: u32,
        reason: String,
    },
    /// Create the device, down.
    CreateDevice(DeviceSpec),
    SetMtu {
        mtu: u32,
    },
    SetUp,
    AddAddress(Ipv4Net),
    DeleteAddress(Ipv4Net),
    /// Create or replace, permanent.
    ReplaceNeighbour(Neighbour),
    DeleteNeighbour {
        ip: Ipv4Addr,
    },
    /// Create or replace, permanent, `NTF_SELF`.
    ReplaceFdb(FdbEntry),
    DeleteFdb(FdbEntry),
    /// Create or replace, onlink.
    ReplaceRoute(PeerRoute),
    DeleteRoute(PeerRoute),
}

impl fmt::Display for OverlayAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverlayAction::DeleteDevice { index, reason } => {
                write!(f, "delete link {index} ({reason})")
            }
            OverlayAction::CreateDevice(spec) => write!(
                f,
                "create vxlan device {} (vni {}, port {}, local {}, link {}, mtu {}, mac {})",
                spec.name,
                spec.vni,
                spec.port,
                spec.local,
                spec.vtep_index,
                spec.mtu,
                format_mac(&spec.mac)
            ),
            OverlayAction::SetMtu { mtu } => write!(f, "set mtu {mtu}"),
            OverlayAction::SetUp => f.write_str("set up"),
            OverlayAction::AddAddress(net) => write!(f, "add address {net}"),
            OverlayAction::DeleteAddress(net) => write!(f, "delete address {net}"),
            OverlayAction::ReplaceNeighbour(n) => {
                write!(
                    f,
                    "replace neighbour {} lladdr {}",
                    n.ip,
                    format_mac(&n.mac)
                )
            }
            OverlayAction::DeleteNeighbour { ip } => write!(f, "delete neighbour {ip}"),
            OverlayAction::ReplaceFdb(e) => {
                write!(f, "replace fdb {} dst {}", format_mac(&e.mac), e.remote)
            }
            OverlayAction::DeleteFdb(e) => {
                write!(f, "delete fdb {} dst {}", format_mac(&e.mac), e.remote)
            }
            OverlayAction::ReplaceRoute(r) => {
                write!(
                    f,
                    "replace route {} via {} onlink",
                    r.destination, r.gateway
                )
            }
            OverlayAction::DeleteRoute(r) => {
                write!(f, "delete route {} via {}", r.destination, r.gateway)
            }
        }
    }
}

/// What a failed action means for the actions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionGroup {
    /// The device, its address and state: nothing else works without
    /// them, so a failure ends the apply.
    Device,
    /// The entries of one peer, named by node: a failure skips the rest
    /// of that peer's entries (no route without its neighbour and FDB
    /// entry) and goes on with other peers.
    Peer(String),
    /// Removal of a stale entry: a failure is recorded and the apply goes
    /// on, so one stuck entry does not keep the others.
    Removal,
}

/// An action and the group whose failure rules it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    pub group: ActionGroup,
    pub action: OverlayAction,
}

impl PlannedAction {
    fn device(action: OverlayAction) -> Self {
        PlannedAction {
            group: ActionGroup::Device,
            action,
        }
    }

    fn peer(node_name: &str, action: OverlayAction) -> Self {
        PlannedAction {
            group: ActionGroup::Peer(node_name.to_string()),
            action,
        }
    }

    fn removal(action: OverlayAction) -> Self {
        PlannedAction {
            group: ActionGroup::Removal,
            action,
        }
    }
}

/// Why an existing device cannot be kept, if it cannot.
fn device_mismatch(want: &DeviceSpec, have: &ObservedDevice) -> Option<String> {
    if !have.is_vxlan {
        return Some("not a vxlan device".to_string());
    }
    let mut differences = Vec::new();
    if have.vni != Some(want.vni) {
        differences.push(format!("vni {:?}, want {}", have.vni, want.vni));
    }
    if have.port != Some(want.port) {
        differences.push(format!("port {:?}, want {}", have.port, want.port));
    }
    if have.local != Some(want.local) {
        differences.push(format!("local {:?}, want {}", have.local, want.local));
    }
    if have.vtep_index != Some(want.vtep_index) {
        differences.push(format!(
            "link {:?}, want {}",
            have.vtep_index, want.vtep_index
        ));
    }
    if have.learning != Some(want.learning) {
        differences.push(format!(
            "learning {:?}, want {}",
            have.learning, want.learning
        ));
    }
    if have.mac != Some(want.mac) {
        differences.push(format!(
            "mac {}, want {}",
            have.mac
                .as_ref()
                .map_or_else(|| "none".to_string(), format_mac),
            format_mac(&want.mac)
        ));
    }
    if differences.is_empty() {
        None
    } else {
        Some(differences.join(", "))
    }
}

/// The actions that bring the device, its address and its state in line.
///
/// A device whose identity differs (kind, VNI, port, local address,
/// external link, learning, MAC) is deleted and created again, since the
/// kernel cannot change most of these in place. The MTU and the admin
/// state are changed in place: recreating the device for them would drop
/// every peer's entries for no reason. A matching device is kept.
pub fn diff_device(want: &DeviceSpec, observed: &ObservedOverlay) -> Vec<PlannedAction> {
    let create = |actions: &mut Vec<PlannedAction>| {
        actions.push(PlannedAction::device(OverlayAction::CreateDevice(
            want.clone(),
        )));
        actions.push(PlannedAction::device(OverlayAction::AddAddress(
            want.address,
        )));
        actions.push(PlannedAction::device(OverlayAction::SetUp));
    };
    let mut actions = Vec::new();
    let Some(have) = &observed.device else {
        create(&mut actions);
        return actions;
    };
    if let Some(reason) = device_mismatch(want, have) {
        actions.push(PlannedAction::device(OverlayAction::DeleteDevice {
            index: have.index,
            reason,
        }));
        create(&mut actions);
        return actions;
    }
    if have.mtu != want.mtu {
        actions.push(PlannedAction::device(OverlayAction::SetMtu {
            mtu: want.mtu,
        }));
    }
    if !observed.addresses.contains(&want.address) {
        actions.push(PlannedAction::device(OverlayAction::AddAddress(
            want.address,
        )));
    }
    for stale in observed.addresses.iter().filter(|a| **a != want.address) {
        actions.push(PlannedAction::device(OverlayAction::DeleteAddress(*stale)));
    }
    if !have.up {
        actions.push(PlannedAction::device(OverlayAction::SetUp));
    }
    actions
}

/// True when `actions` create the device, so that nothing observed on
/// the old one survives.
pub fn recreates_device(actions: &[PlannedAction]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a.action, OverlayAction::CreateDevice(_)))
}

/// The actions that make the device's neighbours, FDB and routes match
/// `peers`, observed entries being those on the device now.
///
/// Installs come first, per peer neighbour, then FDB entry, then the
/// route last, so the kernel never has to resolve the gateway. Removals
/// follow, per departed peer route first, then its neighbour, then its
/// FDB entry, then whatever stale entries are left: a peer whose MAC
/// changed has its new entries in place before the old FDB entry goes,
/// so its traffic never stops. Entries that match produce no action.
pub fn diff_peers(peers: &[PeerEntries], observed: &ObservedOverlay) -> Vec<PlannedAction> {
    let neighbours: HashMap<Ipv4Addr, &ObservedNeighbour> =
        observed.neighbours.iter().map(|n| (n.ip, n)).collect();
    let mut fdb: HashMap<Mac, Vec<&ObservedFdbEntry>> = HashMap::new();
    for entry in &observed.fdb {
        fdb.entry(entry.mac).or_default().push(entry);
    }
    let routes: HashMap<Ipv4Net, &ObservedRoute> = observed
        .routes
        .iter()
        .filter(|r| !r.kernel)
        .map(|r| (r.destination, r))
        .collect();

    let mut actions = Vec::new();
    let mut extra_fdb = Vec::new();
    for peer in peers {
        let name = peer.node_name.as_str();
        let want = &peer.neighbour;
        let neighbour_ok = neighbours
            .get(&want.ip)
            .is_some_and(|n| n.permanent && n.mac == Some(want.mac));
        if !neighbour_ok {
            actions.push(PlannedAction::peer(
                name,
                OverlayAction::ReplaceNeighbour(*want),
            ));
        }

        let want = &peer.fdb;
        let have = fdb.get(&want.mac).map(Vec::as_slice).unwrap_or_default();
        let fdb_ok = have.len() == 1 && have[0].permanent && have[0].remote == Some(want.remote);
        if !fdb_ok {
            actions.push(PlannedAction::peer(name, OverlayAction::ReplaceFdb(*want)));
            // A MAC can hold several destinations (appended entries).
            // Replace rewrites the first; the others would duplicate
            // traffic to old addresses, so they go, after the route is
            // in place. Deleting the one replace rewrote finds nothing,
            // which counts as done.
            if have.len() > 1 {
                for remote in have.iter().filter_map(|e| e.remote) {
                    if remote != want.remote {
                        extra_fdb.push(FdbEntry {
                            mac: want.mac,
                            remote,
                        });
                    }
                }
            }
        }

        let want = &peer.route;
        let route_ok = routes
            .get(&want.destination)
            .is_some_and(|r| r.gateway == Some(want.gateway) && r.onlink);
        if !route_ok {
            actions.push(PlannedAction::peer(
                name,
                OverlayAction::ReplaceRoute(*want),
            ));
        }
    }

    for entry in extra_fdb {
        actions.push(PlannedAction::removal(OverlayAction::DeleteFdb(entry)));
    }

    let wanted_routes: BTreeSet<Ipv4Net> = peers.iter().map(|p| p.route.destination).collect();
    let wanted_neighbours: BTreeSet<Ipv4Addr> = peers.iter().map(|p| p.neighbour.ip).collect();
    let wanted_macs: BTreeSet<Mac> = peers.iter().map(|p| p.fdb.mac).collect();

    let stale_neighbours: BTreeMap<Ipv4Addr, &ObservedNeighbour> = observed
        .neighbours
        .iter()
        .filter(|n| n.permanent && !wanted_neighbours.contains(&n.ip))
        .map(|n| (n.ip, n))
        .collect();
    let mut stale_fdb: BTreeMap<Mac, Vec<Ipv4Addr>> = BTreeMap::new();
    for entry in &observed.fdb {
        if let (true, Some(remote)) = (entry.permanent, entry.remote) {
            if !wanted_macs.contains(&entry.mac) {
                stale_fdb.entry(entry.mac).or_default().push(remote);
            }
        }
    }
    let mut removed_neighbours = BTreeSet::new();
    let mut removed_macs = BTreeSet::new();
    let mut stale_routes: Vec<&ObservedRoute> = observed
        .routes
        .iter()
        .filter(|r| !r.kernel && !wanted_routes.contains(&r.destination))
        .collect();
    stale_routes.sort_by_key(|r| r.destination);

    let remove_fdb = |actions: &mut Vec<PlannedAction>, mac: Mac, remotes: &[Ipv4Addr]| {
        for remote in remotes {
            actions.push(PlannedAction::removal(OverlayAction::DeleteFdb(FdbEntry {
                mac,
                remote: *remote,
            })));
        }
    };
    for route in stale_routes {
        let gateway = route.gateway.unwrap_or(route.destination.network());
        actions.push(PlannedAction::removal(OverlayAction::DeleteRoute(
            PeerRoute {
                destination: route.destination,
                gateway,
            },
        )));
        if let Some(neighbour) = stale_neighbours.get(&gateway) {
            if removed_neighbours.insert(neighbour.ip) {
                actions.push(PlannedAction::removal(OverlayAction::DeleteNeighbour {
                    ip: neighbour.ip,
                }));
                if let Some(mac) = neighbour.mac {
                    if let Some(remotes) = stale_fdb.get(&mac) {
                        if removed_macs.insert(mac) {
                            remove_fdb(&mut actions, mac, remotes);
                        }
                    }
                }
            }
        }
    }
    for ip in stale_neighbours.keys() {
        if !removed_neighbours.contains(ip) {
            actions.push(PlannedAction::removal(OverlayAction::DeleteNeighbour {
                ip: *ip,
            }));
        }
    }
    for (mac, remotes) in &stale_fdb {
        if !removed_macs.contains(mac) {
            remove_fdb(&mut actions, *mac, remotes);
        }
    }
    actions
}

/// Everything that makes the kernel match `desired`: the device's actions,
/// then the peers'. When the device is (re)created, whatever was observed
/// on the old one is gone with it, so every peer entry is installed.
pub fn diff(desired: &DesiredOverlay, observed: &ObservedOverlay) -> Vec<PlannedAction> {
    let mut actions = diff_device(&desired.device, observed);
    let nothing = ObservedOverlay::default();
    let entries = if recreates_device(&actions) {
        &nothing
    } else {
        observed
    };
    actions.extend(diff_peers(&desired.peers, entries));
    actions
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as the node API carries MACs.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn config() -> OverlayConfig {
        OverlayConfig::new(
            1,
            DEFAULT_VXLAN_PORT,
            ExternalInterface {
                name: "eth0".to_string(),
                index: 2,
                ip: ip("192.168.1.10"),
                mtu: 1500,
            },
            net("10.244.1.0/24"),
        )
    }

    fn peer(name: &str, subnet: &str, public_ip: &str, last_mac_byte: u8) -> Peer {
        Peer {
            node_name: name.to_string(),
            subnet: net(subnet),
            public_ip: ip(public_ip),
            vtep_mac: [0x0e, 0x18, 0x0a, 0xf4, 0x00, last_mac_byte],
        }
    }

    fn three_peers() -> Vec<Peer> {
        vec![
            peer("node-c", "10.244.4.0/24", "192.168.1.13", 4),
            peer("node-a", "10.244.2.0/24", "192.168.1.11", 2),
            peer("node-b", "10.244.3.0/24", "192.168.1.12", 3),
        ]
    }

    /// What the kernel would hold after applying `desired` faithfully.
    fn observed_from(desired: &DesiredOverlay) -> ObservedOverlay {
        let device = &desired.device;
        ObservedOverlay {
            device: Some(ObservedDevice {
                index: 7,
                is_vxlan: true,
                vni: Some(device.vni),
                port: Some(device.port),
                local: Some(device.local),
                vtep_index: Some(device.vtep_index),
                learning: Some(false),
                mtu: device.mtu,
                mac: Some(device.mac),
                up: true,
            }),
            addresses: vec![device.address],
            neighbours: desired
                .peers
                .iter()
                .map(|p| ObservedNeighbour {
                    ip: p.neighbour.ip,
                    mac: Some(p.neighbour.mac),
                    permanent: true,
                })
                .collect(),
            fdb: desired
                .peers
                .iter()
                .map(|p| ObservedFdbEntry {
                    mac: p.fdb.mac,
                    remote: Some(p.fdb.remote),
                    permanent: true,
                })
                .collect(),
            routes: desired
                .peers
                .iter()
                .map(|p| ObservedRoute {
                    destination: p.route.destination,
                    gateway: Some(p.route.gateway),
                    onlink: true,
                    kernel: false,
                })
                .collect(),
        }
    }

    fn actions_of(planned: &[PlannedAction]) -> Vec<OverlayAction> {
        planned.iter().map(|p| p.action.clone()).collect()
    }

    #[test]
    fn device_spec_follows_flannel() {
        let spec = desired_device(&config());
        assert_eq!(spec.name, "skiff.1");
        assert_eq!(spec.vni, 1);
        assert_eq!(spec.port, 8472);
        assert_eq!(spec.local, ip("192.168.1.10"));
        assert_eq!(spec.vtep_index, 2);
        assert!(!spec.learning);
        assert_eq!(spec.mtu, 1450);
        assert_eq!(spec.address, net("10.244.1.0/32"));
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast_and_distinct_per_subnet() {
        let mac = vtep_mac(net("10.244.1.0/24"));
        assert_eq!(mac, [0x0e, 24, 10, 244, 1, 0]);
        assert_eq!(mac, vtep_mac(net("10.244.1.0/24")));
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_ne!(mac, vtep_mac(net("10.244.2.0/24")));
        // The host part of a subnet written loosely does not matter.
        assert_eq!(desired_device(&config()).mac, mac);
    }

    #[test]
    fn device_names_fit_the_kernel_limit() {
        assert_eq!(device_name(1), "skiff.1");
        assert!(device_name(0x00ff_ffff).len() <= 15);
    }

    #[test]
    fn desired_peers_have_neighbour_fdb_and_onlink_route() {
        let desired = desired_overlay(&config(), &three_peers());
        let names: Vec<&str> = desired.peers.iter().map(|p| p.node_name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b", "node-c"]);
        let a = &desired.peers[0];
        assert_eq!(
            a.neighbour,
            Neighbour {
                ip: ip("10.244.2.0"),
                mac: [0x0e, 0x18, 0x0a, 0xf4, 0x00, 2]
            }
        );
        assert_eq!(
            a.fdb,
            FdbEntry {
                mac: [0x0e, 0x18, 0x0a, 0xf4, 0x00, 2],
                remote: ip("192.168.1.11")
            }
        );
        assert_eq!(
            a.route,
            PeerRoute {
                destination: net("10.244.2.0/24"),
                gateway: ip("10.244.2.0")
            }
        );
        assert!(desired.skipped.is_empty());
    }

    #[test]
    fn unusable_peers_are_skipped_with_a_reason() {
        let mut no_mac = peer("no-mac", "10.244.5.0/24", "192.168.1.15", 0);
        no_mac.vtep_mac = [0; 6];
        let mut multicast = peer("multicast", "10.244.6.0/24", "192.168.1.16", 6);
        multicast.vtep_mac[0] = 0x01;
        let peers = vec![
            peer("own", "10.244.1.0/24", "192.168.1.20", 1),
            peer("wider", "10.244.0.0/16", "192.168.1.21", 9),
            no_mac,
            multicast,
            peer("no-ip", "10.244.7.0/24", "0.0.0.0", 7),
            peer("mcast-ip", "10.244.8.0/24", "239.1.1.1", 8),
            peer("me", "10.244.9.0/24", "192.168.1.10", 10),
            peer("good", "10.244.2.0/24", "192.168.1.11", 2),
            peer("same-subnet", "10.244.2.0/24", "192.168.1.30", 30),
            peer("inside", "10.244.2.128/25", "192.168.1.31", 31),
            peer("same-mac", "10.244.3.0/24", "192.168.1.32", 2),
        ];
        let desired = desired_overlay(&config(), &peers);
        let kept: Vec<&str> = desired.peers.iter().map(|p| p.node_name.as_str()).collect();
        assert_eq!(kept, ["good"]);
        let reasons: BTreeMap<&str, SkipReason> = desired
            .skipped
            .iter()
            .map(|s| (s.node_name.as_str(), s.reason.clone()))
            .collect();
        assert_eq!(reasons["own"], SkipReason::OverlapsOwnSubnet);
        assert_eq!(reasons["wider"], SkipReason::OverlapsOwnSubnet);
        assert_eq!(reasons["no-mac"], SkipReason::NoVtepMac);
        assert_eq!(reasons["multicast"], SkipReason::MulticastVtepMac);
        assert_eq!(reasons["no-ip"], SkipReason::NoPublicIp);
        assert_eq!(reasons["mcast-ip"], SkipReason::InvalidPublicIp);
        assert_eq!(reasons["me"], SkipReason::OwnPublicIp);
        let good = SkipReason::SubnetConflict {
            with: "good".to_string(),
        };
        assert_eq!(reasons["same-subnet"], good);
        assert_eq!(reasons["inside"], good);
        assert_eq!(
            reasons["same-mac"],
            SkipReason::VtepMacConflict {
                with: "good".to_string()
            }
        );
        assert_eq!(reasons.len(), 10);
        assert_eq!(
            SkipReason::NoVtepMac.to_string(),
            "it has not reported its VTEP MAC yet"
        );
    }

    #[test]
    fn a_wider_subnet_sorted_first_conflicts_with_a_later_narrow_one() {
        let peers = vec![
            peer("a-wide", "10.245.0.0/16", "192.168.1.11", 2),
            peer("b-narrow", "10.245.7.0/24", "192.168.1.12", 3),
        ];
        let desired = desired_overlay(&config(), &peers);
        assert_eq!(desired.peers.len(), 1);
        assert_eq!(desired.skipped[0].node_name, "b-narrow");
    }

    #[test]
    fn empty_kernel_gets_device_then_peers_in_order() {
        let desired = desired_overlay(&config(), &three_peers());
        let planned = diff(&desired, &ObservedOverlay::default());
        let actions = actions_of(&planned);
        assert_eq!(actions.len(), 3 + 3 * 3);
        assert_eq!(
            actions[0],
            OverlayAction::CreateDevice(desired.device.clone())
        );
        assert_eq!(actions[1], OverlayAction::AddAddress(net("10.244.1.0/32")));
        assert_eq!(actions[2], OverlayAction::SetUp);
        for (i, peer) in desired.peers.iter().enumerate() {
            let at = 3 + i * 3;
            assert_eq!(actions[at], OverlayAction::ReplaceNeighbour(peer.neighbour));
            assert_eq!(actions[at + 1], OverlayAction::ReplaceFdb(peer.fdb));
            assert_eq!(actions[at + 2], OverlayAction::ReplaceRoute(peer.route));
            for p in &planned[at..at + 3] {
                assert_eq!(p.group, ActionGroup::Peer(peer.node_name.clone()));
            }
        }
        assert!(planned[..3].iter().all(|p| p.group == ActionGroup::Device));
    }

    #[test]
    fn matching_kernel_needs_nothing() {
        let desired = desired_overlay(&config(), &three_peers());
        let observed = observed_from(&desired);
        assert_eq!(diff(&desired, &observed), vec![]);
    }

    #[test]
    fn kernel_entries_that_are_not_ours_are_left_alone() {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        observed.neighbours.push(ObservedNeighbour {
            ip: ip("10.244.99.1"),
            mac: None,
            permanent: false,
        });
        observed.fdb.push(ObservedFdbEntry {
            mac: [0x33, 0x33, 0, 0, 0, 1],
            remote: None,
            permanent: true,
        });
        observed.routes.push(ObservedRoute {
            destination: net("10.244.1.0/24"),
            gateway: None,
            onlink: false,
            kernel: true,
        });
        assert_eq!(diff(&desired, &observed), vec![]);
    }

    #[test]
    fn changed_mac_replaces_neighbour_and_fdb_then_drops_the_old_fdb_entry() {
        let mut peers = three_peers();
        let before = desired_overlay(&config(), &peers);
        let observed = observed_from(&before);
        let old_mac = peers[1].vtep_mac;
        peers[1].vtep_mac = [0x0e, 0x18, 0x0a, 0xf4, 0x00, 0x42];
        let after = desired_overlay(&config(), &peers);
        let planned = diff(&after, &observed);
        let new_mac = peers[1].vtep_mac;
        assert_eq!(
            actions_of(&planned),
            vec![
                OverlayAction::ReplaceNeighbour(Neighbour {
                    ip: ip("10.244.2.0"),
                    mac: new_mac
                }),
                OverlayAction::ReplaceFdb(FdbEntry {
                    mac: new_mac,
                    remote: ip("192.168.1.11")
                }),
                OverlayAction::DeleteFdb(FdbEntry {
                    mac: old_mac,
                    remote: ip("192.168.1.11")
                }),
            ]
        );
        assert_eq!(planned[0].group, ActionGroup::Peer("node-a".to_string()));
        assert_eq!(planned[2].group, ActionGroup::Removal);
    }

    #[test]
    fn changed_public_ip_replaces_only_the_fdb_entry() {
        let mut peers = three_peers();
        let observed = observed_from(&desired_overlay(&config(), &peers));
        peers[0].public_ip = ip("192.168.1.99");
        let planned = diff(&desired_overlay(&config(), &peers), &observed);
        assert_eq!(
            actions_of(&planned),
            vec![OverlayAction::ReplaceFdb(FdbEntry {
                mac: peers[0].vtep_mac,
                remote: ip("192.168.1.99")
            })]
        );
    }

    #[test]
    fn an_fdb_mac_with_extra_destinations_keeps_only_the_wanted_one() {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        let a = &desired.peers[0];
        observed.fdb.push(ObservedFdbEntry {
            mac: a.fdb.mac,
            remote: Some(ip("192.168.1.200")),
            permanent: true,
        });
        assert_eq!(
            actions_of(&diff(&desired, &observed)),
            vec![
                OverlayAction::ReplaceFdb(a.fdb),
                OverlayAction::DeleteFdb(FdbEntry {
                    mac: a.fdb.mac,
                    remote: ip("192.168.1.200")
                }),
            ]
        );
    }

    #[test]
    fn departed_peer_loses_route_then_neighbour_then_fdb() {
        let mut peers = three_peers();
        let observed = observed_from(&desired_overlay(&config(), &peers));
        let gone = peers.remove(0); // node-c
        let planned = diff(&desired_overlay(&config(), &peers), &observed);
        assert_eq!(
            actions_of(&planned),
            vec![
                OverlayAction::DeleteRoute(PeerRoute {
                    destination: gone.subnet,
                    gateway: ip("10.244.4.0")
                }),
                OverlayAction::DeleteNeighbour {
                    ip: ip("10.244.4.0")
                },
                OverlayAction::DeleteFdb(FdbEntry {
                    mac: gone.vtep_mac,
                    remote: gone.public_ip
                }),
            ]
        );
        assert!(planned.iter().all(|p| p.group == ActionGroup::Removal));
    }

    #[test]
    fn stale_entries_without_a_route_are_removed_too() {
        let desired = desired_overlay(&config(), &[]);
        let mut observed = observed_from(&desired);
        observed.neighbours.push(ObservedNeighbour {
            ip: ip("10.244.9.0"),
            mac: Some([0x0e, 0, 0, 0, 0, 9]),
            permanent: true,
        });
        observed.fdb.push(ObservedFdbEntry {
            mac: [0x0e, 0, 0, 0, 0, 8],
            remote: Some(ip("192.168.1.8")),
            permanent: true,
        });
        assert_eq!(
            actions_of(&diff(&desired, &observed)),
            vec![
                OverlayAction::DeleteNeighbour {
                    ip: ip("10.244.9.0")
                },
                OverlayAction::DeleteFdb(FdbEntry {
                    mac: [0x0e, 0, 0, 0, 0, 8],
                    remote: ip("192.168.1.8")
                }),
            ]
        );
    }

    #[test]
    fn route_without_onlink_or_with_another_gateway_is_replaced() {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        observed.routes[0].onlink = false;
        observed.routes[1].gateway = Some(ip("10.244.3.1"));
        assert_eq!(
            actions_of(&diff(&desired, &observed)),
            vec![
                OverlayAction::ReplaceRoute(desired.peers[0].route),
                OverlayAction::ReplaceRoute(desired.peers[1].route),
            ]
        );
    }

    #[test]
    fn a_neighbour_that_is_not_permanent_is_replaced() {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        observed.neighbours[2].permanent = false;
        assert_eq!(
            actions_of(&diff(&desired, &observed)),
            vec![OverlayAction::ReplaceNeighbour(desired.peers[2].neighbour)]
        );
    }

    fn recreated_for(change: impl FnOnce(&mut ObservedDevice)) -> Vec<OverlayAction> {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        if let Some(device) = observed.device.as_mut() {
            change(device);
        }
        let actions = actions_of(&diff(&desired, &observed));
        assert!(matches!(
            actions[0],
            OverlayAction::DeleteDevice { index: 7, .. }
        ));
        assert_eq!(
            actions[1],
            OverlayAction::CreateDevice(desired.device.clone())
        );
        assert_eq!(
            actions[2],
            OverlayAction::AddAddress(desired.device.address)
        );
        assert_eq!(actions[3], OverlayAction::SetUp);
        // Everything on the old device went with it.
        assert_eq!(actions.len(), 4 + 3 * 3);
        actions
    }

    #[test]
    fn device_with_other_identity_is_recreated_with_all_entries() {
        let actions = recreated_for(|d| d.vni = Some(2));
        assert!(actions[0].to_string().contains("vni Some(2), want 1"));
        recreated_for(|d| d.port = Some(4789));
        recreated_for(|d| d.local = Some(ip("192.168.1.99")));
        recreated_for(|d| d.vtep_index = Some(3));
        recreated_for(|d| d.learning = Some(true));
        recreated_for(|d| d.mac = Some([0x0e, 1, 2, 3, 4, 5]));
        recreated_for(|d| d.is_vxlan = false);
        recreated_for(|d| d.vni = None);
    }

    #[test]
    fn wrong_mtu_is_set_in_place() {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        if let Some(device) = observed.device.as_mut() {
            device.mtu = 1500;
        }
        assert_eq!(
            actions_of(&diff(&desired, &observed)),
            vec![OverlayAction::SetMtu { mtu: 1450 }]
        );
    }

    #[test]
    fn down_device_with_stale_address_is_fixed_in_place() {
        let desired = desired_overlay(&config(), &three_peers());
        let mut observed = observed_from(&desired);
        if let Some(device) = observed.device.as_mut() {
            device.up = false;
        }
        observed.addresses = vec![net("10.244.0.0/32")];
        assert_eq!(
            actions_of(&diff(&desired, &observed)),
            vec![
                OverlayAction::AddAddress(net("10.244.1.0/32")),
                OverlayAction::DeleteAddress(net("10.244.0.0/32")),
                OverlayAction::SetUp,
            ]
        );
    }

    #[test]
    fn no_op_reconcile_after_applying_yields_zero_actions() {
        // Apply the plan to a model of the kernel, then diff again.
        let desired = desired_overlay(&config(), &three_peers());
        let mut kernel = ObservedOverlay::default();
        for planned in diff(&desired, &kernel) {
            match planned.action {
                OverlayAction::CreateDevice(spec) => {
                    kernel.device = Some(ObservedDevice {
                        index: 9,
                        is_vxlan: true,
                        vni: Some(spec.vni),
                        port: Some(spec.port),
                        local: Some(spec.local),
                        vtep_index: Some(spec.vtep_index),
                        learning: Some(spec.learning),
                        mtu: spec.mtu,
                        mac: Some(spec.mac),
                        up: false,
                    })
                }
                OverlayAction::AddAddress(a) => kernel.addresses.push(a),
                OverlayAction::SetUp => {
                    if let Some(d) = kernel.device.as_mut() {
                        d.up = true;
                    }
                }
                OverlayAction::ReplaceNeighbour(n) => kernel.neighbours.push(ObservedNeighbour {
                    ip: n.ip,
                    mac: Some(n.mac),
                    permanent: true,
                }),
                OverlayAction::ReplaceFdb(e) => kernel.fdb.push(ObservedFdbEntry {
                    mac: e.mac,
                    remote: Some(e.remote),
                    permanent: true,
                }),
                OverlayAction::ReplaceRoute(r) => kernel.routes.push(ObservedRoute {
                    destination: r.destination,
                    gateway: Some(r.gateway),
                    onlink: true,
                    kernel: false,
                }),
                other => panic!("unexpected action {other}"),
            }
        }
        assert!(diff(&desired, &kernel).is_empty());
    }

    #[test]
    fn macs_format_and_parse() {
        let mac = [0x0e, 0x18, 0x0a, 0xf4, 0x01, 0x00];
        assert_eq!(format_mac(&mac), "0e:18:0a:f4:01:00");
        assert_eq!(parse_mac("0E:18:0a:f4:01:00"), Some(mac));
        assert_eq!(parse_mac(""), None);
        assert_eq!(parse_mac("0e:18:0a:f4:01"), None);
        assert_eq!(parse_mac("0e:18:0a:f4:01:00:00"), None);
        assert_eq!(parse_mac("0e:18:0a:f4:01:0"), None);
        assert_eq!(parse_mac("0e:18:0a:f4:01:zz"), None);
    }
}
