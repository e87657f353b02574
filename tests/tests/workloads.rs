//! Workload commands: scale, create deployment / expose / set image, the
//! `kubectl create` generators, and client-side apply.
//!
//! No nodes exist in this milestone, so nothing here asserts on pods or
//! ReplicaSets; only on the objects the commands change.

use serde_json::Value;
use skiff_e2e::{ControlPlane, Kubectl};

fn rc_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: v1
kind: ReplicationController
metadata:
  name: {name}
  labels:
    app: {name}
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
        image: nginx:1.19
"
    )
}

fn replicas(k: &Kubectl, kind: &str, name: &str) -> String {
    k.ok(&["get", kind, name, "-o", "jsonpath={.spec.replicas}"])
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn scale_replication_controller_and_deployment() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();

        // ReplicationController, by type and name.
        let rc = format!("rc-{t}");
        let file = cp.file("rc.yaml", rc_yaml(&rc, 1));
        k.ok(&["create", "-f", file.to_str().unwrap()])
            .assert_stdout_contains(&format!("replicationcontroller/{rc} created"));
        k.ok(&["scale", "rc", &rc, "--replicas=3"])
            .assert_stdout_contains(&format!("replicationcontroller/{rc} scaled"));
        assert_eq!(replicas(k, "rc", &rc), "3");
        let out = k.ok(&["get", "rc", &rc]);
        assert_eq!(out.row(&rc)[1], "3", "DESIRED\n{out}");

        // --current-replicas goes through GET and PUT of the scale subresource.
        k.ok(&["scale", "rc", &rc, "--current-replicas=3", "--replicas=4"])
            .assert_stdout_contains(&format!("replicationcontroller/{rc} scaled"));
        assert_eq!(replicas(k, "rc", &rc), "4");
        k.fails(&["scale", "rc", &rc, "--current-replicas=1", "--replicas=5"])
            .assert_stderr_contains("Expected replicas to be 1, was 4");
        assert_eq!(
            replicas(k, "rc", &rc),
            "4",
            "a failed precondition must not scale"
        );

        let scale = cp.http().get(&format!(
            "/api/v1/namespaces/default/replicationcontrollers/{rc}/scale"
        ));
        scale.assert_status(200);
        let s = scale.json();
        assert_eq!(s["kind"], "Scale", "{scale}");
        assert_eq!(s["apiVersion"], "autoscaling/v1", "{scale}");
        assert_eq!(s["metadata"]["name"], rc.as_str(), "{scale}");
        assert_eq!(s["spec"]["replicas"], 4, "{scale}");
        assert_eq!(s["status"]["selector"], format!("app={rc}"), "{scale}");

        // Deployment, by type/name.
        let dep = format!("dep-{t}");
        k.ok(&["create", "deployment", &dep, "--image=nginx:1.19"]);
        k.ok(&["scale", "--replicas=3", &format!("deployment/{dep}")])
            .assert_stdout_contains(&format!("deployment.apps/{dep} scaled"));
        assert_eq!(replicas(k, "deployment", &dep), "3");
        k.ok(&[
            "scale",
            "deploy",
            &dep,
            "--current-replicas=3",
            "--replicas=2",
        ])
        .assert_stdout_contains(&format!("deployment.apps/{dep} scaled"));
        assert_eq!(replicas(k, "deployment", &dep), "2");
        k.fails(&[
            "scale",
            "deploy",
            &dep,
            "--current-replicas=7",
            "--replicas=1",
        ])
        .assert_stderr_contains("Expected replicas to be 7, was 2");
        assert_eq!(replicas(k, "deployment", &dep), "2");

        let scale = cp.http().get(&format!(
            "/apis/apps/v1/namespaces/default/deployments/{dep}/scale"
        ));
        scale.assert_status(200);
        let s = scale.json();
        assert_eq!(s["kind"], "Scale", "{scale}");
        assert_eq!(s["spec"]["replicas"], 2, "{scale}");
        assert_eq!(s["status"]["selector"], format!("app={dep}"), "{scale}");
    });
}

fn node_port_of(cells: &[String]) -> Option<u16> {
    // PORT(S) looks like 8000:31234/TCP.
    cells.iter().find_map(|c| {
        let rest = c.strip_prefix("8000:")?.strip_suffix("/TCP")?;
        rest.parse().ok()
    })
}

#[test]
fn create_deployment_expose_and_set_image() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let name = format!("hello-{}", k.tag());

        // kubectl 1.32 and later POST this one as protobuf.
        k.ok(&[
            "create",
            "deployment",
            &name,
            "--image=nginx:1.19",
            "--port=8000",
        ])
        .assert_stdout_contains(&format!("deployment.apps/{name} created"));
        let d = k.get_json(&["deployment", &name]);
        assert_eq!(d["kind"], "Deployment", "{d:#}");
        assert_eq!(d["apiVersion"], "apps/v1", "{d:#}");
        assert_eq!(d["metadata"]["labels"]["app"], name.as_str(), "{d:#}");
        assert_eq!(d["spec"]["replicas"], 1, "{d:#}");
        assert_eq!(
            d["spec"]["selector"]["matchLabels"]["app"],
            name.as_str(),
            "{d:#}"
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["app"],
            name.as_str(),
            "{d:#}"
        );
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().map(Vec::len), Some(1), "{d:#}");
        assert_eq!(c[0]["name"], "nginx", "{d:#}");
        assert_eq!(c[0]["image"], "nginx:1.19", "{d:#}");
        assert_eq!(c[0]["ports"][0]["containerPort"], 8000, "{d:#}");

        let out = k.ok(&["get", "deployments"]);
        let row = out.row(&name);
        assert_eq!(row[1], "0/1", "READY\n{out}");

        // expose: selector from the deployment, a NodePort allocated.
        k.ok(&[
            "expose",
            "deployment",
            &name,
            "--type=NodePort",
            "--port",
            "8000",
        ])
        .assert_stdout_contains(&format!("service/{name} exposed"));
        let out = k.ok(&["get", "svc", &name]);
        let row = out.row(&name);
        assert_eq!(row[1], "NodePort", "TYPE\n{out}");
        let shown =
            node_port_of(&row).unwrap_or_else(|| panic!("PORT(S) is not 8000:3xxxx/TCP\n{out}"));
        assert!(
            (30000..=32767).contains(&shown),
            "nodePort outside the range\n{out}"
        );
        let svc = k.get_json(&["svc", &name]);
        assert_eq!(
            svc["spec"]["selector"],
            serde_json::json!({"app": name}),
            "{svc:#}"
        );
        assert_eq!(svc["spec"]["ports"][0]["port"], 8000, "{svc:#}");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], shown, "{svc:#}");
        assert_eq!(svc["metadata"]["labels"]["app"], name.as_str(), "{svc:#}");

        // set image: a strategic merge patch keyed on the container name.
        k.ok(&[
            "set",
            "image",
            &format!("deployment/{name}"),
            "nginx=nginx:1.20",
            "--record",
        ])
        .assert_stdout_contains(&format!("deployment.apps/{name} image updated"));
        let d = k.get_json(&["deployment", &name]);
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().map(Vec::len), Some(1), "{d:#}");
        assert_eq!(c[0]["name"], "nginx", "{d:#}");
        assert_eq!(c[0]["image"], "nginx:1.20", "{d:#}");
        assert_eq!(
            c[0]["ports"][0]["containerPort"], 8000,
            "ports lost by set image: {d:#}"
        );
        let cause = d["metadata"]["annotations"]["kubernetes.io/change-cause"]
            .as_str()
            .unwrap_or_default();
        assert!(
            cause.contains("set image") && cause.contains("nginx=nginx:1.20"),
            "change-cause annotation: {d:#}"
        );
        assert!(
            !d.to_string().contains("$setElementOrder"),
            "patch directive stored: {d:#}"
        );

        // kubectl itself checks container names.
        k.fails(&[
            "set",
            "image",
            &format!("deployment/{name}"),
            "nope=nginx:1.21",
        ])
        .assert_stderr_contains(r#"unable to find container named "nope""#);
    });
}

#[test]
fn create_generators() {
    // kubectl 1.32+ sends these bodies as protobuf too.
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let name = format!("gen-{}", k.tag());

        k.ok(&[
            "create",
            "configmap",
            &name,
            "--from-literal=greeting=hello",
            "--from-literal=n=1",
        ])
        .assert_stdout_contains(&format!("configmap/{name} created"));
        let cm = k.get_json(&["configmap", &name]);
        assert_eq!(
            cm["data"],
            serde_json::json!({"greeting": "hello", "n": "1"}),
            "{cm:#}"
        );

        k.ok(&[
            "create",
            "secret",
            "generic",
            &name,
            "--from-literal=password=s3cret",
        ])
        .assert_stdout_contains(&format!("secret/{name} created"));
        let s = k.get_json(&["secret", &name]);
        assert_eq!(s["data"]["password"], "czNjcmV0", "{s:#}");
        assert_eq!(s["type"], "Opaque", "{s:#}");

        k.ok(&["create", "service", "clusterip", &name, "--tcp=80:8080"])
            .assert_stdout_contains(&format!("service/{name} created"));
        let svc = k.get_json(&["service", &name]);
        assert_eq!(svc["spec"]["ports"][0]["port"], 80, "{svc:#}");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc:#}");
        assert!(
            svc["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10.")),
            "{svc:#}"
        );

        k.ok(&["create", "namespace", &name])
            .assert_stdout_contains(&format!("namespace/{name} created"));
        k.ok(&["get", "namespace", &name, "-o", "name"])
            .assert_stdout_is(&format!("namespace/{name}"));

        k.ok(&[
            "create",
            "job",
            &name,
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ])
        .assert_stdout_contains(&format!("job.batch/{name} created"));
        let job = k.get_json(&["job", &name]);
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["command"],
            serde_json::json!(["echo", "hi"]),
            "{job:#}"
        );
    });
}

fn configmap_yaml(name: &str, greeting: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
data:
  greeting: {greeting}
{extra}"
    )
}

fn deployment_yaml(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: {replicas}
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
        image: {image}
        ports:
        - containerPort: 80
        env:
        - name: MODE
          value: production
"
    )
}

#[test]
fn apply_creates_then_is_unchanged_then_configures() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();

        let cm = format!("applied-{t}");
        let path = cp.file("cm.yaml", configmap_yaml(&cm, "hello", ""));
        let file = path.to_str().unwrap();
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("configmap/{cm} created"));
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("configmap/{cm} unchanged"));
        std::fs::write(&path, configmap_yaml(&cm, "bonjour", "  extra: added\n")).unwrap();
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("configmap/{cm} configured"));
        let obj = k.get_json(&["configmap", &cm]);
        assert_eq!(
            obj["data"],
            serde_json::json!({"greeting": "bonjour", "extra": "added"}),
            "{obj:#}"
        );
        let last = obj["metadata"]["annotations"]
            ["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap_or_else(|| panic!("no last-applied annotation: {obj:#}"));
        let last: Value = serde_json::from_str(last).expect("last-applied is JSON");
        assert_eq!(last["data"]["greeting"], "bonjour", "{obj:#}");
        // A key dropped from the file is removed from the object.
        std::fs::write(&path, configmap_yaml(&cm, "bonjour", "")).unwrap();
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("configmap/{cm} configured"));
        let obj = k.get_json(&["configmap", &cm]);
        assert_eq!(
            obj["data"],
            serde_json::json!({"greeting": "bonjour"}),
            "{obj:#}"
        );
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("configmap/{cm} unchanged"));

        // A deployment: the patch merges containers by name.
        let dep = format!("applied-{t}");
        let path = cp.file("deploy.yaml", deployment_yaml(&dep, 1, "nginx:1.19"));
        let file = path.to_str().unwrap();
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("deployment.apps/{dep} created"));
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("deployment.apps/{dep} unchanged"));
        std::fs::write(&path, deployment_yaml(&dep, 2, "nginx:1.20")).unwrap();
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("deployment.apps/{dep} configured"));
        let d = k.get_json(&["deployment", &dep]);
        assert_eq!(d["spec"]["replicas"], 2, "{d:#}");
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().map(Vec::len), Some(1), "{d:#}");
        assert_eq!(c[0]["image"], "nginx:1.20", "{d:#}");
        assert_eq!(c[0]["ports"][0]["containerPort"], 80, "{d:#}");
        assert_eq!(c[0]["env"][0]["value"], "production", "{d:#}");
        assert!(
            !d.to_string().contains("$setElementOrder"),
            "patch directive stored: {d:#}"
        );
        k.ok(&["apply", "-f", file])
            .assert_stdout_contains(&format!("deployment.apps/{dep} unchanged"));
    });
}
