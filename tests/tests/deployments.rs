//! The Deployment controller, end to end: a real control plane, real
//! `skiff-agent` processes registering nodes on loopback, and kubectl's
//! client-side rollout commands (`set image --record`, `rollout history`,
//! `rollout undo`, `rollout pause/resume`, `rollout status`, `scale`).
//!
//! No container runs here (the agents have no container runtime to talk
//! to), so pods are bound and never become Ready. A rolling update then
//! stops where `maxUnavailable` says it must, which is what the tests
//! assert; they never wait for a rollout to complete.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{wait_until, Background, ControlPlane, Kubectl};

/// How long an agent gets to join and register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the controllers get to converge after a change. Far above
/// what they need; CI machines are shared.
const SETTLE: Duration = Duration::from_secs(60);
/// How long a state must hold to count as settled.
const STEADY: Duration = Duration::from_secs(2);

const REGISTERED: &str = "connected: the node is registered";
const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Starts an agent per node name, and waits until every node is Ready.
fn start_nodes(cp: &ControlPlane, k: &Kubectl, names: &[&str]) -> Vec<Background> {
    let token = cp.create_token();
    let agents: Vec<Background> = names
        .iter()
        .map(|name| {
            let mut cmd = cp.agent_command(Some(&token), name, &cp.dir().join(name));
            // No container runtime: pods are received, never started.
            cmd.arg("--containerd")
                .arg(cp.dir().join(format!("{name}-no-containerd.sock")));
            Background::spawn(cmd, None)
        })
        .collect();
    for (agent, name) in agents.iter().zip(names) {
        assert!(
            agent.wait_for_stderr(REGISTER_TIMEOUT, |log| log.contains(REGISTERED)),
            "agent {name} did not register\n--- agent log ---\n{}",
            agent.stderr()
        );
    }
    let ready = wait_until(REGISTER_TIMEOUT, || {
        let out = k.ok(&["get", "nodes"]);
        names.iter().all(|n| {
            out.lines()
                .iter()
                .any(|l| l.starts_with(n) && l.contains(" Ready"))
        })
    });
    assert!(ready, "nodes not Ready\n{}", k.run(&["get", "nodes"]));
    agents
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn annotation<'a>(object: &'a Value, key: &str) -> &'a str {
    object["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

fn items(list: Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The ReplicaSets the deployment controls, as `kubectl rollout history`
/// finds them: by the deployment's selector, then by controller uid.
fn replica_sets(k: &Kubectl, name: &str) -> Vec<Value> {
    let deployment = k.get_json(&["deployment", name]);
    let uid = text(&deployment, "/metadata/uid").to_owned();
    items(k.get_json(&["rs", "-l", &format!("app={name}")]))
        .into_iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["controller"] == true && r["uid"] == uid.as_str())
        })
        .collect()
}

/// Revision -> (image, spec.replicas) of each ReplicaSet.
fn revisions(k: &Kubectl, name: &str) -> BTreeMap<String, (String, i64)> {
    replica_sets(k, name)
        .iter()
        .map(|rs| {
            (
                annotation(rs, REVISION).to_owned(),
                (
                    text(rs, "/spec/template/spec/containers/0/image").to_owned(),
                    rs["spec"]["replicas"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}

fn image(tag: &str) -> String {
    format!("registry.example/web:{tag}")
}

fn expect(pairs: &[(&str, &str, i64)]) -> BTreeMap<String, (String, i64)> {
    pairs
        .iter()
        .map(|(revision, tag, replicas)| (revision.to_string(), (image(tag), *replicas)))
        .collect()
}

/// Waits until the ReplicaSets are `expected` and stay so for a moment.
#[track_caller]
fn wait_for_revisions(k: &Kubectl, name: &str, expected: &BTreeMap<String, (String, i64)>) {
    let reached = wait_until(SETTLE, || revisions(k, name) == *expected);
    assert!(
        reached,
        "replica sets of {name}: want {expected:?}, have {:?}\n{}",
        revisions(k, name),
        k.run(&["get", "rs", "-o", "wide", "--show-labels"])
    );
    std::thread::sleep(STEADY);
    assert_eq!(
        revisions(k, name),
        *expected,
        "replica sets of {name} did not stay put\n{}",
        k.run(&["get", "rs", "-o", "wide"])
    );
}

/// Pods of the deployment that are not being deleted.
fn active_pods(k: &Kubectl, name: &str) -> Vec<Value> {
    items(k.get_json(&["pods", "-l", &format!("app={name}")]))
        .into_iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// The deployment's condition of `kind`, once the controller has
/// observed its latest spec.
fn condition(k: &Kubectl, name: &str, kind: &str) -> Value {
    let d = k.get_json(&["deployment", name]);
    if d["status"]["observedGeneration"] != d["metadata"]["generation"] {
        return Value::Null;
    }
    d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or(Value::Null)
}

#[track_caller]
fn wait_for_condition(k: &Kubectl, name: &str, kind: &str, reason: &str) -> Value {
    let mut last = Value::Null;
    let seen = wait_until(SETTLE, || {
        last = condition(k, name, kind);
        last["reason"] == reason
    });
    assert!(
        seen,
        "{name}: condition {kind} never had reason {reason}; last {last}\n{}",
        k.run(&["get", "deployment", name, "-o", "yaml"])
    );
    last
}

/// History rows: revision -> change cause.
fn history(k: &Kubectl, name: &str) -> BTreeMap<String, String> {
    let out = k.ok(&["rollout", "history", &format!("deployment/{name}")]);
    out.lines()
        .into_iter()
        .filter_map(|line| {
            let (revision, cause) = line.trim().split_once(char::is_whitespace)?;
            revision
                .parse::<u32>()
                .ok()
                .map(|_| (revision.to_owned(), cause.trim().to_owned()))
        })
        .collect()
}

#[test]
fn rolling_update_history_rollback_scale_pause_and_delete() {
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    let _agents = start_nodes(&cp, &k, &["dep-node-a", "dep-node-b"]);
    cp.each_kubectl(|k| {
        let name = format!("web-{}", k.tag());
        let dep = format!("deployment/{name}");

        // One ReplicaSet, revision 1, and its pod, bound to a node.
        k.ok(&["create", "deployment", &name, &format!("--image={}", image("v1"))])
            .assert_stdout_contains(&format!("deployment.apps/{name} created"));
        wait_for_revisions(k, &name, &expect(&[("1", "v1", 1)]));
        let first = replica_sets(k, &name).remove(0);
        let hash = text(&first, "/metadata/labels/pod-template-hash").to_owned();
        assert!(!hash.is_empty(), "{first:#}");
        assert_eq!(text(&first, "/metadata/name"), format!("{name}-{hash}"));
        assert_eq!(first["spec"]["selector"]["matchLabels"]["pod-template-hash"], hash.as_str());
        assert_eq!(
            first["spec"]["template"]["metadata"]["labels"]["pod-template-hash"],
            hash.as_str()
        );
        let bound = wait_until(SETTLE, || {
            let pods = active_pods(k, &name);
            pods.len() == 1
                && pods.iter().all(|p| {
                    p["spec"]["nodeName"].is_string()
                        && p["metadata"]["labels"]["pod-template-hash"] == hash.as_str()
                })
        });
        assert!(bound, "{}", k.run(&["get", "pods", "-o", "wide", "--show-labels"]));
        let d = k.get_json(&["deployment", &name]);
        assert_eq!(annotation(&d, REVISION), "1", "{d:#}");

        // Scaling with one ReplicaSet resizes it.
        k.ok(&["scale", "--replicas=4", &dep])
            .assert_stdout_contains(&format!("deployment.apps/{name} scaled"));
        wait_for_revisions(k, &name, &expect(&[("1", "v1", 4)]));
        assert!(
            wait_until(SETTLE, || active_pods(k, &name).len() == 4),
            "{}",
            k.run(&["get", "pods", "-o", "wide"])
        );

        // A new image: a second ReplicaSet with revision 2 and the change
        // cause. Nothing becomes ready, so with 25% of 4 (one pod) each
        // way the rollout stops at 2 new and 3 old.
        k.ok(&["set", "image", &dep, &format!("web={}", image("v2")), "--record"])
            .assert_stdout_contains(&format!("deployment.apps/{name} image updated"));
        wait_for_revisions(k, &name, &expect(&[("1", "v1", 3), ("2", "v2", 2)]));
        let second = replica_sets(k, &name)
            .into_iter()
            .find(|rs| annotation(rs, REVISION) == "2")
            .unwrap_or_default();
        assert!(
            annotation(&second, CHANGE_CAUSE).contains("set image"),
            "{second:#}"
        );
        let d = k.get_json(&["deployment", &name]);
        assert_eq!(annotation(&d, REVISION), "2", "{d:#}");
        let progressing = wait_for_condition(k, &name, "Progressing", "ReplicaSetUpdated");
        assert_eq!(
            progressing["message"],
            format!("ReplicaSet \"{}\" is progressing.", text(&second, "/metadata/name")),
        );
        let available = condition(k, &name, "Available");
        assert_eq!(available["status"], "False", "{available}");
        assert_eq!(available["reason"], "MinimumReplicasUnavailable");
        let settled = wait_until(SETTLE, || {
            let d = k.get_json(&["deployment", &name]);
            d["status"]["updatedReplicas"] == 2 && d["status"]["replicas"] == 5
        });
        assert!(settled, "{}", k.run(&["get", "deployment", &name, "-o", "yaml"]));
        k.ok(&["rollout", "status", &dep, "--watch=false"]).assert_stdout_contains(&format!(
            "Waiting for deployment \"{name}\" rollout to finish: 2 out of 4 new replicas have been updated..."
        ));
        let out = k.ok(&["get", "deployment", &name]);
        assert_eq!(out.row(&name)[1..4], ["0/4", "2", "0"], "READY UP-TO-DATE AVAILABLE\n{out}");

        // History: both revisions, the second with its cause.
        let rows = history(k, &name);
        assert_eq!(rows.keys().collect::<Vec<_>>(), ["1", "2"], "{rows:?}");
        assert_eq!(rows["1"], "<none>");
        assert!(rows["2"].contains("set image") && rows["2"].contains(&image("v2")), "{rows:?}");
        k.ok(&["rollout", "history", &dep, "--revision=2"])
            .assert_stdout_contains(&image("v2"))
            .assert_stdout_contains("pod-template-hash=");
        k.ok(&["rollout", "history", &dep, "--revision=1"])
            .assert_stdout_contains(&image("v1"));

        // Back to revision 1: its ReplicaSet is reused as revision 3.
        k.ok(&["rollout", "undo", &dep, "--to-revision=1"])
            .assert_stdout_contains(&format!("deployment.apps/{name} rolled back"));
        wait_for_revisions(k, &name, &expect(&[("3", "v1", 3), ("2", "v2", 2)]));
        let d = k.get_json(&["deployment", &name]);
        assert_eq!(text(&d, "/spec/template/spec/containers/0/image"), image("v1"));
        assert!(
            wait_until(SETTLE, || annotation(&k.get_json(&["deployment", &name]), REVISION) == "3"),
            "{}",
            k.run(&["get", "deployment", &name, "-o", "yaml"])
        );
        let reused = replica_sets(k, &name)
            .into_iter()
            .find(|rs| annotation(rs, REVISION) == "3")
            .unwrap_or_default();
        assert_eq!(text(&reused, "/metadata/name"), format!("{name}-{hash}"));
        assert_eq!(annotation(&reused, "deployment.kubernetes.io/revision-history"), "1");
        let rows = history(k, &name);
        assert_eq!(rows.keys().collect::<Vec<_>>(), ["2", "3"], "{rows:?}");
        k.fails(&["rollout", "undo", &dep, "--to-revision=1"])
            .assert_stderr_contains("unable to find specified revision 1 in history");
        k.ok(&["rollout", "undo", &dep, "--to-revision=3"])
            .assert_stdout_contains("skipped rollback (current template already matches revision 3)");

        // Scaling mid-rollout: the spec changes, and the new ReplicaSet
        // (and the old one, in proportion) take the difference, up to
        // 5 + 2 surge.
        k.ok(&["scale", "--replicas=5", &dep])
            .assert_stdout_contains(&format!("deployment.apps/{name} scaled"));
        assert_eq!(k.get_json(&["deployment", &name])["spec"]["replicas"], 5);
        wait_for_revisions(k, &name, &expect(&[("3", "v1", 4), ("2", "v2", 3)]));

        // Paused: a new template rolls nothing out; resumed: it does.
        k.ok(&["rollout", "pause", &dep])
            .assert_stdout_contains(&format!("deployment.apps/{name} paused"));
        wait_for_condition(k, &name, "Progressing", "DeploymentPaused");
        k.ok(&["set", "image", &dep, &format!("web={}", image("v3"))]);
        wait_for_revisions(k, &name, &expect(&[("3", "v1", 4), ("2", "v2", 3)]));
        let rows = history(k, &name);
        assert_eq!(rows.keys().collect::<Vec<_>>(), ["2", "3"], "{rows:?}");
        k.ok(&["rollout", "resume", &dep])
            .assert_stdout_contains(&format!("deployment.apps/{name} resumed"));
        let rolled = wait_until(SETTLE, || {
            revisions(k, &name)
                .get("4")
                .is_some_and(|(image_now, replicas)| *image_now == image("v3") && *replicas > 0)
        });
        assert!(rolled, "{:?}\n{}", revisions(k, &name), k.run(&["get", "rs", "-o", "wide"]));

        // Deleting the deployment deletes its ReplicaSets and their pods.
        k.ok(&["delete", "deployment", &name])
            .assert_stdout_contains(&format!("deployment.apps \"{name}\" deleted"));
        let gone = wait_until(SETTLE, || {
            items(k.get_json(&["rs", "-l", &format!("app={name}")])).is_empty()
                && items(k.get_json(&["pods", "-l", &format!("app={name}")])).is_empty()
        });
        assert!(gone, "{}", k.run(&["get", "rs,pods", "-o", "wide"]));
    });
}

fn recreate_yaml(name: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: 2
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: {}
",
        image("v1")
    )
}

#[test]
fn recreate_removes_old_pods_before_creating_new_ones() {
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    let _agents = start_nodes(&cp, &k, &["rec-node-a", "rec-node-b"]);
    let name = "rec";
    let file = cp.file("recreate.yaml", recreate_yaml(name));
    k.ok(&["create", "-f", file.to_str().unwrap_or_default()]);
    wait_for_revisions(&k, name, &expect(&[("1", "v1", 2)]));
    assert!(
        wait_until(SETTLE, || active_pods(&k, name).len() == 2),
        "{}",
        k.run(&["get", "pods", "-o", "wide"])
    );
    let old_hash = text(
        &replica_sets(&k, name)[0],
        "/metadata/labels/pod-template-hash",
    )
    .to_owned();

    k.ok(&[
        "set",
        "image",
        &format!("deployment/{name}"),
        &format!("web={}", image("v2")),
    ]);
    // Whenever the new ReplicaSet exists, no pod of the old one is left,
    // not even a terminating one. ReplicaSets are read before pods, so a
    // pod seen after the new set was seen existed with it.
    let mut finished = false;
    let deadline = std::time::Instant::now() + SETTLE;
    while std::time::Instant::now() < deadline {
        let new_exists = revisions(&k, name).contains_key("2");
        let old_pods: Vec<String> =
            items(k.get_json(&["pods", "-l", &format!("pod-template-hash={old_hash}")]))
                .iter()
                .map(|p| text(p, "/metadata/name").to_owned())
                .collect();
        assert!(
            !new_exists || old_pods.is_empty(),
            "the new ReplicaSet exists while old pods remain: {old_pods:?}\n{}",
            k.run(&["get", "rs,pods", "-o", "wide"])
        );
        if new_exists && revisions(&k, name) == expect(&[("1", "v1", 0), ("2", "v2", 2)]) {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        finished,
        "{:?}\n{}",
        revisions(&k, name),
        k.run(&["get", "rs,pods", "-o", "wide"])
    );
    assert!(
        wait_until(SETTLE, || active_pods(&k, name).len() == 2),
        "{}",
        k.run(&["get", "pods", "-o", "wide"])
    );

    // The events tell the same order: down to 0 first, then up.
    let events = items(k.get_json(&[
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ]));
    let order = |prefix: &str| {
        events
            .iter()
            .filter(|e| {
                e["reason"] == "ScalingReplicaSet" && text(e, "/message").starts_with(prefix)
            })
            .filter_map(|e| text(e, "/metadata/resourceVersion").parse::<u64>().ok())
            .max()
    };
    let down = order(&format!(
        "Scaled down replica set {name}-{old_hash} from 2 to 0"
    ));
    let up = events
        .iter()
        .filter(|e| {
            text(e, "/message").starts_with("Scaled up replica set")
                && text(e, "/message").ends_with("from 0 to 2")
                && !text(e, "/message").contains(&old_hash)
        })
        .filter_map(|e| text(e, "/metadata/resourceVersion").parse::<u64>().ok())
        .max();
    assert!(
        matches!((down, up), (Some(d), Some(u)) if d < u),
        "{events:#?}"
    );
}

fn deployment_yaml(name: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
{extra_spec}  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: {}
",
        image("v1")
    )
}

#[test]
fn progress_deadline_and_revision_history_limit() {
    // No nodes: pods stay Pending, which is all these need.
    let cp = ControlPlane::start();
    let k = cp.kubectl();

    // Never ready: after its deadline, the rollout reports the timeout.
    let file = cp.file(
        "slow.yaml",
        deployment_yaml("slow", 1, "  progressDeadlineSeconds: 3\n"),
    );
    k.ok(&["create", "-f", file.to_str().unwrap_or_default()]);
    let timed_out = wait_for_condition(&k, "slow", "Progressing", "ProgressDeadlineExceeded");
    assert_eq!(timed_out["status"], "False");
    let rs = replica_sets(&k, "slow").remove(0);
    assert_eq!(
        timed_out["message"],
        format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            text(&rs, "/metadata/name")
        )
    );
    k.fails(&["rollout", "status", "deployment/slow", "--timeout=30s"])
        .assert_stderr_contains("deployment \"slow\" exceeded its progress deadline");

    // Zero replicas complete at once; only one old revision is kept.
    let file = cp.file(
        "lean.yaml",
        deployment_yaml("lean", 0, "  revisionHistoryLimit: 1\n"),
    );
    k.ok(&["create", "-f", file.to_str().unwrap_or_default()]);
    wait_for_condition(&k, "lean", "Progressing", "NewReplicaSetAvailable");
    k.ok(&["rollout", "status", "deployment/lean", "--timeout=30s"])
        .assert_stdout_contains("deployment \"lean\" successfully rolled out");
    let available = condition(&k, "lean", "Available");
    assert_eq!(
        (available["status"].clone(), available["reason"].clone()),
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    for tag in ["v2", "v3"] {
        k.ok(&[
            "set",
            "image",
            "deployment/lean",
            &format!("web={}", image(tag)),
        ]);
        wait_for_condition(&k, "lean", "Progressing", "NewReplicaSetAvailable");
    }
    let kept = wait_until(SETTLE, || {
        let revisions = revisions(&k, "lean");
        revisions == expect(&[("2", "v2", 0), ("3", "v3", 0)])
    });
    assert!(kept, "{:?}", revisions(&k, "lean"));
    let rows = history(&k, "lean");
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["2", "3"], "{rows:?}");
}
