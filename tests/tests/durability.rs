//! Crash safety: what the API server acknowledged must survive a SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use serde_json::json;
use skiff_e2e::{item_names, section, wait_until, ControlPlane};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn acknowledged_creates_survive_sigkill_mid_burst() {
    const TOTAL: usize = 300;
    const WORKERS: usize = 8;
    // Kill once this many creates are acknowledged, so that the kill lands
    // while requests are in flight.
    const KILL_AFTER: usize = 100;

    let mut cp = ControlPlane::start();
    let http = cp.http().clone();
    let next = AtomicUsize::new(0);
    let acknowledged = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, u16, String)>> = Mutex::new(Vec::new());

    thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    break;
                }
                let body = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("burst-{i}"), "labels": {"burst": "yes"}},
                    "data": {"index": i.to_string()}
                });
                let r = http.post_json(CONFIGMAPS, &body.to_string());
                if r.status == 201 {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                let detail = if r.status == 201 {
                    String::new()
                } else {
                    r.to_string()
                };
                results.lock().unwrap().push((i, r.status, detail));
            });
        }
        let reached = wait_until(Duration::from_secs(120), || {
            acknowledged.load(Ordering::SeqCst) >= KILL_AFTER
                || next.load(Ordering::SeqCst) >= TOTAL
        });
        assert!(
            reached,
            "the burst stalled before {KILL_AFTER} creates were acknowledged"
        );
        cp.kill9();
    });

    let results = results.into_inner().unwrap();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, status, _) in &results {
        *by_status.entry(*status).or_default() += 1;
    }
    println!("burst of {TOTAL} creates, SIGKILL after {KILL_AFTER} acknowledged; answers by HTTP status (0 = none): {by_status:?}");
    // Before the kill every create must have been accepted: nothing else
    // (no 409, no 5xx) is a legitimate answer to these requests.
    let odd: Vec<&String> = results
        .iter()
        .filter(|(_, status, _)| *status != 201 && *status != 0)
        .map(|(_, _, detail)| detail)
        .collect();
    assert!(
        odd.is_empty(),
        "unexpected answers during the burst:\n{}",
        odd.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let acked: BTreeSet<String> = results
        .iter()
        .filter(|(_, status, _)| *status == 201)
        .map(|(i, _, _)| format!("burst-{i}"))
        .collect();
    assert!(
        acked.len() >= KILL_AFTER,
        "only {} creates acknowledged",
        acked.len()
    );

    cp.restart();

    let list = cp
        .http()
        .get(&format!("{CONFIGMAPS}?labelSelector=burst%3Dyes"));
    list.assert_status(200);
    let list = list.json();
    let stored: BTreeSet<String> = item_names(&list).into_iter().collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged creates lost after SIGKILL + restart: {lost:?}",
        lost.len()
    );
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        let index = name.trim_start_matches("burst-");
        assert_eq!(
            item["data"]["index"], index,
            "{name} came back with other data: {item:#}"
        );
    }
    println!(
        "{} acknowledged, {} stored after restart",
        acked.len(),
        stored.len()
    );

    // kubectl sees the same after the restart, and the server takes writes.
    cp.each_kubectl(|k| {
        let out = k.ok(&["get", "configmaps", "-l", "burst=yes", "-o", "name"]);
        let seen: BTreeSet<String> = out
            .lines()
            .iter()
            .map(|l| l.trim_start_matches("configmap/").to_owned())
            .collect();
        assert!(
            acked.is_subset(&seen),
            "kubectl misses acknowledged objects\n{out}"
        );
        k.ok(&["create", "configmap", &format!("after-{}", k.tag())]);
    });
}

#[test]
fn state_and_credentials_survive_restart() {
    let mut cp = ControlPlane::start();
    let kubectls = cp.kubectls();
    let mut before = Vec::new();
    for k in &kubectls {
        section(k);
        let t = k.tag();
        k.ok(&["create", "namespace", &format!("keep-{t}")]);
        k.ok(&[
            "create",
            "configmap",
            &format!("keep-{t}"),
            "-n",
            &format!("keep-{t}"),
            "--from-literal=a=b",
        ]);
        k.ok(&[
            "create",
            "deployment",
            &format!("keep-{t}"),
            "--image=nginx:1.19",
        ]);
        k.ok(&[
            "create",
            "service",
            "nodeport",
            &format!("keep-{t}"),
            "--tcp=80:80",
        ]);
        let svc = k.get_json(&["svc", &format!("keep-{t}")]);
        let cm = k.get_json(&[
            "configmap",
            &format!("keep-{t}"),
            "-n",
            &format!("keep-{t}"),
        ]);
        before.push((svc, cm));
    }
    let rv_before = cp.http().get(CONFIGMAPS).json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    cp.restart();

    // The CA and client certificate copied out of the kubeconfig before the
    // restart still work: the second start reused them instead of minting new
    // ones (which would lock out every existing kubeconfig).
    cp.http().get("/api/v1/namespaces").assert_status(200);
    for (k, (svc, cm)) in kubectls.iter().zip(before) {
        section(k);
        let t = k.tag();
        let svc_after = k.get_json(&["svc", &format!("keep-{t}")]);
        assert_eq!(
            svc_after["metadata"]["uid"], svc["metadata"]["uid"],
            "uid changed across restart"
        );
        assert_eq!(
            svc_after["spec"]["clusterIP"], svc["spec"]["clusterIP"],
            "clusterIP changed"
        );
        assert_eq!(
            svc_after["spec"]["ports"], svc["spec"]["ports"],
            "ports (nodePort) changed"
        );
        let cm_after = k.get_json(&[
            "configmap",
            &format!("keep-{t}"),
            "-n",
            &format!("keep-{t}"),
        ]);
        assert_eq!(cm_after, cm, "configmap changed across restart");
        k.ok(&["get", "deployment", &format!("keep-{t}"), "-o", "name"]);
    }

    // Allocations made before the restart are still taken after it.
    let first_port = before_port(&cp);
    let clash = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "clash"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": first_port}]}});
    cp.http()
        .post_json("/api/v1/namespaces/default/services", &clash.to_string())
        .assert_k8s_status(422, "Invalid");

    // New writes get newer resourceVersions than any before the restart, so
    // that clients resuming a watch miss nothing. Versions are opaque to
    // clients, but these are numeric, as in Kubernetes.
    let created = cp
        .http()
        .post_json(CONFIGMAPS, r#"{"metadata": {"name": "after-restart"}}"#);
    created.assert_status(201);
    let rv_after = created.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let (Ok(b), Ok(a)) = (rv_before.parse::<u64>(), rv_after.parse::<u64>()) {
        assert!(
            a > b,
            "resourceVersion went back after restart: {b} before, {a} after"
        );
    }
}

fn before_port(cp: &ControlPlane) -> u64 {
    let k = cp.kubectl();
    let out = k.ok(&[
        "get",
        "svc",
        &format!("keep-{}", k.tag()),
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no nodePort\n{out}"))
}
