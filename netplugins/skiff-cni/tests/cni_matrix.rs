//! Runs the built `skiff-cni` exactly as a runtime does (CNI_* variables,
//! the configuration on stdin, the result on stdout), inside a throwaway
//! "node" network namespace (entered with `nsenter --net=`) and "pod"
//! namespaces, all created here with `ip netns` under names that carry this
//! process's id, and removed by drop guards even when an assertion fails.
//! Traffic checks use the static busybox (Debian's busybox-static).
//!
//! Needs root; without it every test returns early with a note on stderr.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_skiff-cni");

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: the CNI matrix needs root for network namespaces");
        false
    }
}

fn run_ip(args: &[&str]) -> Output {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("skcni-{}-{tag}", std::process::id());
        // A leftover of an earlier run with the same pid would be in the way.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ip(&["netns", "add", &name]);
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn exec(&self, program: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(program)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A child process killed on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One simulated node: its namespace, its IPAM data dir, its config.
struct Node {
    netns: Netns,
    data_dir: tempfile::TempDir,
    subnet: &'static str,
}

impl Node {
    fn new(tag: &str, subnet: &'static str) -> Node {
        Node {
            netns: Netns::new(tag),
            data_dir: tempfile::tempdir().expect("temp dir"),
            subnet,
        }
    }

    fn config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "skiff",
            "type": "skiff-cni",
            "bridge": "skiff0",
            "subnet": self.subnet,
            "mtu": 1450,
            "hairpinMode": true,
            "dataDir": self.data_dir.path(),
        })
    }

    fn reservations(&self) -> Vec<String> {
        let dir = self.data_dir.path().join("skiff");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .filter(|name| name.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Runs the plugin inside the node namespace.
    fn cni(
        &self,
        command: &str,
        container_id: &str,
        netns: Option<&Path>,
        stdin: &[u8],
    ) -> CniOutcome {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.path().display()))
            .arg(PLUGIN)
            .env_remove("CNI_COMMAND")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match netns {
            Some(path) => cmd.env("CNI_NETNS", path),
            None => cmd.env_remove("CNI_NETNS"),
        };
        let mut child = cmd.spawn().expect("spawn the plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write the config");
        let output = child.wait_with_output().expect("wait for the plugin");
        CniOutcome {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn add(&self, container_id: &str, pod: &Netns) -> Value {
        let outcome = self.cni(
            "ADD",
            container_id,
            Some(&pod.path()),
            self.config().to_string().as_bytes(),
        );
        outcome.ok_json()
    }

    fn with_prev(&self, prev: &Value) -> Vec<u8> {
        let mut config = self.config();
        config["prevResult"] = prev.clone();
        config.to_string().into_bytes()
    }
}

struct CniOutcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl CniOutcome {
    fn ok_json(&self) -> Value {
        assert!(
            self.success,
            "plugin failed: {} {}",
            self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout).expect("result JSON")
    }

    fn assert_ok_silent(&self) {
        assert!(
            self.success,
            "plugin failed: {} {}",
            self.stdout, self.stderr
        );
        assert_eq!(
            self.stdout.trim(),
            "",
            "DEL and CHECK print nothing on success"
        );
    }

    /// The error object, after checking the exit status and its fields.
    fn error(&self, code: u64) -> Value {
        assert!(!self.success, "expected a failure, got {}", self.stdout);
        let value: Value = serde_json::from_str(&self.stdout).expect("error JSON on stdout");
        assert_eq!(value["code"], code, "{value}");
        assert!(
            value["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
            "{value}"
        );
        assert!(value["cniVersion"].is_string(), "{value}");
        value
    }
}

fn pod_address(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().expect("address");
    cidr.split('/').next().unwrap_or_default().to_string()
}

fn ping(from: &Netns, to: &str) -> bool {
    from.exec(&["busybox", "ping", "-c", "1", "-W", "2", to])
        .status
        .success()
}

#[test]
fn add_check_del_with_traffic_between_pods() {
    if !is_root() {
        return;
    }
    let node = Node::new("n1", "10.244.1.0/24");
    let pod_a = Netns::new("a");
    let pod_b = Netns::new("b");

    let result_a = node.add("ctr-a", &pod_a);
    let result_b = node.add("ctr-b", &pod_b);
    assert_eq!(result_a["cniVersion"], "1.0.0");
    assert_eq!(result_a["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(result_a["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(result_a["ips"][0]["interface"], 2);
    assert_eq!(result_a["interfaces"][2]["name"], "eth0");
    assert_eq!(
        result_a["interfaces"][2]["sandbox"],
        pod_a.path().display().to_string()
    );
    assert_eq!(result_a["interfaces"][2]["mac"], "0a:58:0a:f4:01:02");
    assert_eq!(
        result_a["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])
    );
    assert_eq!(result_b["ips"][0]["address"], "10.244.1.3/24");
    assert_eq!(node.reservations(), ["10.244.1.2", "10.244.1.3"]);

    // The kernel state the result describes.
    let link = String::from_utf8_lossy(&pod_a.exec(&["ip", "-d", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(
        link.contains("mtu 1450") && link.contains("0a:58:0a:f4:01:02"),
        "{link}"
    );
    let host_veth = result_a["interfaces"][1]["name"]
        .as_str()
        .expect("host veth");
    let port = String::from_utf8_lossy(
        &node
            .netns
            .exec(&["ip", "-d", "link", "show", host_veth])
            .stdout,
    )
    .into_owned();
    assert!(
        port.contains("master skiff0") && port.contains("hairpin on"),
        "{port}"
    );
    let forward = node.netns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "1");

    for (pod, result) in [(&pod_a, &result_a), (&pod_b, &result_b)] {
        node.cni(
            "CHECK",
            if pod.name == pod_a.name {
                "ctr-a"
            } else {
                "ctr-b"
            },
            Some(&pod.path()),
            &node.with_prev(result),
        )
        .assert_ok_silent();
    }

    assert!(ping(&pod_a, "10.244.1.1"), "pod A cannot ping the gateway");
    assert!(
        ping(&pod_a, &pod_address(&result_b)),
        "pod A cannot ping pod B"
    );
    assert!(
        ping(&pod_b, &pod_address(&result_a)),
        "pod B cannot ping pod A"
    );

    // TCP from B to a listener in A.
    let mut listener = ChildGuard(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod_a.name,
                "busybox",
                "nc",
                "-l",
                "-p",
                "5000",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start nc -l"),
    );
    let target = pod_address(&result_a);
    let mut sent = false;
    for _ in 0..50 {
        let mut client = Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod_b.name,
                "busybox",
                "nc",
                "-w",
                "2",
                &target,
                "5000",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nc");
        let _ = client
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(b"hello over tcp\n"));
        if client.wait().is_ok_and(|status| status.success()) {
            sent = true;
            break;
        }
        // The listener may not be bound yet.
        thread::sleep(Duration::from_millis(100));
    }
    assert!(sent, "could not connect from pod B to {target}:5000");
    let _ = listener.0.wait();
    let mut received = String::new();
    if let Some(mut stdout) = listener.0.stdout.take() {
        let _ = stdout.read_to_string(&mut received);
    }
    assert_eq!(received, "hello over tcp\n");

    // CHECK notices a removed address.
    run_ip(&[
        "-n",
        &pod_b.name,
        "addr",
        "del",
        "10.244.1.3/24",
        "dev",
        "eth0",
    ]);
    let broken = node.cni(
        "CHECK",
        "ctr-b",
        Some(&pod_b.path()),
        &node.with_prev(&result_b),
    );
    let error = broken.error(103);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("10.244.1.3/24"),
        "{error}"
    );

    // DEL, twice; the address goes back, the interface goes away.
    for _ in 0..2 {
        node.cni(
            "DEL",
            "ctr-a",
            Some(&pod_a.path()),
            &node.with_prev(&result_a),
        )
        .assert_ok_silent();
    }
    assert_eq!(node.reservations(), ["10.244.1.3"]);
    assert!(!pod_a.exec(&["ip", "link", "show", "eth0"]).status.success());
    assert!(!node
        .netns
        .exec(&["ip", "link", "show", host_veth])
        .status
        .success());

    // A second ADD without DEL is refused and keeps the first address.
    let again = node.cni(
        "ADD",
        "ctr-b",
        Some(&pod_b.path()),
        node.config().to_string().as_bytes(),
    );
    again.error(101);
    assert_eq!(node.reservations(), ["10.244.1.3"]);
}

#[test]
fn del_after_the_netns_is_gone_releases_the_address() {
    if !is_root() {
        return;
    }
    let node = Node::new("n2", "10.244.2.0/24");
    let pod = Netns::new("gone");
    let result = node.add("ctr-gone", &pod);
    assert_eq!(node.reservations(), ["10.244.2.2"]);
    let path = pod.path();
    drop(pod);
    assert!(!path.exists());

    node.cni("DEL", "ctr-gone", Some(&path), &node.with_prev(&result))
        .assert_ok_silent();
    assert!(node.reservations().is_empty());
    // And once more with no CNI_NETNS and no prevResult at all.
    node.cni(
        "DEL",
        "ctr-gone",
        None,
        node.config().to_string().as_bytes(),
    )
    .assert_ok_silent();
    // A DEL for something never added succeeds too.
    node.cni(
        "DEL",
        "never-added",
        None,
        node.config().to_string().as_bytes(),
    )
    .assert_ok_silent();
}

#[test]
fn twenty_concurrent_adds_get_twenty_distinct_addresses() {
    if !is_root() {
        return;
    }
    let node = Node::new("n3", "10.244.3.0/24");
    let pods: Vec<Netns> = (0..20).map(|n| Netns::new(&format!("c{n}"))).collect();
    let results: Vec<Value> = thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(n, pod)| {
                let node = &node;
                scope.spawn(move || node.add(&format!("ctr-{n}"), pod))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("ADD thread"))
            .collect()
    });
    let mut addresses: Vec<String> = results.iter().map(pod_address).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 20, "{addresses:?}");
    assert_eq!(node.reservations().len(), 20);
    assert!(!addresses.contains(&"10.244.3.1".to_string()));
    // Every pod really holds its address.
    for (pod, result) in pods.iter().zip(&results) {
        let shown =
            String::from_utf8_lossy(&pod.exec(&["ip", "-4", "addr", "show", "eth0"]).stdout)
                .into_owned();
        assert!(shown.contains(&pod_address(result)), "{shown}");
    }
}

#[test]
fn bad_input_gets_the_well_known_error_codes() {
    if !is_root() {
        return;
    }
    let node = Node::new("n4", "10.244.4.0/24");
    let pod = Netns::new("bad");

    let malformed = node.cni("ADD", "ctr", Some(&pod.path()), b"{this is not json");
    malformed.error(6);

    let mut bad_subnet = node.config();
    bad_subnet["subnet"] = json!("10.244.4.0/33");
    let error = node
        .cni(
            "ADD",
            "ctr",
            Some(&pod.path()),
            bad_subnet.to_string().as_bytes(),
        )
        .error(7);
    assert!(
        error["msg"].as_str().unwrap_or_default().contains("subnet"),
        "{error}"
    );

    let mut outside = node.config();
    outside["gateway"] = json!("10.9.9.1");
    let error = node
        .cni(
            "ADD",
            "ctr",
            Some(&pod.path()),
            outside.to_string().as_bytes(),
        )
        .error(7);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("gateway"),
        "{error}"
    );

    let missing = PathBuf::from(format!(
        "/run/netns/skcni-{}-does-not-exist",
        std::process::id()
    ));
    let error = node
        .cni(
            "ADD",
            "ctr",
            Some(&missing),
            node.config().to_string().as_bytes(),
        )
        .error(3);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains(&missing.display().to_string()),
        "{error}"
    );
    assert!(
        node.reservations().is_empty(),
        "a failed ADD must not keep an address"
    );

    let unknown = node.cni(
        "FROB",
        "ctr",
        Some(&pod.path()),
        node.config().to_string().as_bytes(),
    );
    let error = unknown.error(4);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("CNI_COMMAND"),
        "{error}"
    );

    let mut old = node.config();
    old["cniVersion"] = json!("0.2.0");
    node.cni("ADD", "ctr", Some(&pod.path()), old.to_string().as_bytes())
        .error(1);

    let version = node
        .cni("VERSION", "ctr", None, br#"{"cniVersion":"0.4.0"}"#)
        .ok_json();
    assert_eq!(version["cniVersion"], "0.4.0");
    assert_eq!(
        version["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );

    // The 0.4.0 result shape: each address carries its IP version.
    let mut v040 = node.config();
    v040["cniVersion"] = json!("0.4.0");
    let result = node
        .cni(
            "ADD",
            "ctr-040",
            Some(&pod.path()),
            v040.to_string().as_bytes(),
        )
        .ok_json();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4");
}
