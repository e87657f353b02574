//! `skiff-controlplane`: the Kubernetes API server, embedded store and
//! controllers in one process.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use skiff_controlplane::allocators::{
    Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations,
};
use skiff_controlplane::api::handlers::ServerFacts;
use skiff_controlplane::api::registry::Registry;
use skiff_controlplane::controllers::cronjob::CronJobController;
use skiff_controlplane::controllers::daemonset::DaemonSetController;
use skiff_controlplane::controllers::deployment::DeploymentController;
use skiff_controlplane::controllers::endpoints::{ApiEndpoint, EndpointsController};
use skiff_controlplane::controllers::gc::GarbageCollector;
use skiff_controlplane::controllers::job::JobController;
use skiff_controlplane::controllers::nodelifecycle::NodeLifecycleController;
use skiff_controlplane::controllers::replication::ReplicationManager;
use skiff_controlplane::nodeapi::network::{ClusterNetworkSettings, NodeNetwork};
use skiff_controlplane::nodeapi::{self, token::TokenStore};
use skiff_controlplane::scheduler::Scheduler;
use skiff_controlplane::subnets::{self, SubnetAllocator};
use skiff_controlplane::{bootstrap, pki, server};
use skiff_store::{KvStore, RedbStore, RedbStoreOptions};

/// The Kubernetes API version this server speaks.
const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

#[derive(Debug, Parser)]
#[command(
    name = "skiff-controlplane",
    version,
    about = "Skiff control plane: a Kubernetes-compatible API server with an embedded store",
    long_about = "Serves the Kubernetes REST API over HTTPS, keeps cluster state in an embedded durable store, \
and runs the garbage collector. On first start it creates a CA, a serving certificate and an admin \
kubeconfig at DATA_DIR/admin.kubeconfig; point kubectl at that file. Node agents join with a \
token from `skiff-controlplane token create` and connect to the node API port.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Options {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory for the store, certificates and the admin kubeconfig.
    #[arg(long, env = "SKIFF_DATA_DIR", required = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port for the Kubernetes API.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Port for the node API (gRPC over TLS) that node agents join and
    /// connect to.
    #[arg(long, default_value_t = 6444)]
    node_api_port: u16,
    /// Address clients and nodes use to reach this server; written into the
    /// admin kubeconfig and the `kubernetes` Endpoints. Defaults to the bind
    /// address, or 127.0.0.1 when binding to all addresses.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// CIDR that Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Port range that NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// The pod network: each node is leased one subnet of it. It must not
    /// overlap the service range.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's pod subnet; longer than the cluster
    /// CIDR's prefix.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// VXLAN network identifier of the overlay between nodes.
    #[arg(long, default_value_t = 1)]
    vxlan_vni: u32,
    /// UDP port of the overlay's VXLAN packets.
    #[arg(long, default_value_t = 8472)]
    vxlan_port: u16,
    /// DNS domain of the cluster.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// How long a node may go without a heartbeat before its conditions
    /// become Unknown and it is tainted unreachable (e.g. 40s, 2m).
    #[arg(long, env = "SKIFF_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// tolerationSeconds of the not-ready NoExecute toleration every pod
    /// gets unless it has one: how long its pods stay on a NotReady node.
    #[arg(
        long,
        env = "SKIFF_DEFAULT_NOT_READY_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the unreachable NoExecute toleration every pod
    /// gets unless it has one: how long its pods stay on an unreachable node.
    #[arg(
        long,
        env = "SKIFF_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    default_unreachable_toleration_seconds: i64,
}

/// A duration such as `40s`, `2m` or `1h30m` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let signed = match text.parse::<u64>() {
        Ok(seconds) => return Ok(std::time::Duration::from_secs(seconds)),
        Err(_) => text
            .parse::<jiff::SignedDuration>()
            .map_err(|error| format!("{text:?} is not a duration like 40s or 2m: {error}"))?,
    };
    std::time::Duration::try_from(signed).map_err(|_| format!("{text:?} must not be negative"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the join tokens node agents present to join the cluster.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a join token and print it. Works while the control plane runs;
    /// the token is valid at once and until its file under DATA_DIR/tokens/
    /// is removed.
    Create {
        /// The control plane's data directory (it must hold the cluster CA,
        /// i.e. the control plane has started at least once).
        #[arg(long, env = "SKIFF_DATA_DIR")]
        data_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(Command::Token {
        action: TokenCommand::Create { data_dir },
    }) = &options.command
    {
        return create_token(data_dir);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(options))
}

fn create_token(data_dir: &Path) -> anyhow::Result<()> {
    let ca_pem = pki::read_ca_pem(data_dir).context("cannot read the cluster CA")?;
    let token = TokenStore::new(data_dir)
        .create(&ca_pem)
        .context("cannot store the join token")?;
    println!("{token}");
    Ok(())
}

async fn run(options: Options) -> anyhow::Result<()> {
    let data_dir = options.data_dir.clone().context("--data-dir is required")?;
    skiff_controlplane::api::strategy::configure_default_toleration_seconds(
        skiff_controlplane::api::strategy::DefaultTolerationSeconds {
            not_ready: options.default_not_ready_toleration_seconds,
            unreachable: options.default_unreachable_toleration_seconds,
        },
    );
    let network_settings = network_settings(&options)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let cidr =
        Cidr::parse(&options.service_cluster_ip_range).context("--service-cluster-ip-range")?;
    let (first_port, last_port) = NodePortAllocator::parse_range(&options.service_node_port_range)
        .context("--service-node-port-range")?;
    let allocations = ServiceAllocations {
        cluster_ips: ClusterIpAllocator::new(cidr),
        node_ports: NodePortAllocator::new(first_port, last_port),
    };
    let api_service_ip = allocations.cluster_ips.api_service_ip();

    let advertise = options
        .advertise_address
        .unwrap_or(if options.bind_address.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            options.bind_address
        });
    let mut sans = options.tls_sans.clone();
    sans.push(advertise.to_string());
    let pki = pki::ensure(
        &data_dir,
        &pki::default_serving_names(&sans, Some(IpAddr::V4(api_service_ip))),
    )
    .context("cannot set up certificates")?;
    skiff_controlplane::api::agentproxy::configure(&data_dir)
        .context("cannot set up calls to node agents")?;
    let server_url = format!(
        "https://{}",
        SocketAddr::new(advertise, options.secure_port)
    );
    let kubeconfig = pki::write_admin_kubeconfig(&data_dir, &server_url)
        .context("cannot write the admin kubeconfig")?;

    let store_path = data_dir.join("store.redb");
    tracing::info!(path = %store_path.display(), "opening the store");
    let store: Arc<dyn KvStore> = Arc::new(
        RedbStore::open(&store_path, RedbStoreOptions::default())
            .with_context(|| format!("cannot open the store at {}", store_path.display()))?,
    );
    let registry = Arc::new(Registry::new(store, allocations));
    registry
        .load_allocations()
        .await
        .context("cannot load Service allocations from the store")?;
    bootstrap::ensure_defaults(&registry, &advertise.to_string(), options.secure_port)
        .await
        .context("cannot create the default namespaces and the kubernetes Service")?;

    let (network, nodes_revision) = NodeNetwork::load(&registry, network_settings)
        .await
        .context("cannot load the pod subnet leases from the stored Nodes")?;
    tokio::spawn(
        network
            .clone()
            .follow_nodes(registry.clone(), nodes_revision),
    );
    tokio::spawn(GarbageCollector::new(registry.clone()).run());
    tokio::spawn(Scheduler::new(registry.clone()).run());
    tokio::spawn(ReplicationManager::new(registry.clone()).run());
    tokio::spawn(
        EndpointsController::new(registry.clone())
            .with_api_endpoint(ApiEndpoint {
                address: advertise.to_string(),
                port: options.secure_port,
            })
            .run(),
    );
    tokio::spawn(DeploymentController::new(registry.clone()).run());
    tokio::spawn(DaemonSetController::new(registry.clone()).run());
    tokio::spawn(JobController::new(registry.clone()).run());
    tokio::spawn(CronJobController::new(registry.clone()).run());
    tokio::spawn(
        NodeLifecycleController::new(registry.clone(), options.node_monitor_grace_period).run(),
    );

    let facts = Arc::new(ServerFacts {
        ca_pem: pki.ca_pem.clone(),
        address: SocketAddr::new(advertise, options.secure_port).to_string(),
        version: json!({
            "major": KUBERNETES_VERSION.0,
            "minor": KUBERNETES_VERSION.1,
            "gitVersion": format!("v{}.{}.0-skiff.{}", KUBERNETES_VERSION.0, KUBERNETES_VERSION.1, env!("CARGO_PKG_VERSION")),
            "gitCommit": option_env!("SKIFF_GIT_COMMIT").unwrap_or("unknown"),
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "none (Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
        }),
    });
    let tls = server::tls_config(&pki)?;
    let address = SocketAddr::new(options.bind_address, options.secure_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let node_api_address = SocketAddr::new(options.bind_address, options.node_api_port);
    let node_api_listener = tokio::net::TcpListener::bind(node_api_address)
        .await
        .with_context(|| format!("cannot listen on {node_api_address} for the node API"))?;
    tracing::info!(address = %node_api_address, "serving the node API");
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "serving the Kubernetes API; use: export KUBECONFIG={}", kubeconfig.display());

    tokio::select! {
        result = server::serve_listener(listener, tls, registry.clone(), facts) => result.context("API server failed"),
        result = nodeapi::serve(node_api_listener, &pki, registry, data_dir, network) => result.context("node API server failed"),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// The pod network flags, checked against each other and the service
/// range before anything starts.
fn network_settings(options: &Options) -> anyhow::Result<ClusterNetworkSettings> {
    let cluster_cidr = subnets::parse_cidr("--cluster-cidr", &options.cluster_cidr)?;
    let service_cidr = subnets::parse_cidr(
        "--service-cluster-ip-range",
        &options.service_cluster_ip_range,
    )?;
    SubnetAllocator::new(cluster_cidr, options.node_cidr_mask_size)?;
    subnets::validate_against_services(cluster_cidr, service_cidr)?;
    if options.vxlan_vni == 0 || options.vxlan_vni >= 1 << 24 {
        anyhow::bail!(
            "--vxlan-vni {} is out of range: a VXLAN network identifier is 1 to 16777215",
            options.vxlan_vni
        );
    }
    if options.vxlan_port == 0 {
        anyhow::bail!("--vxlan-port must be a UDP port, 1 to 65535");
    }
    if options.cluster_domain.is_empty()
        || !skiff_apimachinery::names::is_dns1123_subdomain(&options.cluster_domain).is_empty()
    {
        anyhow::bail!(
            "--cluster-domain {:?} must be a DNS name such as cluster.local",
            options.cluster_domain
        );
    }
    Ok(ClusterNetworkSettings {
        cluster_cidr,
        service_cidr,
        node_cidr_mask_size: options.node_cidr_mask_size,
        vxlan_vni: options.vxlan_vni,
        vxlan_port: options.vxlan_port,
        cluster_domain: options.cluster_domain.clone(),
    })
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
