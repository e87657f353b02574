//! Network namespaces and a bridged underlay that stand in for the machines of
//! a test cluster.
//!
//! [`Underlay::new`] makes one Linux bridge in the root namespace and N node
//! namespaces, each joined to the bridge by a veth pair whose inner end is
//! `eth0`, with an address from the underlay subnet, loopback up and a default
//! route via the bridge (which holds the subnet's first address, so the host
//! reaches every node and every node reaches the host). Each node is where one
//! simulated machine runs its containerd and agent; see
//! [`crate::containerd::PrivateContainerd`].
//!
//! Tests run in parallel, so every name is unique: it carries this process's
//! PID and a per-process counter in base 36 (interface names must stay within
//! 15 bytes). The tests drive `ip` here; only product code must use netlink.
//!
//! Ordering: build the underlay first and drop it last. Dropping deletes the
//! node namespaces first (which also deletes their veths and whatever a CNI
//! plugin made inside them), then the bridge. Each harness object also keeps a
//! ledger file under `/run/skiff-e2e/`; if a test process dies before its
//! destructors run, the next harness object sweeps what the dead process left
//! (see [`sweep_stale`]).
//!
//! Everything here needs root.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Where ledgers of live harness objects are kept (see [`sweep_stale`]).
const LEDGER_DIR: &str = "/run/skiff-e2e";

/// Upper bound for one helper command (`ip`, `ctr`, `runc`, `umount`, ...).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Running helper commands
// ---------------------------------------------------------------------------

/// Runs `cmd` with a [`HELPER_TIMEOUT`] bound and returns its stdout; a
/// non-zero exit becomes an error that carries the command and its stderr.
pub fn run(cmd: &mut Command) -> io::Result<String> {
    run_timeout(cmd, HELPER_TIMEOUT)
}

/// [`run`] with an explicit time bound.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<String> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{what}`: {e}")))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_bounded(&mut child, timeout);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(io::Error::other(format!(
            "`{what}` failed ({status}): {}",
            stderr.trim()
        ))),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "`{what}` did not finish within {timeout:?}: {}",
                stderr.trim()
            ),
        )),
    }
}

fn drain<R: Read + Send + 'static>(src: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut src) = src {
            let _ = src.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` up to `timeout`; kills it and returns `None` past that.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn ip(args: &[&str]) -> io::Result<String> {
    run(Command::new("ip").args(args))
}

// ---------------------------------------------------------------------------
// Unique names
// ---------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// A short suffix unique among the live processes of the machine: this PID
/// (at most 5 base-36 digits) and a per-process counter (2 digits).
pub(crate) fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % (36 * 36);
    format!(
        "{}{:0>2}",
        base36(u64::from(std::process::id())),
        base36(u64::from(n))
    )
}

/// Keeps the first 4 lowercase alphanumerics of `prefix` (at least "sk"), so
/// that prefix + suffix + role letter + node index fit in 15 bytes.
fn short_prefix(prefix: &str) -> String {
    let p: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(4)
        .collect();
    if p.is_empty() {
        "sk".into()
    } else {
        p
    }
}

// ---------------------------------------------------------------------------
// Subnets
// ---------------------------------------------------------------------------

/// An IPv4 prefix such as `10.150.3.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The `n`-th address of the subnet (0 is the network address).
    pub fn host(self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        // The last address is the broadcast address.
        if u64::from(n) + 1 >= size {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(self, other: Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
}

impl FromStr for Subnet {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Subnet> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an IPv4 subnet: {s:?}"),
            )
        };
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if prefix_len > 32 {
            return Err(bad());
        }
        let subnet = Subnet {
            network: addr,
            prefix_len,
        };
        let network = Ipv4Addr::from(u32::from(addr) & subnet.mask());
        Ok(Subnet {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Every IPv4 prefix the root namespace has an address or a route for.
fn subnets_in_use() -> io::Result<Vec<Subnet>> {
    let mut used = Vec::new();
    for line in ip(&["-4", "-o", "addr", "show"])?.lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inet" {
                if let Some(Ok(s)) = words.next().map(Subnet::from_str) {
                    used.push(s);
                }
            }
        }
    }
    for line in ip(&["-4", "route", "show", "table", "all"])?.lines() {
        let mut words = line.split_whitespace();
        let first = match words.next() {
            Some("local" | "broadcast" | "unicast" | "multicast") => words.next(),
            other => other,
        };
        if let Some(Ok(s)) = first.map(Subnet::from_str) {
            // The default route covers everything; it isn't a conflict.
            if s.prefix_len > 0 {
                used.push(s);
            }
        }
    }
    Ok(used)
}

// ---------------------------------------------------------------------------
// Ledgers of live harness objects
// ---------------------------------------------------------------------------

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`); with the PID it names one process for good.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields
    // after the last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One harness object's record of what it created, one line per resource, in
/// creation order:
///
/// * `netns NAME`: a namespace under [`NETNS_DIR`],
/// * `link NAME`: a link in the root namespace,
/// * `subnet CIDR`: an underlay subnet in use (only reserves it),
/// * `containerd DIR`: a private containerd instance directory.
///
/// The file's first line is `owner PID START_TIME`. Dropping the ledger
/// deletes the file; the resources are the owner's job.
pub(crate) struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub(crate) fn create(kind: &str, suffix: &str) -> io::Result<Ledger> {
        fs::create_dir_all(LEDGER_DIR)?;
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap_or(0);
        let path = Path::new(LEDGER_DIR).join(format!("{kind}-{suffix}"));
        fs::write(&path, format!("owner {pid} {start}\n"))?;
        Ok(Ledger { path })
    }

    pub(crate) fn record(&self, kind: &str, value: &str) -> io::Result<()> {
        let mut f = OpenOptions::new().append(true).open(&self.path)?;
        writeln!(f, "{kind} {value}")
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Serialises subnet choice and sweeping between test processes.
fn ledger_lock() -> io::Result<File> {
    fs::create_dir_all(LEDGER_DIR)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(LEDGER_DIR).join(".lock"))?;
    f.lock()?;
    Ok(f)
}

struct LedgerFile {
    path: PathBuf,
    live: bool,
    entries: Vec<(String, String)>,
}

fn readledgers() -> Vec<LedgerFile> {
    let Ok(dir) = fs::read_dir(LEDGER_DIR) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let owner: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let live = match owner.as_slice() {
            ["owner", pid, start] => match (pid.parse::<u32>(), start.parse::<u64>()) {
                (Ok(pid), Ok(start)) => process_start_time(pid) == Some(start),
                _ => false,
            },
            // A ledger being written right now has no owner line yet only for
            // an instant; treat an unreadable one as live and leave it.
            _ => true,
        };
        let entries = lines
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        out.push(LedgerFile {
            path,
            live,
            entries,
        });
    }
    out
}

/// Removes whatever test processes that died before their destructors ran
/// left behind: their containerd instances (processes, mounts, cgroups,
/// directories), namespaces and links, newest first. Live processes' objects
/// are never touched. Called by [`Underlay::new`] and
/// [`crate::containerd::PrivateContainerd::start`]; cheap when there is
/// nothing to do.
pub fn sweep_stale() {
    let Ok(_lock) = ledger_lock() else { return };
    for ledger in readledgers().into_iter().filter(|l| !l.live) {
        for (kind, value) in ledger.entries.iter().rev() {
            match kind.as_str() {
                "containerd" => {
                    if let Err(e) = crate::containerd::teardown_dir(Path::new(value), None) {
                        eprintln!("skiff-e2e sweep: containerd at {value}: {e}");
                    }
                }
                "netns" => {
                    let _ = delete_netns(value);
                }
                "link" => {
                    let _ = delete_link(value);
                }
                _ => {}
            }
        }
        let _ = fs::remove_file(&ledger.path);
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn delete_link(name: &str) -> io::Result<()> {
    if link_exists(name) {
        ip(&["link", "del", name])?;
    }
    Ok(())
}

fn delete_netns(name: &str) -> io::Result<()> {
    if Path::new(NETNS_DIR).join(name).exists() {
        ip(&["netns", "del", name])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Node namespaces and the underlay
// ---------------------------------------------------------------------------

/// One node's network namespace on the underlay.
#[derive(Clone, Debug)]
pub struct NodeNetns {
    /// The namespace name, as `ip netns` lists it.
    pub name: String,
    /// The node's address on the underlay (on its `eth0`).
    pub ip: Ipv4Addr,
    /// The root-namespace end of the node's veth pair.
    pub host_veth: String,
}

impl NodeNetns {
    /// The namespace handle, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` inside this namespace. It enters only the
    /// network namespace (`nsenter --net`), unlike `ip netns exec`, which also
    /// remounts `/sys` in a new mount namespace and so hides the cgroup
    /// hierarchies that runc needs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `program args...` inside the namespace and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<String> {
        run(self.command(program).args(args))
    }
}

/// A bridge in the root namespace with N node namespaces on it. Dropping it
/// deletes everything it made.
pub struct Underlay {
    bridge: String,
    subnet: Subnet,
    gateway: Ipv4Addr,
    nodes: Vec<NodeNetns>,
    ledger: Ledger,
}

impl Underlay {
    /// Makes the bridge (named from `name_prefix`, holding the subnet's first
    /// address) and `nodes` node namespaces with the following addresses.
    /// `subnet` (e.g. `"10.150.7.0/24"`) must not be used by anything else in
    /// the root namespace, parallel tests included; [`Underlay::with_free_subnet`]
    /// picks one that isn't.
    pub fn new(name_prefix: &str, subnet: &str, nodes: usize) -> io::Result<Underlay> {
        sweep_stale();
        let subnet: Subnet = subnet.parse()?;
        let suffix = unique_suffix();
        let ledger = Ledger::create("underlay", &suffix)?;
        {
            let _lock = ledger_lock()?;
            if let Some(s) = reserved_subnets()?.into_iter().find(|s| s.overlaps(subnet)) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("subnet {subnet} overlaps {s}, which is in use"),
                ));
            }
            ledger.record("subnet", &subnet.to_string())?;
        }
        Self::build(name_prefix, &suffix, subnet, nodes, ledger)
    }

    /// Like [`Underlay::new`], with a free /24 (see [`reserve_free_subnet`]).
    pub fn with_free_subnet(name_prefix: &str, nodes: usize) -> io::Result<Underlay> {
        sweep_stale();
        let suffix = unique_suffix();
        let ledger = Ledger::create("underlay", &suffix)?;
        let subnet = reserve_free_subnet(&ledger)?;
        Self::build(name_prefix, &suffix, subnet, nodes, ledger)
    }

    fn build(
        prefix: &str,
        suffix: &str,
        subnet: Subnet,
        nodes: usize,
        ledger: Ledger,
    ) -> io::Result<Underlay> {
        let too_small = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{subnet} is too small for {nodes} nodes"),
            )
        };
        let gateway = subnet.host(1).ok_or_else(too_small)?;
        if nodes > 99 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at most 99 nodes",
            ));
        }
        let p = short_prefix(prefix);
        let mut underlay = Underlay {
            bridge: format!("{p}{suffix}b"),
            subnet,
            gateway,
            nodes: Vec::new(),
            ledger,
        };
        // A name left by a dead process that had our PID would make `add`
        // fail; such leftovers are never a live test's.
        let _ = delete_link(&underlay.bridge);
        underlay.ledger.record("link", &underlay.bridge)?;
        let br = underlay.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{gateway}/{}", subnet.prefix_len),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;

        for i in 0..nodes {
            let addr = subnet.host(2 + i as u32).ok_or_else(too_small)?;
            let node = NodeNetns {
                name: format!("skiff-{p}-{suffix}-n{i}"),
                ip: addr,
                host_veth: format!("{p}{suffix}v{i}"),
            };
            let _ = delete_netns(&node.name);
            let _ = delete_link(&node.host_veth);
            underlay.ledger.record("netns", &node.name)?;
            ip(&["netns", "add", &node.name])?;
            underlay.nodes.push(node.clone());
            underlay.ledger.record("link", &node.host_veth)?;
            ip(&[
                "link",
                "add",
                &node.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.name,
            ])?;
            ip(&["link", "set", &node.host_veth, "master", &br, "up"])?;
            let n = &node.name;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{addr}/{}", subnet.prefix_len),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", n, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                n,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
        }
        Ok(underlay)
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The bridge's address: the host as seen from the nodes.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn nodes(&self) -> &[NodeNetns] {
        &self.nodes
    }

    /// Node `i`; panics if there is no such node (a test's own mistake).
    pub fn node(&self, i: usize) -> &NodeNetns {
        &self.nodes[i]
    }

    /// Deletes everything now and reports the first failure, if any (drop
    /// does the same but can only print failures).
    pub fn delete(mut self) -> io::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> io::Result<()> {
        let mut first_err = None;
        for node in self.nodes.drain(..).rev() {
            // Deleting the namespace deletes its end of the veth pair, and
            // with it the root end; the explicit delete covers a namespace
            // that is still held open by a process.
            if let Err(e) = delete_netns(&node.name) {
                first_err.get_or_insert(e);
            }
            if let Err(e) = delete_link(&node.host_veth) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = delete_link(&self.bridge) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("skiff-e2e: underlay {}: teardown: {e}", self.bridge);
        }
    }
}

/// Subnets of the root namespace plus those reserved by live ledgers.
fn reserved_subnets() -> io::Result<Vec<Subnet>> {
    let mut used = subnets_in_use()?;
    for ledger in readledgers().into_iter().filter(|l| l.live) {
        for (kind, value) in &ledger.entries {
            if kind == "subnet" {
                if let Ok(s) = value.parse() {
                    used.push(s);
                }
            }
        }
    }
    Ok(used)
}

/// Picks a /24 from `10.150.0.0`–`10.199.255.0` that no address, route or
/// live ledger in the root namespace uses, and records it in `ledger` so that
/// parallel tests never pick the same one.
pub(crate) fn reserve_free_subnet(ledger: &Ledger) -> io::Result<Subnet> {
    const CANDIDATES: u32 = 50 * 256;
    let _lock = ledger_lock()?;
    let used = reserved_subnets()?;
    // Start at a point that differs between processes, so that parallel
    // tests rarely probe the same candidates.
    let start = std::process::id().wrapping_mul(2_654_435_761) % CANDIDATES;
    let subnet = (0..CANDIDATES)
        .map(|i| {
            let n = (start + i) % CANDIDATES;
            Subnet {
                network: Ipv4Addr::new(10, 150 + (n / 256) as u8, (n % 256) as u8, 0),
                prefix_len: 24,
            }
        })
        .find(|c| !used.iter().any(|u| u.overlaps(*c)))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "no free /24 in 10.150.0.0-10.199.255.0",
            )
        })?;
    ledger.record("subnet", &subnet.to_string())?;
    Ok(subnet)
}

/// Names of all network namespaces under [`NETNS_DIR`], sorted.
pub fn list_netns() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Names of all links in the root namespace, sorted.
pub fn list_links() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
