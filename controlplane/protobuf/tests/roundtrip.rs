//! Round trips: objects built from the k8s-pb structs, encoded with prost and
//! wrapped in the `runtime.Unknown` envelope the way a Kubernetes client
//! does, must decode to the JSON Kubernetes would write for them.
//!
//! The objects set zero values (`Some("")`, `Some(0)`, `Some(false)`) the way
//! Go's encoder always does for non-pointer fields, so the tests also check
//! that those are dropped for `omitempty` fields and kept for pointer fields.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{json, Value};
use skiff_k8s_protobuf::{decode_to_json, is_supported, supported_kinds, ProtobufError};

// ----- helpers -----

/// A request body as kubectl sends it: magic, then the envelope.
fn body<M: Message>(api_version: &str, kind: &str, object: &M) -> Vec<u8> {
    envelope(api_version, kind, object.encode_to_vec())
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(raw),
        content_encoding: s(""),
        content_type: s(""),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn decode(bytes: &[u8]) -> Value {
    decode_to_json(bytes).unwrap_or_else(|e| panic!("decoding failed: {e}"))
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), quantity(v)))
        .collect()
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int(v: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(v),
        str_val: s(""),
    })
}

fn string(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(v),
    })
}

/// 2026-01-02T03:04:05Z
const T0: i64 = 1_767_323_045;

fn time(seconds: i64) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

/// What Go sends for a zero `metav1.Time`: an empty message.
fn zero_time() -> Option<meta::Time> {
    Some(meta::Time::default())
}

/// ObjectMeta as a Go client fills it for a new object: every string field
/// present but empty.
fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: zero_time(),
        ..Default::default()
    })
}

fn labels(pairs: &[(&str, &str)]) -> Option<meta::ObjectMeta> {
    let mut m = meta("")?;
    m.labels = map(pairs);
    Some(m)
}

fn local_ref(name: &str) -> Option<core::LocalObjectReference> {
    Some(core::LocalObjectReference { name: s(name) })
}

fn container(name: &str, image: &str) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        working_dir: s(""),
        resources: Some(core::ResourceRequirements::default()),
        termination_message_path: s(""),
        termination_message_policy: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

fn template(
    labels_: &[(&str, &str)],
    containers: Vec<core::Container>,
) -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: labels(labels_),
        spec: Some(core::PodSpec {
            containers,
            ..Default::default()
        }),
    })
}

fn selector(pairs: &[(&str, &str)]) -> Option<meta::LabelSelector> {
    Some(meta::LabelSelector {
        match_labels: map(pairs),
        match_expressions: vec![],
    })
}

// ----- pods -----

fn full_pod() -> core::Pod {
    let mut metadata = meta("web-0").expect("meta");
    metadata.namespace = s("prod");
    metadata.uid = s("0b7c0a6e-1111-2222-3333-444455556666");
    metadata.resource_version = s("42");
    metadata.generation = Some(3);
    metadata.creation_timestamp = time(T0);
    metadata.deletion_timestamp = time(T0 + 60);
    metadata.deletion_grace_period_seconds = Some(0);
    metadata.labels = map(&[("app", "web")]);
    metadata.annotations = map(&[("note", "x")]);
    metadata.owner_references = vec![meta::OwnerReference {
        api_version: s("apps/v1"),
        kind: s("ReplicaSet"),
        name: s("web-abc"),
        uid: s("u-1"),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }];
    metadata.finalizers = strings(&["example.com/keep"]);
    metadata.managed_fields = vec![meta::ManagedFieldsEntry {
        manager: s("kubectl-create"),
        operation: s("Update"),
        api_version: s("v1"),
        time: time(T0),
        fields_type: s("FieldsV1"),
        fields_v1: Some(meta::FieldsV1 {
            raw: Some(br#"{"f:metadata":{"f:labels":{".":{}}}}"#.to_vec()),
        }),
        subresource: s(""),
    }];

    let mut app = container("app", "nginx:1.27");
    app.command = strings(&["/bin/sh", "-c"]);
    app.args = strings(&["exec nginx"]);
    app.working_dir = s("/srv");
    app.ports = vec![core::ContainerPort {
        name: s("http"),
        host_port: Some(0),
        container_port: Some(80),
        protocol: s("TCP"),
        host_ip: s(""),
    }];
    app.env_from = vec![core::EnvFromSource {
        prefix: s("CFG_"),
        config_map_ref: Some(core::ConfigMapEnvSource {
            local_object_reference: local_ref("settings"),
            optional: Some(true),
        }),
        secret_ref: None,
    }];
    app.env = vec![
        core::EnvVar {
            name: s("PLAIN"),
            value: s("1"),
            value_from: None,
        },
        core::EnvVar {
            name: s("EMPTY"),
            value: s(""),
            value_from: None,
        },
        core::EnvVar {
            name: s("POD_IP"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                field_ref: Some(core::ObjectFieldSelector {
                    api_version: s("v1"),
                    field_path: s("status.podIP"),
                }),
                ..Default::default()
            }),
        },
        core::EnvVar {
            name: s("PASSWORD"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: local_ref("db"),
                    key: s("password"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
        core::EnvVar {
            name: s("LEVEL"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                config_map_key_ref: Some(core::ConfigMapKeySelector {
                    local_object_reference: local_ref("settings"),
                    key: s("level"),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
        core::EnvVar {
            name: s("MEM"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                resource_field_ref: Some(core::ResourceFieldSelector {
                    container_name: s(""),
                    resource: s("limits.memory"),
                    divisor: Some(quantity("1Mi")),
                }),
                ..Default::default()
            }),
        },
    ];
    app.resources = Some(core::ResourceRequirements {
        limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
        requests: quantities(&[("cpu", "250m")]),
        claims: vec![],
    });
    app.volume_mounts = vec![
        core::VolumeMount {
            name: s("data"),
            read_only: Some(false),
            mount_path: s("/data"),
            sub_path: s(""),
            sub_path_expr: s(""),
            ..Default::default()
        },
        core::VolumeMount {
            name: s("config"),
            read_only: Some(true),
            mount_path: s("/etc/app"),
            sub_path: s("app.conf"),
            mount_propagation: s("None"),
            ..Default::default()
        },
    ];
    app.liveness_probe = Some(core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: s("/healthz"),
                port: string("http"),
                host: s(""),
                scheme: s("HTTP"),
                http_headers: vec![core::HttpHeader {
                    name: s("X-Probe"),
                    value: s("1"),
                }],
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(5),
        timeout_seconds: Some(1),
        period_seconds: Some(10),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        termination_grace_period_seconds: None,
    });
    app.readiness_probe = Some(core::Probe {
        handler: Some(core::ProbeHandler {
            tcp_socket: Some(core::TcpSocketAction {
                port: int(80),
                host: s(""),
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        ..Default::default()
    });
    app.startup_probe = Some(core::Probe {
        handler: Some(core::ProbeHandler {
            grpc: Some(core::GrpcAction {
                port: Some(9000),
                service: s(""),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    app.lifecycle = Some(core::Lifecycle {
        post_start: Some(core::LifecycleHandler {
            sleep: Some(core::SleepAction { seconds: Some(2) }),
            ..Default::default()
        }),
        pre_stop: Some(core::LifecycleHandler {
            exec: Some(core::ExecAction {
                command: strings(&["nginx", "-s", "quit"]),
            }),
            ..Default::default()
        }),
        stop_signal: None,
    });
    app.termination_message_path = s("/dev/termination-log");
    app.termination_message_policy = s("File");
    app.image_pull_policy = s("IfNotPresent");
    app.security_context = Some(core::SecurityContext {
        capabilities: Some(core::Capabilities {
            add: strings(&["NET_BIND_SERVICE"]),
            drop: strings(&["ALL"]),
        }),
        privileged: Some(false),
        run_as_user: Some(0),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    });
    app.stdin = Some(true);

    let init = container("init", "busybox");

    let volumes = vec![
        core::Volume {
            name: s("data"),
            volume_source: Some(core::VolumeSource {
                empty_dir: Some(core::EmptyDirVolumeSource {
                    medium: s(""),
                    size_limit: Some(quantity("1Gi")),
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("host"),
            volume_source: Some(core::VolumeSource {
                host_path: Some(core::HostPathVolumeSource {
                    path: s("/var/log"),
                    r#type: s(""),
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("config"),
            volume_source: Some(core::VolumeSource {
                config_map: Some(core::ConfigMapVolumeSource {
                    local_object_reference: local_ref("settings"),
                    items: vec![core::KeyToPath {
                        key: s("app.conf"),
                        path: s("app.conf"),
                        mode: None,
                    }],
                    default_mode: Some(420),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("certs"),
            volume_source: Some(core::VolumeSource {
                secret: Some(core::SecretVolumeSource {
                    secret_name: s("tls"),
                    items: vec![],
                    default_mode: Some(256),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("claim"),
            volume_source: Some(core::VolumeSource {
                persistent_volume_claim: Some(core::PersistentVolumeClaimVolumeSource {
                    claim_name: s("data-web-0"),
                    read_only: Some(false),
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("podinfo"),
            volume_source: Some(core::VolumeSource {
                downward_api: Some(core::DownwardAPIVolumeSource {
                    items: vec![core::DownwardAPIVolumeFile {
                        path: s("labels"),
                        field_ref: Some(core::ObjectFieldSelector {
                            api_version: s("v1"),
                            field_path: s("metadata.labels"),
                        }),
                        resource_field_ref: None,
                        mode: None,
                    }],
                    default_mode: Some(420),
                }),
                ..Default::default()
            }),
        },
        core::Volume {
            name: s("token"),
            volume_source: Some(core::VolumeSource {
                projected: Some(core::ProjectedVolumeSource {
                    sources: vec![
                        core::VolumeProjection {
                            service_account_token: Some(core::ServiceAccountTokenProjection {
                                audience: s(""),
                                expiration_seconds: Some(3607),
                                path: s("token"),
                            }),
                            ..Default::default()
                        },
                        core::VolumeProjection {
                            config_map: Some(core::ConfigMapProjection {
                                local_object_reference: local_ref("kube-root-ca.crt"),
                                items: vec![core::KeyToPath {
                                    key: s("ca.crt"),
                                    path: s("ca.crt"),
                                    mode: Some(292),
                                }],
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ],
                    default_mode: Some(420),
                }),
                ..Default::default()
            }),
        },
    ];

    let spec = core::PodSpec {
        volumes,
        init_containers: vec![init],
        containers: vec![app],
        restart_policy: s("Always"),
        termination_grace_period_seconds: Some(30),
        active_deadline_seconds: Some(0),
        dns_policy: s("ClusterFirst"),
        node_selector: map(&[("kubernetes.io/os", "linux")]),
        service_account_name: s("web"),
        service_account: s("web"),
        automount_service_account_token: Some(false),
        node_name: s("node-1"),
        host_network: Some(true),
        host_pid: Some(false),
        host_ipc: Some(false),
        security_context: Some(core::PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(2000),
            supplemental_groups: vec![1000, 3000],
            sysctls: vec![core::Sysctl {
                name: s("net.ipv4.ip_local_port_range"),
                value: s("1024 65535"),
            }],
            seccomp_profile: Some(core::SeccompProfile {
                r#type: s("RuntimeDefault"),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        image_pull_secrets: vec![core::LocalObjectReference { name: s("regcred") }],
        hostname: s("web-0"),
        subdomain: s("web"),
        affinity: Some(core::Affinity {
            node_affinity: Some(core::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                    node_selector_terms: vec![core::NodeSelectorTerm {
                        match_expressions: vec![core::NodeSelectorRequirement {
                            key: s("zone"),
                            operator: s("In"),
                            values: strings(&["a", "b"]),
                        }],
                        match_fields: vec![],
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: vec![
                    core::PreferredSchedulingTerm {
                        weight: Some(1),
                        preference: Some(core::NodeSelectorTerm {
                            match_expressions: vec![core::NodeSelectorRequirement {
                                key: s("disk"),
                                operator: s("Exists"),
                                values: vec![],
                            }],
                            match_fields: vec![],
                        }),
                    },
                ],
            }),
            pod_affinity: None,
            pod_anti_affinity: Some(core::PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: vec![],
                preferred_during_scheduling_ignored_during_execution: vec![
                    core::WeightedPodAffinityTerm {
                        weight: Some(100),
                        pod_affinity_term: Some(core::PodAffinityTerm {
                            label_selector: Some(meta::LabelSelector {
                                match_labels: BTreeMap::new(),
                                match_expressions: vec![meta::LabelSelectorRequirement {
                                    key: s("app"),
                                    operator: s("In"),
                                    values: strings(&["web"]),
                                }],
                            }),
                            topology_key: s("kubernetes.io/hostname"),
                            ..Default::default()
                        }),
                    },
                ],
            }),
        }),
        scheduler_name: s("default-scheduler"),
        tolerations: vec![core::Toleration {
            key: s("node.kubernetes.io/not-ready"),
            operator: s("Exists"),
            value: s(""),
            effect: s("NoExecute"),
            toleration_seconds: Some(300),
        }],
        host_aliases: vec![core::HostAlias {
            ip: s("10.0.0.1"),
            hostnames: strings(&["db.local"]),
        }],
        priority_class_name: s("high"),
        priority: Some(1000),
        dns_config: Some(core::PodDnsConfig {
            nameservers: strings(&["1.1.1.1"]),
            searches: vec![],
            options: vec![core::PodDnsConfigOption {
                name: s("ndots"),
                value: s("2"),
            }],
        }),
        enable_service_links: Some(false),
        preemption_policy: s("PreemptLowerPriority"),
        topology_spread_constraints: vec![core::TopologySpreadConstraint {
            max_skew: Some(1),
            topology_key: s("zone"),
            when_unsatisfiable: s("DoNotSchedule"),
            label_selector: selector(&[("app", "web")]),
            ..Default::default()
        }],
        os: Some(core::PodOs { name: s("linux") }),
        ..Default::default()
    };

    let status = core::PodStatus {
        phase: s("Running"),
        conditions: vec![core::PodCondition {
            r#type: s("Ready"),
            status: s("True"),
            last_probe_time: zero_time(),
            last_transition_time: time(T0),
            reason: s(""),
            message: s(""),
            observed_generation: Some(0),
        }],
        host_ip: s("192.0.2.10"),
        pod_ip: s("10.244.0.5"),
        pod_ips: vec![core::PodIp {
            ip: s("10.244.0.5"),
        }],
        start_time: time(T0),
        container_statuses: vec![core::ContainerStatus {
            name: s("app"),
            state: Some(core::ContainerState {
                running: Some(core::ContainerStateRunning {
                    started_at: time(T0 + 1),
                }),
                ..Default::default()
            }),
            last_state: Some(core::ContainerState::default()),
            ready: Some(true),
            restart_count: Some(0),
            image: s("nginx:1.27"),
            image_id: s(""),
            container_id: s("containerd://abc"),
            started: Some(true),
            ..Default::default()
        }],
        qos_class: s("Burstable"),
        ..Default::default()
    };

    core::Pod {
        metadata: Some(metadata),
        spec: Some(spec),
        status: Some(status),
    }
}

#[test]
fn pod_with_every_common_field() {
    let got = decode(&body("v1", "Pod", &full_pod()));
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "prod",
            "uid": "0b7c0a6e-1111-2222-3333-444455556666",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "deletionTimestamp": "2026-01-02T03:05:05Z",
            "deletionGracePeriodSeconds": 0,
            "labels": {"app": "web"},
            "annotations": {"note": "x"},
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-abc",
                "uid": "u-1",
                "controller": true,
                "blockOwnerDeletion": false
            }],
            "finalizers": ["example.com/keep"],
            "managedFields": [{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-01-02T03:04:05Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}
            }]
        },
        "spec": {
            "volumes": [
                {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
                {"name": "config", "configMap": {
                    "name": "settings",
                    "items": [{"key": "app.conf", "path": "app.conf"}],
                    "defaultMode": 420
                }},
                {"name": "certs", "secret": {"secretName": "tls", "defaultMode": 256, "optional": false}},
                {"name": "claim", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "podinfo", "downwardAPI": {
                    "items": [{"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}}],
                    "defaultMode": 420
                }},
                {"name": "token", "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt", "mode": 292}]}}
                    ],
                    "defaultMode": 420
                }}
            ],
            "initContainers": [{"name": "init", "image": "busybox", "resources": {}}],
            "containers": [{
                "name": "app",
                "image": "nginx:1.27",
                "command": ["/bin/sh", "-c"],
                "args": ["exec nginx"],
                "workingDir": "/srv",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings", "optional": true}}],
                "env": [
                    {"name": "PLAIN", "value": "1"},
                    {"name": "EMPTY"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}}},
                    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m"}
                },
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "config", "readOnly": true, "mountPath": "/etc/app", "subPath": "app.conf", "mountPropagation": "None"}
                ],
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                    "initialDelaySeconds": 5,
                    "timeoutSeconds": 1,
                    "periodSeconds": 10,
                    "successThreshold": 1,
                    "failureThreshold": 3
                },
                "readinessProbe": {"tcpSocket": {"port": 80}},
                "startupProbe": {"grpc": {"port": 9000, "service": ""}},
                "lifecycle": {
                    "postStart": {"sleep": {"seconds": 2}},
                    "preStop": {"exec": {"command": ["nginx", "-s", "quit"]}}
                },
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                    "privileged": false,
                    "runAsUser": 0,
                    "readOnlyRootFilesystem": true
                },
                "stdin": true
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "activeDeadlineSeconds": 0,
            "dnsPolicy": "ClusterFirst",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "serviceAccountName": "web",
            "serviceAccount": "web",
            "automountServiceAccountToken": false,
            "nodeName": "node-1",
            "hostNetwork": true,
            "securityContext": {
                "runAsNonRoot": true,
                "supplementalGroups": [1000, 3000],
                "fsGroup": 2000,
                "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "imagePullSecrets": [{"name": "regcred"}],
            "hostname": "web-0",
            "subdomain": "web",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]
                    },
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
                    ]
                },
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                            "topologyKey": "kubernetes.io/hostname"
                        }
                    }]
                }
            },
            "schedulerName": "default-scheduler",
            "tolerations": [{
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300
            }],
            "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db.local"]}],
            "priorityClassName": "high",
            "priority": 1000,
            "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]},
            "enableServiceLinks": false,
            "preemptionPolicy": "PreemptLowerPriority",
            "topologySpreadConstraints": [{
                "maxSkew": 1,
                "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}}
            }],
            "os": {"name": "linux"}
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:05Z"}],
            "hostIP": "192.0.2.10",
            "podIP": "10.244.0.5",
            "podIPs": [{"ip": "10.244.0.5"}],
            "startTime": "2026-01-02T03:04:05Z",
            "containerStatuses": [{
                "name": "app",
                "state": {"running": {"startedAt": "2026-01-02T03:04:06Z"}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": "nginx:1.27",
                "imageID": "",
                "containerID": "containerd://abc",
                "started": true
            }],
            "qosClass": "Burstable"
        }
    });
    assert_eq!(got, expected);
}

#[test]
fn replication_controller() {
    let rc = core::ReplicationController {
        metadata: meta("rc"),
        spec: Some(core::ReplicationControllerSpec {
            replicas: Some(0),
            min_ready_seconds: Some(0),
            selector: map(&[("app", "rc")]),
            template: template(&[("app", "rc")], vec![container("c", "busybox")]),
        }),
        status: Some(core::ReplicationControllerStatus::default()),
    };
    assert_eq!(
        decode(&body("v1", "ReplicationController", &rc)),
        json!({
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "rc"},
            "spec": {
                "replicas": 0,
                "selector": {"app": "rc"},
                "template": {
                    "metadata": {"labels": {"app": "rc"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {}}]}
                }
            },
            "status": {"replicas": 0}
        })
    );
}

// ----- apps/v1 -----

#[test]
fn deployment_with_rolling_update_and_status() {
    let d = apps::Deployment {
        metadata: meta("api"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: selector(&[("app", "api")]),
            template: template(&[("app", "api")], vec![container("api", "api:2")]),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int(0),
                    max_surge: string("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
            paused: Some(false),
            progress_deadline_seconds: Some(600),
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(0),
            conditions: vec![apps::DeploymentCondition {
                r#type: s("Available"),
                status: s("True"),
                last_update_time: time(T0),
                last_transition_time: time(T0),
                reason: s("MinimumReplicasAvailable"),
                message: s(""),
            }],
            collision_count: Some(0),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode(&body("apps/v1", "Deployment", &d)),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "api:2", "resources": {}}]}
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            },
            "status": {
                "observedGeneration": 1,
                "conditions": [{
                    "type": "Available",
                    "status": "True",
                    "lastUpdateTime": "2026-01-02T03:04:05Z",
                    "lastTransitionTime": "2026-01-02T03:04:05Z",
                    "reason": "MinimumReplicasAvailable"
                }],
                "collisionCount": 0
            }
        })
    );
}

#[test]
fn replica_set_and_daemon_set() {
    let rs = apps::ReplicaSet {
        metadata: meta("rs"),
        spec: Some(apps::ReplicaSetSpec {
            replicas: Some(3),
            min_ready_seconds: Some(5),
            selector: selector(&[("app", "rs")]),
            template: template(&[("app", "rs")], vec![container("c", "img")]),
        }),
        status: Some(apps::ReplicaSetStatus {
            replicas: Some(0),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode(&body("apps/v1", "ReplicaSet", &rs)),
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "rs"},
            "spec": {
                "replicas": 3,
                "minReadySeconds": 5,
                "selector": {"matchLabels": {"app": "rs"}},
                "template": {
                    "metadata": {"labels": {"app": "rs"}},
                    "spec": {"containers": [{"name": "c", "image": "img", "resources": {}}]}
                }
            },
            "status": {"replicas": 0}
        })
    );

    let ds = apps::DaemonSet {
        metadata: meta("agent"),
        spec: Some(apps::DaemonSetSpec {
            selector: selector(&[("app", "agent")]),
            template: template(&[("app", "agent")], vec![container("agent", "agent:1")]),
            update_strategy: Some(apps::DaemonSetUpdateStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDaemonSet {
                    max_unavailable: int(1),
                    max_surge: int(0),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
        }),
        status: None,
    };
    assert_eq!(
        decode(&body("apps/v1", "DaemonSet", &ds)),
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "agent", "image": "agent:1", "resources": {}}]}
                },
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "revisionHistoryLimit": 10
            },
            "status": {
                "currentNumberScheduled": 0,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": 0,
                "numberReady": 0
            }
        })
    );
}

#[test]
fn stateful_set_with_volume_claim_templates() {
    let ss = apps::StatefulSet {
        metadata: meta("db"),
        spec: Some(apps::StatefulSetSpec {
            replicas: Some(3),
            selector: selector(&[("app", "db")]),
            template: template(&[("app", "db")], vec![container("db", "postgres:17")]),
            volume_claim_templates: vec![core::PersistentVolumeClaim {
                metadata: meta("data"),
                spec: Some(core::PersistentVolumeClaimSpec {
                    access_modes: strings(&["ReadWriteOnce"]),
                    resources: Some(core::VolumeResourceRequirements {
                        limits: BTreeMap::new(),
                        requests: quantities(&[("storage", "10Gi")]),
                    }),
                    volume_name: s(""),
                    storage_class_name: s(""),
                    volume_mode: s("Filesystem"),
                    ..Default::default()
                }),
                status: Some(core::PersistentVolumeClaimStatus {
                    phase: s("Pending"),
                    ..Default::default()
                }),
            }],
            service_name: s("db"),
            pod_management_policy: s("Parallel"),
            update_strategy: Some(apps::StatefulSetUpdateStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            revision_history_limit: Some(10),
            min_ready_seconds: Some(0),
            persistent_volume_claim_retention_policy: Some(
                apps::StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: s("Retain"),
                    when_scaled: s("Delete"),
                },
            ),
            ordinals: Some(apps::StatefulSetOrdinals { start: Some(1) }),
        }),
        status: Some(apps::StatefulSetStatus::default()),
    };
    assert_eq!(
        decode(&body("apps/v1", "StatefulSet", &ss)),
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": "postgres:17", "resources": {}}]}
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Gi"}},
                        "storageClassName": "",
                        "volumeMode": "Filesystem"
                    },
                    "status": {"phase": "Pending"}
                }],
                "serviceName": "db",
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "revisionHistoryLimit": 10,
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
                "ordinals": {"start": 1}
            },
            "status": {"replicas": 0}
        })
    );
}

// ----- batch/v1 -----

fn job_spec() -> batch::JobSpec {
    let mut t = template(&[], vec![container("work", "busybox")]).expect("template");
    if let Some(spec) = t.spec.as_mut() {
        spec.restart_policy = s("Never");
    }
    batch::JobSpec {
        parallelism: Some(2),
        completions: Some(4),
        backoff_limit: Some(0),
        pod_failure_policy: Some(batch::PodFailurePolicy {
            rules: vec![batch::PodFailurePolicyRule {
                action: s("FailJob"),
                on_exit_codes: Some(batch::PodFailurePolicyOnExitCodesRequirement {
                    container_name: None,
                    operator: s("In"),
                    values: vec![42],
                }),
                on_pod_conditions: vec![],
            }],
        }),
        completion_mode: s("Indexed"),
        suspend: Some(false),
        template: Some(t),
        ttl_seconds_after_finished: Some(100),
        ..Default::default()
    }
}

fn job_spec_json() -> Value {
    json!({
        "parallelism": 2,
        "completions": 4,
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]},
        "backoffLimit": 0,
        "template": {
            "metadata": {},
            "spec": {"containers": [{"name": "work", "image": "busybox", "resources": {}}], "restartPolicy": "Never"}
        },
        "ttlSecondsAfterFinished": 100,
        "completionMode": "Indexed",
        "suspend": false
    })
}

#[test]
fn job_and_cron_job() {
    let job = batch::Job {
        metadata: meta("j"),
        spec: Some(job_spec()),
        status: Some(batch::JobStatus {
            start_time: time(T0),
            active: Some(2),
            succeeded: Some(0),
            completed_indexes: s(""),
            ready: Some(0),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode(&body("batch/v1", "Job", &job)),
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": job_spec_json(),
            "status": {"startTime": "2026-01-02T03:04:05Z", "active": 2, "ready": 0}
        })
    );

    let cron = batch::CronJob {
        metadata: meta("nightly"),
        spec: Some(batch::CronJobSpec {
            schedule: s("0 3 * * *"),
            time_zone: s("Etc/UTC"),
            starting_deadline_seconds: Some(60),
            concurrency_policy: s("Forbid"),
            suspend: Some(false),
            job_template: Some(batch::JobTemplateSpec {
                metadata: meta("nightly"),
                spec: Some(job_spec()),
            }),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(1),
        }),
        status: Some(batch::CronJobStatus {
            active: vec![core::ObjectReference {
                kind: s("Job"),
                namespace: s("default"),
                name: s("nightly-1"),
                uid: s(""),
                api_version: s("batch/v1"),
                resource_version: s(""),
                field_path: s(""),
            }],
            last_schedule_time: time(T0),
            last_successful_time: None,
        }),
    };
    assert_eq!(
        decode(&body("batch/v1", "CronJob", &cron)),
        json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "0 3 * * *",
                "timeZone": "Etc/UTC",
                "startingDeadlineSeconds": 60,
                "concurrencyPolicy": "Forbid",
                "suspend": false,
                "jobTemplate": {"metadata": {"name": "nightly"}, "spec": job_spec_json()},
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 1
            },
            "status": {
                "active": [{"kind": "Job", "namespace": "default", "name": "nightly-1", "apiVersion": "batch/v1"}],
                "lastScheduleTime": "2026-01-02T03:04:05Z"
            }
        })
    );
}

// ----- other core kinds -----

#[test]
fn config_map_and_secret_bytes() {
    let cm = core::ConfigMap {
        metadata: meta("cm"),
        immutable: Some(true),
        data: map(&[("k", "v")]),
        binary_data: [("bin".to_owned(), vec![0u8, 1, 2, 255])]
            .into_iter()
            .collect(),
    };
    assert_eq!(
        decode(&body("v1", "ConfigMap", &cm)),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm"},
            "immutable": true,
            "data": {"k": "v"},
            "binaryData": {"bin": "AAEC/w=="}
        })
    );

    let secret = core::Secret {
        metadata: meta("tls"),
        immutable: Some(false),
        data: [
            ("tls.crt".to_owned(), b"CERT".to_vec()),
            ("empty".to_owned(), vec![]),
        ]
        .into_iter()
        .collect(),
        string_data: map(&[("extra", "plain")]),
        r#type: s("kubernetes.io/tls"),
    };
    assert_eq!(
        decode(&body("v1", "Secret", &secret)),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls"},
            "immutable": false,
            "data": {"tls.crt": "Q0VSVA==", "empty": ""},
            "stringData": {"extra": "plain"},
            "type": "kubernetes.io/tls"
        })
    );
}

#[test]
fn namespace_service_account_endpoints() {
    let ns = core::Namespace {
        metadata: meta("team"),
        spec: Some(core::NamespaceSpec {
            finalizers: strings(&["kubernetes"]),
        }),
        status: Some(core::NamespaceStatus {
            phase: s("Active"),
            conditions: vec![],
        }),
    };
    assert_eq!(
        decode(&body("v1", "Namespace", &ns)),
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team"},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        })
    );

    let sa = core::ServiceAccount {
        metadata: meta("builder"),
        secrets: vec![core::ObjectReference {
            name: s("builder-token"),
            ..Default::default()
        }],
        image_pull_secrets: vec![core::LocalObjectReference { name: s("regcred") }],
        automount_service_account_token: Some(false),
    };
    assert_eq!(
        decode(&body("v1", "ServiceAccount", &sa)),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "builder"},
            "secrets": [{"name": "builder-token"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "automountServiceAccountToken": false
        })
    );

    let ep = core::Endpoints {
        metadata: meta("web"),
        subsets: vec![core::EndpointSubset {
            addresses: vec![core::EndpointAddress {
                ip: s("10.244.0.5"),
                hostname: s(""),
                node_name: s("node-1"),
                target_ref: Some(core::ObjectReference {
                    kind: s("Pod"),
                    namespace: s("default"),
                    name: s("web-0"),
                    uid: s("u-2"),
                    ..Default::default()
                }),
            }],
            not_ready_addresses: vec![],
            ports: vec![core::EndpointPort {
                name: s(""),
                port: Some(8080),
                protocol: s("TCP"),
                app_protocol: None,
            }],
        }],
    };
    assert_eq!(
        decode(&body("v1", "Endpoints", &ep)),
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{
                    "ip": "10.244.0.5",
                    "nodeName": "node-1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0", "uid": "u-2"}
                }],
                "ports": [{"port": 8080, "protocol": "TCP"}]
            }]
        })
    );
}

#[test]
fn load_balancer_service_with_status() {
    let svc = core::Service {
        metadata: meta("lb"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("https"),
                protocol: s("TCP"),
                app_protocol: s("https"),
                port: Some(443),
                target_port: string("https"),
                node_port: Some(30443),
            }],
            selector: map(&[("app", "lb")]),
            cluster_ip: s("10.96.0.10"),
            cluster_ips: strings(&["10.96.0.10"]),
            r#type: s("LoadBalancer"),
            session_affinity: s("ClientIP"),
            external_traffic_policy: s("Local"),
            health_check_node_port: Some(32000),
            publish_not_ready_addresses: Some(false),
            session_affinity_config: Some(core::SessionAffinityConfig {
                client_ip: Some(core::ClientIpConfig {
                    timeout_seconds: Some(10800),
                }),
            }),
            ip_families: strings(&["IPv4"]),
            ip_family_policy: s("SingleStack"),
            allocate_load_balancer_node_ports: Some(true),
            internal_traffic_policy: s("Cluster"),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus {
                ingress: vec![core::LoadBalancerIngress {
                    ip: s("192.0.2.1"),
                    hostname: s(""),
                    ip_mode: s("VIP"),
                    ports: vec![],
                }],
            }),
            conditions: vec![meta::Condition {
                r#type: s("Ready"),
                status: s("True"),
                observed_generation: Some(0),
                last_transition_time: time(T0),
                reason: s("Provisioned"),
                message: s(""),
            }],
        }),
    };
    assert_eq!(
        decode(&body("v1", "Service", &svc)),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "lb"},
            "spec": {
                "ports": [{"name": "https", "protocol": "TCP", "appProtocol": "https", "port": 443, "targetPort": "https", "nodePort": 30443}],
                "selector": {"app": "lb"},
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "type": "LoadBalancer",
                "sessionAffinity": "ClientIP",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "allocateLoadBalancerNodePorts": true,
                "internalTrafficPolicy": "Cluster"
            },
            "status": {
                "loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]},
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "lastTransitionTime": "2026-01-02T03:04:05Z",
                    "reason": "Provisioned",
                    "message": ""
                }]
            }
        })
    );
}

#[test]
fn event_with_micro_time() {
    let ev = core::Event {
        metadata: meta("web-0.1"),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            namespace: s("default"),
            name: s("web-0"),
            ..Default::default()
        }),
        reason: s("Scheduled"),
        message: s("assigned"),
        source: Some(core::EventSource {
            component: s("default-scheduler"),
            host: s(""),
        }),
        first_timestamp: zero_time(),
        last_timestamp: time(T0),
        count: Some(1),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime {
            seconds: Some(T0),
            nanos: Some(123_456_789),
        }),
        series: None,
        action: s("Binding"),
        related: None,
        reporting_component: s("default-scheduler"),
        reporting_instance: s(""),
    };
    assert_eq!(
        decode(&body("v1", "Event", &ev)),
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "web-0.1"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0"},
            "reason": "Scheduled",
            "message": "assigned",
            "source": {"component": "default-scheduler"},
            "lastTimestamp": "2026-01-02T03:04:05Z",
            "count": 1,
            "type": "Normal",
            "eventTime": "2026-01-02T03:04:05.123456Z",
            "action": "Binding",
            "reportingComponent": "default-scheduler",
            "reportingInstance": ""
        })
    );
}

#[test]
fn node_with_status() {
    let node = core::Node {
        metadata: labels(&[("kubernetes.io/hostname", "node-1")]).map(|mut m| {
            m.name = s("node-1");
            m
        }),
        spec: Some(core::NodeSpec {
            pod_cidr: s("10.244.1.0/24"),
            pod_cid_rs: strings(&["10.244.1.0/24"]),
            provider_id: s(""),
            unschedulable: Some(false),
            taints: vec![core::Taint {
                key: s("node-role.kubernetes.io/control-plane"),
                value: s(""),
                effect: s("NoSchedule"),
                time_added: None,
            }],
            config_source: None,
            external_id: s(""),
        }),
        status: Some(core::NodeStatus {
            capacity: quantities(&[("cpu", "2"), ("memory", "24Gi"), ("pods", "110")]),
            allocatable: quantities(&[("cpu", "2")]),
            phase: s(""),
            conditions: vec![core::NodeCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_heartbeat_time: time(T0),
                last_transition_time: time(T0 - 3600),
                reason: s("KubeletReady"),
                message: s("kubelet is posting ready status"),
            }],
            addresses: vec![core::NodeAddress {
                r#type: s("InternalIP"),
                address: s("192.0.2.10"),
            }],
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10250) }),
            }),
            node_info: Some(core::NodeSystemInfo {
                machine_id: s("m"),
                kubelet_version: s("v1.33.1"),
                operating_system: s("linux"),
                architecture: s("amd64"),
                ..Default::default()
            }),
            images: vec![core::ContainerImage {
                names: strings(&["nginx:1.27"]),
                size_bytes: Some(1000),
            }],
            ..Default::default()
        }),
    };
    assert_eq!(
        decode(&body("v1", "Node", &node)),
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {
                "podCIDR": "10.244.1.0/24",
                "podCIDRs": ["10.244.1.0/24"],
                "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            },
            "status": {
                "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                "allocatable": {"cpu": "2"},
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": "2026-01-02T03:04:05Z",
                    "lastTransitionTime": "2026-01-02T02:04:05Z",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status"
                }],
                "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": "m",
                    "systemUUID": "",
                    "bootID": "",
                    "kernelVersion": "",
                    "osImage": "",
                    "containerRuntimeVersion": "",
                    "kubeletVersion": "v1.33.1",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64"
                },
                "images": [{"names": ["nginx:1.27"], "sizeBytes": 1000}]
            }
        })
    );
}

// ----- the kind table -----

#[test]
fn supported_kinds_are_listed() {
    let kinds: Vec<_> = supported_kinds().collect();
    assert_eq!(kinds.len(), 16);
    assert!(is_supported("apps/v1", "Deployment"));
    assert!(is_supported("v1", "Secret"));
    assert!(!is_supported("apps/v1", "Secret"));
    assert!(!is_supported("rbac.authorization.k8s.io/v1", "Role"));
}

/// A message of every supported kind with nothing set still converts, and
/// carries apiVersion and kind.
#[test]
fn empty_objects_of_every_kind() {
    for (api_version, kind) in supported_kinds() {
        let v = decode(&envelope(api_version, kind, vec![]));
        assert_eq!(v["apiVersion"], json!(api_version), "{kind}");
        assert_eq!(v["kind"], json!(kind), "{kind}");
        assert_eq!(v["metadata"], json!({}), "{kind}");
    }
}

// ----- errors -----

#[test]
fn rejects_a_body_without_magic() {
    let mut bytes = body("v1", "ConfigMap", &core::ConfigMap::default());
    bytes[0] = b'K';
    assert!(matches!(
        decode_to_json(&bytes),
        Err(ProtobufError::MissingMagic)
    ));
    assert!(matches!(
        decode_to_json(b""),
        Err(ProtobufError::MissingMagic)
    ));
    assert!(matches!(
        decode_to_json(br#"{"kind":"ConfigMap"}"#),
        Err(ProtobufError::MissingMagic)
    ));
}

#[test]
fn rejects_a_malformed_envelope() {
    // Field 1 announced as 100 bytes long, but the body ends.
    let err = decode_to_json(b"k8s\0\x0a\x64\x0a").expect_err("truncated");
    assert!(matches!(err, ProtobufError::Envelope(_)), "{err:?}");
}

#[test]
fn rejects_an_envelope_without_type_meta() {
    let unknown = Unknown {
        type_meta: None,
        raw: Some(vec![]),
        content_encoding: None,
        content_type: None,
    };
    let mut bytes = b"k8s\0".to_vec();
    bytes.extend(unknown.encode_to_vec());
    assert!(matches!(
        decode_to_json(&bytes),
        Err(ProtobufError::MissingTypeMeta)
    ));
    assert!(matches!(
        decode_to_json(&envelope("v1", "", vec![])),
        Err(ProtobufError::MissingTypeMeta)
    ));
}

#[test]
fn rejects_encoded_or_foreign_content() {
    let wrap = |encoding: &str, content_type: &str| {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("ConfigMap"),
            }),
            raw: Some(vec![]),
            content_encoding: s(encoding),
            content_type: s(content_type),
        };
        let mut bytes = b"k8s\0".to_vec();
        bytes.extend(unknown.encode_to_vec());
        decode_to_json(&bytes)
    };
    assert!(matches!(
        wrap("gzip", ""),
        Err(ProtobufError::UnsupportedEncoding { .. })
    ));
    assert!(matches!(
        wrap("", "application/json"),
        Err(ProtobufError::UnsupportedContentType { .. })
    ));
    assert!(wrap("", "application/vnd.kubernetes.protobuf").is_ok());
}

#[test]
fn rejects_unsupported_kinds_with_a_hint() {
    let err = decode_to_json(&envelope("rbac.authorization.k8s.io/v1", "Role", vec![]))
        .expect_err("Role has no converter");
    assert!(matches!(err, ProtobufError::UnsupportedKind { .. }));
    let message = err.to_string();
    assert!(message.contains("Role"), "{message}");
    assert!(message.contains("application/json"), "{message}");
}

#[test]
fn rejects_a_malformed_object() {
    // Field 1 (metadata) announced as 16 bytes long with only one present.
    let err = decode_to_json(&envelope("apps/v1", "Deployment", vec![0x0a, 0x10, 0x0a]))
        .expect_err("truncated object");
    match &err {
        ProtobufError::Object { kind, .. } => assert_eq!(kind, "Deployment"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("Deployment"));
}

#[test]
fn reports_the_path_of_an_invalid_value() {
    let mut pod = full_pod();
    if let Some(spec) = pod.spec.as_mut() {
        if let Some(probe) = spec.containers[0].liveness_probe.as_mut() {
            if let Some(get) = probe.handler.as_mut().and_then(|h| h.http_get.as_mut()) {
                get.port = Some(IntOrString {
                    r#type: Some(5),
                    int_val: None,
                    str_val: None,
                });
            }
        }
    }
    match decode_to_json(&body("v1", "Pod", &pod)) {
        Err(ProtobufError::InvalidValue { path, .. }) => {
            assert_eq!(path, "spec.containers[0].livenessProbe.httpGet.port");
        }
        other => panic!("unexpected {other:?}"),
    }

    let mut cm = core::ConfigMap {
        metadata: meta("cm"),
        ..Default::default()
    };
    if let Some(m) = cm.metadata.as_mut() {
        m.creation_timestamp = time(i64::MAX / 4);
    }
    match decode_to_json(&body("v1", "ConfigMap", &cm)) {
        Err(ProtobufError::InvalidValue { path, .. }) => {
            assert_eq!(path, "metadata.creationTimestamp");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn rejects_volume_sources_it_cannot_convert() {
    let pod = core::Pod {
        metadata: meta("legacy"),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("disk"),
                volume_source: Some(core::VolumeSource {
                    gce_persistent_disk: Some(core::GcePersistentDiskVolumeSource {
                        pd_name: s("disk-1"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        status: None,
    };
    match decode_to_json(&body("v1", "Pod", &pod)) {
        Err(ProtobufError::InvalidValue { path, reason }) => {
            assert_eq!(path, "spec.volumes[0]");
            assert!(reason.contains("gcePersistentDisk"), "{reason}");
            assert!(reason.contains("JSON"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}
