//! Service link environment variables: the Docker-links style variables
//! kubelet gives every container for the Services it can reach
//! (`REDIS_MASTER_SERVICE_HOST=10.96.0.12`, `REDIS_MASTER_PORT=tcp://...`).
//!
//! Mechanism. [`service_env`] is pure: from a pod and the stored Services
//! it returns the variables, in kubelet's format (`envvars.FromServices`):
//! per Service, `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT` (the first
//! port), `{NAME}_SERVICE_PORT_{PORT_NAME}` per named port, then per port
//! `{NAME}_PORT_{port}_{PROTO}` with its `_PROTO`, `_PORT` and `_ADDR`, and
//! `{NAME}_PORT` for the first port. `NAME` is the Service name upper-cased
//! with `-` turned into `_`. They go before the container's own `envFrom`
//! and `env`, which win on a clash, and `$(VAR)` in the container's env can
//! refer to them (see [`super::resolve`]).
//!
//! Which Services, as kubelet chooses them:
//! - those of the pod's namespace, unless `spec.enableServiceLinks` is
//!   false;
//! - the `kubernetes` Service of `default`, always, in every namespace (a
//!   Service of that name in the pod's own namespace wins);
//! - never a headless Service or one without a ClusterIP (ExternalName).
//!
//! Ordering rule, so that a pod's environment does not change when it is
//! sent again later: kubelet takes the Services that exist when it creates
//! the container. The control plane sends a pod many times (every status
//! change, every reconnect), so it takes the Services whose
//! `creationTimestamp` is not later than the pod's own: a Service created
//! after the pod never appears in its environment, however often it is
//! sent. Timestamps have a one-second resolution, so a Service created in
//! the same second as the pod counts. A Service deleted or changed later
//! does change what a later send carries; the agent applies environment
//! only when it creates a container, as kubelet does.

use jiff::Timestamp;
use serde_json::Value;

use super::resolve::EnvSource;
use crate::api::objects::str_at;

/// The namespace whose `kubernetes` Service every pod gets.
const MASTER_NAMESPACE: &str = "default";
const MASTER_SERVICE: &str = "kubernetes";

fn created(object: &Value) -> Option<Timestamp> {
    str_at(object, "/metadata/creationTimestamp").and_then(|t| t.parse().ok())
}

/// kubelet's `makeEnvVariableName`.
fn variable_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Kubernetes' `IsServiceIPSet`: a ClusterIP that is neither empty nor
/// `None`.
fn has_cluster_ip(service: &Value) -> bool {
    !matches!(
        str_at(service, "/spec/clusterIP"),
        None | Some("") | Some("None")
    )
}

/// The variables for one Service (kubelet's `FromServices` entry).
fn service_variables(service: &Value, out: &mut Vec<(String, String)>) {
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(first) = ports.first() else {
        // Validation requires ports on a Service with a ClusterIP.
        return;
    };
    let cluster_ip = str_at(service, "/spec/clusterIP").unwrap_or_default();
    let prefix = variable_name(str_at(service, "/metadata/name").unwrap_or_default());
    let number = |port: &Value| port.get("port").and_then(Value::as_i64).unwrap_or(0);
    out.push((format!("{prefix}_SERVICE_HOST"), cluster_ip.to_owned()));
    out.push((format!("{prefix}_SERVICE_PORT"), number(first).to_string()));
    for port in ports {
        if let Some(name) = str_at(port, "/name").filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", variable_name(name)),
                number(port).to_string(),
            ));
        }
    }
    for (index, port) in ports.iter().enumerate() {
        let protocol = str_at(port, "/protocol")
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let host_port = if cluster_ip.contains(':') {
            format!("[{cluster_ip}]:{}", number(port))
        } else {
            format!("{cluster_ip}:{}", number(port))
        };
        let url = format!("{lower}://{host_port}");
        if index == 0 {
            // Docker special-cases the first port.
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", number(port), protocol.to_uppercase());
        out.push((port_prefix.clone(), url));
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), number(port).to_string()));
        out.push((format!("{port_prefix}_ADDR"), cluster_ip.to_owned()));
    }
}

/// The service link variables of `pod`, given every stored Service (see
/// the module documentation for which count). Services are taken in name
/// order, so the list is the same on every send.
pub fn service_env<'a>(
    pod: &Value,
    services: impl IntoIterator<Item = &'a Value>,
) -> Vec<(String, String)> {
    service_env_for(
        str_at(pod, "/metadata/namespace").unwrap_or_default(),
        pod.get("spec").unwrap_or(&Value::Null),
        str_at(pod, "/metadata/creationTimestamp"),
        services,
    )
}

/// [`service_env`] for a pod given by its namespace, spec and
/// `creationTimestamp`.
pub fn service_env_for<'a>(
    namespace: &str,
    spec: &Value,
    pod_created: Option<&str>,
    services: impl IntoIterator<Item = &'a Value>,
) -> Vec<(String, String)> {
    let links = spec
        .get("enableServiceLinks")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let pod_created: Option<Timestamp> = pod_created.and_then(|t| t.parse().ok());
    let mut chosen: std::collections::BTreeMap<&str, &Value> = Default::default();
    for service in services {
        if !has_cluster_ip(service) {
            continue;
        }
        if let (Some(pod_created), Some(service_created)) = (pod_created, created(service)) {
            if service_created > pod_created {
                continue;
            }
        }
        let service_namespace = str_at(service, "/metadata/namespace").unwrap_or_default();
        let name = str_at(service, "/metadata/name").unwrap_or_default();
        if service_namespace == namespace && links {
            chosen.insert(name, service);
        } else if service_namespace == MASTER_NAMESPACE && name == MASTER_SERVICE {
            chosen.entry(name).or_insert(service);
        }
    }
    let mut variables = Vec::new();
    for service in chosen.values() {
        service_variables(service, &mut variables);
    }
    variables
}

/// [`service_env_for`] as an env source for [`super::resolve`].
pub fn env_source<'a>(
    namespace: &str,
    spec: &Value,
    pod_created: Option<&str>,
    services: impl IntoIterator<Item = &'a Value>,
) -> EnvSource {
    EnvSource {
        variables: service_env_for(namespace, spec, pod_created, services),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(namespace: &str, name: &str, cluster_ip: &str, ports: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"clusterIP": cluster_ip, "ports": ports},
        })
    }

    fn pod(namespace: &str, links: Option<bool>) -> Value {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:05Z"},
            "spec": {"containers": [{"name": "c"}]},
        });
        if let Some(links) = links {
            pod["spec"]["enableServiceLinks"] = json!(links);
        }
        pod
    }

    fn api() -> Value {
        service(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
        )
    }

    fn redis() -> Value {
        service(
            "shop",
            "redis-master",
            "10.96.0.12",
            json!([
                {"name": "redis", "port": 6379, "protocol": "TCP"},
                {"name": "metrics-udp", "port": 9121, "protocol": "UDP"},
            ]),
        )
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn two_named_ports_in_kubelets_format() {
        let env = service_env(&pod("shop", None), [&redis()]);
        assert_eq!(
            env,
            pairs(&[
                ("REDIS_MASTER_SERVICE_HOST", "10.96.0.12"),
                ("REDIS_MASTER_SERVICE_PORT", "6379"),
                ("REDIS_MASTER_SERVICE_PORT_REDIS", "6379"),
                ("REDIS_MASTER_SERVICE_PORT_METRICS_UDP", "9121"),
                ("REDIS_MASTER_PORT", "tcp://10.96.0.12:6379"),
                ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.96.0.12:6379"),
                ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
                ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
                ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.96.0.12"),
                ("REDIS_MASTER_PORT_9121_UDP", "udp://10.96.0.12:9121"),
                ("REDIS_MASTER_PORT_9121_UDP_PROTO", "udp"),
                ("REDIS_MASTER_PORT_9121_UDP_PORT", "9121"),
                ("REDIS_MASTER_PORT_9121_UDP_ADDR", "10.96.0.12"),
            ])
        );
    }

    #[test]
    fn the_kubernetes_service_everywhere_and_other_namespaces_nowhere() {
        let env = service_env(&pod("shop", None), [&api(), &redis()]);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"KUBERNETES_SERVICE_HOST"));
        assert!(names.contains(&"KUBERNETES_SERVICE_PORT_HTTPS"));
        assert!(names.contains(&"REDIS_MASTER_SERVICE_HOST"));
        // A pod elsewhere sees only the kubernetes Service.
        let elsewhere = service_env(&pod("other", None), [&api(), &redis()]);
        assert!(elsewhere.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
        assert_eq!(elsewhere.len(), 8);
    }

    #[test]
    fn headless_external_name_and_disabled_links_are_skipped() {
        let headless = service("shop", "db", "None", json!([{"port": 5432}]));
        let external = json!({"metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}});
        let env = service_env(&pod("shop", None), [&headless, &external]);
        assert!(env.is_empty(), "{env:?}");

        // enableServiceLinks: false keeps only the kubernetes Service.
        let env = service_env(&pod("shop", Some(false)), [&api(), &redis()]);
        assert!(!env.is_empty());
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
    }

    #[test]
    fn services_created_after_the_pod_are_not_included() {
        let mut late = redis();
        late["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:06Z");
        assert!(service_env(&pod("shop", None), [&late]).is_empty());
        // The same second counts.
        late["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:05Z");
        assert!(!service_env(&pod("shop", None), [&late]).is_empty());
    }
}
