//! Creating objects and reading them back in every output form kubectl has:
//! server-side tables (plain, wide, labels, all namespaces), yaml, json, name
//! and go-template, watches, and describe.

use std::time::Duration;

use serde_json::json;
use skiff_e2e::ControlPlane;

fn pod_yaml(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {app}
    tier: frontend
spec:
  containers:
  - name: web
    image: nginx:1.19
    ports:
    - containerPort: 80
"
    )
}

#[test]
fn create_from_file_and_stdin_then_get_every_form() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();
        let pod = format!("web-{t}");
        let ns = format!("other-{t}");

        // From a YAML file.
        let file = cp.file("pod.yaml", pod_yaml(&pod, &pod));
        k.ok(&["create", "-f", file.to_str().unwrap()])
            .assert_stdout_contains(&format!("pod/{pod} created"));

        // From JSON on stdin.
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": pod, "labels": {"app": pod}},
            "spec": {"selector": {"app": pod}, "ports": [{"port": 80, "targetPort": 80}]}
        });
        k.ok_stdin(&["create", "-f", "-"], &svc.to_string())
            .assert_stdout_contains(&format!("service/{pod} created"));

        // A namespace and a pod in it, for -A.
        k.ok(&["create", "namespace", &ns]).assert_stdout_contains(&format!("namespace/{ns} created"));
        k.ok(&["create", "-n", &ns, "-f", file.to_str().unwrap()])
            .assert_stdout_contains(&format!("pod/{pod} created"));

        // Table: the server's columns and cells. No node exists, so Pending.
        let out = k.ok(&["get", "pods", &pod]);
        let header = out.lines()[0].to_owned();
        for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
            assert!(header.contains(col), "missing column {col}\n{out}");
        }
        let row = out.row(&pod);
        assert_eq!(row[1], "0/1", "READY cell\n{out}");
        assert_eq!(row[2], "Pending", "STATUS cell\n{out}");
        assert_eq!(row[3], "0", "RESTARTS cell\n{out}");

        // -o wide adds the priority-1 columns.
        let out = k.ok(&["get", "pods", &pod, "-o", "wide"]);
        for col in ["IP", "NODE", "NOMINATED NODE"] {
            out.assert_stdout_contains(col);
        }
        out.row(&pod);

        // --show-labels needs the row's object metadata from the server.
        let out = k.ok(&["get", "pods", &pod, "--show-labels"]);
        out.assert_stdout_contains("LABELS");
        let row = out.row(&pod);
        let labels = row.last().unwrap();
        assert!(
            labels.contains(&format!("app={pod}")) && labels.contains("tier=frontend"),
            "LABELS cell\n{out}"
        );

        // -A: NAMESPACE column filled from the row objects, both copies seen.
        let out = k.ok(&["get", "pods", "-A"]);
        assert!(out.lines()[0].starts_with("NAMESPACE"), "header\n{out}");
        for namespace in ["default", ns.as_str()] {
            assert!(
                out.lines().iter().any(|l| {
                    let cells: Vec<&str> = l.split_whitespace().collect();
                    cells.len() > 1 && cells[0] == namespace && cells[1] == pod
                }),
                "no row for {namespace}/{pod}\n{out}"
            );
        }
        // Without -A only the current namespace.
        let out = k.ok(&["get", "pods", "-n", &ns, "-o", "name"]);
        out.assert_stdout_is(&format!("pod/{pod}"));

        // yaml
        let out = k.ok(&["get", "pod", &pod, "-o", "yaml"]);
        for needle in ["kind: Pod", "apiVersion: v1", &format!("name: {pod}"), "namespace: default", "image: nginx:1.19", "uid: ", "resourceVersion: ", "creationTimestamp: "] {
            out.assert_stdout_contains(needle);
        }

        // json
        let obj = k.get_json(&["pod", &pod]);
        assert_eq!(obj["kind"], "Pod");
        assert_eq!(obj["apiVersion"], "v1");
        assert_eq!(obj["metadata"]["name"], pod.as_str());
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert!(obj["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid: {obj:#}");
        assert_eq!(obj["spec"]["containers"][0]["image"], "nginx:1.19");
        assert_eq!(obj["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
        assert_eq!(obj["status"]["phase"], "Pending", "{obj:#}");

        // Lists in json carry their kind.
        let list = k.get_json(&["pods"]);
        assert_eq!(list["kind"], "List", "kubectl wraps lists: {list:#}");
        assert!(skiff_e2e::item_names(&list).contains(&pod), "{list:#}");

        // name
        k.ok(&["get", "pod", &pod, "-o", "name"]).assert_stdout_is(&format!("pod/{pod}"));

        // go-template
        k.ok(&["get", "pod", &pod, "-o", r#"go-template={{.metadata.name}}:{{index .metadata.labels "tier"}}:{{.metadata.namespace}}"#])
            .assert_stdout_is(&format!("{pod}:frontend:default"));

        // jsonpath
        k.ok(&["get", "pod", &pod, "-o", "jsonpath={.spec.containers[0].name}"]).assert_stdout_is("web");

        // Services: a ClusterIP from the service range and the port.
        let out = k.ok(&["get", "svc", &pod]);
        let row = out.row(&pod);
        assert_eq!(row[1], "ClusterIP", "TYPE\n{out}");
        let ip: std::net::Ipv4Addr = row[2].parse().unwrap_or_else(|_| panic!("CLUSTER-IP\n{out}"));
        let o = ip.octets();
        assert!(o[0] == 10 && (96..112).contains(&o[1]), "ClusterIP outside 10.96.0.0/12\n{out}");
        assert_eq!(row[4], "80/TCP", "PORT(S)\n{out}");
        k.ok(&["get", "svc", &pod, "-o", "wide"]).assert_stdout_contains(&format!("app={pod}"));

        // Label selector on a list.
        let out = k.ok(&["get", "pods", "-l", &format!("app={pod},tier in (frontend)"), "-o", "name"]);
        out.assert_stdout_is(&format!("pod/{pod}"));
        let out = k.run(&["get", "pods", "-l", "app=nothing-has-this", "-o", "name"]);
        out.assert_success().assert_stdout_is("");

        // Field selector on a list.
        let out = k.ok(&["get", "pods", "--field-selector", &format!("metadata.name={pod}"), "-o", "name"]);
        out.assert_stdout_is(&format!("pod/{pod}"));

        // Not found is a Status that kubectl prints with its reason.
        k.fails(&["get", "pod", "no-such-pod"])
            .assert_stderr_contains(r#"Error from server (NotFound): pods "no-such-pod" not found"#);
    });
}

#[test]
fn every_resource_type_and_short_name_is_discoverable() {
    let cp = ControlPlane::start();
    let names = [
        "namespaces",
        "ns",
        "pods",
        "po",
        "services",
        "svc",
        "endpoints",
        "ep",
        "nodes",
        "no",
        "replicationcontrollers",
        "rc",
        "configmaps",
        "cm",
        "secrets",
        "events",
        "ev",
        "deployments",
        "deploy",
        "replicasets",
        "rs",
        "daemonsets",
        "ds",
        "jobs",
        "deployments.apps",
        "jobs.batch",
    ];
    cp.each_kubectl(|k| {
        for name in names {
            let out = k.run(&["get", name]);
            assert!(out.success(), "`kubectl get {name}` failed\n{out}");
        }
        // The default namespace exists from the start.
        let out = k.ok(&["get", "ns"]);
        out.row("default");
        // No nodes in this milestone: an empty table, not an error.
        k.ok(&["get", "nodes"])
            .assert_stderr_contains("No resources found");
        // A type that doesn't exist.
        k.fails(&["get", "frobnicators"])
            .assert_stderr_contains(r#"the server doesn't have a resource type "frobnicators""#);
    });
}

#[test]
fn get_watch_prints_updates() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let pod = format!("watched-{}", k.tag());
        let file = cp.file("pod.yaml", pod_yaml(&pod, &pod));
        k.ok(&["create", "-f", file.to_str().unwrap()]);

        let watch = k.spawn(&["get", "pods", &pod, "-w", "--show-labels"]);
        // The first row comes from the list; only then is the change made,
        // so that it can only arrive through the watch.
        let listed = watch.wait_for_stdout(Duration::from_secs(30), |s| {
            s.lines().any(|l| l.starts_with(&pod))
        });
        if !listed {
            panic!("the watch never printed the initial row\n{}", watch.kill());
        }
        k.ok(&["label", "pod", &pod, "color=blue"])
            .assert_stdout_contains(&format!("pod/{pod} labeled"));
        let seen = watch.wait_for_stdout(Duration::from_secs(30), |s| {
            s.lines()
                .any(|l| l.starts_with(&pod) && l.contains("color=blue"))
        });
        // The watch must still be running: kubectl exits 0 when the server
        // closes the stream, which would hide later events.
        let out = watch.kill();
        assert!(seen, "the watch did not print the updated row\n{out}");
        assert!(
            out.code.is_none(),
            "the watch ended by itself instead of streaming\n{out}"
        );
        let rows: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with(&pod)).collect();
        assert!(
            rows.len() >= 2,
            "expected the listed row and the updated row\n{out}"
        );
        assert!(
            !rows[0].contains("color=blue"),
            "the first row should predate the change\n{out}"
        );

        // The update is in the object too.
        k.ok(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.labels.color}",
        ])
        .assert_stdout_is("blue");
    });
}

#[test]
fn describe_pod_service_deployment() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();
        let name = format!("desc-{t}");

        let file = cp.file("pod.yaml", pod_yaml(&name, &name));
        k.ok(&["create", "-f", file.to_str().unwrap()]);
        let out = k.ok(&["describe", "pod", &name]);
        for needle in [
            "Name:".into(),
            name.clone(),
            "Namespace:".into(),
            "default".into(),
            format!("app={name}"),
            "tier=frontend".into(),
            "Status:".into(),
            "Pending".into(),
            "Containers:".into(),
            "web:".into(),
            "Image:".into(),
            "nginx:1.19".into(),
            "80/TCP".into(),
            "Events:".into(),
        ] {
            out.assert_stdout_contains(&needle);
        }

        let svc = format!(
            "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: NodePort
  selector:
    app: {name}
  ports:
  - port: 8080
    targetPort: 80
"
        );
        let file = cp.file("svc.yaml", svc);
        k.ok(&["create", "-f", file.to_str().unwrap()]);
        let obj = k.get_json(&["svc", &name]);
        let cluster_ip = obj["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_else(|| panic!("no clusterIP: {obj:#}"))
            .to_owned();
        let node_port = obj["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .unwrap_or_else(|| panic!("no nodePort: {obj:#}"));
        let out = k.ok(&["describe", "service", &name]);
        for needle in [
            name.clone(),
            "Type:".into(),
            "NodePort".into(),
            "Selector:".into(),
            format!("app={name}"),
            cluster_ip,
            "8080/TCP".into(),
            "80/TCP".into(),
            format!("{node_port}/TCP"),
        ] {
            out.assert_stdout_contains(&needle);
        }

        k.ok(&["create", "deployment", &name, "--image=nginx:1.19"]);
        let out = k.ok(&["describe", "deployment", &name]);
        for needle in [
            name.clone(),
            "Replicas:".into(),
            "1 desired".into(),
            "Selector:".into(),
            format!("app={name}"),
            "StrategyType:".into(),
            "Pod Template:".into(),
            "nginx:1.19".into(),
        ] {
            out.assert_stdout_contains(&needle);
        }
        // Short forms resolve the same objects.
        k.ok(&["describe", "deploy", &name])
            .assert_stdout_contains(&name);
        k.ok(&["describe", "po", &name])
            .assert_stdout_contains(&name);
        k.ok(&["describe", "svc", &name])
            .assert_stdout_contains(&name);
    });
}
