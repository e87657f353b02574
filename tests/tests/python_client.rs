//! The official Kubernetes Python client (Debian's python3-kubernetes) against
//! the control plane: kubeconfig with client certificates, list, watch.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use skiff_e2e::{run_command, ControlPlane};

/// Debian's interpreter, which is the one that has python3-kubernetes; a
/// python3 earlier on PATH (a virtualenv, pyenv) would not.
const PYTHON: &str = "/usr/bin/python3";

fn pod(name: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    })
    .to_string()
}

#[test]
fn python_client_lists_and_watches_pods() {
    let cp = ControlPlane::start();
    let k = cp.kubectl();
    k.ok_stdin(&["create", "-f", "-"], &pod("before-watch"));
    k.ok(&["create", "namespace", "elsewhere"]);
    k.ok_stdin(&["create", "-n", "elsewhere", "-f", "-"], &pod("other-ns"));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/list_and_watch.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script)
        .arg(cp.kubeconfig())
        .args(["default", "made-by-python"])
        .env_remove("PYTHONPATH")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_command(cmd, None);
    out.assert_success();
    let report = out.json();
    assert_eq!(
        report["listed"],
        json!(["before-watch"]),
        "list_namespaced_pod\n{out}"
    );
    let all = report["all_namespaces"].as_array().unwrap();
    assert!(
        all.contains(&json!("default/before-watch")) && all.contains(&json!("elsewhere/other-ns")),
        "list_pod_for_all_namespaces\n{out}"
    );
    assert_eq!(report["added_seen"], true, "{out}");
    // Watching from the list's resourceVersion replays nothing older.
    assert!(
        !report["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[1] == "before-watch"),
        "the watch replayed a pod that predates its resourceVersion\n{out}"
    );

    // What Python created is an ordinary pod to every kubectl.
    cp.each_kubectl(|k| {
        let p = k.get_json(&["pod", "made-by-python"]);
        assert_eq!(p["metadata"]["uid"], report["created_uid"], "{p:#}");
        assert_eq!(p["metadata"]["labels"]["made-by"], "python", "{p:#}");
    });
}
