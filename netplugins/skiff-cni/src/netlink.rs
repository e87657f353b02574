//! The kernel executor: applies attach/detach plans with rtnetlink, and
//! reads back what CHECK compares.
//!
//! Mechanism. Network namespaces belong to threads, and a netlink socket to
//! the namespace it was opened in. Node-side work runs on the calling thread
//! (the runtime starts the plugin in the node's namespace); pod-side work
//! runs on a short-lived thread that first `setns`es into the pod's
//! namespace and only then opens its netlink socket. Each side drives its
//! requests on a small current-thread tokio runtime.
//!
//! Ordering rules for ADD:
//! 1. Bridge: reuse it if it exists (it must be a bridge), else create it
//!    with a fixed MAC and the MTU, up; then make sure it holds the gateway
//!    address (an existing address is fine). Concurrent ADDs may race to
//!    create it: "exists" counts as success.
//! 2. `net.ipv4.ip_forward=1` in the node namespace (written only when off).
//! 3. The veth pair in one request: host end named and addressed from the
//!    plan, already a port of the bridge and up; pod end created directly
//!    inside the pod namespace (`IFLA_NET_NS_FD` on the peer) under its
//!    final name with its MAC and MTU, so a node interface called `eth0`
//!    never gets in the way.
//! 4. Hairpin on the host end, through the bridge-port attributes of an
//!    `RTM_NEWLINK` (`IFLA_INFO_SLAVE_DATA` / `IFLA_BRPORT_MODE`), not
//!    through `/sys/class/net/<if>/brport/hairpin_mode`: sysfs shows the
//!    namespace it was mounted in, which is not always the node's.
//! 5. Pod side: address, then link up, then the default route (the gateway
//!    is reachable only once the subnet route exists, which needs both).
//!
//! Requests address links by name where the kernel allows it, and values the
//! result needs (MACs) are chosen by the plan rather than read back: round
//! trips are most of an ADD's time.
//!
//! A failure after step 3 deletes the host end, which takes the pod end
//! with it, so a failed ADD leaves nothing behind but the shared bridge.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::dataplane::{
    AttachPlan, Attached, BridgeSpec, Dataplane, DataplaneError, DetachPlan, Mac, ObserveQuery,
    Observed, ObservedPodLink,
};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The executor over the real kernel.
pub struct NetlinkDataplane;

impl Dataplane for NetlinkDataplane {
    fn check_netns(&mut self, netns: &Path) -> Result<(), DataplaneError> {
        open_netns(netns).map(drop)
    }

    fn attach(&mut self, plan: &AttachPlan) -> Result<Attached, DataplaneError> {
        let netns = open_netns(&plan.netns)?;
        // The pod-side thread starts at once and gets its socket ready while
        // this thread does the node side; it proceeds when told the veth
        // exists, and gives up if the sender goes away.
        let (go, wait_for_veth) = std::sync::mpsc::channel::<()>();
        let (bridge_mac, pod_side) = std::thread::scope(|scope| {
            let (netns, plan) = (&netns, plan);
            let pod_worker = scope.spawn(move || -> Option<Result<Mac, DataplaneError>> {
                let session = enter_netns(netns, &plan.netns).and_then(|()| Session::open());
                wait_for_veth.recv().ok()?;
                Some(
                    session.and_then(|session| session.run(|handle| pod_side_attach(handle, plan))),
                )
            });
            let node_side = with_netlink(|handle| node_side_attach(handle, plan, netns));
            if node_side.is_ok() {
                let _ = go.send(());
            }
            drop(go);
            let pod_side = pod_worker
                .join()
                .unwrap_or_else(|_| Some(Err(worker_panicked())));
            (node_side, pod_side)
        });
        let bridge_mac = bridge_mac?;
        match pod_side.unwrap_or_else(|| Err(worker_panicked())) {
            Ok(pod_mac) => Ok(Attached {
                bridge_mac,
                host_veth_mac: plan.host_veth_mac,
                pod_mac,
            }),
            Err(err) => {
                // The attach error is the one worth reporting.
                let _ = with_netlink(|handle| async move {
                    delete_link_by_name(&handle, &plan.host_veth).await
                });
                Err(err)
            }
        }
    }

    fn detach(&mut self, plan: &DetachPlan) -> Result<(), DataplaneError> {
        let removed_on_host = with_netlink(|handle| async move {
            match link_by_name(&handle, &plan.host_veth).await? {
                Some(link) => delete_link(&handle, link.header.index, &plan.host_veth)
                    .await
                    .map(|()| true),
                None => Ok(false),
            }
        })?;
        if removed_on_host {
            return Ok(());
        }
        // The host end is gone (or was renamed); the pod end may still be
        // there if the namespace is.
        let Some(path) = plan.netns.as_deref() else {
            return Ok(());
        };
        let netns = match open_netns(path) {
            Ok(netns) => netns,
            Err(DataplaneError::NetnsMissing(_)) => return Ok(()),
            Err(err) => return Err(err),
        };
        in_netns(&netns, path, |handle| async move {
            if let Some(link) = link_by_name(&handle, &plan.pod_ifname).await? {
                delete_link(&handle, link.header.index, &plan.pod_ifname).await?;
            }
            Ok(())
        })
    }

    fn observe(&mut self, query: &ObserveQuery) -> Result<Observed, DataplaneError> {
        let netns = open_netns(&query.netns)?;
        let host_veth_on_bridge = with_netlink(|handle| async move {
            let bridge = link_by_name(&handle, &query.bridge).await?;
            let host = link_by_name(&handle, &query.host_veth).await?;
            Ok(match (bridge, host) {
                (Some(bridge), Some(host)) => controller(&host) == Some(bridge.header.index),
                _ => false,
            })
        })?;
        let pod_link = in_netns(&netns, &query.netns, |handle| {
            observe_pod_link(handle, &query.pod_ifname)
        })?;
        Ok(Observed {
            pod_link,
            host_veth_on_bridge,
        })
    }
}

fn open_netns(path: &Path) -> Result<File, DataplaneError> {
    File::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            DataplaneError::NetnsMissing(path.to_path_buf())
        } else {
            DataplaneError::NetnsOpen {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// A netlink socket of the namespace the opening thread was in, with the
/// small event loop that drives it.
struct Session {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl Session {
    fn open() -> Result<Session, DataplaneError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| DataplaneError::Io {
                operation: "start the netlink event loop",
                source,
            })?;
        let (connection, handle, _) = {
            let _context = runtime.enter();
            rtnetlink::new_connection().map_err(|source| DataplaneError::Io {
                operation: "open a netlink socket",
                source,
            })?
        };
        runtime.spawn(connection);
        Ok(Session { runtime, handle })
    }

    fn run<T, F, Fut>(&self, work: F) -> Result<T, DataplaneError>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: Future<Output = Result<T, DataplaneError>>,
    {
        self.runtime.block_on(work(self.handle.clone()))
    }
}

/// Runs `work` against a netlink socket of the calling thread's namespace.
fn with_netlink<T, F, Fut>(work: F) -> Result<T, DataplaneError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, DataplaneError>>,
{
    Session::open()?.run(work)
}

fn enter_netns(netns: &File, path: &Path) -> Result<(), DataplaneError> {
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(|source| DataplaneError::NetnsEnter {
        path: path.to_path_buf(),
        source,
    })
}

fn worker_panicked() -> DataplaneError {
    DataplaneError::Unexpected("the namespace worker thread panicked".into())
}

/// Runs `work` on a thread inside `netns`, with a socket opened there.
fn in_netns<T, F, Fut>(netns: &File, path: &Path, work: F) -> Result<T, DataplaneError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, DataplaneError>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(netns, path)?;
                with_netlink(work)
            })
            .join()
            .unwrap_or_else(|_| Err(worker_panicked()))
    })
}

fn netlink_error(operation: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    let operation = operation.into();
    move |source| DataplaneError::Netlink { operation, source }
}

fn errno(err: &rtnetlink::Error) -> Option<Errno> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(message.raw_code().abs())),
        _ => None,
    }
}

async fn node_side_attach(
    handle: Handle,
    plan: &AttachPlan,
    netns: &File,
) -> Result<Mac, DataplaneError> {
    let (bridge_index, bridge_mac) = ensure_bridge(&handle, &plan.bridge).await?;
    ensure_ip_forward()?;
    create_veth(&handle, plan, bridge_index, netns).await?;
    if plan.hairpin {
        // Addressed by name: no lookup of the new link's index needed.
        let port = LinkMessageBuilder::<LinkBridgePort>::default()
            .name(plan.host_veth.clone())
            .set_port_kind(InfoPortKind::Bridge)
            .hairpin(true)
            .build();
        if let Err(err) = handle.link().set_port(port).execute().await {
            let _ = delete_link_by_name(&handle, &plan.host_veth).await;
            return Err(netlink_error(format!(
                "turn on hairpin mode on {}",
                plan.host_veth
            ))(err));
        }
    }
    Ok(bridge_mac)
}

async fn ensure_bridge(handle: &Handle, spec: &BridgeSpec) -> Result<(u32, Mac), DataplaneError> {
    let link = match link_by_name(handle, &spec.name).await? {
        Some(link) => link,
        None => {
            let create = LinkBridge::new(&spec.name)
                .mtu(spec.mtu)
                .address(spec.mac.to_vec())
                .build();
            match handle.link().add(create).execute().await {
                Ok(()) => {}
                // Another ADD created it first.
                Err(err) if errno(&err) == Some(Errno::EEXIST) => {}
                Err(err) => return Err(netlink_error(format!("create bridge {}", spec.name))(err)),
            }
            link_by_name(handle, &spec.name).await?.ok_or_else(|| {
                DataplaneError::Unexpected(format!(
                    "bridge {} vanished right after creation",
                    spec.name
                ))
            })?
        }
    };
    if !is_bridge(&link) {
        return Err(DataplaneError::NotABridge {
            name: spec.name.clone(),
        });
    }
    let index = link.header.index;
    let mtu_differs = mtu_of(&link) != Some(spec.mtu);
    let down = !link.header.flags.contains(LinkFlags::Up);
    if mtu_differs || down {
        let mut change = LinkUnspec::new_with_index(index).up();
        if mtu_differs {
            change = change.mtu(spec.mtu);
        }
        handle
            .link()
            .change(change.build())
            .execute()
            .await
            .map_err(netlink_error(format!(
                "set bridge {} up with MTU {}",
                spec.name, spec.mtu
            )))?;
    }
    let gateway = spec.address;
    match handle
        .address()
        .add(index, IpAddr::V4(gateway.addr()), gateway.prefix_len())
        .execute()
        .await
    {
        Ok(()) => {}
        Err(err) if errno(&err) == Some(Errno::EEXIST) => {}
        Err(err) => {
            return Err(netlink_error(format!(
                "add {gateway} to bridge {}",
                spec.name
            ))(err))
        }
    }
    Ok((index, mac_of(&link)))
}

/// Pods on the bridge reach other networks through the node, which must
/// route for them.
fn ensure_ip_forward() -> Result<(), DataplaneError> {
    let current = std::fs::read_to_string(IP_FORWARD).map_err(|source| DataplaneError::Io {
        operation: "read net.ipv4.ip_forward",
        source,
    })?;
    if current.trim() != "1" {
        std::fs::write(IP_FORWARD, "1").map_err(|source| DataplaneError::Io {
            operation: "turn on net.ipv4.ip_forward",
            source,
        })?;
    }
    Ok(())
}

fn veth_request(plan: &AttachPlan, bridge_index: u32, netns: &File) -> LinkMessage {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(plan.pod_ifname.clone())
        .mtu(plan.mtu)
        .address(plan.pod_mac.to_vec())
        .setns_by_fd(netns.as_raw_fd())
        .build();
    LinkVeth::new(&plan.host_veth, &plan.pod_ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(plan.mtu)
        .address(plan.host_veth_mac.to_vec())
        .controller(bridge_index)
        .up()
        .build()
}

async fn create_veth(
    handle: &Handle,
    plan: &AttachPlan,
    bridge_index: u32,
    netns: &File,
) -> Result<(), DataplaneError> {
    let operation = || {
        format!(
            "create veth pair {} / {} in {}",
            plan.host_veth,
            plan.pod_ifname,
            plan.netns.display()
        )
    };
    match handle
        .link()
        .add(veth_request(plan, bridge_index, netns))
        .execute()
        .await
    {
        Ok(()) => return Ok(()),
        Err(err) if errno(&err) == Some(Errno::EEXIST) => {}
        Err(err) => return Err(netlink_error(operation())(err)),
    }
    // One of the two names is taken. If the pod already has the interface,
    // this is a repeated ADD: leave everything as it is.
    let pod_name = plan.pod_ifname.clone();
    let pod_has_it = in_netns(netns, &plan.netns, |pod| async move {
        Ok(link_by_name(&pod, &pod_name).await?.is_some())
    })?;
    if pod_has_it {
        return Err(DataplaneError::InterfaceExists {
            ifname: plan.pod_ifname.clone(),
            netns: plan.netns.clone(),
        });
    }
    // Otherwise a host end of an earlier, half-finished ADD of this same
    // attachment is in the way (the name is derived from it): replace it.
    if let Some(stale) = link_by_name(handle, &plan.host_veth).await? {
        delete_link(handle, stale.header.index, &plan.host_veth).await?;
    }
    handle
        .link()
        .add(veth_request(plan, bridge_index, netns))
        .execute()
        .await
        .map_err(netlink_error(operation()))
}

async fn pod_side_attach(handle: Handle, plan: &AttachPlan) -> Result<Mac, DataplaneError> {
    let link = link_by_name(&handle, &plan.pod_ifname)
        .await?
        .ok_or_else(|| {
            DataplaneError::Unexpected(format!(
                "{} did not appear in {} after the veth pair was created",
                plan.pod_ifname,
                plan.netns.display()
            ))
        })?;
    let index = link.header.index;
    let address = plan.pod_address;
    handle
        .address()
        .add(index, IpAddr::V4(address.addr()), address.prefix_len())
        .execute()
        .await
        .map_err(netlink_error(format!(
            "add {address} to {}",
            plan.pod_ifname
        )))?;
    // Not at creation: a veth end cannot come up before its peer exists.
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink_error(format!("set {} up", plan.pod_ifname)))?;
    for route in &plan.pod_routes {
        let request = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination.addr(), route.destination.prefix_len())
            .gateway(route.gateway)
            .output_interface(index)
            .build();
        handle
            .route()
            .add(request)
            .execute()
            .await
            .map_err(netlink_error(format!(
                "add route {} via {} dev {}",
                route.destination, route.gateway, plan.pod_ifname
            )))?;
    }
    Ok(mac_of(&link))
}

async fn observe_pod_link(
    handle: Handle,
    ifname: &str,
) -> Result<Option<ObservedPodLink>, DataplaneError> {
    let Some(link) = link_by_name(&handle, ifname).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    let addresses: Vec<Ipv4Net> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(netlink_error(format!("list the addresses of {ifname}")))?
        .into_iter()
        .filter_map(|message| {
            let prefix = message.header.prefix_len;
            message
                .attributes
                .into_iter()
                .find_map(|attribute| match attribute {
                    AddressAttribute::Address(IpAddr::V4(address)) => {
                        Ipv4Net::new(address, prefix).ok()
                    }
                    _ => None,
                })
        })
        .collect();
    let routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(netlink_error("list the pod's routes"))?
        .into_iter()
        .filter(|route| route.header.table == RouteHeader::RT_TABLE_MAIN)
        .filter(|route| route.attributes.contains(&RouteAttribute::Oif(index)))
        .map(|route| {
            let mut destination = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Destination(RouteAddress::Inet(address)) => {
                        destination = *address
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(address)) => {
                        gateway = Some(*address)
                    }
                    _ => {}
                }
            }
            let destination = Ipv4Net::new(destination, route.header.destination_prefix_length)
                .unwrap_or_else(|_| Ipv4Net::from(destination));
            (destination, gateway)
        })
        .collect();
    Ok(Some(ObservedPodLink {
        mac: mac_of(&link),
        up: link.header.flags.contains(LinkFlags::Up),
        addresses,
        routes,
    }))
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, DataplaneError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(err) if errno(&err) == Some(Errno::ENODEV) => Ok(None),
        Err(err) => Err(netlink_error(format!("look up link {name}"))(err)),
    }
}

async fn delete_link_by_name(handle: &Handle, name: &str) -> Result<(), DataplaneError> {
    match link_by_name(handle, name).await? {
        Some(link) => delete_link(handle, link.header.index, name).await,
        None => Ok(()),
    }
}

async fn delete_link(handle: &Handle, index: u32, name: &str) -> Result<(), DataplaneError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(Errno::ENODEV) => Ok(()),
        Err(err) => Err(netlink_error(format!("delete link {name}"))(err)),
    }
}

fn mac_of(link: &LinkMessage) -> Mac {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => <Mac>::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
        .unwrap_or_default()
}

fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
}

fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Controller(index) => Some(*index),
            _ => None,
        })
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|attribute| match attribute {
        LinkAttribute::LinkInfo(infos) => infos.contains(&LinkInfo::Kind(InfoKind::Bridge)),
        _ => false,
    })
}
