//! The overlay's seam to the kernel: [`OverlayNetlink`], a narrow trait
//! that reads the device and its tables and applies one
//! [`OverlayAction`]; [`RtNetlink`], its implementation over an
//! `rtnetlink` socket; and [`apply_actions`], the executor that runs a
//! plan through it.
//!
//! A netlink socket belongs to the network namespace it was opened in, so
//! an [`RtNetlink`] programs the namespace of the thread that called
//! [`RtNetlink::connect`], whatever thread later uses it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::plan::{
    ActionGroup, Mac, ObservedDevice, ObservedFdbEntry, ObservedNeighbour, ObservedOverlay,
    ObservedRoute, OverlayAction, PlannedAction,
};
use super::OverlayError;

/// A network interface, as [`super::detect_external`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
}

/// What the overlay reads from and writes to the kernel. Reads return
/// only what concerns the given device; the plan decides what is ours.
pub trait OverlayNetlink {
    /// The output interface of the IPv4 default route with the lowest
    /// metric in the main table, if there is one.
    fn default_route_interface(
        &mut self,
    ) -> impl Future<Output = Result<Option<u32>, OverlayError>> + Send;
    fn interface_by_name(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<InterfaceInfo>, OverlayError>> + Send;
    fn interface_by_index(
        &mut self,
        index: u32,
    ) -> impl Future<Output = Result<Option<InterfaceInfo>, OverlayError>> + Send;
    /// The IPv4 addresses of an interface, primary first.
    fn ipv4_addresses(
        &mut self,
        index: u32,
    ) -> impl Future<Output = Result<Vec<Ipv4Net>, OverlayError>> + Send;
    /// The link named `name`, whatever its kind, with its VXLAN settings
    /// if it is a VXLAN device.
    fn device(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ObservedDevice>, OverlayError>> + Send;
    /// IPv4 neighbour entries on the interface.
    fn neighbours(
        &mut self,
        index: u32,
    ) -> impl Future<Output = Result<Vec<ObservedNeighbour>, OverlayError>> + Send;
    /// Bridge FDB entries on the interface.
    fn fdb(
        &mut self,
        index: u32,
    ) -> impl Future<Output = Result<Vec<ObservedFdbEntry>, OverlayError>> + Send;
    /// IPv4 routes of the main table that leave through the interface.
    fn routes(
        &mut self,
        index: u32,
    ) -> impl Future<Output = Result<Vec<ObservedRoute>, OverlayError>> + Send;
    /// Performs one write on the device named `device`.
    fn apply(
        &mut self,
        device: &str,
        action: &OverlayAction,
    ) -> impl Future<Output = Result<(), OverlayError>> + Send;
}

/// The device and its addresses; no tables.
pub async fn observe_device<N: OverlayNetlink>(
    netlink: &mut N,
    device: &str,
) -> Result<ObservedOverlay, OverlayError> {
    let Some(found) = netlink.device(device).await? else {
        return Ok(ObservedOverlay::default());
    };
    let addresses = netlink.ipv4_addresses(found.index).await?;
    Ok(ObservedOverlay {
        device: Some(found),
        addresses,
        ..ObservedOverlay::default()
    })
}

/// The device, its addresses, neighbours, FDB entries and routes.
pub async fn observe<N: OverlayNetlink>(
    netlink: &mut N,
    device: &str,
) -> Result<ObservedOverlay, OverlayError> {
    let mut observed = observe_device(netlink, device).await?;
    if let Some(index) = observed.device.as_ref().map(|d| d.index) {
        observed.neighbours = netlink.neighbours(index).await?;
        observed.fdb = netlink.fdb(index).await?;
        observed.routes = netlink.routes(index).await?;
    }
    Ok(observed)
}

/// A write that failed without ending the apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionFailure {
    pub action: OverlayAction,
    pub error: String,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Successful writes.
    pub writes: usize,
    pub failures: Vec<ActionFailure>,
}

/// Applies `actions` in order, by the rules of their [`ActionGroup`]: a
/// device action that fails ends the apply with an error; a peer's action
/// that fails skips that peer's later actions; a removal that fails is
/// recorded and the apply goes on. Removing what is already gone counts
/// as done (and as no write).
pub async fn apply_actions<N: OverlayNetlink>(
    netlink: &mut N,
    device: &str,
    actions: &[PlannedAction],
) -> Result<ApplyOutcome, OverlayError> {
    let mut outcome = ApplyOutcome::default();
    let mut failed_peer: Option<&str> = None;
    for planned in actions {
        if let ActionGroup::Peer(name) = &planned.group {
            if failed_peer == Some(name.as_str()) {
                continue;
            }
        }
        let result = netlink.apply(device, &planned.action).await;
        let error = match result {
            Ok(()) => {
                outcome.writes += 1;
                continue;
            }
            Err(e) if is_removal(&planned.action) && e.is_not_found() => continue,
            Err(e) => e,
        };
        match &planned.group {
            ActionGroup::Device => {
                return Err(OverlayError::DeviceAction {
                    device: device.to_string(),
                    action: planned.action.to_string(),
                    source: Box::new(error),
                });
            }
            ActionGroup::Peer(name) => {
                tracing::warn!(device, peer = %name, action = %planned.action, %error, "overlay: cannot install peer entry; retried at the next reconcile");
                failed_peer = Some(name.as_str());
            }
            ActionGroup::Removal => {
                tracing::warn!(device, action = %planned.action, %error, "overlay: cannot remove stale entry; retried at the next reconcile");
            }
        }
        outcome.failures.push(ActionFailure {
            action: planned.action.clone(),
            error: error.to_string(),
        });
    }
    Ok(outcome)
}

fn is_removal(action: &OverlayAction) -> bool {
    matches!(
        action,
        OverlayAction::DeleteDevice { .. }
            | OverlayAction::DeleteAddress(_)
            | OverlayAction::DeleteNeighbour { .. }
            | OverlayAction::DeleteFdb(_)
            | OverlayAction::DeleteRoute(_)
    )
}

/// [`OverlayNetlink`] over an `rtnetlink` socket.
pub struct RtNetlink {
    handle: Handle,
    /// The device's name and index, resolved once; reset when the device
    /// is deleted or created.
    device_index: Option<(String, u32)>,
}

fn netlink_error(operation: impl Into<String>, error: rtnetlink::Error) -> OverlayError {
    let source = match &error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    };
    OverlayError::Netlink {
        operation: operation.into(),
        source,
    }
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn route_oif(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

fn interface_info(link: &LinkMessage) -> InterfaceInfo {
    let mut info = InterfaceInfo {
        name: String::new(),
        index: link.header.index,
        mtu: 0,
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            _ => {}
        }
    }
    info
}

fn observed_device(link: &LinkMessage) -> ObservedDevice {
    let mut device = ObservedDevice {
        index: link.header.index,
        up: link.header.flags.contains(LinkFlags::Up),
        ..ObservedDevice::default()
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::Mtu(mtu) => device.mtu = *mtu,
            LinkAttribute::Address(bytes) => device.mac = mac_of(bytes),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => device.is_vxlan = *kind == InfoKind::Vxlan,
                        LinkInfo::Data(InfoData::Vxlan(settings)) => {
                            for setting in settings {
                                match setting {
                                    InfoVxlan::Id(vni) => device.vni = Some(*vni),
                                    InfoVxlan::Port(port) => device.port = Some(*port),
                                    InfoVxlan::Local(ip) => device.local = Some(*ip),
                                    InfoVxlan::Link(index) => device.vtep_index = Some(*index),
                                    InfoVxlan::Learning(on) => device.learning = Some(*on),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    device
}

impl RtNetlink {
    /// Opens a netlink socket in the calling thread's network namespace
    /// and drives it on the current tokio runtime.
    pub fn connect() -> Result<Self, OverlayError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(OverlayError::Connect)?;
        tokio::spawn(connection);
        Ok(RtNetlink {
            handle,
            device_index: None,
        })
    }

    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, OverlayError> {
        let result = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match result {
            Ok(link) => Ok(link),
            Err(e) => {
                let error = netlink_error(format!("get link {name}"), e);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    async fn index_of(&mut self, device: &str) -> Result<u32, OverlayError> {
        if let Some((name, index)) = &self.device_index {
            if name == device {
                return Ok(*index);
            }
        }
        let link = self
            .link(device)
            .await?
            .ok_or_else(|| OverlayError::DeviceMissing(device.to_string()))?;
        self.device_index = Some((device.to_string(), link.header.index));
        Ok(link.header.index)
    }

    /// One write. `index` is the device's, unused by the actions that
    /// create or delete the device itself.
    async fn write(&mut self, index: u32, action: &OverlayAction) -> Result<(), rtnetlink::Error> {
        match action {
            OverlayAction::CreateDevice(spec) => {
                let message = LinkVxlan::new(&spec.name, spec.vni)
                    .dev(spec.vtep_index)
                    .port(spec.port)
                    .local(spec.local)
                    .learning(spec.learning)
                    .mtu(spec.mtu)
                    .address(spec.mac.to_vec())
                    .build();
                self.handle.link().add(message).execute().await
            }
            OverlayAction::DeleteDevice { index, .. } => {
                self.handle.link().del(*index).execute().await
            }
            OverlayAction::SetMtu { mtu } => {
                let message = LinkUnspec::new_with_index(index).mtu(*mtu).build();
                self.handle.link().set(message).execute().await
            }
            OverlayAction::SetUp => {
                let message = LinkUnspec::new_with_index(index).up().build();
                self.handle.link().set(message).execute().await
            }
            OverlayAction::AddAddress(net) => {
                self.handle
                    .address()
                    .add(index, IpAddr::V4(net.addr()), net.prefix_len())
                    .replace()
                    .execute()
                    .await
            }
            OverlayAction::DeleteAddress(net) => {
                let mut message = AddressMessage::default();
                message.header.family = AddressFamily::Inet;
                message.header.prefix_len = net.prefix_len();
                message.header.index = index;
                message
                    .attributes
                    .push(AddressAttribute::Local(IpAddr::V4(net.addr())));
                self.handle.address().del(message).execute().await
            }
            OverlayAction::ReplaceNeighbour(neighbour) => {
                self.handle
                    .neighbours()
                    .add(index, IpAddr::V4(neighbour.ip))
                    .link_layer_address(&neighbour.mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
            }
            OverlayAction::DeleteNeighbour { ip } => {
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Inet;
                message.header.ifindex = index;
                message
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(*ip)));
                self.handle.neighbours().del(message).execute().await
            }
            OverlayAction::ReplaceFdb(entry) => {
                self.handle
                    .neighbours()
                    .add_bridge(index, &entry.mac)
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .destination(IpAddr::V4(entry.remote))
                    .replace()
                    .execute()
                    .await
            }
            OverlayAction::DeleteFdb(entry) => {
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Bridge;
                message.header.ifindex = index;
                message.header.flags = NeighbourFlags::Own;
                message.header.state = NeighbourState::Permanent;
                message
                    .attributes
                    .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
                // With the destination, only that remote of the MAC goes.
                message
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                        entry.remote,
                    )));
                self.handle.neighbours().del(message).execute().await
            }
            OverlayAction::ReplaceRoute(route) => {
                let message = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(route.destination.network(), route.destination.prefix_len())
                    .gateway(route.gateway)
                    .output_interface(index)
                    .onlink()
                    .build();
                self.handle.route().add(message).replace().execute().await
            }
            OverlayAction::DeleteRoute(route) => {
                let mut message = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(route.destination.network(), route.destination.prefix_len())
                    .output_interface(index)
                    .build();
                // Whoever installed it: match any protocol and scope.
                message.header.protocol = RouteProtocol::Unspec;
                message.header.scope = netlink_packet_route::route::RouteScope::NoWhere;
                self.handle.route().del(message).execute().await
            }
        }
    }
}

impl OverlayNetlink for RtNetlink {
    async fn default_route_interface(&mut self) -> Result<Option<u32>, OverlayError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("list IPv4 routes", e))?;
        let best = routes
            .iter()
            .filter(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.kind == RouteType::Unicast
                    && route_table(r) == RT_TABLE_MAIN
            })
            .filter_map(|r| {
                let priority = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Priority(p) => Some(*p),
                        _ => None,
                    })
                    .unwrap_or(0);
                let oif = route_oif(r).or_else(|| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
                        _ => None,
                    })
                })?;
                Some((priority, oif))
            })
            .min();
        Ok(best.map(|(_, oif)| oif))
    }

    async fn interface_by_name(
        &mut self,
        name: &str,
    ) -> Result<Option<InterfaceInfo>, OverlayError> {
        Ok(self.link(name).await?.as_ref().map(interface_info))
    }

    async fn interface_by_index(
        &mut self,
        index: u32,
    ) -> Result<Option<InterfaceInfo>, OverlayError> {
        let result = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(link) => Ok(link.as_ref().map(interface_info)),
            Err(e) => {
                let error = netlink_error(format!("get link {index}"), e);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    async fn ipv4_addresses(&mut self, index: u32) -> Result<Vec<Ipv4Net>, OverlayError> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error(format!("list addresses of link {index}"), e))?;
        let mut addresses = Vec::new();
        for message in &messages {
            if message.header.family != AddressFamily::Inet {
                continue;
            }
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                if let Ok(net) = Ipv4Net::new(ip, message.header.prefix_len) {
                    addresses.push(net);
                }
            }
        }
        Ok(addresses)
    }

    async fn device(&mut self, name: &str) -> Result<Option<ObservedDevice>, OverlayError> {
        let link = self.link(name).await?;
        let device = link.as_ref().map(observed_device);
        self.device_index = device.as_ref().map(|d| (name.to_string(), d.index));
        Ok(device)
    }

    async fn neighbours(&mut self, index: u32) -> Result<Vec<ObservedNeighbour>, OverlayError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("list IPv4 neighbours", e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                let mut ip = None;
                let mut mac = None;
                for attribute in &m.attributes {
                    match attribute {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
                        NeighbourAttribute::LinkLayerAddress(bytes) => mac = mac_of(bytes),
                        _ => {}
                    }
                }
                Some(ObservedNeighbour {
                    ip: ip?,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                })
            })
            .collect())
    }

    async fn fdb(&mut self, index: u32) -> Result<Vec<ObservedFdbEntry>, OverlayError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("list bridge FDB entries", e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.family == AddressFamily::Bridge)
            .filter_map(|m| {
                let mut mac = None;
                let mut remote = None;
                for attribute in &m.attributes {
                    match attribute {
                        NeighbourAttribute::LinkLayerAddress(bytes) => mac = mac_of(bytes),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                            remote = Some(*a)
                        }
                        // In AF_BRIDGE messages the destination comes
                        // unparsed: four bytes for IPv4.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                            remote = <[u8; 4]>::try_from(bytes.as_slice())
                                .ok()
                                .map(Ipv4Addr::from)
                        }
                        _ => {}
                    }
                }
                Some(ObservedFdbEntry {
                    mac: mac?,
                    remote,
                    permanent: m.header.state == NeighbourState::Permanent,
                })
            })
            .collect())
    }

    async fn routes(&mut self, index: u32) -> Result<Vec<ObservedRoute>, OverlayError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("list IPv4 routes", e))?;
        Ok(messages
            .iter()
            .filter(|r| {
                r.header.address_family == AddressFamily::Inet
                    && route_table(r) == RT_TABLE_MAIN
                    && route_oif(r) == Some(index)
            })
            .filter_map(|r| {
                let destination = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                        _ => None,
                    })
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                let destination =
                    Ipv4Net::new(destination, r.header.destination_prefix_length).ok()?;
                let gateway = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                });
                Some(ObservedRoute {
                    destination,
                    gateway,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                    kernel: r.header.protocol == RouteProtocol::Kernel,
                })
            })
            .collect())
    }

    async fn apply(&mut self, device: &str, action: &OverlayAction) -> Result<(), OverlayError> {
        let index = match action {
            OverlayAction::CreateDevice(_) | OverlayAction::DeleteDevice { .. } => {
                // The index changes; resolve it again when next needed.
                self.device_index = None;
                0
            }
            _ => self.index_of(device).await?,
        };
        self.write(index, action)
            .await
            .map_err(|e| netlink_error(format!("{device}: {action}"), e))
    }
}
