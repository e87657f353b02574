//! From a desired pod to CRI configurations, without I/O.
//!
//! [`Desired`] is a pod as the planner sees it: the node API's pod with its
//! spec decoded into Kubernetes' types. [`sandbox_config`] and
//! [`container_config`] render what RunPodSandbox and CreateContainer get;
//! the executor only adds the directories they name ([`host_dirs`]) before
//! calling them.
//!
//! Paths on the host, all under roots given by the agent's flags:
//! - logs: `LOG_ROOT/<namespace>_<name>_<uid>/<container>/<restart>.log`,
//!   kubelet's layout, so log tools that know it work unchanged;
//! - emptyDir, configMap and secret volumes:
//!   `DATA_DIR/pods/<uid>/volumes/<volume>` (the last two written by
//!   [`super::volumes`] and mounted read-only);
//! - cgroups: `CGROUP_ROOT/pod<uid>` holds the sandbox's and containers'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use sha2::{Digest, Sha256};

use super::events::PodRef;
use super::quantity;
use super::volumes::{Unresolved, VolumeFiles};
use crate::cri::{
    LABEL_CONTAINER_HASH, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use crate::session::DesiredPod;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// kubelet never gives a container less than this to stop.
pub const MINIMUM_GRACE_SECONDS: i64 = 2;
/// CFS period kubelet uses for CPU limits (100 ms).
const CPU_PERIOD: i64 = 100_000;
/// The smallest CFS quota the kernel accepts (1 ms).
const MIN_CPU_QUOTA: i64 = 1_000;
/// What a container without a CPU request gets, as in kubelet.
const MIN_CPU_SHARES: i64 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the pod spec is not a valid PodSpec: {0}")]
    InvalidSpec(String),
    #[error("container {container}: {message}")]
    Container { container: String, message: String },
    /// A reference the control plane could not resolve, in its words
    /// (`configmap "app" not found`).
    #[error("{0}")]
    Unresolved(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// A pod the planner works on.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
    /// Set when the pod must stop and be removed: its deletion grace
    /// period, or the orphan grace for pods nobody asked for.
    pub stop_grace_seconds: Option<i64>,
    /// The files of its configMap and secret volumes, by volume name.
    pub volume_files: BTreeMap<String, VolumeFiles>,
    /// What the control plane could not resolve for it.
    pub unresolved: Vec<Unresolved>,
}

impl Desired {
    pub fn from_pod(pod: &DesiredPod) -> Result<Desired, SpecError> {
        let spec: PodSpec = serde_json::from_value(pod.spec.clone())
            .map_err(|error| SpecError::InvalidSpec(error.to_string()))?;
        Ok(Desired {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: pod.labels.clone(),
            annotations: pod.annotations.clone(),
            spec,
            stop_grace_seconds: pod.deletion_grace_period_seconds,
            volume_files: pod.volumes.clone(),
            unresolved: pod.unresolved.clone(),
        })
    }

    /// A pod the runtime holds but nobody wants: stop and remove it.
    pub fn orphan(uid: &str, namespace: &str, name: &str, grace_seconds: i64) -> Desired {
        Desired {
            uid: uid.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            spec: PodSpec::default(),
            stop_grace_seconds: Some(grace_seconds),
            volume_files: BTreeMap::new(),
            unresolved: Vec::new(),
        }
    }

    /// Who events about this pod are about.
    pub fn pod_ref(&self) -> PodRef {
        PodRef {
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Why `container` cannot start yet because a volume it mounts has no
    /// source (a configMap or secret that does not exist), if so.
    pub fn missing_volume(&self, container: &Container) -> Option<String> {
        container.volume_mounts.iter().flatten().find_map(|mount| {
            self.unresolved
                .iter()
                .find(|u| u.container.is_empty() && u.volume == mount.name)
                .map(|u| u.message.clone())
        })
    }

    pub fn stopping(&self) -> bool {
        self.stop_grace_seconds.is_some()
    }

    pub fn restart_policy(&self) -> RestartPolicy {
        match self.spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// How long containers get between SIGTERM and SIGKILL.
    pub fn grace_seconds(&self) -> i64 {
        self.stop_grace_seconds
            .or(self.spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            .max(MINIMUM_GRACE_SECONDS)
    }

    pub fn host_network(&self) -> bool {
        self.spec.host_network.unwrap_or(false)
    }

    /// `<namespace>_<name>_<uid>`: the pod's directory name under the log root.
    pub fn log_dir_name(&self) -> String {
        format!("{}_{}_{}", self.namespace, self.name, self.uid)
    }
}

fn short_hash(container: &Container) -> String {
    // serde_json's maps are ordered, so equal specs serialize equally.
    let text = serde_json::to_vec(container).unwrap_or_default();
    let digest = Sha256::digest(&text);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, stable hash of a container's spec; a change means restart.
///
/// `env` and `envFrom` are left out: Kubernetes does not let a pod's env
/// change, so the only change a node sees there is the control plane
/// resolving a configMap or secret reference again, which must not
/// restart the container (env is fixed when a container starts).
pub fn container_hash(container: &Container) -> String {
    short_hash(&Container {
        env: None,
        env_from: None,
        ..container.clone()
    })
}

/// Whether a running container's hash label matches `container`: the
/// current hash, or the one over the whole spec that agents before
/// [`container_hash`] left env out wrote, so that an upgraded agent does
/// not restart what they started.
pub fn hash_matches(label: &str, container: &Container) -> bool {
    label == container_hash(container) || label == short_hash(container)
}

/// Where the node keeps things for pods; from the agent's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    pub node_name: String,
    pub host_ip: Option<String>,
    pub log_root: PathBuf,
    pub data_dir: PathBuf,
    /// The cgroup every pod's cgroup goes under (cgroupfs form, `/skiff`).
    pub cgroup_root: Option<String>,
    pub dns: cri::DnsConfig,
}

impl NodeSettings {
    pub fn log_directory(&self, desired: &Desired) -> PathBuf {
        self.log_root.join(desired.log_dir_name())
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }

    pub fn cgroup_parent(&self, uid: &str) -> Option<String> {
        self.cgroup_root
            .as_ref()
            .map(|root| format!("{}/pod{uid}", root.trim_end_matches('/')))
    }
}

/// DNS settings from a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> cri::DnsConfig {
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_owned)),
            Some("search") | Some("domain") => {
                dns.searches = words.map(str::to_owned).collect();
            }
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    dns
}

fn namespace_options(desired: &Desired) -> cri::NamespaceOption {
    let spec = &desired.spec;
    let mode = |host: Option<bool>, otherwise: cri::NamespaceMode| {
        if host.unwrap_or(false) {
            cri::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid = if spec.share_process_namespace.unwrap_or(false) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: mode(spec.host_network, cri::NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid),
        ipc: mode(spec.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

fn privileged(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

fn pod_labels(desired: &Desired) -> std::collections::HashMap<String, String> {
    let mut labels: std::collections::HashMap<String, String> = desired
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_POD_UID.into(), desired.uid.clone());
    labels.insert(LABEL_POD_NAME.into(), desired.name.clone());
    labels.insert(LABEL_POD_NAMESPACE.into(), desired.namespace.clone());
    labels
}

/// What RunPodSandbox gets.
pub fn sandbox_config(
    desired: &Desired,
    attempt: u32,
    node: &NodeSettings,
) -> cri::PodSandboxConfig {
    let spec = &desired.spec;
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|port| cri::PortMapping {
            protocol: match port.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: port.container_port,
            host_port: port.host_port.unwrap_or(0),
            host_ip: port.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let pod_security = spec.security_context.as_ref();
    // containerd refuses a privileged container in an unprivileged sandbox.
    let any_privileged = spec.containers.iter().any(privileged);
    // Kubernetes caps hostnames at 63 characters, the DNS label limit.
    let hostname: String = spec
        .hostname
        .clone()
        .unwrap_or_else(|| desired.name.clone())
        .chars()
        .take(63)
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: desired.name.clone(),
            uid: desired.uid.clone(),
            namespace: desired.namespace.clone(),
            attempt,
        }),
        hostname: if desired.host_network() {
            String::new()
        } else {
            hostname
        },
        log_directory: node.log_directory(desired).display().to_string(),
        dns_config: Some(node.dns.clone()),
        port_mappings,
        labels: pod_labels(desired),
        annotations: desired
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: node.cgroup_parent(&desired.uid).unwrap_or_default(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(desired)),
                run_as_user: pod_security
                    .and_then(|s| s.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: pod_security
                    .and_then(|s| s.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                supplemental_groups: pod_security
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                privileged: any_privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where a volume lives on the host, and whether the agent makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    pub path: PathBuf,
    pub create: bool,
    /// configMap and secret volumes are always mounted read-only.
    pub read_only: bool,
}

/// The pod's volumes that containers can mount, by name.
pub fn host_volumes(desired: &Desired, node: &NodeSettings) -> BTreeMap<String, HostVolume> {
    let mut volumes = BTreeMap::new();
    for volume in desired.spec.volumes.iter().flatten() {
        if volume.empty_dir.is_some() {
            volumes.insert(
                volume.name.clone(),
                HostVolume {
                    path: node
                        .pod_dir(&desired.uid)
                        .join("volumes")
                        .join(&volume.name),
                    create: true,
                    read_only: false,
                },
            );
        } else if let Some(host) = &volume.host_path {
            let create = matches!(host.type_.as_deref(), Some("DirectoryOrCreate"));
            volumes.insert(
                volume.name.clone(),
                HostVolume {
                    path: PathBuf::from(&host.path),
                    create,
                    read_only: false,
                },
            );
        } else if volume.config_map.is_some() || volume.secret.is_some() {
            volumes.insert(
                volume.name.clone(),
                HostVolume {
                    path: config_volume_dir(desired, node, &volume.name),
                    create: false,
                    read_only: true,
                },
            );
        }
    }
    volumes
}

/// Where a configMap or secret volume's files are written.
pub fn config_volume_dir(desired: &Desired, node: &NodeSettings, volume: &str) -> PathBuf {
    node.pod_dir(&desired.uid).join("volumes").join(volume)
}

/// Directories to make before the pod's containers are created: the log
/// directory, each container's log subdirectory and the volumes the agent
/// owns.
pub fn host_dirs(desired: &Desired, node: &NodeSettings) -> Vec<PathBuf> {
    let log_dir = node.log_directory(desired);
    let mut dirs = vec![log_dir.clone()];
    dirs.extend(
        desired
            .spec
            .containers
            .iter()
            .map(|c| log_dir.join(&c.name)),
    );
    dirs.extend(
        host_volumes(desired, node)
            .into_values()
            .filter(|v| v.create)
            .map(|v| v.path),
    );
    dirs
}

/// What a container's environment can refer to that only the node knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub pod_ips: Vec<String>,
}

fn field_value(
    desired: &Desired,
    node: &NodeSettings,
    facts: &PodFacts,
    path: &str,
) -> Option<String> {
    let keyed = |prefix: &str, map: &BTreeMap<String, String>| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|key| map.get(key).cloned().unwrap_or_default())
    };
    if let Some(value) = keyed("metadata.labels['", &desired.labels) {
        return Some(value);
    }
    if let Some(value) = keyed("metadata.annotations['", &desired.annotations) {
        return Some(value);
    }
    Some(match path {
        "metadata.name" => desired.name.clone(),
        "metadata.namespace" => desired.namespace.clone(),
        "metadata.uid" => desired.uid.clone(),
        "spec.nodeName" => node.node_name.clone(),
        "spec.serviceAccountName" => desired
            .spec
            .service_account_name
            .clone()
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => node.host_ip.clone().unwrap_or_default(),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        _ => return None,
    })
}

fn env_value(
    desired: &Desired,
    node: &NodeSettings,
    facts: &PodFacts,
    container: &Container,
    var: &EnvVar,
) -> Result<Option<String>, SpecError> {
    let error = |message: String| SpecError::Container {
        container: container.name.clone(),
        message,
    };
    let Some(source) = &var.value_from else {
        return Ok(Some(var.value.clone().unwrap_or_default()));
    };
    if let Some(field) = &source.field_ref {
        return field_value(desired, node, facts, &field.field_path)
            .map(Some)
            .ok_or_else(|| {
                error(format!(
                    "env {}: fieldRef {} is not supported",
                    var.name, field.field_path
                ))
            });
    }
    let key_ref = source
        .config_map_key_ref
        .as_ref()
        .map(|r| ("configmap", r.name.as_str(), r.key.as_str(), r.optional))
        .or(source
            .secret_key_ref
            .as_ref()
            .map(|r| ("secret", r.name.as_str(), r.key.as_str(), r.optional)));
    let Some((kind, name, key, optional)) = key_ref else {
        return Err(error(format!(
            "env {}: only plain values, fieldRef, configMapKeyRef and secretKeyRef are supported",
            var.name
        )));
    };
    // The control plane resolved it: the value is taken as it is.
    if let Some(value) = &var.value {
        return Ok(Some(value.clone()));
    }
    if optional.unwrap_or(false) {
        return Ok(None);
    }
    Err(unresolved_error(desired, container, || {
        format!("{kind} {name:?} (key {key}) could not be resolved")
    }))
}

/// The control plane's reason a reference of `container` is unresolved,
/// or `fallback` when it sent none.
fn unresolved_error(
    desired: &Desired,
    container: &Container,
    fallback: impl FnOnce() -> String,
) -> SpecError {
    let message = desired
        .unresolved
        .iter()
        .find(|u| u.container == container.name)
        .map(|u| u.message.clone())
        .unwrap_or_else(fallback);
    SpecError::Unresolved(message)
}

fn resources(container: &Container) -> Result<cri::LinuxContainerResources, SpecError> {
    let error = |message: String| SpecError::Container {
        container: container.name.clone(),
        message,
    };
    let get = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| map.and_then(|m| m.get(key)).map(|q| q.0.clone());
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let cpu_request = get(requests, "cpu")
        .or_else(|| get(limits, "cpu"))
        .map(|q| quantity::millicores(&q).map_err(|e| error(format!("cpu: {e}"))))
        .transpose()?;
    let cpu_limit = get(limits, "cpu")
        .map(|q| quantity::millicores(&q).map_err(|e| error(format!("cpu limit: {e}"))))
        .transpose()?;
    let memory_limit = get(limits, "memory")
        .map(|q| quantity::bytes(&q).map_err(|e| error(format!("memory limit: {e}"))))
        .transpose()?;
    let mut resources = cri::LinuxContainerResources {
        cpu_shares: cpu_request
            .map(|milli| (milli * 1024 / 1000).max(MIN_CPU_SHARES))
            .unwrap_or(MIN_CPU_SHARES),
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        ..Default::default()
    };
    if let Some(milli) = cpu_limit {
        resources.cpu_period = CPU_PERIOD;
        resources.cpu_quota = (milli * CPU_PERIOD / 1000).max(MIN_CPU_QUOTA);
    }
    Ok(resources)
}

/// Kubernetes' `$(VAR)` expansion: a reference to a variable in `env` is
/// replaced by its value, `$$` stands for `$`, and a reference to an
/// unknown variable is left as written.
pub fn expand(text: &str, env: &[cri::KeyValue]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(end) => {
                    let name = &reference[..end];
                    match env.iter().rev().find(|kv| kv.key == name) {
                        Some(kv) => out.push_str(&kv.value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `<container>/<restart>.log`, relative to the sandbox's log directory.
pub fn log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

/// What CreateContainer gets for `container` at restart count `attempt`.
pub fn container_config(
    desired: &Desired,
    container: &Container,
    attempt: u32,
    node: &NodeSettings,
    facts: &PodFacts,
) -> Result<cri::ContainerConfig, SpecError> {
    let error = |message: String| SpecError::Container {
        container: container.name.clone(),
        message,
    };
    let image = container
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| error("no image".into()))?;
    // envFrom entries are expanded into env by the control plane; one left
    // here is a required source that does not exist.
    if let Some(source) = container.env_from.iter().flatten().next() {
        return Err(unresolved_error(desired, container, || {
            let name = source
                .config_map_ref
                .as_ref()
                .map(|r| format!("configmap {:?}", r.name))
                .or(source
                    .secret_ref
                    .as_ref()
                    .map(|r| format!("secret {:?}", r.name)))
                .unwrap_or_default();
            format!("{name} not found")
        }));
    }
    let mut envs = vec![cri::KeyValue {
        key: "HOSTNAME".into(),
        value: desired
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| desired.name.clone()),
    }];
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(desired, node, facts, container, var)? {
            // Plain values may refer to the variables defined before them.
            let value = if var.value_from.is_none() {
                expand(&value, &envs)
            } else {
                value
            };
            envs.retain(|kv| kv.key != var.name);
            envs.push(cri::KeyValue {
                key: var.name.clone(),
                value,
            });
        }
    }
    let volumes = host_volumes(desired, node);
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes.get(&mount.name).ok_or_else(|| {
            error(format!(
                "volume {:?} is not defined, or of a kind this node cannot mount yet",
                mount.name
            ))
        })?;
        let mut host_path = volume.path.clone();
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(error(format!(
                    "subPath {sub:?} must be a relative path without .."
                )));
            }
            host_path = host_path.join(sub);
        }
        mounts.push(cri::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: mount.read_only.unwrap_or(false) || volume.read_only,
            ..Default::default()
        });
    }
    let security = container.security_context.as_ref();
    let pod_security = desired.spec.security_context.as_ref();
    let run_as_user = security
        .and_then(|s| s.run_as_user)
        .or(pod_security.and_then(|s| s.run_as_user));
    let run_as_group = security
        .and_then(|s| s.run_as_group)
        .or(pod_security.and_then(|s| s.run_as_group));
    let capabilities = security
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| cri::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            ..Default::default()
        });
    let labels = [
        (LABEL_POD_UID, desired.uid.clone()),
        (LABEL_POD_NAME, desired.name.clone()),
        (LABEL_POD_NAMESPACE, desired.namespace.clone()),
        (LABEL_CONTAINER_NAME, container.name.clone()),
        (LABEL_CONTAINER_HASH, container_hash(container)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image,
            ..Default::default()
        }),
        command: container
            .command
            .iter()
            .flatten()
            .map(|word| expand(word, &envs))
            .collect(),
        args: container
            .args
            .iter()
            .flatten()
            .map(|word| expand(word, &envs))
            .collect(),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels,
        annotations: [(
            "io.kubernetes.container.restartCount".to_owned(),
            attempt.to_string(),
        )]
        .into_iter()
        .collect(),
        log_path: log_path(&container.name, attempt),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(container)?),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities,
                privileged: privileged(container),
                namespace_options: Some(namespace_options(desired)),
                run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
                readonly_rootfs: security
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn desired(spec: serde_json::Value) -> Desired {
        Desired::from_pod(&DesiredPod {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            spec,
            labels: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
            annotations: BTreeMap::new(),
            deletion_grace_period_seconds: None,
            resource_version: "1".into(),
            volumes: BTreeMap::new(),
            unresolved: Vec::new(),
        })
        .expect("valid spec")
    }

    pub fn node() -> NodeSettings {
        NodeSettings {
            node_name: "n1".into(),
            host_ip: Some("10.0.0.5".into()),
            log_root: "/logs".into(),
            data_dir: "/data".into(),
            cgroup_root: Some("/skiff".into()),
            dns: parse_resolv_conf("nameserver 1.1.1.1\nsearch example.com\noptions ndots:2\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::tests_support::{desired, node};

    #[test]
    fn sandboxes_carry_identity_logs_dns_ports_and_cgroup() {
        let pod = desired(json!({
            "containers": [{"name": "c", "image": "img", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "hostNetwork": true,
        }));
        let config = sandbox_config(&pod, 1, &node());
        let metadata = config.metadata.as_ref().expect("metadata");
        assert_eq!((metadata.uid.as_str(), metadata.attempt), ("u1", 1));
        assert_eq!(config.log_directory, "/logs/default_web_u1");
        assert_eq!(config.labels[LABEL_POD_UID], "u1");
        assert_eq!(config.labels["app"], "web");
        assert_eq!(config.port_mappings[0].host_port, 8080);
        let dns = config.dns_config.as_ref().expect("dns");
        assert_eq!(dns.servers, ["1.1.1.1"]);
        assert_eq!(dns.searches, ["example.com"]);
        assert_eq!(dns.options, ["ndots:2"]);
        let linux = config.linux.as_ref().expect("linux");
        assert_eq!(linux.cgroup_parent, "/skiff/podu1");
        let namespaces = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.as_ref())
            .expect("namespaces");
        assert_eq!(namespaces.network, cri::NamespaceMode::Node as i32);
    }

    #[test]
    fn containers_get_env_mounts_resources_and_identity() {
        let pod = desired(json!({
            "containers": [{
                "name": "c", "image": "img", "command": ["/bin/sh"], "args": ["-c", "x"],
                "workingDir": "/w",
                "env": [
                    {"name": "PLAIN", "value": "v"},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                ],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "host", "mountPath": "/h", "readOnly": true}],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
                "securityContext": {"runAsUser": 1000, "privileged": true},
            }],
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "host", "hostPath": {"path": "/srv"}}],
        }));
        let facts = PodFacts {
            pod_ips: vec!["10.244.0.7".into()],
        };
        let config =
            container_config(&pod, &pod.spec.containers[0], 3, &node(), &facts).expect("config");
        let env: BTreeMap<&str, &str> = config
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(env["PLAIN"], "v");
        assert_eq!(env["NAME"], "web");
        assert_eq!(env["IP"], "10.244.0.7");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["HOSTNAME"], "web");
        assert_eq!(config.command, ["/bin/sh"]);
        assert_eq!(config.args, ["-c", "x"]);
        assert_eq!(config.working_dir, "/w");
        assert_eq!(config.log_path, "c/3.log");
        assert_eq!(config.labels[LABEL_CONTAINER_NAME], "c");
        assert_eq!(config.mounts[0].host_path, "/data/pods/u1/volumes/scratch");
        assert_eq!(
            (
                config.mounts[1].host_path.as_str(),
                config.mounts[1].readonly
            ),
            ("/srv", true)
        );
        let linux = config.linux.as_ref().expect("linux");
        let resources = linux.resources.as_ref().expect("resources");
        assert_eq!(resources.cpu_shares, 256);
        assert_eq!(
            (resources.cpu_quota, resources.cpu_period),
            (50_000, 100_000)
        );
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
        let security = linux.security_context.as_ref().expect("security");
        assert!(security.privileged);
        assert_eq!(security.run_as_user, Some(cri::Int64Value { value: 1000 }));
        assert!(sandbox_config(&pod, 0, &node())
            .linux
            .and_then(|l| l.security_context)
            .is_some_and(|s| s.privileged));
        assert_eq!(
            host_dirs(&pod, &node()),
            [
                PathBuf::from("/logs/default_web_u1"),
                "/logs/default_web_u1/c".into(),
                "/data/pods/u1/volumes/scratch".into()
            ]
        );
    }

    #[test]
    fn unresolvable_references_are_errors_unless_optional() {
        let pod = desired(json!({"containers": [{"name": "c", "image": "img", "env": [
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ]}]}));
        let result = container_config(
            &pod,
            &pod.spec.containers[0],
            0,
            &node(),
            &PodFacts::default(),
        );
        assert!(matches!(result, Err(SpecError::Unresolved(_))));

        let optional = desired(json!({"containers": [{"name": "c", "image": "img", "env": [
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}
        ]}]}));
        let config = container_config(
            &optional,
            &optional.spec.containers[0],
            0,
            &node(),
            &PodFacts::default(),
        )
        .expect("optional is skipped");
        assert!(config.envs.iter().all(|kv| kv.key != "S"));

        let no_volume = desired(json!({"containers": [{"name": "c", "image": "img",
            "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}]}));
        assert!(container_config(
            &no_volume,
            &no_volume.spec.containers[0],
            0,
            &node(),
            &PodFacts::default()
        )
        .is_err());
    }

    #[test]
    fn resolved_references_are_taken_as_they_are_and_unresolved_ones_say_why() {
        let mut pod = desired(json!({"containers": [{"name": "c", "image": "img",
            "env": [
                {"name": "FROM_CM", "value": "$(HOSTNAME)",
                 "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
                {"name": "OWN", "value": "$(HOSTNAME)"},
            ],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]}));
        let config = container_config(
            &pod,
            &pod.spec.containers[0],
            0,
            &node(),
            &PodFacts::default(),
        )
        .expect("config");
        let env: BTreeMap<&str, &str> = config
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(
            env["FROM_CM"], "$(HOSTNAME)",
            "resolved values are not expanded"
        );
        assert_eq!(env["OWN"], "web");
        assert_eq!(config.mounts[0].host_path, "/data/pods/u1/volumes/cfg");
        assert!(config.mounts[0].readonly, "configMap volumes are read-only");
        assert_eq!(pod.missing_volume(&pod.spec.containers[0]), None);

        pod.unresolved.push(Unresolved {
            container: String::new(),
            volume: "cfg".into(),
            message: "configmap \"cfg\" not found".into(),
        });
        assert_eq!(
            pod.missing_volume(&pod.spec.containers[0]).as_deref(),
            Some("configmap \"cfg\" not found")
        );

        let mut unresolved = desired(json!({"containers": [{"name": "c", "image": "img",
            "envFrom": [{"configMapRef": {"name": "gone"}}]}]}));
        let error = container_config(
            &unresolved,
            &unresolved.spec.containers[0],
            0,
            &node(),
            &PodFacts::default(),
        )
        .expect_err("unresolved");
        assert_eq!(error.to_string(), "configmap \"gone\" not found");
        unresolved.unresolved.push(Unresolved {
            container: "c".into(),
            volume: String::new(),
            message: "from the control plane".into(),
        });
        let error = container_config(
            &unresolved,
            &unresolved.spec.containers[0],
            0,
            &node(),
            &PodFacts::default(),
        )
        .expect_err("unresolved");
        assert_eq!(
            error,
            SpecError::Unresolved("from the control plane".into())
        );
    }

    #[test]
    fn re_resolved_env_does_not_change_the_container_hash() {
        let before = desired(json!({"containers": [{"name": "c", "image": "img", "env": [
            {"name": "A", "value": "1", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}}]}]}));
        let after = desired(json!({"containers": [{"name": "c", "image": "img", "env": [
            {"name": "A", "value": "2", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}}]}]}));
        let (before, after) = (&before.spec.containers[0], &after.spec.containers[0]);
        assert_eq!(container_hash(before), container_hash(after));
        assert!(hash_matches(&container_hash(before), after));
        // What an agent that hashed the whole spec wrote still matches.
        assert!(hash_matches(&short_hash(before), before));
        assert!(!hash_matches(&short_hash(before), after));
    }

    #[test]
    fn variable_references_expand_as_kubernetes_expands_them() {
        let env = [
            cri::KeyValue {
                key: "NAME".into(),
                value: "web".into(),
            },
            cri::KeyValue {
                key: "PORT".into(),
                value: "80".into(),
            },
        ];
        assert_eq!(expand("$(NAME):$(PORT)", &env), "web:80");
        assert_eq!(expand("$$(NAME) costs $5", &env), "$(NAME) costs $5");
        assert_eq!(expand("$(MISSING) $(NAME", &env), "$(MISSING) $(NAME");
        assert_eq!(expand("plain", &env), "plain");

        let pod = desired(json!({"containers": [{
            "name": "c", "image": "img",
            "command": ["echo", "$(GREETING) from $(POD)"],
            "args": ["$(HOSTNAME)"],
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "hello $(POD)"},
            ],
        }]}));
        let config = container_config(
            &pod,
            &pod.spec.containers[0],
            0,
            &node(),
            &PodFacts::default(),
        )
        .expect("config");
        assert_eq!(config.command, ["echo", "hello web from web"]);
        assert_eq!(config.args, ["web"]);
    }

    #[test]
    fn policies_and_grace_default_as_kubernetes_does() {
        let pod = desired(json!({"containers": []}));
        assert_eq!(pod.restart_policy(), RestartPolicy::Always);
        assert_eq!(pod.grace_seconds(), 30);
        let never = desired(
            json!({"containers": [], "restartPolicy": "Never", "terminationGracePeriodSeconds": 0}),
        );
        assert_eq!(never.restart_policy(), RestartPolicy::Never);
        assert_eq!(never.grace_seconds(), MINIMUM_GRACE_SECONDS);
        let a = desired(json!({"containers": [{"name": "c", "image": "a"}]}));
        let b = desired(json!({"containers": [{"name": "c", "image": "b"}]}));
        assert_ne!(
            container_hash(&a.spec.containers[0]),
            container_hash(&b.spec.containers[0])
        );
        assert_eq!(container_hash(&a.spec.containers[0]).len(), 16);
    }
}
