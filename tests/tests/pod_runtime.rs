//! The pod runtime end to end: a real agent inside a node namespace runs
//! pods on a private containerd, driven by real kubectl.
//!
//! One node: a network namespace on an underlay bridge, a private
//! containerd inside it (pause and web app images imported), the control
//! plane in the root namespace reachable through the underlay gateway, and
//! `skiff-agent` started inside the namespace. A web app pod then goes
//! Pending → Running with an IP, answers from inside the node, shows its
//! logs, restarts after `/cgi-bin/kill`, survives an agent restart with the
//! same container IDs and a control plane outage, and is removed from
//! containerd when deleted. A two-container pod shares an emptyDir and
//! 127.0.0.1 and sees its cgroup limits; probes restart and gate readiness.
//!
//! Needs root, containerd, runc, busybox-static, the reference CNI plugins
//! and iproute2 (`scripts/install-deps.sh`).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::containerd::PrivateContainerd;
use skiff_e2e::images::{self, parse_webapp_reply};
use skiff_e2e::netns::{NodeNetns, Underlay};
use skiff_e2e::{pod_runtime_agent_in, run_command, wait_until, Background, ControlPlane, Kubectl};

const NODE: &str = "e2e-pod-node";
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
        .prefix("skp")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

/// `busybox wget` inside the node (its own -T crashes Debian's static
/// busybox, hence `timeout`).
fn wget(node: &NodeNetns, url: &str) -> skiff_e2e::Output {
    let mut cmd = node.command("timeout");
    cmd.args(["5", "busybox", "wget", "-q", "-O", "-", url]);
    run_command(cmd, None)
}

fn pod_json(k: &Kubectl, name: &str) -> Value {
    k.get_json(&["pod", name])
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
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

fn containerd_containers(cd: &PrivateContainerd) -> Vec<String> {
    let mut cmd = cd.ctr();
    cmd.args(["containers", "list", "--quiet"]);
    let out = run_command(cmd, None);
    out.assert_success();
    out.stdout.lines().map(str::to_owned).collect()
}

fn pod_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: {image}
    command: ["/bin/sh", "-c", "echo \"web app starting on $POD_NAME at $POD_IP\"; exec /bin/webapp"]
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: GREETING
      value: hello
    ports:
    - containerPort: 80
"#,
        image = images::webapp_image_name("1.0"),
    )
}

/// A writer and a reader sharing an emptyDir; the reader logs what it
/// sees: the shared file, the writer over 127.0.0.1, and its own memory
/// limit and CPU quota (cgroup v1 paths, then v2).
fn multi_yaml(host_dir: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: multi
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    emptyDir: {{}}
  - name: host
    hostPath:
      path: {host}
      type: DirectoryOrCreate
  containers:
  - name: writer
    image: {image}
    command:
    - /bin/sh
    - -c
    - |
      echo shared-hello > /shared/hello
      echo host-hello > /host/hello
      exec /bin/webapp
    resources:
      requests: {{cpu: 250m, memory: 32Mi}}
      limits: {{cpu: 500m, memory: 64Mi}}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: host, mountPath: /host}}
  - name: reader
    image: {image}
    env:
    - {{name: WEBAPP_PORT, value: "81"}}
    command:
    - /bin/sh
    - -c
    - |
      sleep 1
      echo "shared: $(cat /shared/hello)"
      echo "neighbour: $(wget -q -O - http://127.0.0.1:80/)"
      echo "memory: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
      echo "quota: $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max)"
      exec /bin/webapp
    resources:
      limits: {{cpu: 200m, memory: 32Mi}}
    volumeMounts:
    - {{name: shared, mountPath: /shared, readOnly: true}}
"#,
        host = host_dir.display(),
        image = images::webapp_image_name("1.0"),
    )
}

/// Three web apps on ports 80, 81 and 82: one with startup and readiness
/// probes that pass, one whose readiness probe never does, and one whose liveness
/// probe starts failing two seconds after each start.
fn probed_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 5
  containers:
  - name: ready
    image: {image}
    startupProbe:
      httpGet:
        path: /
        port: 80
      periodSeconds: 1
    readinessProbe:
      httpGet:
        path: /
        port: 80
      periodSeconds: 1
  - name: unready
    image: {image}
    env:
    - name: WEBAPP_PORT
      value: "81"
    readinessProbe:
      tcpSocket:
        port: 9999
      periodSeconds: 1
  - name: sick
    image: {image}
    command: ["/bin/sh", "-c", "touch /tmp/healthy; (sleep 2; rm -f /tmp/healthy) & exec /bin/webapp"]
    env:
    - name: WEBAPP_PORT
      value: "82"
    livenessProbe:
      exec:
        command: ["test", "-f", "/tmp/healthy"]
      periodSeconds: 1
      failureThreshold: 1
"#,
        image = images::webapp_image_name("1.0"),
    )
}

/// How many pods the burst measurement creates at once:
/// `SKIFF_E2E_BURST` (off by default, it takes a while).
fn burst_size() -> Option<usize> {
    std::env::var("SKIFF_E2E_BURST")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
}

/// The agent's process: the one whose command line names its data
/// directory.
fn agent_pid(dir: &Path) -> Option<u32> {
    let needle = dir.join("agent").display().to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains("skiff-agent")
            && cmdline.contains(&needle)
            && !cmdline.starts_with("nsenter"))
        .then_some(pid)
    })
}

/// User plus system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Creates `count` pods in one `kubectl create`; returns the milliseconds
/// until all run (as a watch sees them), the agent's RSS then, and its CPU
/// use over 10 idle seconds afterwards. Deletes the pods (without waiting).
fn burst(cp: &ControlPlane, k: &Kubectl, dir: &Path, count: usize) -> (u128, u64, f64) {
    let watch = k.spawn(&[
        "get",
        "pods",
        "--watch",
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name,PHASE:.status.phase",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let names: Vec<String> = (0..count).map(|i| format!("burst-{i}")).collect();
    let manifest = cp.file(
        "burst.yaml",
        names
            .iter()
            .map(|name| pod_yaml(name))
            .collect::<Vec<_>>()
            .join("---\n"),
    );
    let started = Instant::now();
    k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    loop {
        let out = watch.stdout();
        let running = names
            .iter()
            .filter(|name| {
                let prefix = format!("{name} ");
                out.lines()
                    .any(|l| l.starts_with(&prefix) && l.trim_end().ends_with("Running"))
            })
            .count();
        if running == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {running} of {count} pods ran\n{out}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let all_running = started.elapsed().as_millis();
    drop(watch);
    let pid = agent_pid(dir).expect("the agent's pid");
    let rss_kb = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Let the last status reports settle before measuring idleness.
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    // Ticks are 1/100 s: ticks per 10 s, as a percentage of one core.
    let idle_cpu = (cpu_ticks(pid) - before) as f64 / 10.0;
    let mut delete = vec!["delete", "pod", "--wait=false"];
    delete.extend(names.iter().map(String::as_str));
    k.ok(&delete);
    (all_running, rss_kb, idle_cpu)
}

/// How many pods the latency measurement starts: `SKIFF_E2E_POD_STARTS`,
/// 5 by default.
fn pod_starts() -> usize {
    std::env::var("SKIFF_E2E_POD_STARTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1)
}

/// Creates `count` pods one at a time; returns each one's milliseconds
/// from running `kubectl create` to its Running line in a watch. The pods
/// are deleted afterwards without waiting.
fn pod_start_latencies(cp: &ControlPlane, k: &Kubectl, count: usize) -> Vec<u128> {
    let watch = k.spawn(&[
        "get",
        "pods",
        "--watch",
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name,PHASE:.status.phase",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let mut samples = Vec::new();
    let mut names = Vec::new();
    let mut create_ms = Vec::new();
    for i in 0..count {
        let name = format!("latency-{i}");
        let manifest = cp.file(&format!("{name}.yaml"), pod_yaml(&name));
        let started = Instant::now();
        k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
        create_ms.push(started.elapsed().as_millis());
        let running = format!("{name} ");
        let deadline = started + Duration::from_secs(20);
        loop {
            let out = watch.stdout();
            if out
                .lines()
                .any(|l| l.starts_with(&running) && l.trim_end().ends_with("Running"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not run
{out}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        samples.push(started.elapsed().as_millis());
        names.push(name);
    }
    drop(watch);
    println!("timing: of which kubectl create itself took (ms): {create_ms:?}");
    let mut delete = vec!["delete", "pod", "--wait=false"];
    delete.extend(names.iter().map(String::as_str));
    k.ok(&delete);
    samples
}

#[test]
fn pods_run_restart_survive_an_agent_restart_and_are_removed() {
    require_root();
    let began = Instant::now();
    let images_dir = tempdir();
    let pause = images::pause_image(images_dir.path()).expect("pause image");
    let webapp = images::webapp_image(images_dir.path(), "1.0").expect("web app image");

    let underlay = Underlay::with_free_subnet("pr", 1).expect("underlay");
    let node = underlay.node(0).clone();
    let gateway = underlay.gateway().to_string();
    let dir = tempdir();
    let cd = PrivateContainerd::start(Some(&node), &dir.path().join("cd")).expect("containerd");
    cd.import(&pause).expect("import pause");
    cd.import(&webapp).expect("import web app");

    let mut cp = ControlPlane::start_reachable_at(&gateway);
    let token = cp.create_token();
    let mut agent: Background = pod_runtime_agent_in(
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
    let node_json = k.get_json(&["node", NODE]);
    assert!(
        node_json["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{node_json:#}"
    );

    // Pending → Running, as a watch sees it.
    let watch = k.spawn(&["get", "pods", "--watch"]);
    let manifest = cp.file("web.yaml", pod_yaml("web"));
    let created = Instant::now();
    k.ok(&["create", "-f", manifest.to_str().expect("utf-8 path")]);
    assert!(
        watch.wait_for_stdout(Duration::from_secs(30), |out| out
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("Running"))),
        "the pod never ran\n--- watch ---\n{}\n--- agent log ---\n{}",
        watch.stdout(),
        agent.stderr()
    );
    println!(
        "timing: pod start, kubectl create to Running in the watch: {} ms",
        created.elapsed().as_millis()
    );
    println!("--- agent log until Running ---\n{}", agent.stderr());
    let seen = watch.kill().stdout;
    assert!(
        seen.lines()
            .any(|l| l.starts_with("web ")
                && (l.contains("Pending") || l.contains("ContainerCreating"))),
        "the watch never showed the pod pending\n{seen}"
    );

    let pod = pod_json(k, "web");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    let ip = pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_owned();
    assert_eq!(pod["status"]["hostIP"], node.ip.to_string(), "{pod:#}");
    let status = container_status(&pod);
    assert_eq!(status["ready"], true, "{pod:#}");
    assert_eq!(status["restartCount"], 0, "{pod:#}");
    let first_id = status["containerID"]
        .as_str()
        .expect("containerID")
        .to_owned();
    assert!(first_id.starts_with("containerd://"), "{pod:#}");
    assert!(
        status["imageID"]
            .as_str()
            .is_some_and(|id| id.starts_with("sha256:")),
        "{pod:#}"
    );
    let ready = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "True", "{pod:#}");

    // The app answers inside the node, with the pod's name as hostname.
    let answer = wget(&node, &format!("http://{ip}/"));
    answer.assert_success();
    assert_eq!(
        parse_webapp_reply(&answer.stdout),
        Some(("1.0".to_owned(), "web".to_owned())),
        "{answer}"
    );
    let env = wget(&node, &format!("http://{ip}/cgi-bin/env"));
    env.assert_success();
    for line in [
        "GREETING=hello".to_owned(),
        "POD_NAME=web".to_owned(),
        format!("POD_IP={ip}"),
        "HOSTNAME=web".to_owned(),
    ] {
        assert!(env.stdout.lines().any(|l| l == line), "no {line}\n{env}");
    }

    // Logs, with every kubectl release.
    for k in &kubectls {
        skiff_e2e::section(k);
        k.ok(&["logs", "web"])
            .assert_stdout_contains(&format!("web app starting on web at {ip}"));
        let stamped = k.ok(&["logs", "web", "--timestamps", "--tail=1"]);
        assert!(
            stamped.stdout.starts_with("20") && stamped.stdout.contains(" web app starting"),
            "{stamped}"
        );
        assert_eq!(k.ok(&["get", "pods"]).row("web")[2], "Running");
    }

    // Only the control plane may call the agent: the admin's certificate
    // (from the same CA) is refused, and so is no certificate at all.
    let _ = cp.http();
    let curl_agent = |with_cert: bool| {
        let mut cmd = node.command("curl");
        cmd.args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ]);
        if with_cert {
            cmd.arg("--cert")
                .arg(cp.dir().join("curl/client.crt"))
                .arg("--key")
                .arg(cp.dir().join("curl/client.key"));
        }
        cmd.arg(format!(
            "https://{}:10250/containerLogs/default/web/web",
            node.ip
        ));
        run_command(cmd, None).stdout
    };
    assert_eq!(curl_agent(true), "403");
    assert_eq!(curl_agent(false), "000");

    // /cgi-bin/kill: the container exits and comes back once. A follow
    // that was open sees its last words and ends with it.
    let follow = k.spawn(&["logs", "-f", "web"]);
    assert!(
        follow.wait_for_stdout(Duration::from_secs(10), |out| out
            .contains("web app starting")),
        "logs -f showed nothing\n{}",
        follow.stderr()
    );
    let killed = wget(&node, &format!("http://{ip}/cgi-bin/kill"));
    assert!(killed.stdout.contains("exiting"), "{killed}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let pod = pod_json(k, "web");
            container_status(&pod)["restartCount"] == 1
                && container_status(&pod)["state"]["running"].is_object()
        }),
        "the container did not restart\n{:#}\n--- agent log ---\n{}",
        pod_json(k, "web"),
        agent.stderr()
    );
    let followed = follow.wait(Duration::from_secs(10));
    assert!(
        followed.success() && followed.stdout.contains("webapp: exiting on /kill"),
        "logs -f did not end with the container\n{followed}"
    );
    let row = k.ok(&["get", "pods"]).row("web");
    assert_eq!(
        (row[2].as_str(), row[3].as_str()),
        ("Running", "1"),
        "{row:?}"
    );
    let pod = pod_json(k, "web");
    let status = container_status(&pod);
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1, "{pod:#}");
    let second_id = status["containerID"]
        .as_str()
        .expect("containerID")
        .to_owned();
    assert_ne!(second_id, first_id);
    k.ok(&["logs", "web", "--previous"])
        .assert_stdout_contains("webapp: exiting on /kill");
    assert!(
        wait_until(Duration::from_secs(10), || wget(
            &node,
            &format!("http://{ip}/")
        )
        .success()),
        "the restarted app does not answer"
    );

    // An agent restart adopts the pod: same container, nothing started.
    let first_run = agent.kill();
    let containers_before = containerd_containers(&cd);
    agent = pod_runtime_agent_in(&node, &agent_args(&cp, &gateway, None, &cd, dir.path()));
    assert!(
        agent.wait_for_stderr(Duration::from_secs(30), |log| log.contains(CONNECTED)),
        "the restarted agent did not connect\n--- agent log ---\n{}",
        agent.stderr()
    );
    // A few relists' worth of time to do anything it would wrongly do.
    std::thread::sleep(Duration::from_secs(3));
    let pod = pod_json(k, "web");
    assert_eq!(
        container_status(&pod)["containerID"],
        second_id.as_str(),
        "{pod:#}"
    );
    assert_eq!(container_status(&pod)["restartCount"], 1, "{pod:#}");
    assert_eq!(containerd_containers(&cd), containers_before);
    let log = agent.stderr();
    assert!(
        !log.contains("container started") && !log.contains("stopping"),
        "the restarted agent touched the pod\n--- first run ---\n{}\n--- second run ---\n{log}",
        first_run.stderr
    );
    assert!(wget(&node, &format!("http://{ip}/")).success());

    // The control plane goes away for a while: the pod keeps running, and
    // once it is back the agent reconnects and the node is Ready again.
    let connects = agent.stderr().matches(CONNECTED).count();
    cp.kill9();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        wget(&node, &format!("http://{ip}/")).success(),
        "the pod stopped answering while the control plane was down"
    );
    assert_eq!(containerd_containers(&cd), containers_before);
    cp.restart_reachable_at(&gateway);
    assert!(
        agent.wait_for_stderr(Duration::from_secs(30), |log| {
            log.matches(CONNECTED).count() > connects
        }),
        "the agent did not reconnect\n--- agent log ---\n{}",
        agent.stderr()
    );
    assert_eq!(k.ok(&["get", "nodes"]).row(NODE)[1], "Ready");
    let pod = pod_json(k, "web");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    assert_eq!(
        container_status(&pod)["containerID"],
        second_id.as_str(),
        "{pod:#}"
    );

    // Pod start latency: pods created one after another, each timed from
    // `kubectl create` to Running in a watch that was already open.
    let samples = pod_start_latencies(&cp, k, pod_starts());
    let mut sorted = samples.clone();
    sorted.sort();
    println!(
        "timing: pod start over {} pods: p50 {} ms, p90 {} ms, max {} ms (samples {:?})",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)],
        sorted[sorted.len() - 1],
        samples
    );

    if let Some(count) = burst_size() {
        let (all_running, rss_kb, idle_cpu) = burst(&cp, k, dir.path(), count);
        println!(
            "timing: {count} pods created at once, all Running after {all_running} ms; agent RSS {rss_kb} KiB; agent CPU while idle {idle_cpu:.2}% of a core"
        );
    }

    // An image tarball dropped into the images directory becomes runnable.
    let v2 = images::webapp_image(images_dir.path(), "2.0").expect("web app 2.0");
    let partial = dir.path().join("images").join(".webapp-2.0.tar");
    fs::copy(&v2.path, &partial).expect("copy the tarball");
    fs::rename(&partial, dir.path().join("images").join("webapp-2.0.tar")).expect("rename");
    assert!(
        wait_until(Duration::from_secs(20), || cd
            .images()
            .is_ok_and(|names| names.contains(&v2.name))),
        "the dropped image was not imported\n--- agent log ---\n{}",
        agent.stderr()
    );
    let v2_pod = cp.file(
        "v2.yaml",
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: v2\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: web\n    image: {}\n",
            v2.name
        ),
    );
    k.ok(&["create", "-f", v2_pod.to_str().expect("utf-8 path")]);
    assert!(
        wait_until(Duration::from_secs(20), || pod_json(k, "v2")["status"]
            ["phase"]
            == "Running"),
        "the pod of the dropped image did not run\n{:#}",
        pod_json(k, "v2")
    );
    let v2_ip = pod_json(k, "v2")["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let answer = wget(&node, &format!("http://{v2_ip}/"));
    assert_eq!(
        parse_webapp_reply(&answer.stdout),
        Some(("2.0".to_owned(), "v2".to_owned())),
        "{answer}"
    );
    k.ok(&["delete", "pod", "v2", "--wait=false"]);

    // Two containers: a shared emptyDir, a hostPath, 127.0.0.1 between
    // them, and their limits in their own cgroups.
    let host_dir = dir.path().join("hostpath");
    let multi = cp.file("multi.yaml", multi_yaml(&host_dir));
    k.ok(&["create", "-f", multi.to_str().expect("utf-8 path")]);
    assert!(
        wait_until(Duration::from_secs(20), || {
            k.run(&["logs", "multi", "-c", "reader"])
                .stdout
                .contains("quota:")
        }),
        "the reader never reported\n{:#}\n--- agent log ---\n{}",
        pod_json(k, "multi"),
        agent.stderr()
    );
    let report = k.ok(&["logs", "multi", "-c", "reader"]).stdout;
    for line in [
        "shared: shared-hello",
        "neighbour: Version 1.0 on multi",
        "memory: 33554432",
        "quota: 20000",
    ] {
        assert!(
            report.lines().any(|l| l.trim() == line),
            "no {line:?} in\n{report}"
        );
    }
    assert_eq!(
        fs::read_to_string(host_dir.join("hello")).ok().as_deref(),
        Some("host-hello\n")
    );
    k.ok(&["delete", "pod", "multi", "--wait=false"]);

    // Probes: readiness decides Ready, a failing liveness probe restarts.
    let probed = cp.file("probed.yaml", probed_yaml());
    k.ok(&["create", "-f", probed.to_str().expect("utf-8 path")]);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let pod = pod_json(k, "probed");
            let statuses = pod["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let by_name = |name: &str| {
                statuses
                    .iter()
                    .find(|c| c["name"] == name)
                    .cloned()
                    .unwrap_or_default()
            };
            by_name("ready")["ready"] == true
                && by_name("ready")["started"] == true
                && by_name("unready")["state"]["running"].is_object()
                && by_name("sick")["restartCount"].as_u64() >= Some(1)
        }),
        "the probes did not act\n{:#}\n--- agent log ---\n{}",
        pod_json(k, "probed"),
        agent.stderr()
    );
    let pod = pod_json(k, "probed");
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let unready = statuses
        .iter()
        .find(|c| c["name"] == "unready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(unready["ready"], false, "{pod:#}");
    let ready = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "False", "{pod:#}");
    // Its second failure puts the sick container in crash-loop backoff.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let pod = pod_json(k, "probed");
            pod["status"]["containerStatuses"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == "sick"))
                .is_some_and(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff")
        }),
        "no CrashLoopBackOff\n{:#}",
        pod_json(k, "probed")
    );
    let row = k.ok(&["get", "pod", "probed"]).row("probed");
    assert!(row[1] == "1/3" || row[1] == "2/3", "{row:?}");
    k.ok(&["delete", "pod", "probed", "--wait=false"]);

    // Deletion stops and removes the containers, then the pod goes away.
    let kubectl_133 = kubectls.last().expect("a kubectl");
    kubectl_133.ok(&["delete", "pod", "web", "--timeout=60s"]);
    assert!(!k.exists("pod", "web"));
    assert!(
        wait_until(Duration::from_secs(10), || containerd_containers(&cd)
            .is_empty()),
        "containers left in containerd: {:?}\n--- agent log ---\n{}",
        containerd_containers(&cd),
        agent.stderr()
    );
    assert!(
        !dir.path()
            .join("logs")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the pod's log directory was not removed"
    );

    drop(agent);
    cd.shutdown().expect("containerd teardown");
    underlay.delete().expect("underlay teardown");
    println!("timing: whole test: {} ms", began.elapsed().as_millis());
}
