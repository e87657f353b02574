//! The agent provides containerd's sandbox image by itself: a node without
//! a registry never tries to pull it.
//!
//! One node namespace with a private containerd whose `sandbox_image` is
//! `registry.k8s.io/pause:3.6`, a name nothing imports (and there is no
//! network to pull it). Only the web app image is imported. The agent reads
//! the name from CRI `Status`, imports its own pause image under it, and a
//! pod then runs.
//!
//! Needs root, containerd, runc, busybox-static, the reference CNI plugins
//! and iproute2 (`scripts/install-deps.sh`).

use std::fs;
use std::time::Duration;

use skiff_e2e::containerd::{PrivateContainerd, StartOptions};
use skiff_e2e::images;
use skiff_e2e::netns::Underlay;
use skiff_e2e::{pod_runtime_agent_in, wait_until, ControlPlane};

const NODE: &str = "e2e-pause-node";
const CONNECTED: &str = "connected: the node is registered";
/// Upstream's pause image of containerd 1.6's default configuration.
const UNIMPORTED_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";

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
        .prefix("skq")
        .tempdir_in("/tmp")
        .expect("temporary directory")
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
"#,
        image = images::webapp_image_name("1.0"),
    )
}

#[test]
fn a_pod_runs_when_the_sandbox_image_was_never_imported() {
    require_root();
    let images_dir = tempdir();
    let webapp = images::webapp_image(images_dir.path(), "1.0").expect("web app image");

    let underlay = Underlay::with_free_subnet("pi", 1).expect("underlay");
    let node = underlay.node(0).clone();
    let gateway = underlay.gateway().to_string();
    let dir = tempdir();
    let options = StartOptions {
        sandbox_image: Some(UNIMPORTED_SANDBOX_IMAGE.to_owned()),
        ..StartOptions::default()
    };
    let cd = PrivateContainerd::start_with(Some(&node), &dir.path().join("cd"), &options)
        .expect("containerd");
    cd.import(&webapp).expect("import web app");
    let before = cd.images().expect("images");
    assert!(
        !before.iter().any(|name| name.contains("pause")),
        "no pause image may be present before the agent starts: {before:?}"
    );

    let cp = ControlPlane::start_reachable_at(&gateway);
    let token = cp.create_token();
    let mut args = cp.agent_args_at(&gateway, Some(&token), NODE, &dir.path().join("agent"));
    for (flag, value) in [
        ("--containerd", cd.socket().display().to_string()),
        (
            "--pod-log-dir",
            dir.path().join("logs").display().to_string(),
        ),
        ("--cgroup-parent", cd.cgroup_parent().to_owned()),
        (
            "--images-dir",
            dir.path().join("images").display().to_string(),
        ),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    let agent = pod_runtime_agent_in(&node, &args);
    assert!(
        agent.wait_for_stderr(Duration::from_secs(30), |log| log.contains(CONNECTED)),
        "the agent did not connect\n--- agent log ---\n{}",
        agent.stderr()
    );
    assert!(
        agent.wait_for_stderr(Duration::from_secs(30), |log| log
            .contains("imported the agent's pause image")
            && log.contains(UNIMPORTED_SANDBOX_IMAGE)),
        "the agent did not import its pause image\n--- agent log ---\n{}",
        agent.stderr()
    );
    let after = cd.images().expect("images");
    assert!(
        after.contains(&UNIMPORTED_SANDBOX_IMAGE.to_owned()),
        "{after:?}"
    );

    let k = cp.kubectl();
    let manifest = cp.file("web.yaml", pod_yaml("web"));
    k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    let running = wait_until(Duration::from_secs(60), || {
        k.get_json(&["pod", "web"])["status"]["phase"] == "Running"
    });
    assert!(
        running,
        "the pod never ran\n{:#}\n--- agent log ---\n{}\n--- containerd log ---\n{}",
        k.get_json(&["pod", "web"]),
        agent.stderr(),
        cd.log()
    );
    assert!(
        !cd.log().contains("failed to pull"),
        "containerd tried to pull:\n{}",
        cd.log()
    );

    k.ok(&["delete", "pod", "web", "--timeout=60s"]);
    drop(agent);
    cd.shutdown().expect("containerd teardown");
    underlay.delete().expect("underlay teardown");
}
