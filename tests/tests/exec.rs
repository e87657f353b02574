//! `kubectl exec` and `kubectl port-forward` end to end: kubectl → control
//! plane → agent → containerd's stream server, with every kubectl release
//! on the machine (1.20 speaks SPDY; newer releases try WebSocket first and
//! fall back to SPDY when the control plane refuses it).
//!
//! One node as in `pod_runtime.rs`: a network namespace on an underlay
//! bridge, a private containerd inside it, the control plane in the root
//! namespace reachable through the underlay gateway, and `skiff-agent`
//! inside the namespace, running one web app pod.
//!
//! Needs root, containerd, runc, busybox-static, the reference CNI plugins
//! and iproute2 (`scripts/install-deps.sh`).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use skiff_e2e::containerd::PrivateContainerd;
use skiff_e2e::images;
use skiff_e2e::{pod_runtime_agent_in, wait_until, Background, ControlPlane, Kubectl};

const NODE: &str = "e2e-exec-node";
const CONNECTED: &str = "connected: the node is registered";

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
        .prefix("skx")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

fn agent_args(
    cp: &ControlPlane,
    gateway: &str,
    token: Option<&str>,
    cd: &PrivateContainerd,
    dir: &Path,
) -> Vec<std::ffi::OsString> {
    let mut args = cp.agent_args_at(gateway, token, NODE, &dir.join("agent"));
    for (flag, value) in [
        ("--containerd", cd.socket().display().to_string()),
        ("--pod-log-dir", dir.join("logs").display().to_string()),
        ("--cgroup-parent", cd.cgroup_parent().to_owned()),
        ("--images-dir", dir.join("images").display().to_string()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args
}

fn pod_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: {image}
    ports:
    - containerPort: 80
"#,
        image = images::webapp_image_name("1.0"),
    )
}

/// A pod whose main process prints a line every second, for attach.
fn ticker_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: {image}
    command: ["/bin/sh", "-c", "while true; do echo tick; sleep 1; done"]
"#,
        image = images::webapp_image_name("1.0"),
    )
}

/// A local port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `GET /` over plain HTTP/1.0; the whole answer, or the error.
fn http_get(port: u16) -> Result<String, String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

fn exec_checks(k: &Kubectl, pod: &str, agent: &Background) {
    println!("--- kubectl {} ---", k.version());
    let out = k.run(&["exec", pod, "--", "hostname"]);
    assert_eq!(
        out.stdout.trim(),
        pod,
        "{out}\n--- agent log ---\n{}",
        agent.stderr()
    );
    out.assert_success();

    let out = k.run_stdin(&["exec", "-i", pod, "--", "cat"], "hi\n");
    assert_eq!(out.stdout, "hi\n", "{out}");
    out.assert_success();

    let out = k.run(&[
        "exec",
        pod,
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "echo to-err >&2; exit 3",
    ]);
    assert_eq!(out.code, Some(3), "{out}");
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{out}"
    );
    assert!(out.stderr.contains("to-err"), "{out}");

    let out = k.run(&["exec", pod, "-c", "nope", "--", "true"]);
    assert_ne!(out.code, Some(0), "{out}");

    // Port-forward: kubectl listens locally and tunnels to the pod's port.
    let port = free_port();
    let forward = k.spawn(&["port-forward", &format!("pod/{pod}"), &format!("{port}:80")]);
    assert!(
        forward.wait_for_stdout(Duration::from_secs(20), |out| out
            .contains("Forwarding from")),
        "port-forward did not start\n--- stdout ---\n{}\n--- stderr ---\n{}",
        forward.stdout(),
        forward.stderr()
    );
    let mut last = Err(String::new());
    let answered = wait_until(Duration::from_secs(10), || {
        last = http_get(port);
        last.as_ref().is_ok_and(|a| a.contains("Version 1.0"))
    });
    assert!(
        answered,
        "no answer through port-forward: {last:?}\n--- stderr ---\n{}\n--- agent log ---\n{}",
        forward.stderr(),
        agent.stderr()
    );
    // A second connection over the same forward.
    let again = http_get(port);
    assert!(
        again.as_ref().is_ok_and(|a| a.contains("Version 1.0")),
        "{again:?}"
    );
    drop(forward);
}

#[test]
fn exec_and_port_forward_reach_the_container() {
    require_root();
    let images_dir = tempdir();
    let pause = images::pause_image(images_dir.path()).expect("pause image");
    let webapp = images::webapp_image(images_dir.path(), "1.0").expect("web app image");

    let underlay = skiff_e2e::netns::Underlay::with_free_subnet("ex", 1).expect("underlay");
    let node = underlay.node(0).clone();
    let gateway = underlay.gateway().to_string();
    let dir = tempdir();
    let cd = PrivateContainerd::start(Some(&node), &dir.path().join("cd")).expect("containerd");
    cd.import(&pause).expect("import pause");
    cd.import(&webapp).expect("import web app");

    let cp = ControlPlane::start_reachable_at(&gateway);
    let token = cp.create_token();
    let agent: Background = pod_runtime_agent_in(
        &node,
        &agent_args(&cp, &gateway, Some(&token), &cd, dir.path()),
    );
    assert!(
        agent.wait_for_stderr(Duration::from_secs(30), |log| log.contains(CONNECTED)),
        "the agent did not connect\n--- agent log ---\n{}",
        agent.stderr()
    );
    let kubectls = cp.kubectls();
    let k = &kubectls[0];
    let manifest = cp.file("web.yaml", pod_yaml("shell"));
    k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let pod = k.get_json(&["pod", "shell"]);
            pod["status"]["phase"] == "Running"
                && pod["status"]["containerStatuses"][0]["ready"] == true
        }),
        "the pod never ran\n{:#}\n--- agent log ---\n{}",
        k.get_json(&["pod", "shell"]),
        agent.stderr()
    );

    for k in &kubectls {
        exec_checks(k, "shell", &agent);
    }

    // Without an upgrade, exec is refused as kube-apiserver refuses it.
    let out = k.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/shell/exec?command=true",
    ]);
    assert!(out.stderr.contains("Upgrade request required"), "{out}");

    // Attach: the output of a pod's main process, as it comes.
    let manifest = cp.file("ticker.yaml", ticker_yaml());
    k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    assert!(
        wait_until(Duration::from_secs(30), || {
            k.get_json(&["pod", "ticker"])["status"]["phase"] == "Running"
        }),
        "the ticker never ran\n--- agent log ---\n{}",
        agent.stderr()
    );
    for k in [&kubectls[0], kubectls.last().expect("a kubectl")] {
        let attached = k.spawn(&["attach", "ticker"]);
        assert!(
            attached.wait_for_stdout(Duration::from_secs(20), |out| out.contains("tick")),
            "kubectl {} attach saw nothing\n--- stdout ---\n{}\n--- stderr ---\n{}",
            k.version(),
            attached.stdout(),
            attached.stderr()
        );
    }

    k.ok(&["delete", "pod", "shell", "ticker", "--timeout=60s"]);
    drop(agent);
    cd.shutdown().expect("containerd teardown");
    // Dropped rather than deleted: deleting the node namespace removes its
    // veth pair asynchronously, so an explicit delete can race with the
    // kernel and report a device that is already gone.
    drop(underlay);
}
