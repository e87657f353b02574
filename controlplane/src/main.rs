//! `skiff-controlplane`: the Kubernetes API server, embedded store and
//! controllers in one process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use skiff_controlplane::allocators::{
    Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations,
};
use skiff_controlplane::api::handlers::ServerFacts;
use skiff_controlplane::api::registry::Registry;
use skiff_controlplane::controllers::gc::GarbageCollector;
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
kubeconfig at DATA_DIR/admin.kubeconfig; point kubectl at that file."
)]
struct Options {
    /// Directory for the store, certificates and the admin kubeconfig.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port for the Kubernetes API.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
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
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            options.data_dir.display()
        )
    })?;
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
        &options.data_dir,
        &pki::default_serving_names(&sans, Some(IpAddr::V4(api_service_ip))),
    )
    .context("cannot set up certificates")?;
    let server_url = format!(
        "https://{}",
        SocketAddr::new(advertise, options.secure_port)
    );
    let kubeconfig = pki::write_admin_kubeconfig(&options.data_dir, &server_url)
        .context("cannot write the admin kubeconfig")?;

    let store_path = options.data_dir.join("store.redb");
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

    tokio::spawn(GarbageCollector::new(registry.clone()).run());

    let facts = Arc::new(ServerFacts {
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
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "serving the Kubernetes API; use: export KUBECONFIG={}", kubeconfig.display());

    tokio::select! {
        result = server::serve_listener(listener, tls, registry, facts) => result.context("API server failed"),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
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
