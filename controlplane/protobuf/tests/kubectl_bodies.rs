//! Golden tests on request bodies captured from real kubectl binaries.
//!
//! Each `fixtures/*.pb` file is the exact body kubectl 1.33 (1.32 where the
//! name says so) POSTed for the command in its name, captured by pointing
//! kubectl at a plain HTTP server on the loopback address. Where a
//! `*.kubectl-1.31.json` file sits beside it, that is the JSON body kubectl
//! 1.31 (the last release that sent JSON) POSTed for the same command: the
//! decoded protobuf must equal it, apart from the `creationTimestamp: null`
//! entries that this crate leaves out.
//!
//! Commands (namespace `default`, `--validate=false`):
//!
//! | fixture                           | command                                                          |
//! |-----------------------------------|------------------------------------------------------------------|
//! | create_deployment                 | `kubectl create deployment hello --image=nginx:1.19 --port=80 --replicas=2` |
//! | create_deployment_kubectl_1.32    | the same, with kubectl 1.32                                      |
//! | create_deployment_two_images      | `kubectl create deployment multi --image=a --image=b`            |
//! | create_configmap                  | `kubectl create configmap cfg --from-literal=a=b`                |
//! | create_service_nodeport           | `kubectl create service nodeport web --tcp=80:8080`              |
//! | create_service_clusterip          | `kubectl create service clusterip cip --tcp=5678:8080`           |
//! | create_service_clusterip_headless | `kubectl create service clusterip headless --clusterip=None`     |
//! | create_service_loadbalancer       | `kubectl create service loadbalancer lb --tcp=443:8443`          |
//! | create_service_externalname       | `kubectl create service externalname ext --external-name=db.example.com` |
//! | create_secret_generic             | `kubectl create secret generic s1 --from-literal=user=admin --from-literal=pass=p@ss` |
//! | create_secret_docker_registry     | `kubectl create secret docker-registry reg --docker-server=r.example --docker-username=u --docker-password=p` |
//! | create_namespace                  | `kubectl create namespace ns1`                                   |
//! | create_job                        | `kubectl create job j1 --image=busybox -- echo hi`               |
//! | create_cronjob                    | `kubectl create cronjob cj1 --image=busybox --schedule='*/5 * * * *' -- date` |
//! | create_serviceaccount             | `kubectl create serviceaccount sa1`                              |
//! | create_quota                      | `kubectl create quota q1 --hard=pods=3` (a kind without a converter) |

use serde_json::{json, Value};
use skiff_k8s_protobuf::{decode_to_json, ProtobufError};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn decode_fixture(name: &str) -> Value {
    decode_to_json(&fixture(&format!("{name}.pb")))
        .unwrap_or_else(|e| panic!("decoding {name}.pb: {e}"))
}

/// Removes every `"creationTimestamp": null`, which Go writes for a zero
/// time and this crate leaves out.
fn without_null_timestamps(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if map.get("creationTimestamp") == Some(&Value::Null) {
                    map.remove("creationTimestamp");
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn create_deployment() {
    assert_eq!(
        decode_fixture("create_deployment"),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "hello", "labels": {"app": "hello"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "hello"}},
                "template": {
                    "metadata": {"labels": {"app": "hello"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.19",
                            "ports": [{"containerPort": 80}],
                            "resources": {}
                        }]
                    }
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn kubectl_1_32_sends_the_same_deployment() {
    assert_eq!(
        decode_fixture("create_deployment_kubectl_1.32"),
        decode_fixture("create_deployment")
    );
}

#[test]
fn create_deployment_with_two_images() {
    let v = decode_fixture("create_deployment_two_images");
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "a", "image": "a", "resources": {}},
            {"name": "b", "image": "b", "resources": {}}
        ])
    );
    assert_eq!(v["spec"]["replicas"], json!(1));
}

#[test]
fn create_configmap() {
    assert_eq!(
        decode_fixture("create_configmap"),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"a": "b"}
        })
    );
}

#[test]
fn create_service_nodeport() {
    assert_eq!(
        decode_fixture("create_service_nodeport"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "ports": [{
                    "name": "80-8080",
                    "protocol": "TCP",
                    "port": 80,
                    "targetPort": 8080
                }],
                "selector": {"app": "web"},
                "type": "NodePort"
            },
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn create_secret_generic_has_base64_data() {
    let v = decode_fixture("create_secret_generic");
    assert_eq!(v["data"], json!({"user": "YWRtaW4=", "pass": "cEBzcw=="}));
    assert_eq!(v.get("type"), None, "an empty type is left out");
}

/// Every fixture with a JSON twin from kubectl 1.31 decodes to that JSON.
#[test]
fn matches_what_kubectl_1_31_sent_as_json() {
    let mut compared = 0;
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixture directory")
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".kubectl-1.31.json").map(str::to_owned))
        .collect();
    names.sort();
    for name in names {
        let expected: Value =
            serde_json::from_slice(&fixture(&format!("{name}.kubectl-1.31.json")))
                .unwrap_or_else(|e| panic!("{name}.kubectl-1.31.json: {e}"));
        assert_eq!(
            decode_fixture(&name),
            without_null_timestamps(expected),
            "fixture {name}"
        );
        compared += 1;
    }
    assert!(compared >= 13, "only {compared} fixtures compared");
}

#[test]
fn create_quota_is_an_unsupported_kind() {
    let err = decode_to_json(&fixture("create_quota.pb")).expect_err("ResourceQuota");
    match &err {
        ProtobufError::UnsupportedKind { api_version, kind } => {
            assert_eq!(
                (api_version.as_str(), kind.as_str()),
                ("v1", "ResourceQuota")
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("send the object as JSON"), "{err}");
}

/// Cutting a real body short at any point, or flipping any of its bytes,
/// gives an error or some JSON, never a panic.
#[test]
fn damaged_bodies_never_panic() {
    let bodies: Vec<Vec<u8>> = std::fs::read_dir(FIXTURES)
        .expect("fixture directory")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".pb"))
        .map(|entry| std::fs::read(entry.path()).expect("fixture"))
        .collect();
    assert!(!bodies.is_empty());
    for body in &bodies {
        for len in 0..body.len() {
            let _ = decode_to_json(&body[..len]);
        }
        for i in 0..body.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = body.clone();
                damaged[i] ^= flip;
                let _ = decode_to_json(&damaged);
            }
        }
    }
    // The magic prefix alone is an envelope without type information.
    assert!(matches!(
        decode_to_json(b"k8s\0"),
        Err(ProtobufError::MissingTypeMeta)
    ));
}
