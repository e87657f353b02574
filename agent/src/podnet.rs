//! The node's pod network, wired together: what the control plane says
//! (the node's subnet and the cluster network in `Welcome`, the peers in
//! `Snapshot` and `Delta`), the overlay ([`crate::overlay`]), and the CNI
//! configuration containerd hands to `skiff-cni`.
//!
//! Mechanism. The session hands everything network-related to a
//! [`PodNetworkHandle`] and goes on; one task ([`run`]) owns the kernel
//! side. It holds the latest settings and peer set in `watch` channels, so
//! a burst of peer deltas collapses into one reconcile (after a few
//! milliseconds of quiet, [`DEBOUNCE`]), and it reconciles every
//! [`RESYNC_INTERVAL`] as well, which restores a device or entries someone
//! deleted.
//!
//! Ordering rules, on the first settings with a subnet (and whenever they
//! change):
//! 1. find the external interface (`--external-interface`, else the
//!    default route's);
//! 2. create or keep the VXLAN device, which gives the VTEP MAC and MTU;
//! 3. turn on IPv4 forwarding;
//! 4. write the conflist (`10-skiff.conflist`, the subnet, its first host
//!    as gateway, the device's MTU), atomically and only when its content
//!    changes, so containerd never reads half a file;
//! 5. publish the overlay endpoint, which the session reports in a
//!    heartbeat at once: peers learn of this node only once its device
//!    exists.
//!
//! Peers are programmed only after that. A node without a subnet (none
//! free, or an older control plane) or whose overlay fails keeps running
//! its pods: the failure is logged and retried on the next resync.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::json;
use skiff_proto::node::v1 as proto;
use tokio::sync::watch;

use crate::overlay::{self, Overlay, OverlayConfig, OverlayError, OverlayNetlink, Peer};

/// The conflist the agent owns in the CNI configuration directory. The
/// `10-` prefix sorts it before the usual `87-podman`/`99-loopback`.
pub const CONFLIST_NAME: &str = "10-skiff.conflist";
/// The CNI network name inside it.
pub const NETWORK_NAME: &str = "skiff";
/// The bridge `skiff-cni` creates for the node's pods.
pub const BRIDGE_NAME: &str = "skiff0";
/// Where containerd reads CNI configurations when its own config says
/// nothing else.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Quiet time that ends a burst of peer changes.
pub const DEBOUNCE: Duration = Duration::from_millis(5);
/// How often the overlay is reconciled without any change.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    #[error("the control plane sent an unusable pod subnet {0:?}; expected an IPv4 CIDR such as 10.244.1.0/24")]
    PodCidr(String),
    #[error("the control plane sent an unusable VXLAN setting: {0}")]
    Vxlan(String),
    #[error("cannot write the CNI configuration {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Overlay(#[from] OverlayError),
}

/// The pod network as the control plane's `Welcome` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetworkSettings {
    pub pod_cidr: Ipv4Net,
    pub vni: u32,
    pub port: u16,
    /// The whole pod network, whose traffic leaving it is masqueraded;
    /// `None` from a control plane that does not say.
    pub cluster_cidr: Option<Ipv4Net>,
}

impl NodeNetworkSettings {
    /// `None` when the node has no subnet (none free, or a control plane
    /// that predates subnets). A control plane that sends no
    /// `ClusterNetwork` gets flannel's defaults (VNI 1, port 8472).
    pub fn from_welcome(
        pod_cidr: &str,
        network: Option<&proto::ClusterNetwork>,
    ) -> Result<Option<NodeNetworkSettings>, PodNetworkError> {
        if pod_cidr.is_empty() {
            return Ok(None);
        }
        let subnet: Ipv4Net = pod_cidr
            .parse()
            .map_err(|_| PodNetworkError::PodCidr(pod_cidr.to_owned()))?;
        if subnet.prefix_len() > 30 || subnet.trunc() != subnet {
            return Err(PodNetworkError::PodCidr(pod_cidr.to_owned()));
        }
        let (vni, port) = match network {
            Some(network) => (network.vxlan_vni, network.vxlan_port),
            None => (1, u32::from(overlay::DEFAULT_VXLAN_PORT)),
        };
        let vni = if vni == 0 { 1 } else { vni };
        if vni >= 1 << 24 {
            return Err(PodNetworkError::Vxlan(format!(
                "VNI {vni} is above 16777215"
            )));
        }
        let port = match port {
            0 => overlay::DEFAULT_VXLAN_PORT,
            port => u16::try_from(port)
                .map_err(|_| PodNetworkError::Vxlan(format!("port {port} is above 65535")))?,
        };
        let cluster_cidr = network
            .map(|network| network.cluster_cidr.as_str())
            .filter(|text| !text.is_empty())
            .map(|text| {
                text.parse::<Ipv4Net>()
                    .map_err(|_| PodNetworkError::PodCidr(text.to_owned()))
            })
            .transpose()?;
        Ok(Some(NodeNetworkSettings {
            pod_cidr: subnet,
            vni,
            port,
            cluster_cidr,
        }))
    }

    /// The bridge's address: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_cidr.network()).saturating_add(1))
    }
}

/// The conflist `skiff-cni` reads (its schema is fixed by the plugin).
pub fn conflist(settings: &NodeNetworkSettings, mtu: u32, cni_data_dir: &Path) -> String {
    let document = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "skiff-cni",
            "bridge": BRIDGE_NAME,
            "subnet": settings.pod_cidr.to_string(),
            "gateway": settings.gateway().to_string(),
            "mtu": mtu,
            "hairpinMode": true,
            "dataDir": cni_data_dir.display().to_string(),
        }],
    });
    // A Value always serialises.
    serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
}

/// Writes `content` to `dir/10-skiff.conflist` through a temporary file and
/// a rename, unless the file already holds exactly that. Returns whether
/// it wrote.
pub fn write_conflist(dir: &Path, content: &str) -> Result<bool, PodNetworkError> {
    let path = dir.join(CONFLIST_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == content) {
        return Ok(false);
    }
    let failed = |source: std::io::Error| PodNetworkError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    // A dot name ending in .tmp: containerd only loads *.conf, *.conflist
    // and *.json, so it never sees the half-written file.
    let temporary = dir.join(format!(".{CONFLIST_NAME}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(content.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, &path).map_err(failed)?;
    Ok(true)
}

/// Removes the conflist if it is the agent's (by its network name).
/// Returns whether there was one.
pub fn remove_conflist(dir: &Path) -> Result<bool, PodNetworkError> {
    let path = dir.join(CONFLIST_NAME);
    let Ok(content) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let ours = serde_json::from_str::<serde_json::Value>(&content)
        .is_ok_and(|document| document["name"] == NETWORK_NAME);
    if !ours {
        tracing::warn!(path = %path.display(), "leaving a conflist that is not the agent's");
        return Ok(false);
    }
    std::fs::remove_file(&path).map_err(|source| PodNetworkError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(true)
}

/// containerd's CNI configuration directory, from CRI `Status`'s verbose
/// info (`config.cni.confDir`), if it says.
pub fn cni_conf_dir_from_status(info: &HashMap<String, String>) -> Option<PathBuf> {
    let config: serde_json::Value = serde_json::from_str(info.get("config")?).ok()?;
    config
        .pointer("/cni/confDir")
        .and_then(serde_json::Value::as_str)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// The peers as the control plane sent them, by node name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTable {
    peers: BTreeMap<String, proto::OverlayPeer>,
}

impl PeerTable {
    /// A Snapshot's peers replace the table; returns whether it changed.
    pub fn replace(&mut self, peers: &[proto::OverlayPeer]) -> bool {
        let fresh: BTreeMap<String, proto::OverlayPeer> = peers
            .iter()
            .map(|peer| (peer.node_name.clone(), peer.clone()))
            .collect();
        let changed = fresh != self.peers;
        self.peers = fresh;
        changed
    }

    /// A Delta's peer changes; returns whether the table changed.
    pub fn apply(&mut self, upserted: &[proto::OverlayPeer], removed: &[String]) -> bool {
        let mut changed = false;
        for name in removed {
            changed |= self.peers.remove(name).is_some();
        }
        for peer in upserted {
            changed |= self
                .peers
                .insert(peer.node_name.clone(), peer.clone())
                .as_ref()
                != Some(peer);
        }
        changed
    }

    /// The peers the overlay can program; malformed ones are logged and
    /// left out, so one bad peer does not cut this node off from the rest.
    pub fn overlay_peers(&self) -> Vec<Peer> {
        self.peers
            .values()
            .filter_map(|peer| match Peer::try_from(peer) {
                Ok(peer) => Some(peer),
                Err(error) => {
                    tracing::warn!(%error, "leaving out an overlay peer");
                    None
                }
            })
            .collect()
    }
}

/// What the session reports: this node's overlay endpoint once its device
/// exists.
pub type EndpointWatch = watch::Receiver<Option<proto::OverlayEndpoint>>;

/// The session's side of the pod network: it records what the control
/// plane says, and learns the endpoint to report.
pub struct PodNetworkHandle {
    settings: watch::Sender<Option<NodeNetworkSettings>>,
    peers: watch::Sender<PeerTable>,
    endpoint: EndpointWatch,
}

impl PodNetworkHandle {
    /// Takes the network-related parts of a control message; the session
    /// handles the rest of it as before.
    pub fn observe(&self, message: &proto::ControlMessage) {
        use proto::control_message::Message;
        match &message.message {
            Some(Message::Welcome(welcome)) => {
                match NodeNetworkSettings::from_welcome(&welcome.pod_cidr, welcome.network.as_ref())
                {
                    Ok(None) => tracing::warn!(
                        "the control plane leased this node no pod subnet; pods get no pod network until it does (see the Node's NetworkUnavailable condition)"
                    ),
                    Ok(Some(settings)) => {
                        tracing::info!(pod_cidr = %settings.pod_cidr, vni = settings.vni, port = settings.port, "the node's pod subnet");
                        self.settings.send_if_modified(|current| {
                            let changed = current.as_ref() != Some(&settings);
                            *current = Some(settings);
                            changed
                        });
                    }
                    Err(error) => tracing::error!(%error, "cannot set up the pod network"),
                }
            }
            Some(Message::Snapshot(snapshot)) => {
                self.peers
                    .send_if_modified(|table| table.replace(&snapshot.peers));
            }
            Some(Message::Delta(delta)) => {
                self.peers.send_if_modified(|table| {
                    table.apply(&delta.peers_upserted, &delta.peers_removed)
                });
            }
            None => {}
        }
    }

    /// The endpoint to report, and its changes.
    pub fn endpoint(&self) -> EndpointWatch {
        self.endpoint.clone()
    }
}

/// Where the pod network's files go and which interface carries it.
#[derive(Debug, Clone)]
pub struct PodNetworkOptions {
    /// `--external-interface`; the default route's interface if `None`.
    pub external_interface: Option<String>,
    pub cni_conf_dir: PathBuf,
    /// `skiff-cni`'s `dataDir` (its address leases).
    pub cni_data_dir: PathBuf,
}

/// The channels between the session and [`run`].
pub struct PodNetworkChannels {
    settings: watch::Receiver<Option<NodeNetworkSettings>>,
    peers: watch::Receiver<PeerTable>,
    endpoint: watch::Sender<Option<proto::OverlayEndpoint>>,
}

/// Creates the handle the session uses and the channels [`run`] serves.
pub fn channels() -> (PodNetworkHandle, PodNetworkChannels) {
    let (settings_sender, settings) = watch::channel(None);
    let (peers_sender, peers) = watch::channel(PeerTable::default());
    let (endpoint_sender, endpoint) = watch::channel(None);
    (
        PodNetworkHandle {
            settings: settings_sender,
            peers: peers_sender,
            endpoint,
        },
        PodNetworkChannels {
            settings,
            peers,
            endpoint: endpoint_sender,
        },
    )
}

/// The overlay once set up for some settings.
struct Programmed<N> {
    settings: NodeNetworkSettings,
    overlay: Overlay<N>,
    /// The device's MTU, which pods get too.
    mtu: u32,
}

/// Serves the pod network until the session side is gone. `connect` opens
/// the netlink seam (`RtNetlink::connect` in the agent).
pub async fn run<N, C>(options: PodNetworkOptions, mut channels: PodNetworkChannels, connect: C)
where
    N: OverlayNetlink + Send,
    C: Fn() -> Result<N, OverlayError>,
{
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut programmed: Option<Programmed<N>> = None;
    loop {
        tokio::select! {
            changed = channels.settings.changed() => if changed.is_err() { return },
            changed = channels.peers.changed() => {
                if changed.is_err() {
                    return;
                }
                // Let the rest of a burst arrive; the watch keeps only the
                // newest table.
                tokio::time::sleep(DEBOUNCE).await;
            }
            _ = resync.tick() => {}
        }
        let settings = channels.settings.borrow_and_update().clone();
        let Some(settings) = settings else {
            continue;
        };
        if programmed
            .as_ref()
            .is_none_or(|current| current.settings != settings)
        {
            match set_up(&options, &settings, &connect).await {
                Ok((overlay, endpoint, mtu)) => {
                    programmed = Some(Programmed {
                        settings: settings.clone(),
                        overlay,
                        mtu,
                    });
                    channels.endpoint.send_replace(Some(endpoint));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot set up the pod network; pods on this node get no pod network until it works (retrying every {}s)", RESYNC_INTERVAL.as_secs());
                    continue;
                }
            }
        }
        let Some(current) = programmed.as_mut() else {
            continue;
        };
        let peers = channels.peers.borrow_and_update().overlay_peers();
        match current.overlay.reconcile(&peers).await {
            Ok(report) => {
                for skipped in &report.skipped {
                    tracing::warn!(peer = %skipped.node_name, reason = %skipped.reason, "leaving out an overlay peer");
                }
                for failure in &report.failures {
                    tracing::warn!(
                        ?failure,
                        "an overlay write failed; retrying at the next reconcile"
                    );
                }
                if report.device_recreated {
                    tracing::warn!(
                        "the overlay device was missing or changed and has been recreated"
                    );
                }
                if report.writes > 0 {
                    tracing::info!(
                        peers = report.peers,
                        writes = report.writes,
                        "overlay reconciled"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "cannot reconcile the overlay; retrying"),
        }
        // Someone may have removed the file; write it back if so.
        write_conflist_logged(&options, &current.settings, current.mtu);
    }
}

/// Steps 1–4 of the module's ordering rules; returns the overlay, the
/// endpoint to publish and the device's MTU.
async fn set_up<N, C>(
    options: &PodNetworkOptions,
    settings: &NodeNetworkSettings,
    connect: &C,
) -> Result<(Overlay<N>, proto::OverlayEndpoint, u32), PodNetworkError>
where
    N: OverlayNetlink + Send,
    C: Fn() -> Result<N, OverlayError>,
{
    let mut netlink = connect()?;
    let external =
        overlay::detect_external(&mut netlink, options.external_interface.as_deref()).await?;
    tracing::info!(interface = %external.name, address = %external.ip, mtu = external.mtu, "the overlay's external interface");
    let public_ip = external.ip;
    let config = OverlayConfig::new(settings.vni, settings.port, external, settings.pod_cidr);
    let mut overlay = Overlay::new(netlink, config);
    let vtep = overlay.ensure_device().await?;
    overlay::enable_ip_forwarding()?;
    if let Some(cluster_cidr) = settings.cluster_cidr {
        // iptables runs as a command; keep it off the async workers.
        let masquerade = tokio::task::spawn_blocking(move || {
            let iptables = crate::iptables::CommandIptables::detect(Vec::new());
            crate::proxy::ensure_pod_masquerade(
                &iptables,
                &crate::proxy::NodeSettings::new(cluster_cidr),
            )
        })
        .await;
        match masquerade {
            Ok(Ok(())) => {
                tracing::info!(%cluster_cidr, "pod traffic leaving the cluster network is masqueraded")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot install the pod network's masquerade; pods cannot reach addresses outside the cluster network")
            }
            Err(error) => tracing::warn!(%error, "the masquerade set-up did not finish"),
        }
    }
    let content = conflist(settings, vtep.mtu, &options.cni_data_dir);
    if write_conflist(&options.cni_conf_dir, &content)? {
        tracing::info!(path = %options.cni_conf_dir.join(CONFLIST_NAME).display(), subnet = %settings.pod_cidr, mtu = vtep.mtu, "wrote the CNI configuration");
    }
    Ok((overlay, vtep.endpoint(public_ip), vtep.mtu))
}

fn write_conflist_logged(options: &PodNetworkOptions, settings: &NodeNetworkSettings, mtu: u32) {
    let content = conflist(settings, mtu, &options.cni_data_dir);
    match write_conflist(&options.cni_conf_dir, &content) {
        Ok(true) => {
            tracing::warn!(path = %options.cni_conf_dir.join(CONFLIST_NAME).display(), "the CNI configuration was missing or changed; wrote it again")
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "cannot write the CNI configuration"),
    }
}

/// `skiff-agent cleanup`: removes the VXLAN device, the pods' bridge and
/// the conflist (the iptables chains are `crate::proxy::cleanup`'s). Idempotent: what is already gone is skipped. Returns what
/// was removed, for the operator.
pub async fn cleanup<N: OverlayNetlink>(
    netlink: &mut N,
    vni: u32,
    cni_conf_dir: &Path,
) -> Result<Vec<String>, PodNetworkError> {
    let mut removed = Vec::new();
    let device = overlay::device_name(vni);
    if overlay::cleanup(netlink, &device).await? {
        removed.push(format!("the VXLAN device {device}"));
    }
    if overlay::cleanup(netlink, BRIDGE_NAME).await? {
        removed.push(format!("the bridge {BRIDGE_NAME}"));
    }
    if remove_conflist(cni_conf_dir)? {
        removed.push(format!(
            "the CNI configuration {}",
            cni_conf_dir.join(CONFLIST_NAME).display()
        ));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cidr: &str, mac: &str) -> proto::OverlayPeer {
        proto::OverlayPeer {
            node_name: name.into(),
            pod_cidr: cidr.into(),
            public_ip: "192.0.2.7".into(),
            vtep_mac: mac.into(),
        }
    }

    fn settings() -> NodeNetworkSettings {
        NodeNetworkSettings::from_welcome(
            "10.244.3.0/24",
            Some(&proto::ClusterNetwork {
                cluster_cidr: "10.244.0.0/16".into(),
                service_cidr: "10.96.0.0/12".into(),
                vxlan_vni: 7,
                vxlan_port: 4789,
                cluster_domain: "cluster.local".into(),
                cluster_dns: String::new(),
            }),
        )
        .expect("valid")
        .expect("a subnet")
    }

    #[test]
    fn welcome_settings_are_validated() {
        let settings = settings();
        assert_eq!((settings.vni, settings.port), (7, 4789));
        assert_eq!(
            settings.cluster_cidr.map(|c| c.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
        assert_eq!(settings.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(
            NodeNetworkSettings::from_welcome("", None).expect("ok"),
            None
        );
        let defaults = NodeNetworkSettings::from_welcome("10.244.1.0/24", None)
            .expect("ok")
            .expect("a subnet");
        assert_eq!((defaults.vni, defaults.port), (1, 8472));
        for bad in ["10.244.1.0", "10.244.1.5/24", "10.244.1.0/31", "fd00::/64"] {
            assert!(
                NodeNetworkSettings::from_welcome(bad, None).is_err(),
                "{bad}"
            );
        }
        let mut network = proto::ClusterNetwork {
            vxlan_vni: 1 << 24,
            ..Default::default()
        };
        assert!(NodeNetworkSettings::from_welcome("10.244.1.0/24", Some(&network)).is_err());
        network.vxlan_vni = 1;
        network.vxlan_port = 70000;
        assert!(NodeNetworkSettings::from_welcome("10.244.1.0/24", Some(&network)).is_err());
    }

    #[test]
    fn the_conflist_has_the_plugins_schema() {
        let text = conflist(&settings(), 1450, Path::new("/var/lib/skiff-agent/cni"));
        let document: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            document,
            json!({
                "cniVersion": "1.0.0",
                "name": "skiff",
                "plugins": [{
                    "type": "skiff-cni",
                    "bridge": "skiff0",
                    "subnet": "10.244.3.0/24",
                    "gateway": "10.244.3.1",
                    "mtu": 1450,
                    "hairpinMode": true,
                    "dataDir": "/var/lib/skiff-agent/cni",
                }],
            })
        );
    }

    #[test]
    fn the_conflist_is_written_once_and_removed_only_if_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_dir = dir.path().join("net.d");
        let text = conflist(&settings(), 1450, Path::new("/data/cni"));
        assert!(write_conflist(&conf_dir, &text).expect("write"));
        assert!(!write_conflist(&conf_dir, &text).expect("unchanged"));
        assert_eq!(
            std::fs::read_to_string(conf_dir.join(CONFLIST_NAME)).expect("read"),
            text
        );
        let names: Vec<_> = std::fs::read_dir(&conf_dir)
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(remove_conflist(&conf_dir).expect("remove"));
        assert!(!remove_conflist(&conf_dir).expect("again"));

        std::fs::write(conf_dir.join(CONFLIST_NAME), r#"{"name":"someone-else"}"#).expect("write");
        assert!(!remove_conflist(&conf_dir).expect("not ours"));
        assert!(conf_dir.join(CONFLIST_NAME).exists());
    }

    #[test]
    fn the_conf_dir_comes_from_containerds_status() {
        let info = HashMap::from([(
            "config".to_owned(),
            r#"{"cni":{"binDir":"/usr/lib/cni","confDir":"/srv/cni/net.d"},"sandboxImage":"pause"}"#
                .to_owned(),
        )]);
        assert_eq!(
            cni_conf_dir_from_status(&info),
            Some(PathBuf::from("/srv/cni/net.d"))
        );
        assert_eq!(cni_conf_dir_from_status(&HashMap::new()), None);
        let garbage = HashMap::from([("config".to_owned(), "{not json".to_owned())]);
        assert_eq!(cni_conf_dir_from_status(&garbage), None);
    }

    #[test]
    fn the_peer_table_follows_snapshots_and_deltas() {
        let mut table = PeerTable::default();
        let b = peer("b", "10.244.1.0/24", "aa:bb:cc:00:00:0b");
        let c = peer("c", "10.244.2.0/24", "aa:bb:cc:00:00:0c");
        assert!(table.replace(&[b.clone(), c.clone()]));
        assert!(!table.replace(&[c.clone(), b.clone()]), "same set");
        assert!(!table.apply(std::slice::from_ref(&b), &[]), "same peer again");
        let moved = peer("b", "10.244.1.0/24", "aa:bb:cc:00:00:ff");
        assert!(table.apply(&[moved], &[]));
        assert!(table.apply(&[], &["c".into()]));
        assert!(!table.apply(&[], &["c".into()]), "already gone");
        let peers = table.overlay_peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].node_name, "b");

        let bad = peer("d", "not-a-cidr", "aa:bb:cc:00:00:0d");
        assert!(table.apply(&[bad], &[]));
        assert_eq!(
            table.overlay_peers().len(),
            1,
            "a malformed peer is left out"
        );
    }

    #[test]
    fn the_handle_collapses_messages_into_the_latest_state() {
        use proto::control_message::Message;
        let (handle, mut channels) = channels();
        let welcome = proto::ControlMessage {
            message: Some(Message::Welcome(proto::Welcome {
                pod_cidr: "10.244.3.0/24".into(),
                ..Default::default()
            })),
        };
        handle.observe(&welcome);
        assert!(channels.settings.has_changed().expect("open"));
        assert_eq!(
            channels
                .settings
                .borrow_and_update()
                .as_ref()
                .map(|s| s.pod_cidr.to_string()),
            Some("10.244.3.0/24".into())
        );
        handle.observe(&welcome);
        assert!(
            !channels.settings.has_changed().expect("open"),
            "the same Welcome changes nothing"
        );

        for mac in ["aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"] {
            handle.observe(&proto::ControlMessage {
                message: Some(Message::Delta(proto::Delta {
                    revision: 2,
                    peers_upserted: vec![peer("b", "10.244.1.0/24", mac)],
                    ..Default::default()
                })),
            });
        }
        assert!(channels.peers.has_changed().expect("open"));
        let peers = channels.peers.borrow_and_update().overlay_peers();
        assert_eq!(
            overlay::plan::format_mac(&peers[0].vtep_mac),
            "aa:bb:cc:00:00:02"
        );

        channels.endpoint.send_replace(Some(proto::OverlayEndpoint {
            public_ip: "192.0.2.1".into(),
            vtep_mac: "aa:bb:cc:dd:ee:ff".into(),
        }));
        assert_eq!(
            handle
                .endpoint()
                .borrow()
                .as_ref()
                .map(|e| e.public_ip.as_str()),
            Some("192.0.2.1")
        );
    }
}
