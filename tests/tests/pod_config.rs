//! ConfigMaps and Secrets reaching containers, and the events a node
//! records about its pods, end to end: kubectl → control plane (which
//! resolves the references) → agent → containerd.
//!
//! One node as in `pod_runtime.rs`: a network namespace on an underlay
//! bridge, a private containerd inside it, the control plane in the root
//! namespace reachable through the underlay gateway, and `skiff-agent`
//! inside the namespace.
//!
//! Needs root, containerd, runc, busybox-static, the reference CNI plugins
//! and iproute2 (`scripts/install-deps.sh`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::containerd::PrivateContainerd;
use skiff_e2e::images;
use skiff_e2e::{pod_runtime_agent_in, wait_until, Background, ControlPlane, Kubectl};

const NODE: &str = "e2e-config-node";
const CONNECTED: &str = "connected: the node is registered";
/// Generous: a ConfigMap change reaches the volume through a watch, a
/// Delta and a file swap, on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);

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
        .prefix("skc")
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

fn config_map_yaml(name: &str, mode: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
data:
  mode: {mode}
  LEVEL: "3"
"#
    )
}

const SECRET_YAML: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: app-secret
stringData:
  password: s3cret
"#;

/// Left to the scheduler (no nodeName), so that it records `Scheduled`.
fn configured_pod_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: configured
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: {image}
    env:
    - name: MODE
      valueFrom:
        configMapKeyRef: {{name: app-config, key: mode}}
    - name: PASSWORD
      valueFrom:
        secretKeyRef: {{name: app-secret, key: password}}
    - name: MAYBE
      valueFrom:
        configMapKeyRef: {{name: absent, key: k, optional: true}}
    - name: CFG_LEVEL
      value: own
    envFrom:
    - prefix: CFG_
      configMapRef: {{name: app-config}}
    volumeMounts:
    - {{name: config, mountPath: /etc/config}}
    - {{name: config, mountPath: /etc/mode, subPath: app/mode}}
    - {{name: secret, mountPath: /etc/secret}}
  volumes:
  - name: config
    configMap:
      name: app-config
      items:
      - {{key: mode, path: app/mode}}
  - name: secret
    secret:
      secretName: app-secret
      defaultMode: 0400
"#,
        image = images::webapp_image_name("1.0"),
    )
}

fn waiting_pod_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: early
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: {image}
    env:
    - name: LATE
      valueFrom:
        configMapKeyRef: {{name: late-config, key: mode}}
"#,
        image = images::webapp_image_name("1.0"),
    )
}

/// A pod whose liveness probe always fails.
fn sick_pod_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: sick
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    livenessProbe:
      exec:
        command: ["false"]
      periodSeconds: 1
      failureThreshold: 1
"#,
        image = images::webapp_image_name("1.0"),
    )
}

fn apply(cp: &ControlPlane, k: &Kubectl, file: &str, yaml: &str) {
    let path = cp.file(file, yaml);
    k.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
}

fn exec(k: &Kubectl, pod: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(command);
    k.run(&args).stdout
}

/// The events about `pod`, as (reason, message, fieldPath, host).
fn events_of(k: &Kubectl, pod: &str) -> Vec<(String, String, String, String)> {
    let list = k.get_json(&["events"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == pod)
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&e["reason"]),
                text(&e["message"]),
                text(&e["involvedObject"]["fieldPath"]),
                text(&e["source"]["host"]),
            )
        })
        .collect()
}

fn has_event(k: &Kubectl, pod: &str, reason: &str) -> bool {
    events_of(k, pod).iter().any(|e| e.0 == reason)
}

#[test]
fn config_maps_and_secrets_reach_containers_and_events_are_recorded() {
    require_root();
    let images_dir = tempdir();
    let pause = images::pause_image(images_dir.path()).expect("pause image");
    let webapp = images::webapp_image(images_dir.path(), "1.0").expect("web app image");

    let underlay = skiff_e2e::netns::Underlay::with_free_subnet("cf", 1).expect("underlay");
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
    let k = cp.kubectl();
    assert!(
        wait_until(Duration::from_secs(30), || {
            k.get_json(&["node", NODE])["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        }),
        "the node never became Ready"
    );

    apply(&cp, &k, "cm.yaml", &config_map_yaml("app-config", "fast"));
    apply(&cp, &k, "secret.yaml", SECRET_YAML);
    apply(&cp, &k, "configured.yaml", &configured_pod_yaml());
    let diagnostics = |k: &Kubectl, pod: &str| {
        format!(
            "{:#}\n--- agent log ---\n{}",
            k.get_json(&["pod", pod]),
            agent.stderr()
        )
    };
    assert!(
        wait_until(DEADLINE, || {
            let pod = k.get_json(&["pod", "configured"]);
            pod["status"]["phase"] == "Running"
                && pod["status"]["containerStatuses"][0]["ready"] == true
        }),
        "the configured pod never ran\n{}",
        diagnostics(&k, "configured")
    );

    // Environment: key refs, envFrom with its prefix, the container's own
    // entry winning, the optional miss left out, and HOSTNAME as before.
    let env = exec(&k, "configured", &["env"]);
    let vars: Vec<&str> = env.lines().collect();
    for expected in [
        "MODE=fast",
        "PASSWORD=s3cret",
        "CFG_mode=fast",
        "CFG_LEVEL=own",
        "HOSTNAME=configured",
    ] {
        assert!(vars.contains(&expected), "{expected} missing from\n{env}");
    }
    assert!(
        !vars.iter().any(|v| v.starts_with("MAYBE=")),
        "an optional miss is left out\n{env}"
    );

    // Volumes: the configMap's item at its path, the secret's key.
    assert_eq!(
        exec(&k, "configured", &["cat", "/etc/config/app/mode"]),
        "fast"
    );
    assert_eq!(
        exec(&k, "configured", &["cat", "/etc/secret/password"]),
        "s3cret"
    );
    assert_eq!(
        exec(&k, "configured", &["cat", "/etc/mode"]),
        "fast",
        "subPath"
    );
    let listing = exec(&k, "configured", &["ls", "-lL", "/etc/secret/password"]);
    assert!(
        listing.starts_with("-r-------- "),
        "defaultMode 0400: {listing}"
    );
    let write = k.run(&[
        "exec",
        "configured",
        "--",
        "sh",
        "-c",
        "echo x > /etc/config/new",
    ]);
    assert_ne!(
        write.code,
        Some(0),
        "configMap volumes are read-only: {write}"
    );

    // A changed ConfigMap reaches the volume in place; env and the
    // container stay as they were.
    apply(&cp, &k, "cm.yaml", &config_map_yaml("app-config", "slow"));
    let mut seen = String::new();
    assert!(
        wait_until(DEADLINE, || {
            seen = exec(&k, "configured", &["cat", "/etc/config/app/mode"]);
            seen == "slow"
        }),
        "the volume still shows {seen:?}\n{}",
        diagnostics(&k, "configured")
    );
    assert!(exec(&k, "configured", &["env"])
        .lines()
        .any(|l| l == "MODE=fast"));
    let pod = k.get_json(&["pod", "configured"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);

    // A pod whose ConfigMap does not exist yet waits, as Kubernetes says,
    // and starts once it is created.
    apply(&cp, &k, "early.yaml", &waiting_pod_yaml());
    assert!(
        wait_until(DEADLINE, || {
            let waiting = &k.get_json(&["pod", "early"])["status"]["containerStatuses"][0]["state"]
                ["waiting"];
            waiting["reason"] == "CreateContainerConfigError"
                && waiting["message"] == "configmap \"late-config\" not found"
        }),
        "the pod did not report its missing ConfigMap\n{}",
        diagnostics(&k, "early")
    );
    apply(
        &cp,
        &k,
        "late.yaml",
        &config_map_yaml("late-config", "late"),
    );
    assert!(
        wait_until(DEADLINE, || {
            k.get_json(&["pod", "early"])["status"]["phase"] == "Running"
        }),
        "the pod did not start once its ConfigMap existed\n{}",
        diagnostics(&k, "early")
    );
    assert!(exec(&k, "early", &["env"])
        .lines()
        .any(|l| l == "LATE=late"));

    // Events: the scheduler's, then the node's, as kubelet records them.
    assert!(
        wait_until(DEADLINE, || {
            ["Scheduled", "Pulled", "Created", "Started"]
                .iter()
                .all(|reason| has_event(&k, "configured", reason))
        }),
        "events of the configured pod: {:#?}",
        events_of(&k, "configured")
    );
    let events = events_of(&k, "configured");
    let started = events
        .iter()
        .find(|e| e.0 == "Started")
        .expect("a Started event");
    assert_eq!(started.1, "Started container web");
    assert_eq!(started.2, "spec.containers{web}");
    assert_eq!(started.3, NODE);
    assert!(
        wait_until(DEADLINE, || has_event(&k, "early", "Failed")),
        "events of the early pod: {:#?}",
        events_of(&k, "early")
    );
    assert!(events_of(&k, "early")
        .iter()
        .any(|e| e.0 == "Failed" && e.1 == "Error: configmap \"late-config\" not found"));
    let described = k.ok(&["describe", "pod", "configured"]);
    described.assert_stdout_contains("Started container web");

    k.ok(&["delete", "pod", "configured", "--timeout=60s"]);
    assert!(
        wait_until(DEADLINE, || has_event(&k, "configured", "Killing")),
        "no Killing event: {:#?}",
        events_of(&k, "configured")
    );

    // A failing liveness probe: Unhealthy, then the restart's Killing.
    apply(&cp, &k, "sick.yaml", &sick_pod_yaml());
    assert!(
        wait_until(DEADLINE, || {
            let events = events_of(&k, "sick");
            events
                .iter()
                .any(|e| e.0 == "Unhealthy" && e.1.starts_with("Liveness probe failed: "))
                && events.iter().any(|e| e.0 == "Killing")
        }),
        "events of the sick pod: {:#?}",
        events_of(&k, "sick")
    );

    k.ok(&["delete", "pod", "early", "--timeout=60s"]);
    // The sick pod's status changes every second or so, and a delete can
    // meet a 409 Conflict from the control plane while it does; retried.
    let mut last = None;
    assert!(
        wait_until(DEADLINE, || {
            let out = k.run(&["delete", "pod", "sick", "--timeout=60s"]);
            let done = out.success() || out.stderr.contains("NotFound");
            last = Some(out);
            done
        }),
        "the sick pod could not be deleted: {last:?}"
    );
    drop(agent);
    cd.shutdown().expect("containerd teardown");
    // Dropped rather than deleted, as in exec.rs: the kernel removes the
    // node namespace's veth pair asynchronously.
    drop(underlay);
}
