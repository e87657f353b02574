//! What the agent tells the control plane about its host.
//!
//! Everything is read from files under a filesystem root (`/` in
//! production, a temporary directory in tests) and turned into facts by
//! pure parsers:
//!
//! - memory: `MemTotal` of `/proc/meminfo`, lowered to the tightest
//!   `memory.max` of the agent's cgroup (v2) and its ancestors, so an agent
//!   in a memory-limited cgroup does not promise memory it cannot have;
//! - CPUs: [`std::thread::available_parallelism`], which already honours
//!   CPU affinity and cgroup CPU quotas;
//! - `PRETTY_NAME` of `/etc/os-release`, `/proc/sys/kernel/osrelease`,
//!   `/etc/machine-id`, `/proc/sys/kernel/random/boot_id`, and the DMI
//!   product UUID where it is readable (usually root only).
//!
//! The node's InternalIP is the local address of the route to the control
//! plane ([`local_address_towards`]): the address the control plane sees it
//! from, which is what other nodes can reach too.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

/// Pods per node, kubelet's default.
pub const MAX_PODS: u32 = 110;

#[derive(Debug, thiserror::Error)]
pub enum HostInfoError {
    #[error("cannot find the local address of the route to {server}: {source}")]
    Route {
        server: SocketAddr,
        source: std::io::Error,
    },
}

/// Facts about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub os_image: String,
    pub kernel_version: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    /// Go's name for the architecture, as Kubernetes uses it.
    pub architecture: String,
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\"))
    })
}

/// The cgroup v2 path of a process from its `/proc/<pid>/cgroup`.
pub fn parse_cgroup_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A cgroup v2 `memory.max`: `None` for "max" (no limit).
pub fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Go's architecture names, which Kubernetes uses in labels and nodeInfo.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

fn read_trimmed(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// The tightest `memory.max` on the path from the agent's cgroup up to the
/// root of the cgroup v2 hierarchy mounted at `ROOT/sys/fs/cgroup`.
fn cgroup_memory_limit(root: &Path) -> Option<u64> {
    let own = parse_cgroup_path(&std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?)?;
    let hierarchy = root.join("sys/fs/cgroup");
    let mut limit: Option<u64> = None;
    let mut path = Path::new(own.trim_start_matches('/'));
    loop {
        if let Some(max) = std::fs::read_to_string(hierarchy.join(path).join("memory.max"))
            .ok()
            .and_then(|text| parse_memory_max(&text))
        {
            limit = Some(limit.map_or(max, |limit| limit.min(max)));
        }
        match path.parent() {
            Some(parent) => path = parent,
            None => return limit,
        }
    }
}

/// Gathers the facts under `root`.
pub fn gather(root: &Path) -> HostFacts {
    let memory_total = read_trimmed(root, "proc/meminfo")
        .and_then(|text| parse_meminfo(&text))
        .unwrap_or(0);
    let memory_bytes = match cgroup_memory_limit(root) {
        Some(limit) if memory_total == 0 || limit < memory_total => limit,
        _ => memory_total,
    };
    HostFacts {
        hostname: read_trimmed(root, "proc/sys/kernel/hostname").unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes,
        os_image: read_trimmed(root, "etc/os-release")
            .and_then(|text| parse_os_release(&text))
            .unwrap_or_else(|| "Linux".into()),
        kernel_version: read_trimmed(root, "proc/sys/kernel/osrelease").unwrap_or_default(),
        machine_id: read_trimmed(root, "etc/machine-id").unwrap_or_default(),
        boot_id: read_trimmed(root, "proc/sys/kernel/random/boot_id").unwrap_or_default(),
        system_uuid: read_trimmed(root, "sys/class/dmi/id/product_uuid").unwrap_or_default(),
        architecture: go_arch(std::env::consts::ARCH).to_owned(),
    }
}

/// The node's capacity as Kubernetes quantities. Allocatable is the same
/// for now: the agent reserves nothing for the system yet.
pub fn capacity(facts: &HostFacts) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cpu".to_owned(), facts.cpus.to_string()),
        (
            "memory".to_owned(),
            format!("{}Ki", facts.memory_bytes / 1024),
        ),
        ("pods".to_owned(), MAX_PODS.to_string()),
    ])
}

/// The local address the kernel would use to reach `server`. Connecting a
/// UDP socket only picks the route; nothing is sent.
pub fn local_address_towards(server: SocketAddr) -> Result<IpAddr, HostInfoError> {
    let route = |source| HostInfoError::Route { server, source };
    let unspecified: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(unspecified).map_err(route)?;
    socket.connect(server).map_err(route)?;
    Ok(socket.local_addr().map_err(route)?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:        4030364 kB\nMemFree:          123456 kB\n";
        assert_eq!(parse_meminfo(text), Some(4030364 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn os_release_pretty_name_is_unquoted() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            parse_os_release(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release("PRETTY_NAME=Alpine").as_deref(),
            Some("Alpine")
        );
        assert_eq!(parse_os_release("ID=x\n"), None);
    }

    #[test]
    fn cgroup_files_are_understood() {
        assert_eq!(
            parse_cgroup_path("0::/system.slice/skiff-agent.service\n").as_deref(),
            Some("/system.slice/skiff-agent.service")
        );
        assert_eq!(parse_cgroup_path("1:name=systemd:/x\n"), None);
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("1073741824\n"), Some(1 << 30));
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn facts_come_from_the_files_under_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        write(root, "proc/meminfo", "MemTotal: 8388608 kB\n");
        write(root, "proc/sys/kernel/hostname", "worker-1\n");
        write(root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        write(root, "proc/sys/kernel/random/boot_id", "b0075a1e\n");
        write(root, "etc/machine-id", "0123456789abcdef\n");
        write(
            root,
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        );
        write(root, "proc/self/cgroup", "0::/system.slice/agent.service\n");
        write(
            root,
            "sys/fs/cgroup/system.slice/agent.service/memory.max",
            "max\n",
        );
        write(
            root,
            "sys/fs/cgroup/system.slice/memory.max",
            "2147483648\n",
        );

        let facts = gather(root);
        assert_eq!(facts.hostname, "worker-1");
        assert_eq!(facts.memory_bytes, 2 << 30, "the cgroup limit wins");
        assert_eq!(facts.kernel_version, "6.1.0-18-amd64");
        assert_eq!(facts.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(facts.machine_id, "0123456789abcdef");
        assert_eq!(facts.boot_id, "b0075a1e");
        assert_eq!(facts.system_uuid, "");
        assert!(facts.cpus >= 1);

        let capacity = capacity(&facts);
        assert_eq!(capacity["memory"], "2097152Ki");
        assert_eq!(capacity["pods"], "110");
    }

    #[test]
    fn the_route_to_loopback_starts_on_loopback() {
        let address =
            local_address_towards("127.0.0.1:6443".parse().expect("address")).expect("route");
        assert!(address.is_loopback());
    }
}
