//! A private containerd per simulated node.
//!
//! [`PrivateContainerd::start`] writes a config whose every path lies in the
//! instance's own directory (root, state, gRPC and ttrpc sockets, runc root,
//! CNI config and IPAM data, the `opt` plugin path), so that several instances
//! run side by side and next to a system containerd. It carries the CRI
//! settings these machines require (`restrict_oom_score_adj`, a local
//! `sandbox_image`, the cgroupfs driver, pod network namespaces under the state
//! directory, no AppArmor, the stream server on loopback) and a bridge
//! conflist for Debian's reference CNI plugins, so that a pod sandbox gets an
//! address. Given a node namespace, containerd runs inside it (entering only
//! the network namespace, see [`NodeNetns::command`]), and so do the bridges
//! and veths the CNI plugin makes.
//!
//! Teardown ([`PrivateContainerd::shutdown`], or drop) leaves nothing behind,
//! in this order: read the containers' cgroups from runc's state; SIGKILL
//! containerd; `runc delete --force` every container under the instance's runc
//! root; SIGKILL every process that names the instance's socket or config on
//! its command line (shims, `ctr` clients) and wait for them; kill what is
//! left in, and remove, the containers' cgroups and the instance's cgroup
//! parent in every hierarchy; unmount everything under the instance directory
//! (rootfs overlays, sandbox shm, pod netns handles); remove the shims' sockets
//! under `/run/containerd/s`, the CNI result cache and, in the root namespace,
//! the CNI bridge; and only when no mount is left under it, delete the
//! directory. The directory given to `start` belongs to the instance.
//!
//! Inside a node, containerd is started with `nsenter --net`, not `ip netns
//! exec`: the latter also gives it a new mount namespace with a fresh `/sys`,
//! where the cgroup hierarchies are missing and runc cannot work.
//!
//! Images go in with [`PrivateContainerd::import`] (`ctr images import` into
//! namespace `k8s.io`, unpacked for the overlayfs snapshotter that CRI uses).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::images::{ImageTarball, PAUSE_IMAGE};
use crate::netns::{self, describe, run, Ledger, NodeNetns, Subnet};

/// The containerd namespace CRI uses, and so every image and container here.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// How long containerd gets to open its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod subnet of an instance inside a node namespace (each namespace has
/// its own, so they may all use the same one).
pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/24";

/// Socket paths are limited to 107 bytes.
const MAX_SOCKET_PATH: usize = 100;

/// A running private containerd. Dropping it tears everything down (see the
/// module documentation); a failing test gets the tail of its log printed.
pub struct PrivateContainerd {
    dir: PathBuf,
    node: Option<NodeNetns>,
    child: Option<Child>,
    cni_network: String,
    cni_bridge: String,
    pod_subnet: Subnet,
    skiff_cni: bool,
    cgroup_parent: String,
    sandbox_image: String,
    start_time: Duration,
    torn_down: bool,
    ledger: Option<Ledger>,
}

/// How [`PrivateContainerd::start_with`] sets an instance up; the default is
/// what [`PrivateContainerd::start`] does.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The CNI bridge's pod subnet: [`DEFAULT_POD_SUBNET`] inside a node
    /// namespace, a free /24 in the root namespace if not given.
    pub pod_subnet: Option<String>,
    /// containerd's `sandbox_image`; [`PAUSE_IMAGE`] if not given. The
    /// instance imports no image by itself, whichever the name.
    pub sandbox_image: Option<String>,
    /// Skiff's own pod network: no reference conflist is written (the
    /// agent writes its own into [`PrivateContainerd::cni_conf_dir`]), and
    /// the CNI bin dir holds `skiff-cni` ([`skiff_cni_bin`]) next to
    /// Debian's plugins (containerd runs `loopback` from it).
    pub skiff_cni: bool,
}

/// The CNI plugin binary: `$SKIFF_CNI_BIN`, else the one cargo built next
/// to this test executable, else `target/debug/` of the workspace.
pub fn skiff_cni_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFF_CNI_BIN") {
        return PathBuf::from(bin);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let candidate = profile_dir.join("skiff-cni");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    crate::workspace_root().join("target/debug/skiff-cni")
}

/// The fixed layout of an instance directory.
struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    fn ttrpc_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock.ttrpc")
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
    fn opt(&self) -> PathBuf {
        self.dir.join("opt")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni").join("net.d")
    }
    fn cni_conflist(&self) -> PathBuf {
        self.cni_conf_dir().join("10-skiff-e2e.conflist")
    }
    fn cni_ipam(&self) -> PathBuf {
        self.dir.join("cni").join("ipam")
    }
    /// The instance's own CNI bin dir, used with [`StartOptions::skiff_cni`].
    fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni").join("bin")
    }
    fn pod_netns_dir(&self) -> PathBuf {
        self.state().join("skiff-e2e-netns")
    }
    fn fifo(&self) -> PathBuf {
        self.dir.join("fifo")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    /// Facts teardown needs even when the instance's process is gone.
    fn meta(&self) -> PathBuf {
        self.dir.join("skiff-e2e.json")
    }
}

fn toml_str(p: &Path) -> String {
    // Paths here are ours and plain, but quote what TOML needs quoted anyway.
    format!(
        "\"{}\"",
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

impl PrivateContainerd {
    /// Starts containerd with its directory at `root_dir` (created if missing;
    /// removed on teardown), inside `node`'s network namespace if given. The
    /// pod subnet is [`DEFAULT_POD_SUBNET`] inside a node namespace, and a free
    /// /24 reserved like an underlay's in the root namespace.
    pub fn start(node: Option<&NodeNetns>, root_dir: &Path) -> io::Result<PrivateContainerd> {
        Self::start_with(node, root_dir, &StartOptions::default())
    }

    /// [`PrivateContainerd::start`] with an explicit pod subnet for the CNI
    /// bridge.
    pub fn start_with_pod_subnet(
        node: Option<&NodeNetns>,
        root_dir: &Path,
        pod_subnet: Option<&str>,
    ) -> io::Result<PrivateContainerd> {
        let options = StartOptions {
            pod_subnet: pod_subnet.map(str::to_owned),
            ..StartOptions::default()
        };
        Self::start_with(node, root_dir, &options)
    }

    /// [`PrivateContainerd::start`] with [`StartOptions`].
    pub fn start_with(
        node: Option<&NodeNetns>,
        root_dir: &Path,
        options: &StartOptions,
    ) -> io::Result<PrivateContainerd> {
        let pod_subnet = options.pod_subnet.as_deref();
        netns::sweep_stale();
        let began = Instant::now();
        // Teardown deletes the directory, so it must be the instance's alone.
        if fs::read_dir(root_dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is not empty; give each instance a directory of its own",
                    root_dir.display()
                ),
            ));
        }
        fs::create_dir_all(root_dir)?;
        let dir = root_dir.canonicalize()?;
        let paths = Paths { dir: dir.clone() };
        if paths.ttrpc_socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is too long for a socket path; use a shorter directory",
                    paths.ttrpc_socket().display()
                ),
            ));
        }
        let suffix = netns::unique_suffix();
        let ledger = Ledger::create("containerd", &suffix)?;
        ledger.record("containerd", &dir.display().to_string())?;
        let pod_subnet: Subnet = match (pod_subnet, node) {
            (Some(s), _) => s.parse()?,
            (None, Some(_)) => DEFAULT_POD_SUBNET.parse()?,
            (None, None) => netns::reserve_free_subnet(&ledger)?,
        };
        let mut cd = PrivateContainerd {
            dir,
            node: node.cloned(),
            child: None,
            cni_network: format!("skiff-e2e-{suffix}"),
            cni_bridge: format!("skc{suffix}"),
            pod_subnet,
            skiff_cni: options.skiff_cni,
            cgroup_parent: format!("/skiff-e2e-{suffix}"),
            sandbox_image: options
                .sandbox_image
                .clone()
                .unwrap_or_else(|| PAUSE_IMAGE.to_owned()),
            start_time: Duration::ZERO,
            torn_down: false,
            ledger: Some(ledger),
        };
        // From here on, a failure tears down what was made (drop).
        cd.write_files(&paths)?;
        let log = File::create(paths.log())?;
        let mut cmd = match &cd.node {
            Some(node) => node.command("containerd"),
            None => Command::new("containerd"),
        };
        cmd.arg("--config")
            .arg(paths.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CONTAINERD_ADDRESS");
        let what = describe(&cmd);
        cd.child = Some(
            cmd.spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{what}`: {e}")))?,
        );

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(paths.socket()).is_ok() {
                break;
            }
            if let Some(status) = cd.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!(
                    "containerd exited during start-up ({status})\n{}",
                    cd.log_tail(40)
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "containerd did not open its socket within {START_TIMEOUT:?}\n{}",
                        cd.log_tail(40)
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        cd.start_time = began.elapsed();
        Ok(cd)
    }

    fn write_files(&self, paths: &Paths) -> io::Result<()> {
        for d in [
            paths.root(),
            paths.state(),
            paths.runc_root(),
            paths.opt(),
            paths.fifo(),
            paths.cni_conf_dir(),
            paths.cni_ipam(),
        ] {
            fs::create_dir_all(d)?;
        }
        let meta = json!({
            "cni_network": self.cni_network,
            "cni_bridge": self.cni_bridge,
            "cgroup_parent": self.cgroup_parent,
            "netns": self.node.as_ref().map(|n| n.path()),
        });
        fs::write(paths.meta(), meta.to_string())?;
        let cni_bin = if self.skiff_cni {
            self.install_skiff_cni(paths)?
        } else {
            fs::write(paths.cni_conflist(), self.conflist(paths).to_string())?;
            PathBuf::from(CNI_BIN_DIR)
        };
        let config = format!(
            r#"# Private containerd of a Skiff end-to-end test.
version = 2
root = {root}
state = {state}
oom_score = 0
required_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root here lacks CAP_SYS_RESOURCE: without this every RunPodSandbox fails
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  systemd_cgroup = false
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = {runc_root}
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
            root = toml_str(&paths.root()),
            state = toml_str(&paths.state()),
            socket = toml_str(&paths.socket()),
            ttrpc = toml_str(&paths.ttrpc_socket()),
            opt = toml_str(&paths.opt()),
            pause = self.sandbox_image,
            runc_root = toml_str(&paths.runc_root()),
            cni_bin = cni_bin.display(),
            cni_conf = toml_str(&paths.cni_conf_dir()),
        );
        fs::write(paths.config(), config)
    }

    /// A CNI bin dir of the instance's own: links to Debian's plugins and
    /// a copy of `skiff-cni`.
    fn install_skiff_cni(&self, paths: &Paths) -> io::Result<PathBuf> {
        let bin_dir = paths.cni_bin_dir();
        fs::create_dir_all(&bin_dir)?;
        for entry in fs::read_dir(CNI_BIN_DIR)? {
            let entry = entry?;
            std::os::unix::fs::symlink(entry.path(), bin_dir.join(entry.file_name()))?;
        }
        let plugin = skiff_cni_bin();
        fs::copy(&plugin, bin_dir.join("skiff-cni")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot copy {} (build it with `cargo build -p skiff-cni`, or set SKIFF_CNI_BIN): {e}",
                    plugin.display()
                ),
            )
        })?;
        Ok(bin_dir)
    }

    /// The CNI configuration directory containerd reads.
    pub fn cni_conf_dir(&self) -> PathBuf {
        Paths {
            dir: self.dir.clone(),
        }
        .cni_conf_dir()
    }

    fn conflist(&self, paths: &Paths) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.cni_network,
            "plugins": [{
                "type": "bridge",
                "bridge": self.cni_bridge,
                "isGateway": true,
                // Inside a node namespace the masquerade rules live and die
                // with it; in the root namespace they would outlive the test.
                "ipMasq": self.node.is_some(),
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.pod_subnet.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": paths.cni_ipam(),
                },
            }],
        })
    }

    fn paths(&self) -> Paths {
        Paths {
            dir: self.dir.clone(),
        }
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gRPC socket (CRI and containerd's own API).
    pub fn socket(&self) -> PathBuf {
        self.paths().socket()
    }

    /// `unix://` + [`PrivateContainerd::socket`], as CRI clients spell it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn config_path(&self) -> PathBuf {
        self.paths().config()
    }

    /// The runc root of the CRI runtime; runc keeps namespace `k8s.io`'s
    /// containers in its `k8s.io` subdirectory.
    pub fn runc_root(&self) -> PathBuf {
        self.paths().runc_root()
    }

    /// The node namespace containerd runs in, if any.
    pub fn node(&self) -> Option<&NodeNetns> {
        self.node.as_ref()
    }

    /// The cgroup parent for this instance's pods and containers
    /// (`/skiff-e2e-<suffix>`): give it as the sandbox's `cgroup_parent` (or
    /// under it) so teardown removes the whole tree.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The CNI network name in the conflist.
    pub fn cni_network(&self) -> &str {
        &self.cni_network
    }

    /// The bridge the CNI plugin makes (in the node namespace, or the root
    /// namespace without one).
    pub fn cni_bridge(&self) -> &str {
        &self.cni_bridge
    }

    /// The `sandbox_image` in the instance's config.
    pub fn sandbox_image(&self) -> &str {
        &self.sandbox_image
    }

    pub fn pod_subnet(&self) -> Subnet {
        self.pod_subnet
    }

    /// How long start-up took, until the socket accepted a connection.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    pub fn log_path(&self) -> PathBuf {
        self.paths().log()
    }

    /// containerd's whole log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let skip = all.len().saturating_sub(lines);
        format!(
            "--- containerd log ({}) ---\n{}\n--- end of containerd log ---",
            self.log_path().display(),
            all[skip..].join("\n")
        )
    }

    /// A `ctr` command on this instance, in namespace `k8s.io`; add the
    /// subcommand and its arguments.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", K8S_NAMESPACE]);
        cmd
    }

    /// Arguments for `ctr run` that keep a container within this instance:
    /// its runc root, a cgroup under [`PrivateContainerd::cgroup_parent`] and
    /// the IO FIFOs in [`PrivateContainerd::fifo_dir`]. Without them `ctr run`
    /// uses the shared `/run/containerd/runc`, `/k8s.io/<id>` cgroups and
    /// `/run/containerd/fifo`, where a killed `ctr` leaves its FIFOs.
    pub fn ctr_run_args(&self, container_id: &str) -> Vec<String> {
        vec![
            "--runc-root".into(),
            self.runc_root().display().to_string(),
            "--cgroup".into(),
            format!("{}/{container_id}", self.cgroup_parent),
            "--fifo-dir".into(),
            self.fifo_dir().display().to_string(),
        ]
    }

    /// A directory for `ctr`'s IO FIFOs (`--fifo-dir`, also for `ctr tasks
    /// exec`), removed with the instance.
    pub fn fifo_dir(&self) -> PathBuf {
        self.paths().fifo()
    }

    /// Imports an image tarball into namespace `k8s.io` and unpacks it.
    pub fn import(&self, image: &ImageTarball) -> io::Result<()> {
        run(self.ctr().args(["images", "import"]).arg(&image.path))?;
        Ok(())
    }

    /// The names of the images in namespace `k8s.io`, sorted.
    pub fn images(&self) -> io::Result<Vec<String>> {
        let out = run(self.ctr().args(["images", "list", "--quiet"]))?;
        let mut names: Vec<String> = out
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Makes a network namespace handle for a pod at
    /// `<state>/skiff-e2e-netns/<name>` (where teardown unmounts it), as CRI
    /// would; for containers started with `ctr run --with-ns network:PATH`.
    pub fn pod_netns(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.paths().pod_netns_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        File::create(&path)?;
        run(Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true"))?;
        Ok(path)
    }

    /// Runs this instance's CNI configuration (loopback, then the bridge
    /// conflist) for a pod network namespace, as CRI does for a sandbox, and
    /// returns the pod's address. The plugins run in the node namespace.
    pub fn cni_add(&self, pod_netns: &Path, container_id: &str) -> io::Result<Ipv4Addr> {
        let lo = json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"});
        self.cni_exec("ADD", &lo, "lo", pod_netns, container_id)?;
        let result = self.cni_exec(
            "ADD",
            &self.bridge_plugin_conf()?,
            "eth0",
            pod_netns,
            container_id,
        )?;
        let addr = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no address in the CNI result: {result}")))?;
        Ok(addr)
    }

    /// Undoes [`PrivateContainerd::cni_add`] (releases the address, deletes
    /// the veth).
    pub fn cni_del(&self, pod_netns: &Path, container_id: &str) -> io::Result<()> {
        self.cni_exec(
            "DEL",
            &self.bridge_plugin_conf()?,
            "eth0",
            pod_netns,
            container_id,
        )?;
        Ok(())
    }

    /// The bridge plugin's own configuration, as libcni derives it from the
    /// conflist.
    fn bridge_plugin_conf(&self) -> io::Result<Value> {
        let text = fs::read_to_string(self.paths().cni_conflist())?;
        let list: Value = serde_json::from_str(&text).map_err(io::Error::other)?;
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        Ok(conf)
    }

    fn cni_exec(
        &self,
        command: &str,
        conf: &Value,
        ifname: &str,
        pod_netns: &Path,
        id: &str,
    ) -> io::Result<Value> {
        let plugin = Path::new(CNI_BIN_DIR).join(conf["type"].as_str().unwrap_or_default());
        let mut cmd = match &self.node {
            Some(node) => node.command(&plugin),
            None => Command::new(&plugin),
        };
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", pod_netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", CNI_BIN_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("CNI {command} {} ({ifname})", plugin.display());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin.write_all(conf.to_string().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{what} failed ({}): {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout)
            .map_err(|e| io::Error::other(format!("{what}: bad result {stdout:?}: {e}")))
    }

    /// SIGKILLs containerd and everything it runs (containers, shims) and
    /// cleans up mounts and cgroups, as when the node dies, but keeps the
    /// directory (and so the log) until drop.
    pub fn kill_all(&mut self) -> io::Result<()> {
        kill_instance(&self.paths(), self.child.as_mut())?;
        self.child = None;
        Ok(())
    }

    /// Tears everything down now and reports the first problem (drop does the
    /// same but can only print it).
    pub fn shutdown(mut self) -> io::Result<()> {
        self.torn_down = true;
        let result = teardown_dir(&self.dir, self.child.as_mut());
        self.child = None;
        self.ledger = None;
        result
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
        if let Err(e) = teardown_dir(&self.dir, self.child.as_mut()) {
            eprintln!(
                "skiff-e2e: containerd at {}: teardown: {e}",
                self.dir.display()
            );
        }
        // The ledger goes last: if teardown was cut short, a later sweep
        // retries it.
        self.ledger = None;
    }
}

// ---------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------

/// Tears down the instance in `dir` (see the module documentation) and
/// deletes the directory. `child` is containerd itself when this process
/// started it; otherwise it is found by its command line.
pub(crate) fn teardown_dir(dir: &Path, child: Option<&mut Child>) -> io::Result<()> {
    let paths = Paths {
        dir: dir.to_path_buf(),
    };
    if !dir.exists() {
        return Ok(());
    }
    let mut first_err = kill_instance(&paths, child).err();

    let meta: Value = fs::read_to_string(paths.meta())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    if let Some(network) = meta["cni_network"].as_str().filter(|n| !n.is_empty()) {
        remove_cni_cache(network);
    }
    if let Some(bridge) = meta["cni_bridge"].as_str().filter(|b| !b.is_empty()) {
        let result = match meta["netns"].as_str() {
            // In a node namespace that still exists, the bridge would go with
            // it, but the namespace may outlive this instance.
            Some(ns) if Path::new(ns).exists() => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net={ns}"))
                    .args(["--", "ip", "link", "del", bridge]);
                link_del_if_present(&mut cmd, Some(ns), bridge)
            }
            Some(_) => Ok(()),
            None => {
                let mut cmd = Command::new("ip");
                cmd.args(["link", "del", bridge]);
                link_del_if_present(&mut cmd, None, bridge)
            }
        };
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }

    let left = mounts_under(dir);
    if !left.is_empty() {
        // Never delete through a mount: it could reach a host directory.
        let e = io::Error::other(format!("mounts remain under {}: {left:?}", dir.display()));
        return Err(first_err.unwrap_or(e));
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn link_del_if_present(cmd: &mut Command, netns: Option<&str>, name: &str) -> io::Result<()> {
    let exists = match netns {
        None => Path::new("/sys/class/net").join(name).exists(),
        Some(ns) => {
            let mut check = Command::new("nsenter");
            check
                .arg(format!("--net={ns}"))
                .args(["--", "ip", "link", "show", name]);
            run(&mut check).is_ok()
        }
    };
    if exists {
        run(cmd)?;
    }
    Ok(())
}

/// Everything of [`teardown_dir`] but the files: processes, containers,
/// cgroups, mounts, shim sockets.
fn kill_instance(paths: &Paths, child: Option<&mut Child>) -> io::Result<()> {
    let mut first_err: Option<io::Error> = None;
    let socket = paths.socket();
    let config = paths.config();
    let containers = runc_containers(&paths.runc_root());

    // containerd first, so that it doesn't react to what follows.
    if let Some(child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    let daemons = processes_naming(&[&config]);
    kill_and_wait(&daemons);

    for c in &containers {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(&c.runc_root)
            .args(["delete", "--force", &c.id]);
        if let Err(e) = run(&mut cmd) {
            // Already gone is fine; anything else is reported.
            if c.runc_root.join(&c.id).exists() {
                first_err.get_or_insert(e);
            }
        }
    }

    // Shims and clients name the socket on their command line.
    let mut shim_ids = BTreeSet::new();
    let procs = processes_naming(&[&socket]);
    for p in &procs {
        if let (Some(ns), Some(id)) = (arg_after(&p.args, "-namespace"), arg_after(&p.args, "-id"))
        {
            shim_ids.insert((ns, id));
        }
    }
    kill_and_wait(&procs);
    for c in &containers {
        shim_ids.insert((c.namespace.clone(), c.id.clone()));
    }

    // Cgroups: the containers' own, then the instance's parent everywhere.
    let meta: Value = fs::read_to_string(paths.meta())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let mut cgroup_dirs: Vec<PathBuf> = containers
        .iter()
        .flat_map(|c| c.cgroup_paths.clone())
        .collect();
    if let Some(parent) = meta["cgroup_parent"]
        .as_str()
        .map(|p| p.trim_start_matches('/'))
    {
        if !parent.is_empty() {
            for hierarchy in cgroup_hierarchies() {
                cgroup_dirs.push(hierarchy.join(parent));
            }
        }
    }
    for dir in &cgroup_dirs {
        if let Err(e) = remove_cgroup_tree(dir) {
            first_err.get_or_insert(e);
        }
    }

    if let Err(e) = unmount_all_under(&paths.dir) {
        first_err.get_or_insert(e);
    }

    for (ns, id) in &shim_ids {
        let _ = fs::remove_file(shim_socket(&socket, ns, id));
    }
    first_err.map_or(Ok(()), Err)
}

/// A container in runc's state under the instance's runc root.
struct RuncContainer {
    namespace: String,
    id: String,
    runc_root: PathBuf,
    cgroup_paths: Vec<PathBuf>,
}

/// The containers under `<runc root>/<namespace>/<id>/state.json`.
fn runc_containers(runc_root: &Path) -> Vec<RuncContainer> {
    let mut out = Vec::new();
    let Ok(namespaces) = fs::read_dir(runc_root) else {
        return out;
    };
    for ns in namespaces.flatten() {
        let Ok(ids) = fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.flatten() {
            let state: Value = fs::read_to_string(id.path().join("state.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let cgroup_paths = state["cgroup_paths"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(Value::as_str)
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default();
            out.push(RuncContainer {
                namespace: ns.file_name().to_string_lossy().into_owned(),
                id: id.file_name().to_string_lossy().into_owned(),
                runc_root: ns.path(),
                cgroup_paths,
            });
        }
    }
    out
}

/// The shim's socket, as containerd 1.6 names it: `/run/containerd/s/` and
/// the hex sha256 of `<containerd address>/<namespace>/<id>`.
fn shim_socket(address: &Path, namespace: &str, id: &str) -> PathBuf {
    let key = address.join(namespace).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new("/run/containerd/s").join(hex)
}

struct Process {
    pid: u32,
    args: Vec<String>,
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Processes (other than this one) with one of `paths` as a whole argument.
fn processes_naming(paths: &[&Path]) -> Vec<Process> {
    let me = std::process::id();
    let wanted: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut out = Vec::new();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in proc_dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || is_zombie(pid) {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| {
            wanted
                .iter()
                .any(|w| a == w || a.strip_prefix("unix://") == Some(w.as_str()))
        }) {
            out.push(Process { pid, args });
        }
    }
    out
}

/// A process that has exited but not been reaped (or does not exist) counts
/// as gone.
fn is_zombie(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                == Some("Z")
        }
        Err(_) => true,
    }
}

fn sigkill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = Command::new("kill");
    cmd.arg("-KILL").args(pids.iter().map(u32::to_string));
    // Some may have exited in between; that's the point.
    let _ = run(&mut cmd);
}

fn kill_and_wait(procs: &[Process]) {
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    sigkill(&pids);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| !is_zombie(*p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

/// The mount points of the cgroup (v1) and cgroup2 file systems.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect()
}

/// Kills whatever is still in `dir` (a cgroup) and below, and removes the
/// directories, deepest first. Missing is fine.
fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        sigkill(&pids);
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove cgroup {}: {e}", dir.display()),
                ))
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One line of `/proc/self/mountinfo`.
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// The mounts of this process's mount namespace, in mount order.
pub fn mountinfo() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = unescape_mount(left.split(' ').nth(4)?);
            let fstype = right.split(' ').next()?.to_owned();
            Some(MountEntry {
                mount_point: PathBuf::from(mount_point),
                fstype,
            })
        })
        .collect()
}

/// Decodes the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &s[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir`, deepest (latest) first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.reverse();
    v
}

fn unmount_all_under(dir: &Path) -> io::Result<()> {
    // A few rounds: a mount can hide others beneath it.
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            if run(Command::new("umount").arg(&m)).is_err() {
                let _ = run(Command::new("umount").arg("-l").arg(&m));
            }
        }
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(format!("cannot unmount {left:?}")))
    }
}

/// Removes the CNI result cache of `network` (libcni keeps it in
/// `/var/lib/cni/results/<network>-<container>-<ifname>`).
fn remove_cni_cache(network: &str) {
    let dir = Path::new("/var/lib/cni/results");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{network}-");
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}
