//! Deleting: by set-based label selector, and with each propagation policy
//! (background, orphan, foreground) so that garbage collection through
//! ownerReferences is exercised.

use std::time::Duration;

use serde_json::json;
use skiff_e2e::{wait_until, ControlPlane, Kubectl};

/// Garbage collection is asynchronous; this bounds how long it may take
/// before a test gives up (it is not a performance target).
const GC_TIMEOUT: Duration = Duration::from_secs(30);

fn rc_json(name: &str, label: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": name, "labels": {"name": label}},
        "spec": {
            "replicas": 1,
            "selector": {"name": label},
            "template": {
                "metadata": {"labels": {"name": label}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.19"}]}
            }
        }
    })
    .to_string()
}

fn svc_json(name: &str, label: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"name": label}},
        "spec": {"selector": {"name": label}, "ports": [{"port": 80}]}
    })
    .to_string()
}

fn names(k: &Kubectl, kind: &str, selector: &str) -> Vec<String> {
    let mut v: Vec<String> = k
        .ok(&["get", kind, "-l", selector, "-o", "name"])
        .lines()
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn delete_by_set_based_label_selector() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();
        let [a, b, c] = ["master", "slave", "frontend"].map(|n| format!("{n}-{t}"));
        for n in [&a, &b, &c] {
            k.ok_stdin(&["create", "-f", "-"], &rc_json(n, n));
            k.ok_stdin(&["create", "-f", "-"], &svc_json(n, n));
        }
        let all = format!("name in ({a}, {b}, {c})");
        assert_eq!(names(k, "rc", &all).len(), 3);

        // The selector as users type it, with spaces: kubectl sends it
        // +-encoded and the server must parse the set syntax.
        let sel = format!("name in ({a}, {b})");
        let out = k.ok(&["delete", "rc", "-l", &sel]);
        out.assert_stdout_contains(&format!("replicationcontroller \"{a}\" deleted"))
            .assert_stdout_contains(&format!("replicationcontroller \"{b}\" deleted"))
            .assert_stdout_lacks(&c);
        let out = k.ok(&["delete", "service", "-l", &sel]);
        out.assert_stdout_contains(&format!("service \"{a}\" deleted"))
            .assert_stdout_contains(&format!("service \"{b}\" deleted"))
            .assert_stdout_lacks(&c);

        assert_eq!(
            names(k, "rc", &all),
            vec![format!("replicationcontroller/{c}")]
        );
        assert_eq!(names(k, "svc", &all), vec![format!("service/{c}")]);
        for n in [&a, &b] {
            k.fails(&["get", "rc", n])
                .assert_stderr_contains("(NotFound)");
            k.fails(&["get", "svc", n])
                .assert_stderr_contains("(NotFound)");
        }

        // notin and existence selectors select the complement.
        let out = k.ok(&[
            "get",
            "svc",
            "-l",
            &format!("name,name notin ({a}, {b})"),
            "-o",
            "name",
        ]);
        assert!(
            out.lines().contains(&format!("service/{c}").as_str()),
            "{out}"
        );
        k.ok(&["delete", "rc,svc", "-l", &format!("name={c}")]);
        assert!(names(k, "rc", &all).is_empty());
        assert!(names(k, "svc", &all).is_empty());
    });
}

fn uid(k: &Kubectl, kind: &str, name: &str) -> String {
    let uid = k
        .ok(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
        .stdout
        .trim()
        .to_owned();
    assert!(!uid.is_empty(), "{kind}/{name} has no uid");
    uid
}

/// Creates a ConfigMap owner and two ConfigMap dependents pointing at it.
fn configmap_family(k: &Kubectl, owner: &str) -> [String; 2] {
    k.ok(&["create", "configmap", owner, "--from-literal=role=owner"]);
    let owner_uid = uid(k, "configmap", owner);
    let deps = [format!("{owner}-dep1"), format!("{owner}-dep2")];
    for d in &deps {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": d,
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": owner_uid,
                    "blockOwnerDeletion": true
                }]
            },
            "data": {"role": "dependent"}
        });
        k.ok_stdin(&["create", "-f", "-"], &obj.to_string());
    }
    deps
}

/// Creates a ReplicationController with two replicas and returns the names
/// of the two pods its controller creates for it.
fn rc_family(k: &Kubectl, rc: &str) -> [String; 2] {
    let label = rc.to_owned();
    let mut spec: serde_json::Value = serde_json::from_str(&rc_json(rc, &label)).unwrap();
    spec["spec"]["replicas"] = json!(2);
    k.ok_stdin(&["create", "-f", "-"], &spec.to_string());
    let rc_uid = uid(k, "rc", rc);
    let mut pods = Vec::new();
    let created = wait_until(GC_TIMEOUT, || {
        pods = k.get_json(&["pods", "-l", &format!("name={label}")])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == rc_uid.as_str())
    });
    assert!(
        created,
        "the controller did not create 2 pods for {rc}\n{}",
        k.run(&["get", "pods", "--show-labels"])
    );
    let names: Vec<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    [names[0].clone(), names[1].clone()]
}

#[track_caller]
fn assert_gone_eventually(k: &Kubectl, kind: &str, names: &[String]) {
    let gone = wait_until(GC_TIMEOUT, || names.iter().all(|n| !k.exists(kind, n)));
    assert!(
        gone,
        "dependents {names:?} still exist {GC_TIMEOUT:?} after their owner was deleted\n{}",
        k.run(&["get", kind, "-o", "yaml"])
    );
}

/// Orphaned dependents stay, and lose the ownerReference to the deleted
/// owner (otherwise a later garbage collection pass would delete them).
#[track_caller]
fn assert_orphaned(k: &Kubectl, kind: &str, names: &[String]) {
    let stripped = wait_until(GC_TIMEOUT, || {
        names.iter().all(|n| {
            let obj = k.get_json(&[kind, n]);
            obj["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty())
        })
    });
    assert!(
        stripped,
        "orphaned dependents {names:?} still carry ownerReferences\n{}",
        k.run(&["get", kind, "-o", "yaml"])
    );
    for n in names {
        assert!(k.exists(kind, n), "orphaned {kind}/{n} was deleted");
    }
}

#[test]
fn delete_propagation_configmap_owner() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();

        // Background (kubectl's default): owner goes at once, dependents after.
        let owner = format!("owner-bg-{t}");
        let deps = configmap_family(k, &owner);
        k.ok(&["delete", "configmap", &owner])
            .assert_stdout_contains(&format!("configmap \"{owner}\" deleted"));
        assert!(!k.exists("configmap", &owner));
        assert_gone_eventually(k, "configmap", &deps);

        // Orphan.
        let owner = format!("owner-or-{t}");
        let deps = configmap_family(k, &owner);
        k.ok(&["delete", "configmap", &owner, "--cascade=orphan"])
            .assert_stdout_contains(&format!("configmap \"{owner}\" deleted"));
        assert!(
            wait_until(GC_TIMEOUT, || !k.exists("configmap", &owner)),
            "owner not deleted"
        );
        assert_orphaned(k, "configmap", &deps);

        // Foreground: kubectl waits for the owner, which goes last.
        let owner = format!("owner-fg-{t}");
        let deps = configmap_family(k, &owner);
        k.ok(&["delete", "configmap", &owner, "--cascade=foreground"])
            .assert_stdout_contains(&format!("configmap \"{owner}\" deleted"));
        assert!(
            wait_until(GC_TIMEOUT, || !k.exists("configmap", &owner)),
            "owner not deleted"
        );
        assert_gone_eventually(k, "configmap", &deps);

        // Unrelated objects are untouched by all of this.
        k.ok(&["create", "configmap", &format!("bystander-{t}")]);
        let owner = format!("owner-bg2-{t}");
        let deps = configmap_family(k, &owner);
        k.ok(&["delete", "configmap", &owner]);
        assert_gone_eventually(k, "configmap", &deps);
        assert!(k.exists("configmap", &format!("bystander-{t}")));
    });
}

#[test]
fn delete_propagation_replication_controller_owner() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();

        let rc = format!("gc-bg-{t}");
        let pods = rc_family(k, &rc);
        k.ok(&["delete", "rc", &rc])
            .assert_stdout_contains(&format!("replicationcontroller \"{rc}\" deleted"));
        assert!(!k.exists("rc", &rc));
        assert_gone_eventually(k, "pod", &pods);

        let rc = format!("gc-or-{t}");
        let pods = rc_family(k, &rc);
        k.ok(&["delete", "rc", &rc, "--cascade=orphan"]);
        assert!(
            wait_until(GC_TIMEOUT, || !k.exists("rc", &rc)),
            "rc not deleted"
        );
        assert_orphaned(k, "pod", &pods);

        let rc = format!("gc-fg-{t}");
        let pods = rc_family(k, &rc);
        k.ok(&["delete", "rc", &rc, "--cascade=foreground"]);
        assert!(
            wait_until(GC_TIMEOUT, || !k.exists("rc", &rc)),
            "rc not deleted"
        );
        assert_gone_eventually(k, "pod", &pods);
    });
}

#[test]
fn delete_propagation_policy_over_raw_http() {
    // The same policies as a DeleteOptions body, without kubectl in between.
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    let http = cp.http();
    for (policy, owner) in [
        ("Background", "raw-bg"),
        ("Orphan", "raw-or"),
        ("Foreground", "raw-fg"),
    ] {
        let deps = configmap_family(&k, owner);
        let body =
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy})
                .to_string();
        let r = http.request(
            "DELETE",
            &format!("/api/v1/namespaces/default/configmaps/{owner}"),
            Some("application/json"),
            Some(body.as_bytes()),
        );
        assert!(
            r.status == 200 || r.status == 202,
            "DELETE with {policy}\n{r}"
        );
        assert!(
            wait_until(GC_TIMEOUT, || !k.exists("configmap", owner)),
            "{policy}: owner not deleted"
        );
        if policy == "Orphan" {
            assert_orphaned(&k, "configmap", &deps);
        } else {
            assert_gone_eventually(&k, "configmap", &deps);
        }
    }
    // Deleting what isn't there is a NotFound Status.
    http.request(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/raw-bg",
        None,
        None,
    )
    .assert_k8s_status(404, "NotFound");
}
