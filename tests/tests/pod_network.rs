//! The pod network end to end: three nodes, each a network namespace on a
//! shared underlay bridge with its own containerd and agent, wired by
//! Skiff's VXLAN overlay and `skiff-cni`; a fourth namespace on the same
//! underlay stands for the world outside the cluster network.
//!
//! Needs root, containerd, runc, iptables and busybox, and the binaries
//! built (`cargo build -p skiff-controlplane -p skiff-agent -p skiff-cni`).

use std::fs;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::containerd::{PrivateContainerd, StartOptions};
use skiff_e2e::images::{self, parse_webapp_reply};
use skiff_e2e::netns::{NodeNetns, Underlay};
use skiff_e2e::{pod_runtime_agent_in, run_command, wait_until, Background, ControlPlane, Kubectl};

const CONNECTED: &str = "connected: the node is registered";
const NODES: [&str; 3] = ["pn-a", "pn-b", "pn-c"];
/// Generous: these waits end as soon as the condition holds.
const WAIT: Duration = Duration::from_secs(60);

fn require_root() {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    assert_eq!(uid.as_deref(), Some("0"), "this test needs root");
}

/// Short, because containerd's socket paths live inside.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("skn")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

/// One simulated node: its namespace, containerd and agent.
struct Node {
    name: &'static str,
    netns: NodeNetns,
    containerd: PrivateContainerd,
    dir: std::path::PathBuf,
    agent: Option<Background>,
}

impl Node {
    fn agent_args(
        &self,
        cp: &ControlPlane,
        gateway: &str,
        token: Option<&str>,
    ) -> Vec<std::ffi::OsString> {
        let mut args = cp.agent_args_at(gateway, token, self.name, &self.dir.join("agent"));
        for (flag, value) in [
            (
                "--containerd",
                self.containerd.socket().display().to_string(),
            ),
            ("--pod-log-dir", self.dir.join("logs").display().to_string()),
            (
                "--cgroup-parent",
                self.containerd.cgroup_parent().to_owned(),
            ),
            (
                "--images-dir",
                self.dir.join("images").display().to_string(),
            ),
            (
                "--cni-conf-dir",
                self.containerd.cni_conf_dir().display().to_string(),
            ),
            ("--external-interface", "eth0".to_owned()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args
    }

    fn start_agent(&mut self, cp: &ControlPlane, gateway: &str, token: Option<&str>) {
        let agent = pod_runtime_agent_in(&self.netns, &self.agent_args(cp, gateway, token));
        assert!(
            agent.wait_for_stderr(WAIT, |log| log.contains(CONNECTED)),
            "{} did not connect\n--- agent log ---\n{}",
            self.name,
            agent.stderr()
        );
        self.agent = Some(agent);
    }

    fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(Background::stderr)
            .unwrap_or_default()
    }

    /// `ip ARGS` inside the node.
    fn ip(&self, args: &[&str]) -> String {
        let mut cmd = self.netns.command("ip");
        cmd.args(args);
        run_command(cmd, None).stdout
    }
}

/// `timeout 5 busybox wget` of `url`, inside a namespace.
fn wget_from_netns(netns: &NodeNetns, url: &str) -> skiff_e2e::Output {
    let mut cmd = netns.command("timeout");
    cmd.args(["5", "busybox", "wget", "-q", "-O", "-", url]);
    run_command(cmd, None)
}

/// The same, from inside a pod's container.
fn wget_from_pod(k: &Kubectl, pod: &str, url: &str) -> skiff_e2e::Output {
    k.run(&[
        "exec", pod, "--", "timeout", "5", "wget", "-q", "-O", "-", url,
    ])
}

fn web_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {image}\n",
        image = images::webapp_image_name("1.0"),
    )
}

/// A pod running `script` in the web app image's shell.
fn shell_pod(name: &str, node: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: sh\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n",
        image = images::webapp_image_name("1.0"),
    )
}

fn pod_ip(k: &Kubectl, name: &str) -> Option<String> {
    let pod: Value = k.get_json(&["pod", name]);
    (pod["status"]["phase"] == "Running")
        .then(|| pod["status"]["podIP"].as_str().map(str::to_owned))
        .flatten()
}

fn wait_for_ip(k: &Kubectl, name: &str, nodes: &[Node]) -> String {
    let mut ip = None;
    let ran = wait_until(WAIT, || {
        ip = pod_ip(k, name);
        ip.is_some()
    });
    assert!(
        ran,
        "pod {name} never ran with an IP: {:#}\n{}",
        k.get_json(&["pod", name]),
        nodes
            .iter()
            .map(|n| format!("--- {} agent log ---\n{}", n.name, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ip.unwrap_or_default()
}

fn pod_cidr(k: &Kubectl, node: &str) -> String {
    k.get_json(&["node", node])["spec"]["podCIDR"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn in_subnet(ip: &str, cidr: &str) -> bool {
    match (ip.parse::<std::net::Ipv4Addr>(), cidr.split_once('/')) {
        (Ok(ip), Some((network, prefix))) => {
            let (Ok(network), Ok(prefix)) =
                (network.parse::<std::net::Ipv4Addr>(), prefix.parse::<u32>())
            else {
                return false;
            };
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        _ => false,
    }
}

/// How many lines the sink pod has received so far.
fn received_lines(k: &Kubectl) -> usize {
    let out = k.run(&["exec", "sink", "--", "wc", "-l", "/tmp/received"]);
    out.stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Three nodes with agents, and a fourth namespace on the underlay.
struct Cluster {
    _images_dir: tempfile::TempDir,
    underlay: Underlay,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    cp: ControlPlane,
    gateway: String,
}

impl Cluster {
    fn start(prefix: &str) -> Cluster {
        require_root();
        let images_dir = tempdir();
        let pause = images::pause_image(images_dir.path()).expect("pause image");
        let webapp = images::webapp_image(images_dir.path(), "1.0").expect("web app image");
        let underlay = Underlay::with_free_subnet(prefix, 4).expect("underlay");
        let gateway = underlay.gateway().to_string();
        let dir = tempdir();
        let mut nodes: Vec<Node> = NODES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let netns = underlay.node(i).clone();
                let node_dir = dir.path().join(format!("n{i}"));
                let options = StartOptions {
                    skiff_cni: true,
                    ..StartOptions::default()
                };
                let containerd =
                    PrivateContainerd::start_with(Some(&netns), &node_dir.join("cd"), &options)
                        .expect("containerd");
                containerd.import(&pause).expect("import pause");
                containerd.import(&webapp).expect("import web app");
                Node {
                    name,
                    netns,
                    containerd,
                    dir: node_dir,
                    agent: None,
                }
            })
            .collect();
        let cp = ControlPlane::start_reachable_at(&gateway);
        let token = cp.create_token();
        for node in &mut nodes {
            node.start_agent(&cp, &gateway, Some(&token));
        }
        Cluster {
            _images_dir: images_dir,
            underlay,
            dir,
            nodes,
            cp,
            gateway,
        }
    }
}

#[test]
fn pods_reach_each_other_across_nodes_and_the_overlay_follows_the_nodes() {
    let Cluster {
        _images_dir,
        underlay,
        dir,
        mut nodes,
        cp,
        gateway,
    } = Cluster::start("pn");
    let outside = underlay.node(3).clone();
    let k = cp.kubectl();
    let cidrs: Vec<String> = NODES.iter().map(|n| pod_cidr(&k, n)).collect();
    assert!(
        cidrs.iter().all(|c| !c.is_empty())
            && cidrs[0] != cidrs[1]
            && cidrs[1] != cidrs[2]
            && cidrs[0] != cidrs[2],
        "nodes need distinct pod subnets: {cidrs:?}"
    );

    // Each node's conflist is the agent's, and every node routes to the
    // others' subnets through its VXLAN device.
    for (i, node) in nodes.iter().enumerate() {
        let conflist = node.containerd.cni_conf_dir().join("10-skiff.conflist");
        let written = wait_until(WAIT, || conflist.is_file());
        assert!(written, "{} wrote no conflist\n{}", node.name, node.log());
        let text = fs::read_to_string(&conflist).unwrap_or_default();
        assert!(text.contains(&cidrs[i]), "{text}");
        for (j, cidr) in cidrs.iter().enumerate() {
            if i == j {
                continue;
            }
            let routed = wait_until(WAIT, || {
                node.ip(&["route", "show", cidr]).contains("skiff.1")
            });
            assert!(
                routed,
                "{} has no route to {cidr}: {}\n--- agent log ---\n{}",
                node.name,
                node.ip(&["route"]),
                node.log()
            );
        }
    }

    for (name, node) in [
        ("web-a", NODES[0]),
        ("web-b", NODES[1]),
        ("web-c", NODES[2]),
    ] {
        let manifest = cp.file(&format!("{name}.yaml"), web_pod(name, node));
        k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    }
    let ips: Vec<String> = ["web-a", "web-b", "web-c"]
        .iter()
        .map(|name| wait_for_ip(&k, name, &nodes))
        .collect();
    for (ip, cidr) in ips.iter().zip(&cidrs) {
        assert!(
            in_subnet(ip, cidr),
            "pod IP {ip} is not in its node's subnet {cidr}"
        );
    }

    // A pod on A fetches from the pods on B and C by pod IP.
    for (ip, name) in [(&ips[1], "web-b"), (&ips[2], "web-c")] {
        let out = wget_from_pod(&k, "web-a", &format!("http://{ip}/"));
        assert_eq!(
            parse_webapp_reply(&out.stdout),
            Some(("1.0".to_owned(), name.to_owned())),
            "web-a cannot reach {name} at {ip}: {out}"
        );
    }
    // Node A's own namespace reaches the pod on B.
    let out = wget_from_netns(&nodes[0].netns, &format!("http://{}/", ips[1]));
    assert_eq!(
        parse_webapp_reply(&out.stdout).map(|(_, host)| host),
        Some("web-b".to_owned()),
        "node A cannot reach web-b: {out}"
    );

    // A long-lived TCP stream from a pod on A to a pod on B, which must
    // survive a restart of A's agent.
    // busybox nc ends the connection when its stdin ends, hence the sleep.
    let sink = cp.file(
        "sink.yaml",
        shell_pod(
            "sink",
            NODES[1],
            "sleep 100000 | nc -l -p 9000 > /tmp/received",
        ),
    );
    k.ok(&["create", "-f", sink.to_str().expect("utf-8 path")]);
    let sink_ip = wait_for_ip(&k, "sink", &nodes);
    let script = format!(
        "sleep 1; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done | nc {sink_ip} 9000"
    );
    let source = cp.file("source.yaml", shell_pod("source", NODES[0], &script));
    k.ok(&["create", "-f", source.to_str().expect("utf-8 path")]);
    wait_for_ip(&k, "source", &nodes);
    assert!(
        wait_until(WAIT, || received_lines(&k) > 5),
        "the stream from A to B carries nothing\n{}\n--- sink ---\n{}\n--- source ---\n{}",
        k.run(&["get", "pods", "-o", "wide"]),
        k.run(&["logs", "sink"]),
        k.run(&["logs", "source"]),
    );
    let agent_a = nodes[0].agent.take().expect("agent A");
    drop(agent_a.kill());
    let before = received_lines(&k);
    nodes[0].start_agent(&cp, &gateway, None);
    assert!(
        wait_until(WAIT, || received_lines(&k) > before + 20),
        "the stream from A to B stopped across A's agent restart\n--- agent A ---\n{}",
        nodes[0].log()
    );
    for pod in ["sink", "source"] {
        let status = k.get_json(&["pod", pod]);
        assert_eq!(status["status"]["phase"], "Running", "{status:#}");
    }

    // Deleting A's VXLAN device (a reboot, say) is repaired by the agent.
    nodes[0].ip(&["link", "del", "skiff.1"]);
    let repaired = wait_until(WAIT, || {
        nodes[0]
            .ip(&["route", "show", &cidrs[1]])
            .contains("skiff.1")
    });
    assert!(
        repaired,
        "A's overlay was not repaired\n--- agent A ---\n{}",
        nodes[0].log()
    );
    let out = wget_from_pod(&k, "web-a", &format!("http://{}/", ips[1]));
    assert!(
        parse_webapp_reply(&out.stdout).is_some(),
        "web-a cannot reach web-b after the repair: {out}"
    );

    // Node C leaves: its agent stops and its Node is deleted. A and B drop
    // its route, neighbour and FDB entry.
    let c_mac = nodes[2].ip(&["-o", "link", "show", "skiff.1"]);
    let c_mac = c_mac
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(!c_mac.is_empty(), "no VTEP MAC on C");
    drop(nodes[2].agent.take().map(Background::kill));
    k.ok(&["delete", "node", NODES[2]]);
    let c_network = cidrs[2].split('/').next().unwrap_or_default().to_owned();
    for node in &nodes[..2] {
        let gone = wait_until(WAIT, || {
            node.ip(&["route", "show", &cidrs[2]]).trim().is_empty()
                && !node
                    .ip(&["neigh", "show", "dev", "skiff.1"])
                    .contains(&format!("{c_network} "))
                && !run_command(
                    {
                        let mut cmd = node.netns.command("bridge");
                        cmd.args(["fdb", "show", "dev", "skiff.1"]);
                        cmd
                    },
                    None,
                )
                .stdout
                .contains(&c_mac)
        });
        assert!(
            gone,
            "{} still has C's entries: route {:?}, neigh {:?}\n--- agent log ---\n{}",
            node.name,
            node.ip(&["route", "show", &cidrs[2]]),
            node.ip(&["neigh", "show", "dev", "skiff.1"]),
            node.log()
        );
    }

    // Last: a pod reaches an address outside the cluster network (a
    // listener in the "outside" namespace), through the masquerade.
    let www = dir.path().join("www");
    fs::create_dir_all(&www).expect("www");
    fs::write(www.join("index.html"), "outside world\n").expect("index");
    let mut httpd = outside.command("busybox");
    httpd.args(["httpd", "-f", "-p", "8080", "-h"]).arg(&www);
    let httpd = Background::spawn(httpd, None);
    let url = format!("http://{}:8080/", outside.ip);
    let reached = wait_until(WAIT, || {
        wget_from_pod(&k, "web-a", &url)
            .stdout
            .contains("outside world")
    });
    drop(httpd.kill());
    assert!(
        reached,
        "web-a cannot reach {url} outside the cluster network: {}\n--- agent A ---\n{}",
        wget_from_pod(&k, "web-a", &url),
        nodes[0].log()
    );

    for pod in ["web-a", "web-b", "web-c", "sink", "source"] {
        k.run(&["delete", "pod", pod, "--wait=false"]);
    }
}

/// The PID of a running pod's first container, whose network namespace
/// is the pod's.
fn pod_pid(k: &Kubectl, node: &Node, pod: &str) -> Option<u32> {
    let status = k.get_json(&["pod", pod]);
    let id = status["status"]["containerStatuses"][0]["containerID"]
        .as_str()?
        .strip_prefix("containerd://")?
        .to_owned();
    let mut cmd = node.containerd.ctr();
    cmd.args(["task", "ls"]);
    let tasks = run_command(cmd, None).stdout;
    tasks
        .lines()
        .find(|line| line.starts_with(&id))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|pid| pid.parse().ok())
}

/// iperf3 between two network namespaces (given as `nsenter --net=` paths):
/// a one-shot server in the first, a 5 s client in the second. Bits per
/// second received.
fn iperf(server_ns: &str, client_ns: &str, server_ip: &str, port: u16) -> f64 {
    let mut server = std::process::Command::new("nsenter");
    server
        .arg(format!("--net={server_ns}"))
        .args(["iperf3", "-s", "-1", "-p"])
        .arg(port.to_string());
    let server = Background::spawn(server, None);
    std::thread::sleep(Duration::from_millis(500));
    let mut client = std::process::Command::new("nsenter");
    client
        .arg(format!("--net={client_ns}"))
        .args(["iperf3", "-J", "-t", "5", "-c", server_ip, "-p"])
        .arg(port.to_string());
    let out = run_command(client, None);
    drop(server.kill());
    let report: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
}

/// Measurements for BENCHMARKS.md, run by `scripts/pod-network-bench.sh`
/// (`SKIFF_E2E_NET_BENCH=<peer changes>`); does nothing otherwise. Prints
/// `timing:` lines and asserts nothing about speed.
#[test]
fn pod_network_figures() {
    let Some(rounds) = std::env::var("SKIFF_E2E_NET_BENCH")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        println!("SKIFF_E2E_NET_BENCH is not set: no measurement");
        return;
    };
    let Cluster {
        _images_dir,
        underlay: _underlay,
        dir: _dir,
        nodes,
        cp,
        gateway: _gateway,
    } = Cluster::start("pb");
    let k = cp.kubectl();

    // A node joins: a Node with a subnet and an overlay endpoint appears,
    // as its agent's registration makes it. Time until the route to its
    // subnet is on every real node.
    let mut after_write = Vec::new();
    let mut total = Vec::new();
    for round in 0..rounds.min(150) {
        let name = format!("sim-{round}");
        let cidr = format!("10.244.{}.0/24", 100 + round);
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    "flannel.alpha.coreos.com/public-ip": "192.0.2.200",
                    "flannel.alpha.coreos.com/backend-type": "vxlan",
                    "flannel.alpha.coreos.com/backend-data": format!("{{\"VNI\":1,\"VtepMAC\":\"0e:99:00:00:00:{:02x}\"}}", round % 256),
                },
            },
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        let began = std::time::Instant::now();
        let response = cp.http().post_json("/api/v1/nodes", &body.to_string());
        assert_eq!(response.status, 201, "{}", response.body);
        let written = began.elapsed();
        let mut pending: Vec<&Node> = nodes.iter().collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !pending.is_empty() && std::time::Instant::now() < deadline {
            pending.retain(|node| {
                let mut cmd = std::process::Command::new("ip");
                cmd.args(["-n", &node.netns.name, "route", "show", &cidr]);
                !run_command(cmd, None).stdout.contains("skiff.1")
            });
        }
        assert!(pending.is_empty(), "round {round}: no route on every node");
        let done = began.elapsed();
        total.push(done.as_secs_f64() * 1000.0);
        after_write.push((done - written).as_secs_f64() * 1000.0);
        k.ok(&["delete", "node", &name, "--wait=false"]);
    }
    let percentile = |values: &mut Vec<f64>, p: f64| {
        values.sort_by(|a, b| a.total_cmp(b));
        let index = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
        values[index]
    };
    for (label, values) in [
        ("from the API write's answer", &mut after_write),
        ("including the API write", &mut total),
    ] {
        println!(
            "timing: peer joins -> route on all 3 nodes, {label}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} rounds)",
            percentile(values, 0.50),
            percentile(values, 0.99),
            percentile(values, 1.0),
            values.len()
        );
    }

    // Throughput: pod on A to pod on B through the overlay, against node A
    // to node B on the underlay, same run.
    for (name, node) in [("bench-a", NODES[0]), ("bench-b", NODES[1])] {
        let manifest = cp.file(&format!("{name}.yaml"), web_pod(name, node));
        k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    }
    wait_for_ip(&k, "bench-a", &nodes);
    let ip_b = wait_for_ip(&k, "bench-b", &nodes);
    let pid_a = pod_pid(&k, &nodes[0], "bench-a").expect("bench-a's PID");
    let pid_b = pod_pid(&k, &nodes[1], "bench-b").expect("bench-b's PID");
    let underlay_bps = iperf(
        &nodes[1].netns.path().display().to_string(),
        &nodes[0].netns.path().display().to_string(),
        &nodes[1].netns.ip.to_string(),
        5201,
    );
    let pods_bps = iperf(
        &format!("/proc/{pid_b}/ns/net"),
        &format!("/proc/{pid_a}/ns/net"),
        &ip_b,
        5202,
    );
    println!(
        "timing: TCP throughput, node A to node B on the underlay: {:.2} Gbit/s; pod on A to pod on B over the overlay: {:.2} Gbit/s ({:.0} %)",
        underlay_bps / 1e9,
        pods_bps / 1e9,
        if underlay_bps > 0.0 { pods_bps / underlay_bps * 100.0 } else { 0.0 }
    );
}
