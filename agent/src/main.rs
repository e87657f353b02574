//! `skiff-agent`: joins a Skiff cluster and keeps this host registered as
//! one of its nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use skiff_agent::backoff::Backoff;
use skiff_agent::credentials::Credentials;
use skiff_agent::cri::GrpcCri;
use skiff_agent::runtime::executor::PodRuntime;
use skiff_agent::runtime::spec::{parse_resolv_conf, NodeSettings};
use skiff_agent::server::ServerAddress;
use skiff_agent::session::{self, PodBook, Target};
use skiff_agent::token::JoinToken;
use skiff_agent::{hostinfo, join};

#[derive(Debug, Parser)]
#[command(
    name = "skiff-agent",
    version,
    about = "Skiff node agent: joins the cluster and registers this host as a node",
    long_about = "Joins a Skiff cluster and keeps this host registered as one of its nodes.\n\n\
On first start (no credentials in --data-dir) the agent fetches the cluster CA from \
SERVER/cacerts, checks it against the SHA-256 inside --token and refuses it on a mismatch, \
then generates a private key, has the control plane sign a certificate for \
system:node:NODE_NAME, and stores key, certificate and CA in --data-dir. Later starts reuse \
them and need no token.\n\n\
It then holds a session with the control plane's node API (mutual TLS, port --node-api-port \
on the --server host): it registers the node with its addresses, capacity and system \
information, sends a heartbeat every 10 seconds, and receives the pods bound to the node. \
It runs them on containerd through CRI (--containerd), relisting the runtime every second, \
and reports their status up. It serves their logs to the control plane (--port), and imports \
image tarballs dropped into --images-dir. When the session breaks, the agent keeps its pods \
running and reconnects with exponential backoff (1 s doubling to 30 s, with jitter). It exits with an error when the control plane refuses it for good (wrong token, \
certificate not accepted, another node's name).",
    after_help = "EXAMPLE:\n    skiff-agent --server https://10.0.0.1:6443 --token K10...::abc123.0123456789abcdef"
)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Options {
    #[command(subcommand)]
    command: Option<Command>,
    /// The control plane's Kubernetes API URL, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "SKIFF_SERVER", required = true)]
    server: Option<String>,
    /// Join token from `skiff-controlplane token create`. Needed to join;
    /// ignored once the node has credentials.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name of this node (a DNS-1123 subdomain). Defaults to the host name.
    #[arg(long)]
    node_name: Option<String>,
    /// Directory for the node's key, certificate and the cluster CA, pods'
    /// emptyDir volumes (pods/) and, by default, the images directory
    /// (images/).
    #[arg(
        long,
        env = "SKIFF_AGENT_DATA_DIR",
        default_value = "/var/lib/skiff-agent"
    )]
    data_dir: PathBuf,
    /// The node API port on the --server host.
    #[arg(long, default_value_t = 6444)]
    node_api_port: u16,
    /// containerd's socket (any CRI runtime.v1 socket works).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd: PathBuf,
    /// Where pod logs go: ROOT/<namespace>_<pod>_<uid>/<container>/<restart>.log.
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// The cgroup (cgroupfs form, e.g. /skiff) pods' cgroups go under;
    /// the runtime's default if not given.
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// The resolv.conf whose DNS settings pods get.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Address of the agent's HTTPS endpoint (logs), which only the
    /// control plane may call.
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// Port of the agent's HTTPS endpoint; the control plane assumes 10250.
    #[arg(long, default_value_t = skiff_agent::endpoint::DEFAULT_PORT)]
    port: u16,
    /// Image tarballs placed here are imported into containerd (namespace
    /// k8s.io); DATA_DIR/images if not given.
    #[arg(long)]
    images_dir: Option<PathBuf>,
    /// containerd's `ctr`, which imports the images.
    #[arg(long, default_value = "ctr")]
    ctr: PathBuf,
    /// How often the runtime is listed to notice exits and strays.
    #[arg(long, default_value_t = 1000)]
    relist_interval_ms: u64,
    /// Set up the pod network: the VXLAN overlay to the other nodes and
    /// the CNI configuration for the node's pod subnet. `false` leaves
    /// pod networking to whatever CNI configuration the runtime has.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pod_network: bool,
    /// The interface VXLAN packets leave through; the one of the default
    /// IPv4 route if not given.
    #[arg(long)]
    external_interface: Option<String>,
    /// Where the agent writes its CNI configuration (10-skiff.conflist):
    /// containerd's configured `cni.confDir` if not given, else
    /// /etc/cni/net.d.
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Removes what the pod network put on this host: the VXLAN device,
    /// the pods' bridge (skiff0), the CNI configuration the agent wrote and
    /// its iptables chains (SKIFF-*).
    /// Safe to run more than once; run it with the agent stopped.
    Cleanup {
        /// The VNI whose device (skiff.<VNI>) to remove.
        #[arg(long, default_value_t = 1)]
        vxlan_vni: u32,
        /// The directory holding 10-skiff.conflist; containerd's
        /// `cni.confDir` if not given, else /etc/cni/net.d.
        #[arg(long)]
        cni_conf_dir: Option<PathBuf>,
        /// containerd's socket, asked for its CNI configuration directory.
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        containerd: PathBuf,
    },
    /// Writes the pause image the agent carries, as an OCI layout tarball
    /// for `ctr images import` (the agent imports it by itself under
    /// containerd's configured sandbox image name when that is missing).
    PauseImage {
        /// Where to write the tarball.
        #[arg(long)]
        output: PathBuf,
        /// The image name (host/repository:tag) to write it under.
        #[arg(long, default_value = skiff_agent::pause::DEFAULT_IMAGE_NAME)]
        name: String,
    },
    /// Stops and removes the pods' sandboxes (and so their containers) from
    /// containerd, for taking a node down. Run it while the agent is
    /// stopped, or the agent starts the pods again.
    RemovePods {
        /// containerd's socket.
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        containerd: PathBuf,
        /// Only the pods with this UID (repeatable). Without it, every
        /// sandbox that carries a pod UID label: use that only on a
        /// containerd that serves this agent alone.
        #[arg(long = "uid")]
        uids: Vec<String>,
        /// Seconds each pod's containers get to stop.
        #[arg(long, default_value_t = 10)]
        grace_period: i64,
    },
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(Command::Cleanup {
        vxlan_vni,
        cni_conf_dir,
        containerd,
    }) = &options.command
    {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(cleanup_pod_network(
                *vxlan_vni,
                cni_conf_dir.as_deref(),
                containerd,
            ));
    }
    match &options.command {
        Some(Command::PauseImage { output, name }) => return write_pause_image(output, name),
        Some(Command::RemovePods {
            containerd,
            uids,
            grace_period,
        }) => {
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(remove_pods(containerd, uids, *grace_period))
        }
        Some(Command::Cleanup { .. }) | None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(options))
}

fn write_pause_image(output: &Path, name: &str) -> anyhow::Result<()> {
    let image = skiff_agent::pause::image(name).context("--name")?;
    std::fs::write(output, &image.tarball)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!("{} {} {}", output.display(), image.name, image.digest);
    Ok(())
}

async fn remove_pods(socket: &Path, uids: &[String], grace_period: i64) -> anyhow::Result<()> {
    use skiff_agent::cri::{Cri, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_UID};
    let cri = GrpcCri::new(socket).context("--containerd")?;
    let sandboxes = cri
        .list_pod_sandboxes(&[])
        .await
        .with_context(|| format!("cannot list the pods on {}", socket.display()))?;
    let mut failures = 0;
    for sandbox in sandboxes {
        let Some(uid) = sandbox.labels.get(LABEL_POD_UID) else {
            continue;
        };
        if !uids.is_empty() && !uids.contains(uid) {
            continue;
        }
        let pod = sandbox
            .labels
            .get(LABEL_POD_NAME)
            .map_or(uid.as_str(), String::as_str);
        // Containers first, each with its grace period: StopPodSandbox
        // alone would kill them at once.
        let containers = cri
            .list_containers(&[(LABEL_POD_UID, uid.as_str())])
            .await
            .unwrap_or_default();
        for container in containers.iter().filter(|c| c.pod_sandbox_id == sandbox.id) {
            if let Err(error) = cri.stop_container(&container.id, grace_period).await {
                let name = container.labels.get(LABEL_CONTAINER_NAME);
                eprintln!("pod {pod}: cannot stop container {name:?}: {error}");
            }
        }
        let removed = match cri.stop_pod_sandbox(&sandbox.id).await {
            Ok(()) => cri.remove_pod_sandbox(&sandbox.id).await,
            Err(error) => Err(error),
        };
        match removed {
            Ok(()) => println!("removed pod {pod} (uid {uid})"),
            Err(error) => {
                failures += 1;
                eprintln!("pod {pod} (uid {uid}): {error}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} pods could not be removed");
    }
    Ok(())
}

fn default_node_name() -> anyhow::Result<String> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; pass --node-name")?;
    Ok(hostname.trim().to_lowercase())
}

/// The node's credentials: stored ones, or new ones from joining (retried
/// while the control plane is unreachable).
async fn credentials(options: &Options, server: &ServerAddress) -> anyhow::Result<Credentials> {
    let token = options
        .token
        .as_deref()
        .map(str::parse::<JoinToken>)
        .transpose()
        .context("--token")?;
    if let Some(stored) = Credentials::load(&options.data_dir).with_context(|| {
        format!(
            "cannot read the credentials in {}",
            options.data_dir.display()
        )
    })? {
        if let Some(name) = options
            .node_name
            .as_deref()
            .filter(|name| *name != stored.node_name)
        {
            bail!(
                "{} holds the credentials of node {:?}, but --node-name is {name:?}; \
                 drop --node-name, or remove the directory to join as a new node",
                options.data_dir.display(),
                stored.node_name
            );
        }
        if let Some(token) = &token {
            token.verify_ca(stored.ca_pem.as_bytes()).with_context(|| {
                format!(
                    "the credentials in {} are for another cluster than --token; \
                     remove the directory to join this one",
                    options.data_dir.display()
                )
            })?;
        }
        tracing::info!(node = %stored.node_name, data_dir = %options.data_dir.display(), "reusing the node credentials; not joining again");
        return Ok(stored);
    }
    let Some(token) = token else {
        bail!(
            "this node has not joined yet (no credentials in {}): pass --token",
            options.data_dir.display()
        );
    };
    let node_name = match &options.node_name {
        Some(name) => name.clone(),
        None => default_node_name()?,
    };
    let mut backoff = Backoff::default();
    loop {
        match join::join(
            server,
            options.node_api_port,
            &token,
            &node_name,
            &options.data_dir,
        )
        .await
        {
            Ok(credentials) => return Ok(credentials),
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot join yet; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error).context("cannot join the cluster"),
        }
    }
}

/// The node's InternalIP: the local end of the route to the control plane.
async fn internal_ip(server: &ServerAddress) -> Option<std::net::IpAddr> {
    let resolved: Option<SocketAddr> = tokio::net::lookup_host(server.api_authority())
        .await
        .ok()
        .and_then(|mut addresses| addresses.next());
    let address = resolved?;
    match hostinfo::local_address_towards(address) {
        Ok(ip) => Some(ip),
        Err(error) => {
            tracing::warn!(%error, "reporting the node without an InternalIP");
            None
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let server =
        ServerAddress::parse(options.server.as_deref().unwrap_or_default()).context("--server")?;
    let credentials = credentials(&options, &server).await?;
    let resolv_conf = std::fs::read_to_string(&options.resolv_conf).unwrap_or_else(|error| {
        tracing::warn!(%error, path = %options.resolv_conf.display(), "pods get no DNS settings");
        String::new()
    });
    let settings_host_ip = internal_ip(&server).await.map(|ip| ip.to_string());
    let settings = NodeSettings {
        node_name: credentials.node_name.clone(),
        host_ip: settings_host_ip.clone(),
        log_root: options.pod_log_dir.clone(),
        data_dir: options.data_dir.clone(),
        cgroup_root: options.cgroup_parent.clone(),
        dns: parse_resolv_conf(&resolv_conf),
    };
    let cri = GrpcCri::new(&options.containerd).context("--containerd")?;
    let runtime = PodRuntime::new(cri, settings, Path::new("/sys/fs/cgroup"));
    tokio::spawn(runtime.clone().run_relist(std::time::Duration::from_millis(
        options.relist_interval_ms.max(100),
    )));
    tracing::info!(containerd = %options.containerd.display(), "running pods through CRI");

    let images_dir = options
        .images_dir
        .clone()
        .unwrap_or_else(|| options.data_dir.join("images"));
    if let Err(error) = std::fs::create_dir_all(&images_dir) {
        tracing::warn!(%error, dir = %images_dir.display(), "cannot create the images directory");
    }
    tracing::info!(dir = %images_dir.display(), "importing image tarballs placed here");
    let importer = skiff_agent::images::CtrImporter {
        ctr: options.ctr.clone(),
        socket: options.containerd.clone(),
    };
    tokio::spawn(skiff_agent::images::watch(images_dir, importer.clone()));
    // Before any pod: a missing sandbox image would make the runtime try
    // to pull it, which fails on a node without a registry.
    tokio::spawn(skiff_agent::pause::keep_sandbox_image(
        skiff_agent::pause::CriSandboxImageRuntime::new(&options.containerd),
        importer,
        options.data_dir.clone(),
    ));

    let (pod_network, pod_network_channels) = skiff_agent::podnet::channels();
    if options.pod_network {
        start_pod_network(&options, pod_network_channels).await;
    } else {
        tracing::info!("--pod-network=false: pods get whatever CNI configuration the runtime has");
    }

    let mut names = vec![credentials.node_name.clone()];
    names.extend(settings_host_ip.clone());
    let tls = skiff_agent::endpoint::tls_config(&credentials.ca_pem, &names)
        .context("cannot set up the agent endpoint's TLS")?;
    let endpoint = SocketAddr::new(options.address, options.port);
    // Pods matter more than their logs: without the endpoint the agent
    // still runs them.
    match tokio::net::TcpListener::bind(endpoint).await {
        Ok(listener) => {
            tracing::info!(address = %endpoint, "serving container logs to the control plane");
            tokio::spawn(skiff_agent::endpoint::serve(listener, tls, runtime.clone()));
        }
        Err(error) => {
            tracing::error!(address = %endpoint, %error, "cannot listen for the control plane; container logs will not be served")
        }
    }
    let target = Target {
        server: &server,
        node_api_port: options.node_api_port,
        credentials: &credentials,
    };
    let mut book = PodBook::default();
    let mut backoff = Backoff::default();
    loop {
        let facts = hostinfo::gather(Path::new("/"));
        let runtime_version = runtime.runtime_version().await;
        let node = session::node_info(
            &credentials.node_name,
            &facts,
            internal_ip(&server).await,
            &runtime_version,
        );
        tracing::info!(node_api = %server.authority(options.node_api_port), "connecting to the node API");
        let result = session::run(&target, node, &mut book, &runtime, &pod_network, || {
            backoff.reset()
        })
        .await;
        let error = match result {
            Ok(()) => session::SessionError::Ended,
            Err(error) if error.is_fatal() => {
                return Err(error).context(format!(
                    "the control plane does not accept this agent as node {}",
                    credentials.node_name
                ));
            }
            Err(error) => error,
        };
        let delay = backoff.next_delay();
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, desired_pods = book.len(), "session lost; reconnecting");
        tokio::time::sleep(delay).await;
    }
}

/// The CNI configuration directory: the flag, else containerd's own
/// setting, else the usual default.
async fn cni_conf_dir(flag: Option<&Path>, containerd: &Path) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_owned();
    }
    use skiff_agent::pause::SandboxImageRuntime;
    let runtime = skiff_agent::pause::CriSandboxImageRuntime::new(containerd);
    let asked =
        tokio::time::timeout(std::time::Duration::from_secs(5), runtime.status_info()).await;
    match asked {
        Ok(Ok(info)) => skiff_agent::podnet::cni_conf_dir_from_status(&info),
        _ => None,
    }
    .unwrap_or_else(|| {
        tracing::info!(
            "containerd did not say where its CNI configuration goes; using {}",
            skiff_agent::podnet::DEFAULT_CNI_CONF_DIR
        );
        PathBuf::from(skiff_agent::podnet::DEFAULT_CNI_CONF_DIR)
    })
}

/// Starts the pod network's task (see `skiff_agent::podnet`).
async fn start_pod_network(options: &Options, channels: skiff_agent::podnet::PodNetworkChannels) {
    let conf_dir = cni_conf_dir(options.cni_conf_dir.as_deref(), &options.containerd).await;
    tracing::info!(cni_conf_dir = %conf_dir.display(), "the pod network's CNI configuration goes here");
    let network_options = skiff_agent::podnet::PodNetworkOptions {
        external_interface: options.external_interface.clone(),
        cni_conf_dir: conf_dir,
        cni_data_dir: options.data_dir.join("cni"),
    };
    tokio::spawn(skiff_agent::podnet::run(
        network_options,
        channels,
        skiff_agent::overlay::RtNetlink::connect,
    ));
}

/// `skiff-agent cleanup`.
async fn cleanup_pod_network(
    vni: u32,
    cni_conf_dir_flag: Option<&Path>,
    containerd: &Path,
) -> anyhow::Result<()> {
    let conf_dir = cni_conf_dir(cni_conf_dir_flag, containerd).await;
    let mut netlink =
        skiff_agent::overlay::RtNetlink::connect().context("cannot open a netlink socket")?;
    let removed = skiff_agent::podnet::cleanup(&mut netlink, vni, &conf_dir)
        .await
        .context("cannot remove the pod network")?;
    let iptables = skiff_agent::iptables::CommandIptables::detect(Vec::new());
    skiff_agent::proxy::cleanup(&iptables, None)
        .context("cannot remove the agent's iptables chains")?;
    if removed.is_empty() {
        println!("nothing of the pod network was left");
    }
    println!("removed the agent's iptables chains (SKIFF-*), if there were any");
    for what in removed {
        println!("removed {what}");
    }
    Ok(())
}
