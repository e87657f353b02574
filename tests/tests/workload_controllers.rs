//! DaemonSets, Jobs, CronJobs and node lifecycle, end to end: a real
//! control plane, real kubectl, and simulated nodes that speak the node API
//! (no containerd): pods they are given report Running and Ready, or
//! Succeeded/Failed when their command carries a marker.
//!
//! Every control plane here runs with a 5 s node monitor grace period and
//! 3 s default toleration seconds, so that losing a node plays out in
//! seconds rather than minutes.

use std::sync::Once;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::fakenode::{
    ControlPlaneAddress, FakeNode, FakeNodeOptions, FAIL_MARKER, SUCCEED_MARKER,
};
use skiff_e2e::{wait_until, ControlPlane, Kubectl};

const WAIT: Duration = Duration::from_secs(60);

fn start_control_plane() -> ControlPlane {
    static SETTINGS: Once = Once::new();
    // Every test in this file wants the same settings, so setting them for
    // the whole process is race-free.
    SETTINGS.call_once(|| {
        std::env::set_var("SKIFF_NODE_MONITOR_GRACE_PERIOD", "5s");
        std::env::set_var("SKIFF_DEFAULT_NOT_READY_TOLERATION_SECONDS", "3");
        std::env::set_var("SKIFF_DEFAULT_UNREACHABLE_TOLERATION_SECONDS", "3");
    });
    ControlPlane::start()
}

fn start_node(address: &ControlPlaneAddress, name: &str) -> FakeNode {
    FakeNode::start(address, name, FakeNodeOptions::default())
}

fn wait_ready(k: &Kubectl, node: &FakeNode) {
    assert!(
        wait_until(WAIT, || {
            let out = k.run(&["get", "node", node.name(), "-o", "json"]);
            out.success() && ready_status(&out.json()) == "True"
        }),
        "node {} never became Ready\n--- node log ---\n{}",
        node.name(),
        node.log()
    );
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Pods matching `selector`, not being deleted.
fn live_pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    k.get_json(&["pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn nodes_of(pods: &[Value]) -> Vec<String> {
    let mut nodes: Vec<String> = pods.iter().map(node_of).collect();
    nodes.sort();
    nodes
}

#[test]
fn a_daemonset_runs_one_pod_per_node_including_nodes_that_join_later_and_rolls_out() {
    let cp = start_control_plane();
    let address = ControlPlaneAddress::of(&cp);
    let k = cp.kubectl();
    let a = start_node(&address, "sim-a");
    let b = start_node(&address, "sim-b");
    wait_ready(&k, &a);
    wait_ready(&k, &b);

    let ds = cp.file(
        "ds.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels:\n      app: agent\n  template:\n    metadata:\n      labels:\n        app: agent\n    spec:\n      containers:\n      - name: c\n        image: registry.example/agent:1\n",
    );
    k.ok(&["create", "-f", ds.to_str().unwrap()]);
    assert!(
        wait_until(WAIT, || nodes_of(&live_pods(&k, "app=agent"))
            == ["sim-a", "sim-b"]),
        "expected one pod on each node: {:?}",
        nodes_of(&live_pods(&k, "app=agent"))
    );
    k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .assert_stdout_contains("successfully rolled out");

    let pod = &live_pods(&k, "app=agent")[0];
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet",
        "{pod:#}"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    assert!(
        pod["metadata"]["labels"]["controller-revision-hash"].is_string(),
        "{pod:#}"
    );
    assert!(
        pod["metadata"]["labels"]["pod-template-generation"].is_string(),
        "{pod:#}"
    );
    let term = &pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0];
    assert_eq!(term["matchFields"][0]["key"], "metadata.name", "{pod:#}");
    assert_eq!(term["matchFields"][0]["values"][0], node_of(pod), "{pod:#}");
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"
                && t["effect"] == "NoExecute"
                && t["tolerationSeconds"].is_null()),
        "daemon pods tolerate unreachable nodes without limit: {tolerations:?}"
    );

    // A node that joins later gets its pod.
    let c = start_node(&address, "sim-c");
    wait_ready(&k, &c);
    assert!(
        wait_until(WAIT, || nodes_of(&live_pods(&k, "app=agent"))
            == ["sim-a", "sim-b", "sim-c"]),
        "the new node got no pod: {:?}",
        nodes_of(&live_pods(&k, "app=agent"))
    );
    k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let row = k.ok(&["get", "ds", "agent"]).row("agent");
    assert_eq!(
        &row[1..4],
        ["3", "3", "3"],
        "DESIRED CURRENT READY: {row:?}"
    );

    // A new template replaces the pods node by node.
    k.ok(&["set", "image", "ds/agent", "c=registry.example/agent:2"]);
    k.ok(&["rollout", "status", "ds/agent", "--timeout=90s"])
        .assert_stdout_contains("successfully rolled out");
    assert!(
        wait_until(WAIT, || {
            let pods = live_pods(&k, "app=agent");
            pods.len() == 3
                && pods
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == "registry.example/agent:2")
        }),
        "not every pod runs the new image: {:#?}",
        live_pods(&k, "app=agent")
    );
    let status = k.get_json(&["ds", "agent"])["status"].clone();
    assert_eq!(status["updatedNumberScheduled"], 3, "{status:#}");
    assert_eq!(status["numberAvailable"], 3, "{status:#}");
}

fn job_yaml(
    name: &str,
    completions: u32,
    parallelism: u32,
    backoff_limit: u32,
    marker: &str,
) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  completions: {completions}\n  parallelism: {parallelism}\n  backoffLimit: {backoff_limit}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: work\n        image: registry.example/busybox:1\n        command: [\"sh\", \"-c\", \"{marker}\"]\n"
    )
}

#[test]
fn jobs_complete_with_their_pods_or_fail_past_the_backoff_limit() {
    let cp = start_control_plane();
    let address = ControlPlaneAddress::of(&cp);
    let k = cp.kubectl();
    let node = start_node(&address, "sim-jobs");
    wait_ready(&k, &node);

    let ok = cp.file("ok.yaml", job_yaml("ok", 3, 2, 6, SUCCEED_MARKER));
    k.ok(&["create", "-f", ok.to_str().unwrap()]);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "--timeout=60s",
    ]);
    let job = k.get_json(&["job", "ok"]);
    assert_eq!(job["status"]["succeeded"], 3, "{job:#}");
    assert!(job["status"]["completionTime"].is_string(), "{job:#}");
    assert!(job["status"]["startTime"].is_string(), "{job:#}");
    let pods = k.get_json(&["pods", "-l", "job-name=ok"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pods.len(), 3, "exactly completions pods ran");
    for pod in &pods {
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert!(
            pod["metadata"]["labels"]["controller-uid"].is_string(),
            "{pod:#}"
        );
        assert!(
            pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "ok",
            "{pod:#}"
        );
    }
    let row = k.ok(&["get", "jobs", "ok"]).row("ok");
    assert!(row.iter().any(|cell| cell == "3/3"), "COMPLETIONS: {row:?}");

    let bad = cp.file("bad.yaml", job_yaml("bad", 1, 1, 1, FAIL_MARKER));
    k.ok(&["create", "-f", bad.to_str().unwrap()]);
    k.ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]);
    let job = k.get_json(&["job", "bad"]);
    let failed = job["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{job:#}");
    assert_eq!(
        job["status"]["failed"], 2,
        "backoffLimit 1 allows one retry: {job:#}"
    );
    assert!(job["status"]["active"].is_null(), "{job:#}");
}

const CRONJOB_YAML: &str = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: NAME\nspec:\n  schedule: \"*/1 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n          - name: hello\n            image: registry.example/busybox:1\n            command: [\"sh\", \"-c\", \"fakenode:succeed\"]\n";

#[test]
fn cronjobs_are_served_validated_and_make_jobs() {
    let cp = start_control_plane();
    let address = ControlPlaneAddress::of(&cp);
    let node = start_node(&address, "sim-cron");
    wait_ready(&cp.kubectl(), &node);

    cp.each_kubectl(|k| {
        let name = format!("hello-{}", k.tag());
        if k.minor() >= 21 {
            // kubectl 1.21 and later create batch/v1 CronJobs themselves.
            k.ok(&[
                "create", "cronjob", &name, "--image=registry.example/busybox:1",
                "--schedule=*/1 * * * *", "--", "sh", "-c", SUCCEED_MARKER,
            ]);
        } else {
            let file = cp.file(&format!("{name}.yaml"), CRONJOB_YAML.replace("NAME", &name));
            k.ok(&["create", "-f", file.to_str().unwrap()]);
        }
        let stored = k.get_json(&["cronjob", &name]);
        assert_eq!(stored["spec"]["concurrencyPolicy"], "Allow", "{stored:#}");
        assert_eq!(stored["spec"]["successfulJobsHistoryLimit"], 3, "{stored:#}");
        assert_eq!(stored["spec"]["failedJobsHistoryLimit"], 1, "{stored:#}");
        assert_eq!(stored["spec"]["suspend"], false, "{stored:#}");

        let out = k.ok(&["get", "cronjobs"]);
        let header = out.lines()[0].split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            header,
            ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
            "{out}"
        );
        let row = out.row(&name);
        assert_eq!(&row[1..8], ["*/1", "*", "*", "*", "*", "<none>", "False"], "{out}");
        k.ok(&["get", "cj", &name]);

        // A job made from the CronJob by hand runs to completion.
        let job = format!("{name}-manual");
        if k.minor() >= 21 {
            k.ok(&["create", "job", &job, &format!("--from=cronjob/{name}")]);
            let created = k.get_json(&["job", &job]);
            assert_eq!(created["metadata"]["ownerReferences"][0]["kind"], "CronJob", "{created:#}");
        } else {
            // kubectl 1.20 reads CronJobs only as batch/v1beta1.
            k.fails(&["create", "job", &job, &format!("--from=cronjob/{name}")]);
            let spec = stored["spec"]["jobTemplate"]["spec"].to_string();
            let manifest = format!(
                "{{\"apiVersion\":\"batch/v1\",\"kind\":\"Job\",\"metadata\":{{\"name\":\"{job}\"}},\"spec\":{spec}}}"
            );
            let file = cp.file(&format!("{job}.json"), manifest);
            k.ok(&["create", "-f", file.to_str().unwrap()]);
        }
        k.ok(&["wait", "--for=condition=complete", &format!("job/{job}"), "--timeout=60s"]);

        // A schedule that does not parse is refused, saying why.
        let bad = cp.file(
            &format!("bad-{name}.yaml"),
            CRONJOB_YAML
                .replace("NAME", &format!("bad-{name}"))
                .replace("*/1 * * * *", "61 * * * *"),
        );
        k.fails(&["create", "-f", bad.to_str().unwrap()])
            .assert_stderr_contains("spec.schedule")
            .assert_stderr_contains("minute value 61 is out of range 0-59");
        let zone = cp.file(
            &format!("zone-{name}.yaml"),
            CRONJOB_YAML
                .replace("NAME", &format!("zone-{name}"))
                .replace("  schedule:", "  timeZone: Mars/Olympus\n  schedule:"),
        );
        k.fails(&["create", "-f", zone.to_str().unwrap()])
            .assert_stderr_contains("unknown time zone Mars/Olympus");
    });
}

#[test]
fn a_silent_node_turns_unknown_is_tainted_and_its_replicas_move() {
    let cp = start_control_plane();
    let address = ControlPlaneAddress::of(&cp);
    let k = cp.kubectl();
    let mut a = start_node(&address, "sim-lost");
    let mut b = start_node(&address, "sim-kept");
    wait_ready(&k, &a);
    wait_ready(&k, &b);

    let rc = cp.file(
        "rc.yaml",
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\nspec:\n  replicas: 4\n  selector:\n    app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: registry.example/nginx:1\n",
    );
    k.ok(&["create", "-f", rc.to_str().unwrap()]);
    assert!(
        wait_until(WAIT, || {
            let pods = live_pods(&k, "app=web");
            pods.len() == 4 && pods.iter().all(|p| p["status"]["phase"] == "Running")
        }),
        "the replicas did not start: {:#?}",
        live_pods(&k, "app=web")
    );
    let pod = &live_pods(&k, "app=web")[0];
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 3),
        "DefaultTolerationSeconds with the configured seconds: {tolerations:?}"
    );
    // The spreading score puts replicas on both nodes.
    assert!(
        live_pods(&k, "app=web")
            .iter()
            .any(|p| node_of(p) == "sim-lost"),
        "no replica on the node about to be lost: {:?}",
        nodes_of(&live_pods(&k, "app=web"))
    );

    a.stop();
    assert!(
        wait_until(WAIT, || ready_status(&k.get_json(&["node", "sim-lost"]))
            == "Unknown"),
        "the silent node never turned Unknown: {:#}",
        k.get_json(&["node", "sim-lost"])
    );
    let node = k.get_json(&["node", "sim-lost"]);
    for condition in node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(condition["status"], "Unknown", "{node:#}");
        assert_eq!(condition["reason"], "NodeStatusUnknown", "{node:#}");
        assert_eq!(
            condition["message"], "Kubelet stopped posting node status.",
            "{node:#}"
        );
    }
    let taints: Vec<(String, String)> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or_default().to_owned(),
                t["effect"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(
            taints.contains(&(
                "node.kubernetes.io/unreachable".to_owned(),
                effect.to_owned()
            )),
            "missing unreachable:{effect}: {taints:?}"
        );
    }
    assert_eq!(k.ok(&["get", "nodes"]).row("sim-lost")[1], "NotReady");

    // After the 3 s toleration the pods there are evicted (they stay
    // Terminating: no agent confirms their end), and the replication
    // controller replaces them on the node that is left.
    assert!(
        wait_until(WAIT, || {
            let pods = live_pods(&k, "app=web");
            pods.len() == 4
                && pods
                    .iter()
                    .all(|p| node_of(p) == "sim-kept" && p["status"]["phase"] == "Running")
        }),
        "the replicas did not move: {:?}",
        nodes_of(&live_pods(&k, "app=web"))
    );

    let events = k.get_json(&["events"]);
    assert!(
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "TaintManagerEviction"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Marking for deletion Pod default/web-"))),
        "no eviction event: {events:#}"
    );

    // The node comes back: Ready again, the taints go, and its evicted
    // pods finish terminating.
    let back = start_node(&address, "sim-lost");
    wait_ready(&k, &back);
    assert!(
        wait_until(WAIT, || k.get_json(&["node", "sim-lost"])["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t
                .iter()
                .all(|t| t["key"] != "node.kubernetes.io/unreachable"))),
        "the unreachable taint stayed: {:#}",
        k.get_json(&["node", "sim-lost"])
    );
    assert!(
        wait_until(WAIT, || k.get_json(&["pods", "-l", "app=web"])["items"]
            .as_array()
            .is_some_and(|pods| pods.len() == 4)),
        "the evicted pods never finished: {:#}",
        k.get_json(&["pods", "-l", "app=web"])
    );

    // A Node deleted for good takes its pods with it, and the replicas
    // come back on the node that is left.
    b.stop();
    k.ok(&["delete", "node", "sim-kept"]);
    assert!(
        wait_until(WAIT, || {
            let all = k.get_json(&["pods", "-l", "app=web"])["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            all.len() == 4
                && all
                    .iter()
                    .all(|p| node_of(p) == "sim-lost" && p["status"]["phase"] == "Running")
        }),
        "the deleted node's pods were not replaced: {:#}",
        k.get_json(&["pods", "-l", "app=web"])
    );
}
