//! The pods the API benchmarks create.
//!
//! Each is shaped like a pod a Deployment stamps out: the usual
//! `app.kubernetes.io` labels and a template hash, scrape annotations, one
//! container with ports, environment (literal and downward API), requests
//! and limits, probes and a config volume. That is about 1.5 KB of JSON
//! before the server's defaulting, which is what a typical cluster stores per
//! pod, so memory and list figures reflect realistic objects rather than
//! minimal ones. There are deliberately no ownerReferences: the garbage
//! collector would delete pods whose owner does not exist.

use bytes::Bytes;
use serde_json::json;

const NAME_PLACEHOLDER: &str = "__SKIFF_BENCH_POD_NAME__";

/// A pod body with a placeholder for the name, serialised once so that
/// making each request body is a string substitution rather than a JSON
/// serialisation inside the measured window.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    json: String,
}

impl PodTemplate {
    pub fn new(namespace: &str) -> PodTemplate {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": NAME_PLACEHOLDER,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/name": "checkout",
                    "app.kubernetes.io/instance": "checkout-prod",
                    "app.kubernetes.io/version": "1.27.3",
                    "app.kubernetes.io/component": "api",
                    "app.kubernetes.io/part-of": "shop",
                    "pod-template-hash": "7c9d8f6b5d"
                },
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "9090",
                    "kubectl.kubernetes.io/restartedAt": "2025-01-15T10:00:00Z"
                }
            },
            "spec": {
                "containers": [{
                    "name": "checkout",
                    "image": "registry.example.com/shop/checkout:1.27.3",
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["--config=/etc/checkout/config.yaml", "--log-level=info"],
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                    ],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "DATABASE_URL", "value": "postgres://checkout@db.shop.svc:5432/checkout"},
                        {"name": "CACHE_ADDR", "value": "redis.shop.svc:6379"},
                        {"name": "GOMAXPROCS", "value": "2"}
                    ],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"}
                    },
                    "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": "http"}, "periodSeconds": 5},
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz/live", "port": "http"},
                        "initialDelaySeconds": 10,
                        "periodSeconds": 10
                    },
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout", "readOnly": true}]
                }],
                "volumes": [{"name": "config", "configMap": {"name": "checkout-config"}}],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001}
            }
        });
        PodTemplate {
            json: pod.to_string(),
        }
    }

    /// The request body for a pod called `name`.
    pub fn body(&self, name: &str) -> Bytes {
        Bytes::from(self.json.replace(NAME_PLACEHOLDER, name))
    }
}

/// A short tag that keeps pod names from different runs against the same
/// server apart, so that a rerun does not collide with its predecessor.
pub fn run_tag() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_named_pod_of_realistic_size() {
        let body = PodTemplate::new("bench").body("web-0");
        let pod: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(pod["metadata"]["name"], "web-0");
        assert_eq!(pod["metadata"]["namespace"], "bench");
        assert!(
            (1200..1800).contains(&body.len()),
            "pod is {} bytes",
            body.len()
        );
    }
}
