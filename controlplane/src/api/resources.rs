//! The resources this API server serves, and their discovery documents.
//!
//! One static table drives URL routing, storage keys, discovery and Table
//! printing, so a resource is added in one place. kubectl resolves
//! `po`/`rc`/`deploy` only through the `shortNames` here (it has no
//! built-in fallback), and `kubectl get all` through `categories`.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
}

#[derive(Debug)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Lowercase plural used in URLs and storage keys.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Field selector labels beyond `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Whether `metadata.generation` tracks spec changes.
    pub has_generation: bool,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, or `deployments.apps`: how Kubernetes names a resource in
    /// messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has(&self, subresource: Subresource) -> bool {
        self.subresources.contains(&subresource)
    }

    /// The storage prefix for a collection, optionally one namespace of it.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(namespace) if self.namespaced => {
                format!("/registry/{group}/{}/{namespace}/", self.plural)
            }
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.field_labels.contains(&field)
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[Subresource] = &[Subresource::Status];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];

pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: STATUS,
        field_labels: &["status.phase"],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: STATUS,
        field_labels: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: STATUS,
        field_labels: &["spec.clusterIP", "spec.type"],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: STATUS,
        field_labels: &["spec.unschedulable"],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        kind: "ReplicationController",
        namespaced: true,
        short_names: &["rc"],
        categories: ALL,
        subresources: STATUS_SCALE,
        field_labels: &["status.replicas"],
        has_generation: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &["type"],
        has_generation: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        field_labels: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        has_generation: false,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: STATUS_SCALE,
        field_labels: &[],
        has_generation: true,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: STATUS_SCALE,
        field_labels: &["status.replicas"],
        has_generation: true,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        subresources: STATUS,
        field_labels: &[],
        has_generation: true,
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        categories: ALL,
        subresources: STATUS,
        field_labels: &["status.successful"],
        has_generation: true,
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        namespaced: true,
        short_names: &["cj"],
        categories: ALL,
        subresources: STATUS,
        field_labels: &[],
        has_generation: true,
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        has_generation: true,
    },
];

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|info| info.group == group && info.version == version && info.plural == plural)
}

/// Finds a resource by its kind and apiVersion, as written in an object.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|info| info.kind == kind && info.api_version() == api_version)
}

/// The groups other than core, each with its one served version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for info in RESOURCES {
        if !info.group.is_empty() && !groups.contains(&(info.group, info.version)) {
            groups.push((info.group, info.version));
        }
    }
    groups
}

fn verbs(info: &ResourceInfo) -> Vec<&'static str> {
    let _ = info;
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
}

/// `APIResourceList` for one group-version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for info in RESOURCES
        .iter()
        .filter(|info| info.group == group && info.version == version)
    {
        let mut entry = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": verbs(info),
        });
        if !info.short_names.is_empty() {
            entry["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            entry["categories"] = json!(info.categories);
        }
        resources.push(entry);
        if info.has(Subresource::Status) {
            resources.push(json!({
                "name": format!("{}/status", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if info.has(Subresource::Scale) {
            resources.push(json!({
                "name": format!("{}/scale", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if info.plural == "pods" {
            for (sub, verbs) in [("log", vec!["get"]), ("exec", vec!["create", "get"])] {
                resources.push(json!({
                    "name": format!("pods/{sub}"),
                    "singularName": "",
                    "namespaced": true,
                    "kind": if sub == "log" { "Pod" } else { "PodExecOptions" },
                    "verbs": verbs,
                }));
            }
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn group_document(group: &str, version: &str) -> Value {
    let version_entry = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [version_entry.clone()],
        "preferredVersion": version_entry,
    })
}

/// `APIGroupList` for `/apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(group, version)| group_document(group, version))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `APIGroup` for `/apis/{group}`.
pub fn group(group: &str) -> Option<Value> {
    let (name, version) = groups().into_iter().find(|(name, _)| *name == group)?;
    let mut document = group_document(name, version);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Some(document)
}

/// `APIVersions` for `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_short_name_kubectl_users_type_is_published() {
        let core = resource_list("", "v1").expect("core");
        let apps = resource_list("apps", "v1").expect("apps");
        let mut short_names = Vec::new();
        for list in [&core, &apps] {
            for entry in list["resources"].as_array().expect("resources") {
                if let Some(names) = entry["shortNames"].as_array() {
                    short_names.extend(
                        names
                            .iter()
                            .filter_map(|name| name.as_str().map(str::to_owned)),
                    );
                }
            }
        }
        for expected in [
            "po", "svc", "rc", "deploy", "rs", "ds", "no", "ns", "ep", "ev",
        ] {
            assert!(
                short_names.iter().any(|name| name == expected),
                "missing shortName {expected}"
            );
        }
    }

    #[test]
    fn scale_subresources_point_at_autoscaling_v1() {
        let core = resource_list("", "v1").expect("core");
        let scale = core["resources"]
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|entry| entry["name"] == "replicationcontrollers/scale")
            })
            .expect("rc scale entry");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }

    #[test]
    fn keys_separate_namespaces_and_groups() {
        let pods = find("", "v1", "pods").expect("pods");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        let nodes = find("", "v1", "nodes").expect("nodes");
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/core/nodes/n1");
        assert_eq!(
            find_kind("apps/v1", "Deployment").map(|info| info.plural),
            Some("deployments")
        );
        assert_eq!(
            find("apps", "v1", "deployments")
                .map(|info| info.qualified_name())
                .as_deref(),
            Some("deployments.apps")
        );
    }
}
