//! The scheduler and the ReplicationController controller, end to end: a
//! real control plane, two real `skiff-agent` processes registering nodes
//! on loopback, and kubectl.
//!
//! No container runs here (the agents have no container runtime to talk
//! to), so pods are bound and never become Running or Ready; the tests
//! assert on placement, counts, events and deletion only.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{wait_until, Background, ControlPlane, Kubectl};

/// How long an agent gets to join and register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the controllers get to converge after a change. Far above
/// what they need; CI machines are shared.
const SETTLE: Duration = Duration::from_secs(60);

const REGISTERED: &str = "connected: the node is registered";
const NODES: [&str; 2] = ["ctl-node-a", "ctl-node-b"];

fn rc_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: v1
kind: ReplicationController
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: registry.example/nginx:1
"
    )
}

/// Starts an agent per node name, and waits until every node is Ready.
fn start_nodes(cp: &ControlPlane, k: &Kubectl) -> Vec<Background> {
    let token = cp.create_token();
    let agents: Vec<Background> = NODES
        .iter()
        .map(|name| {
            let mut cmd = cp.agent_command(Some(&token), name, &cp.dir().join(name));
            // No container runtime: pods are received, never started.
            cmd.arg("--containerd")
                .arg(cp.dir().join(format!("{name}-no-containerd.sock")));
            Background::spawn(cmd, None)
        })
        .collect();
    for (agent, name) in agents.iter().zip(NODES) {
        assert!(
            agent.wait_for_stderr(REGISTER_TIMEOUT, |log| log.contains(REGISTERED)),
            "agent {name} did not register\n--- agent log ---\n{}",
            agent.stderr()
        );
    }
    let ready = wait_until(REGISTER_TIMEOUT, || {
        let out = k.ok(&["get", "nodes"]);
        NODES.iter().all(|n| {
            out.lines()
                .iter()
                .any(|l| l.starts_with(n) && l.contains(" Ready"))
        })
    });
    assert!(ready, "nodes not Ready\n{}", k.run(&["get", "nodes"]));
    agents
}

/// The pods matching `selector` that are not being deleted.
fn active_pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    k.get_json(&["pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn node_of(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"].as_str().map(str::to_owned)
}

/// Waits until exactly `count` active pods match `selector`, all bound to
/// a node, and returns them.
#[track_caller]
fn wait_for_bound(k: &Kubectl, selector: &str, count: usize) -> Vec<Value> {
    let mut pods = Vec::new();
    let settled = wait_until(SETTLE, || {
        pods = active_pods(k, selector);
        pods.len() == count && pods.iter().all(|p| node_of(p).is_some())
    });
    assert!(
        settled,
        "expected {count} bound pods for {selector}, have {}\n{}",
        pods.len(),
        k.run(&["get", "pods", "-o", "wide", "--show-labels"])
    );
    pods
}

fn nodes_used(pods: &[Value]) -> BTreeSet<String> {
    pods.iter().filter_map(node_of).collect()
}

/// The events about one object, as `kubectl describe` asks for them.
fn events_for(k: &Kubectl, name: &str) -> Vec<Value> {
    k.get_json(&[
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn replication_controller_pods_are_scheduled_scaled_replaced_and_collected() {
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    let _agents = start_nodes(&cp, &k);

    // Three replicas, bound and spread over both nodes.
    let file = cp.file("rc.yaml", rc_yaml("web", 3));
    k.ok(&["create", "-f", file.to_str().unwrap()])
        .assert_stdout_contains("replicationcontroller/web created");
    let pods = wait_for_bound(&k, "app=web", 3);
    assert_eq!(
        nodes_used(&pods),
        NODES.iter().map(|n| n.to_string()).collect(),
        "replicas not spread\n{}",
        k.run(&["get", "pods", "-o", "wide"])
    );
    for pod in &pods {
        let name = name_of(pod);
        assert!(name.starts_with("web-"), "{name}");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicationController", "{pod:#}");
        assert_eq!(owner["controller"], true, "{pod:#}");
        let scheduled = pod["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(scheduled["status"], "True", "{pod:#}");
        let node = node_of(pod).unwrap_or_default();
        let expected = format!("Successfully assigned default/{name} to {node}");
        let seen = wait_until(SETTLE, || {
            events_for(&k, &name)
                .iter()
                .any(|e| e["reason"] == "Scheduled" && e["message"] == expected.as_str())
        });
        assert!(
            seen,
            "no Scheduled event for {name}\n{:#?}",
            events_for(&k, &name)
        );
    }
    let settled = wait_until(SETTLE, || {
        let row = k.ok(&["get", "rc", "web"]).row("web");
        row.get(1).map(String::as_str) == Some("3") && row.get(2).map(String::as_str) == Some("3")
    });
    assert!(
        settled,
        "DESIRED/CURRENT not 3/3\n{}",
        k.run(&["get", "rc", "web"])
    );
    let rc = k.get_json(&["rc", "web"]);
    assert_eq!(
        rc["status"]["observedGeneration"], rc["metadata"]["generation"],
        "{rc:#}"
    );
    let created = events_for(&k, "web");
    assert!(
        created.iter().any(|e| e["reason"] == "SuccessfulCreate"
            && e["source"]["component"] == "replication-controller"),
        "{created:#?}"
    );

    // Scale up, then down; the status follows.
    k.ok(&["scale", "rc", "web", "--replicas=5"]);
    let pods = wait_for_bound(&k, "app=web", 5);
    assert_eq!(nodes_used(&pods).len(), 2);
    k.ok(&["scale", "rc", "web", "--replicas=2"]);
    let pods = wait_for_bound(&k, "app=web", 2);
    assert!(
        wait_until(SETTLE, || k.get_json(&["rc", "web"])["status"]["replicas"]
            == 2),
        "{}",
        k.run(&["get", "rc", "web", "-o", "yaml"])
    );

    // A deleted pod is replaced.
    let victim = name_of(&pods[0]);
    k.ok(&["delete", "pod", &victim, "--wait=false"]);
    let mut replaced = Vec::new();
    let ok = wait_until(SETTLE, || {
        replaced = active_pods(&k, "app=web");
        replaced.len() == 2
            && replaced.iter().all(|p| node_of(p).is_some())
            && replaced.iter().all(|p| name_of(p) != victim)
    });
    assert!(
        ok,
        "{victim} was not replaced\n{}",
        k.run(&["get", "pods", "-o", "wide"])
    );

    // Deleting the controller deletes its pods.
    k.ok(&["delete", "rc", "web"])
        .assert_stdout_contains("replicationcontroller \"web\" deleted");
    let gone = wait_until(SETTLE, || {
        k.get_json(&["pods", "-l", "app=web"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert!(
        gone,
        "pods outlived their controller\n{}",
        k.run(&["get", "pods", "-o", "wide"])
    );
}

#[test]
fn a_pod_that_fits_nowhere_stays_pending_and_says_why() {
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    let _agents = start_nodes(&cp, &k);

    let pod = cp.file(
        "picky.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: picky\nspec:\n  nodeSelector:\n    disk: floppy\n  containers:\n  - name: c\n    image: registry.example/nginx:1\n",
    );
    k.ok(&["create", "-f", pod.to_str().unwrap()]);
    let expected = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. \
                    preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    let seen = wait_until(SETTLE, || {
        events_for(&k, "picky").iter().any(|e| {
            e["reason"] == "FailedScheduling" && e["type"] == "Warning" && e["message"] == expected
        })
    });
    assert!(
        seen,
        "no FailedScheduling event\n{:#?}",
        events_for(&k, "picky")
    );

    let object = k.get_json(&["pod", "picky"]);
    assert!(object["spec"]["nodeName"].is_null(), "{object:#}");
    assert_eq!(object["status"]["phase"], "Pending", "{object:#}");
    let condition = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(condition["status"], "False", "{object:#}");
    assert_eq!(condition["reason"], "Unschedulable", "{object:#}");
    assert_eq!(condition["message"], expected, "{object:#}");

    cp.each_kubectl(|k| {
        let out = k.ok(&["describe", "pod", "picky"]);
        out.assert_stdout_contains("FailedScheduling")
            .assert_stdout_contains("default-scheduler")
            .assert_stdout_contains("didn't match Pod's node affinity/selector");
    });

    // Labelling a node is a cluster change: the pod is retried and bound.
    k.ok(&["label", "node", NODES[1], "disk=floppy"]);
    let bound = wait_until(SETTLE, || {
        k.get_json(&["pod", "picky"])["spec"]["nodeName"] == NODES[1]
    });
    assert!(bound, "{}", k.run(&["get", "pod", "picky", "-o", "yaml"]));
}

#[test]
fn a_replica_set_adopts_a_matching_pod_and_keeps_its_count() {
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    let _agents = start_nodes(&cp, &k);

    // A bare pod that the ReplicaSet's selector will match.
    let stray = cp.file(
        "stray.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    app: api\nspec:\n  containers:\n  - name: c\n    image: registry.example/nginx:1\n",
    );
    k.ok(&["create", "-f", stray.to_str().unwrap()]);
    wait_for_bound(&k, "app=api", 1);

    let rs = cp.file(
        "rs.yaml",
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: api
spec:
  replicas: 2
  selector:
    matchExpressions:
    - {key: app, operator: In, values: [api]}
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
      - name: c
        image: registry.example/nginx:1
",
    );
    k.ok(&["create", "-f", rs.to_str().unwrap()]);
    let rs_uid = k.get_json(&["rs", "api"])["metadata"]["uid"].clone();
    let mut pods = Vec::new();
    let adopted = wait_until(SETTLE, || {
        pods = active_pods(&k, "app=api");
        pods.len() == 2
            && pods.iter().all(|p| {
                node_of(p).is_some() && p["metadata"]["ownerReferences"][0]["uid"] == rs_uid
            })
    });
    assert!(adopted, "{}", k.run(&["get", "pods", "-o", "yaml"]));
    assert!(
        pods.iter().any(|p| name_of(p) == "stray"),
        "the matching pod was not adopted: {pods:#?}"
    );
    let settled = wait_until(SETTLE, || {
        let row = k.ok(&["get", "rs", "api"]).row("api");
        row.get(1).map(String::as_str) == Some("2") && row.get(2).map(String::as_str) == Some("2")
    });
    assert!(settled, "{}", k.run(&["get", "rs", "api"]));

    k.ok(&["delete", "rs", "api"]);
    let gone = wait_until(SETTLE, || {
        k.get_json(&["pods", "-l", "app=api"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert!(gone, "{}", k.run(&["get", "pods", "-o", "wide"]));
}
