//! Bad requests must fail the way a Kubernetes API server fails them: with a
//! `Status` object carrying the right HTTP code and reason, which kubectl then
//! prints as users know it. Never a 500, never a hang.

use serde_json::json;
use skiff_e2e::ControlPlane;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";

#[test]
fn stale_update_is_a_conflict() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let name = format!("stale-{}", k.tag());
        k.ok(&["create", "configmap", &name, "--from-literal=v=1"]);

        // Keep a copy with the current resourceVersion, then move the object on.
        let mut old = k.get_json(&["configmap", &name]);
        assert!(
            old["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|rv| !rv.is_empty()),
            "{old:#}"
        );
        k.ok(&["label", "configmap", &name, "touched=yes"]);

        old["data"]["v"] = json!("2");
        let stale = cp.file("stale.json", old.to_string());
        k.fails(&["replace", "-f", stale.to_str().unwrap()])
            .assert_stderr_contains("Error from server (Conflict)")
            .assert_stderr_contains(&name);
        k.ok(&["get", "configmap", &name, "-o", "jsonpath={.data.v}"])
            .assert_stdout_is("1");

        // With the fresh resourceVersion the same replace goes through.
        let mut fresh = k.get_json(&["configmap", &name]);
        fresh["data"]["v"] = json!("2");
        let fresh_file = cp.file("fresh.json", fresh.to_string());
        k.ok(&["replace", "-f", fresh_file.to_str().unwrap()])
            .assert_stdout_contains(&format!("configmap/{name} replaced"));
        k.ok(&["get", "configmap", &name, "-o", "jsonpath={.data.v}"])
            .assert_stdout_is("2");
    });

    // The raw answer: 409 Conflict Status.
    let http = cp.http();
    http.post_json(
        CONFIGMAPS,
        &json!({"metadata": {"name": "raw-stale"}, "data": {"v": "1"}}).to_string(),
    )
    .assert_status(201);
    let current = http.get(&format!("{CONFIGMAPS}/raw-stale")).json();
    let rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |v: &str| {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "raw-stale", "resourceVersion": rv}, "data": {"v": v}});
        http.request(
            "PUT",
            &format!("{CONFIGMAPS}/raw-stale"),
            Some("application/json"),
            Some(body.to_string().as_bytes()),
        )
    };
    put("2").assert_status(200);
    put("3").assert_k8s_status(409, "Conflict");
}

#[test]
fn invalid_objects_are_422_invalid() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();

        // A name that isn't a DNS subdomain.
        let bad = format!("Bad_Name_{t}");
        // kubectl 1.20 prints `The ConfigMap "x" is invalid: ...`, newer ones
        // `failed to create configmap: ConfigMap "x" is invalid: ...`.
        k.fails(&["create", "configmap", &bad, "--from-literal=a=b"])
            .assert_stderr_contains(&format!(r#"ConfigMap "{bad}" is invalid"#))
            .assert_stderr_contains("metadata.name");

        // A pod without containers. --validate=false so the server judges it.
        let name = format!("empty-{t}");
        let file = cp.file(
            "pod.yaml",
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers: []\n"
            ),
        );
        k.fails(&["create", "--validate=false", "-f", file.to_str().unwrap()])
            .assert_stderr_contains(&format!(r#"Pod "{name}" is invalid"#))
            .assert_stderr_contains("spec.containers");
        k.fails(&["get", "pod", &name])
            .assert_stderr_contains("(NotFound)");
    });

    let http = cp.http();
    http.post_json(
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})
            .to_string(),
    )
    .assert_k8s_status(422, "Invalid");
    let r = http.post_json(PODS, &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nocontainers"}, "spec": {"containers": []}}).to_string());
    r.assert_k8s_status(422, "Invalid");
    let v = r.json();
    assert_eq!(v["details"]["name"], "nocontainers", "{r}");
    assert_eq!(v["details"]["kind"], "Pod", "{r}");
    assert!(
        v["details"]["causes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["field"]
                .as_str()
                .is_some_and(|f| f.starts_with("spec.containers")))),
        "causes should name spec.containers\n{r}"
    );
    http.post_json(
        PODS,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nospec"}}).to_string(),
    )
    .assert_k8s_status(422, "Invalid");
    // A name too long for a label-compatible name is also Invalid.
    let long = "x".repeat(300);
    http.post_json(CONFIGMAPS, &json!({"metadata": {"name": long}}).to_string())
        .assert_k8s_status(422, "Invalid");
}

#[test]
fn unknown_kinds_and_api_versions() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();
        let file = cp.file(
            "kind.yaml",
            format!("apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: f-{t}\n"),
        );
        k.fails(&["create", "-f", file.to_str().unwrap()])
            .assert_stderr_contains(r#"no matches for kind "Frobnicator" in version "v1""#);
        let file = cp.file(
            "group.yaml",
            format!("apiVersion: frobs.example.com/v9\nkind: Frob\nmetadata:\n  name: f-{t}\n"),
        );
        k.fails(&["create", "-f", file.to_str().unwrap()])
            .assert_stderr_contains(
                r#"no matches for kind "Frob" in version "frobs.example.com/v9""#,
            );
        k.fails(&["apply", "-f", file.to_str().unwrap()])
            .assert_stderr_contains(r#"no matches for kind "Frob""#);
    });

    // The server side of the same: unknown paths are NotFound Statuses.
    let http = cp.http();
    http.post_json(
        "/api/v1/namespaces/default/frobnicators",
        r#"{"metadata":{"name":"x"}}"#,
    )
    .assert_k8s_status(404, "NotFound");
    http.get("/apis/frobs.example.com/v9").assert_status(404);
    http.post_json(
        "/apis/frobs.example.com/v9/namespaces/default/frobs",
        r#"{"metadata":{"name":"x"}}"#,
    )
    .assert_status(404);
    // A body whose kind disagrees with the URL is refused, not stored.
    let r = http.post_json(
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mismatch"}})
            .to_string(),
    );
    assert!(
        r.status == 400 || r.status == 422,
        "kind/URL mismatch must be a client error\n{r}"
    );
    assert_eq!(r.json()["kind"], "Status", "{r}");
    http.get(&format!("{CONFIGMAPS}/mismatch"))
        .assert_k8s_status(404, "NotFound");
}

#[test]
fn malformed_bodies_are_400_not_500() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();
        // kubectl refuses these itself; nothing may get created.
        let json_file = cp.file(
            "broken.json",
            format!(r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "broken-json-{t}""#),
        );
        let out = k.fails(&["create", "-f", json_file.to_str().unwrap()]);
        assert!(out.stderr.starts_with("error:"), "expected kubectl's own parse error\n{out}");
        let yaml_file = cp.file(
            "broken.yaml",
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken-yaml-{t}\n   labels: [unclosed\ndata:\n\tkey: value\n"),
        );
        let out = k.fails(&["create", "-f", yaml_file.to_str().unwrap()]);
        assert!(out.stderr.starts_with("error:"), "expected kubectl's own parse error\n{out}");
        assert!(!k.exists("configmap", &format!("broken-json-{t}")));
        assert!(!k.exists("configmap", &format!("broken-yaml-{t}")));
    });

    // The raw server answers. All cases are tried before failing, so that one
    // run lists every one that is wrong.
    let http = cp.http();
    let mut wrong = Vec::new();
    for (what, body) in [
        (
            "truncated JSON",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x""#,
        ),
        ("not JSON at all", "this is not json"),
        ("trailing garbage", r#"{"metadata": {"name": "y"}} }}"#),
        (
            "wrong field type",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": "oops"}"#,
        ),
        (
            "wrong nested type",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}, "data": {"k": 1}}"#,
        ),
        ("empty body", ""),
    ] {
        let r = http.post_json(CONFIGMAPS, body);
        let ok = r.status == 400
            && serde_json::from_str::<serde_json::Value>(&r.body).is_ok_and(|v| {
                v["kind"] == "Status" && v["reason"] == "BadRequest" && v["code"] == 400
            });
        if !ok {
            wrong.push(format!("{what}: expected a 400 BadRequest Status\n{r}"));
        }
    }
    // Malformed patches and PUTs too.
    http.post_json(
        CONFIGMAPS,
        r#"{"metadata": {"name": "target"}, "data": {"a": "b"}}"#,
    )
    .assert_status(201);
    for (ct, body) in [
        ("application/merge-patch+json", "{not json"),
        ("application/strategic-merge-patch+json", "{not json"),
        ("application/json-patch+json", "[{\"op\": "),
    ] {
        let r = http.request(
            "PATCH",
            &format!("{CONFIGMAPS}/target"),
            Some(ct),
            Some(body.as_bytes()),
        );
        let ok = r.status == 400
            && serde_json::from_str::<serde_json::Value>(&r.body)
                .is_ok_and(|v| v["kind"] == "Status");
        if !ok {
            wrong.push(format!("malformed {ct} patch: expected a 400 Status\n{r}"));
        }
    }
    let r = http.request(
        "PUT",
        &format!("{CONFIGMAPS}/target"),
        Some("application/json"),
        Some(b"{broken"),
    );
    if r.status != 400 {
        wrong.push(format!(
            "malformed PUT: expected a 400 BadRequest Status\n{r}"
        ));
    }
    // The object survived all of it.
    let obj = http.get(&format!("{CONFIGMAPS}/target"));
    obj.assert_status(200);
    assert_eq!(obj.json()["data"]["a"], "b", "{obj}");
    assert!(
        wrong.is_empty(),
        "{} malformed requests got the wrong answer:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn oversized_body_is_413() {
    let cp = ControlPlane::start();
    // 3.5 MiB: over the 3 MiB request limit of a Kubernetes API server.
    let big = "x".repeat(3 * 1024 * 1024 + 512 * 1024);
    let big_file = cp.file("big.txt", &big);
    cp.each_kubectl(|k| {
        let name = format!("big-{}", k.tag());
        k.run(&[
            "create",
            "configmap",
            &name,
            &format!("--from-file=big={}", big_file.display()),
        ])
        .assert_server_error("RequestEntityTooLarge", "Request entity too large");
        assert!(!k.exists("configmap", &name));
    });
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big-raw"}, "data": {"big": big}}).to_string();
    cp.http()
        .post_json(CONFIGMAPS, &body)
        .assert_k8s_status(413, "RequestEntityTooLarge");
    // The server is still fine afterwards.
    cp.http()
        .post_json(
            CONFIGMAPS,
            r#"{"metadata": {"name": "small"}, "data": {"a": "b"}}"#,
        )
        .assert_status(201);
}

#[test]
fn duplicate_create_is_409_already_exists() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let name = format!("dup-{}", k.tag());
        k.ok(&["create", "configmap", &name, "--from-literal=v=first"]);
        k.run(&["create", "configmap", &name, "--from-literal=v=second"])
            .assert_server_error("AlreadyExists", &format!(r#"configmaps "{name}" already exists"#));
        let file = cp.file("dup.yaml", format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"));
        k.fails(&["create", "-f", file.to_str().unwrap()])
            .assert_stderr_contains(&format!(r#"Error from server (AlreadyExists): error when creating "{}": configmaps "{name}" already exists"#, file.display()));
        k.ok(&["get", "configmap", &name, "-o", "jsonpath={.data.v}"]).assert_stdout_is("first");
        // Same name in another namespace is a different object.
        let ns = format!("dupns-{}", k.tag());
        k.ok(&["create", "namespace", &ns]);
        k.ok(&["create", "configmap", &name, "-n", &ns]);
    });
    let body = json!({"metadata": {"name": "dup-raw"}}).to_string();
    cp.http().post_json(CONFIGMAPS, &body).assert_status(201);
    let r = cp.http().post_json(CONFIGMAPS, &body);
    r.assert_k8s_status(409, "AlreadyExists");
    assert_eq!(r.json()["details"]["name"], "dup-raw", "{r}");
}

fn service_yaml(name: &str, extra_spec: &str, port_extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
{extra_spec}  selector:
    app: {name}
  ports:
  - port: 80
{port_extra}"
    )
}

#[test]
fn service_allocation_conflicts_are_422() {
    let cp = ControlPlane::start();
    cp.each_kubectl(|k| {
        let t = k.tag();

        // The same explicit nodePort twice.
        let port = 30100 + k.minor() as u16;
        let first = cp.file(
            "a.yaml",
            service_yaml(
                &format!("np-a-{t}"),
                "  type: NodePort\n",
                &format!("    nodePort: {port}\n"),
            ),
        );
        k.ok(&["create", "-f", first.to_str().unwrap()]);
        let out = k.ok(&["get", "svc", &format!("np-a-{t}")]);
        assert_eq!(
            out.row(&format!("np-a-{t}"))[4],
            format!("80:{port}/TCP"),
            "{out}"
        );
        let second = cp.file(
            "b.yaml",
            service_yaml(
                &format!("np-b-{t}"),
                "  type: NodePort\n",
                &format!("    nodePort: {port}\n"),
            ),
        );
        k.fails(&["create", "-f", second.to_str().unwrap()])
            .assert_stderr_contains(&format!(r#"Service "np-b-{t}" is invalid"#))
            .assert_stderr_contains(&port.to_string());
        assert!(!k.exists("svc", &format!("np-b-{t}")));

        // A nodePort outside the range.
        let outside = cp.file(
            "c.yaml",
            service_yaml(
                &format!("np-c-{t}"),
                "  type: NodePort\n",
                "    nodePort: 80\n",
            ),
        );
        k.fails(&["create", "-f", outside.to_str().unwrap()])
            .assert_stderr_contains(&format!(r#"Service "np-c-{t}" is invalid"#));

        // An explicit clusterIP that another service already has.
        k.ok(&[
            "create",
            "service",
            "clusterip",
            &format!("ip-a-{t}"),
            "--tcp=80:80",
        ]);
        let ip = k
            .ok(&[
                "get",
                "svc",
                &format!("ip-a-{t}"),
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])
            .stdout
            .trim()
            .to_owned();
        assert!(ip.starts_with("10."), "no clusterIP allocated: {ip:?}");
        let taken = cp.file(
            "d.yaml",
            service_yaml(&format!("ip-b-{t}"), &format!("  clusterIP: {ip}\n"), ""),
        );
        k.fails(&["create", "-f", taken.to_str().unwrap()])
            .assert_stderr_contains(&format!(r#"Service "ip-b-{t}" is invalid"#))
            .assert_stderr_contains(&ip);
        assert!(!k.exists("svc", &format!("ip-b-{t}")));

        // Outside the service range.
        let outside = cp.file(
            "e.yaml",
            service_yaml(&format!("ip-c-{t}"), "  clusterIP: 192.168.77.7\n", ""),
        );
        k.fails(&["create", "-f", outside.to_str().unwrap()])
            .assert_stderr_contains(&format!(r#"Service "ip-c-{t}" is invalid"#));

        // Freed allocations can be taken again.
        k.ok(&["delete", "svc", &format!("np-a-{t}"), &format!("ip-a-{t}")]);
        let again = cp.file(
            "f.yaml",
            service_yaml(
                &format!("np-d-{t}"),
                "  type: NodePort\n",
                &format!("    nodePort: {port}\n"),
            ),
        );
        k.ok(&["create", "-f", again.to_str().unwrap()]);
        let reuse = cp.file(
            "g.yaml",
            service_yaml(&format!("ip-d-{t}"), &format!("  clusterIP: {ip}\n"), ""),
        );
        k.ok(&["create", "-f", reuse.to_str().unwrap()]);
    });

    // The raw answers.
    let http = cp.http();
    let svc = |name: &str, spec: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
            .to_string()
    };
    http.post_json(
        SERVICES,
        &svc(
            "raw-a",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30200}]}),
        ),
    )
    .assert_status(201);
    http.post_json(
        SERVICES,
        &svc(
            "raw-b",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30200}]}),
        ),
    )
    .assert_k8s_status(422, "Invalid");
    let ip = http.get(&format!("{SERVICES}/raw-a")).json()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_owned();
    http.post_json(
        SERVICES,
        &svc("raw-c", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
    )
    .assert_k8s_status(422, "Invalid");
}

#[test]
fn anonymous_requests_are_401_but_health_is_open() {
    let cp = ControlPlane::start();
    let http = cp.http();
    http.anonymous("GET", "/readyz").assert_status(200);
    http.anonymous("GET", "/healthz").assert_status(200);
    for path in [
        "/api",
        "/api/v1/namespaces",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/deployments",
        "/version",
    ] {
        http.anonymous("GET", path)
            .assert_k8s_status(401, "Unauthorized");
    }
    let r = http.anonymous("POST", CONFIGMAPS);
    r.assert_k8s_status(401, "Unauthorized");
    // With the client certificate the same requests work.
    http.get("/api/v1/namespaces").assert_status(200);

    // kubectl with a kubeconfig whose credentials the server doesn't know (a
    // kubeconfig with none at all makes kubectl 1.20 prompt for a password).
    let anon_kubeconfig = cp.file(
        "anonymous.kubeconfig",
        json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "skiff", "cluster": {"server": cp.base_url(), "certificate-authority": http.ca()}}],
            "users": [{"name": "nobody", "user": {"token": "not-a-token-this-server-issued"}}],
            "contexts": [{"name": "anon", "context": {"cluster": "skiff", "user": "nobody"}}],
            "current-context": "anon"
        })
        .to_string(),
    );
    cp.each_kubectl(|k| {
        k.with_kubeconfig(&anon_kubeconfig)
            .fails(&["get", "pods"])
            .assert_stderr_contains("You must be logged in to the server");
    });
}
