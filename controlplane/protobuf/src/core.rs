//! The `v1` (core) group: the pod template every workload embeds, and the
//! core kinds kubectl creates.
//!
//! Status is converted for every kind, because a few generators send a
//! non-empty one (`status: {loadBalancer: {}}` for Services) and components
//! that register objects (a kubelet's Node) fill it in. Rarely used status
//! details are left out: container `volumeMounts`/`user`/
//! `allocatedResourcesStatus`, pod `resourceClaimStatuses`/
//! `extendedResourceClaimStatus`, PVC `conditions`/`modifyVolumeStatus`, and
//! node `config`/`declaredFeatures`.

use k8s_pb::api::core::v1 as core;

use crate::json::{Obj, Res};
use crate::meta::{condition, label_selector, object_meta};
use crate::ProtobufError;

// ----- top-level kinds -----

pub(crate) fn pod(p: &core::Pod) -> Res {
    Obj::new()
        .val("metadata", &p.metadata, object_meta)
        .val("spec", &p.spec, pod_spec)
        .val("status", &p.status, pod_status)
        .done()
}

pub(crate) fn replication_controller(rc: &core::ReplicationController) -> Res {
    Obj::new()
        .val("metadata", &rc.metadata, object_meta)
        .val("spec", &rc.spec, |s| {
            Obj::new()
                .int_ptr("replicas", s.replicas)
                .int("minReadySeconds", s.min_ready_seconds)
                .str_map("selector", &s.selector)
                .ptr("template", &s.template, pod_template_spec)
                .done()
        })
        .val("status", &rc.status, |s| {
            Obj::new()
                .int_req("replicas", s.replicas)
                .int("fullyLabeledReplicas", s.fully_labeled_replicas)
                .int("readyReplicas", s.ready_replicas)
                .int("availableReplicas", s.available_replicas)
                .int("observedGeneration", s.observed_generation)
                .list("conditions", &s.conditions, |c| {
                    Obj::new()
                        .str_req("type", &c.r#type)
                        .str_req("status", &c.status)
                        .time("lastTransitionTime", &c.last_transition_time)
                        .str("reason", &c.reason)
                        .str("message", &c.message)
                        .done()
                })
                .done()
        })
        .done()
}

pub(crate) fn service(s: &core::Service) -> Res {
    Obj::new()
        .val("metadata", &s.metadata, object_meta)
        .val("spec", &s.spec, service_spec)
        .val("status", &s.status, |st| {
            Obj::new()
                .val("loadBalancer", &st.load_balancer, load_balancer_status)
                .list("conditions", &st.conditions, condition)
                .done()
        })
        .done()
}

pub(crate) fn config_map(c: &core::ConfigMap) -> Res {
    Obj::new()
        .val("metadata", &c.metadata, object_meta)
        .bool_ptr("immutable", c.immutable)
        .str_map("data", &c.data)
        .bytes_map("binaryData", &c.binary_data)
        .done()
}

pub(crate) fn secret(s: &core::Secret) -> Res {
    Obj::new()
        .val("metadata", &s.metadata, object_meta)
        .bool_ptr("immutable", s.immutable)
        .bytes_map("data", &s.data)
        .str_map("stringData", &s.string_data)
        .str("type", &s.r#type)
        .done()
}

pub(crate) fn namespace(n: &core::Namespace) -> Res {
    Obj::new()
        .val("metadata", &n.metadata, object_meta)
        .val("spec", &n.spec, |s| {
            Obj::new().strs("finalizers", &s.finalizers).done()
        })
        .val("status", &n.status, |s| {
            Obj::new()
                .str("phase", &s.phase)
                .list("conditions", &s.conditions, |c| {
                    Obj::new()
                        .str_req("type", &c.r#type)
                        .str_req("status", &c.status)
                        .time("lastTransitionTime", &c.last_transition_time)
                        .str("reason", &c.reason)
                        .str("message", &c.message)
                        .done()
                })
                .done()
        })
        .done()
}

pub(crate) fn service_account(sa: &core::ServiceAccount) -> Res {
    Obj::new()
        .val("metadata", &sa.metadata, object_meta)
        .list("secrets", &sa.secrets, object_reference)
        .list(
            "imagePullSecrets",
            &sa.image_pull_secrets,
            local_object_reference,
        )
        .bool_ptr(
            "automountServiceAccountToken",
            sa.automount_service_account_token,
        )
        .done()
}

pub(crate) fn endpoints(e: &core::Endpoints) -> Res {
    let address = |a: &core::EndpointAddress| {
        Obj::new()
            .str_req("ip", &a.ip)
            .str("hostname", &a.hostname)
            .str_ptr("nodeName", &a.node_name)
            .ptr("targetRef", &a.target_ref, object_reference)
            .done()
    };
    Obj::new()
        .val("metadata", &e.metadata, object_meta)
        .list("subsets", &e.subsets, |s| {
            Obj::new()
                .list("addresses", &s.addresses, address)
                .list("notReadyAddresses", &s.not_ready_addresses, address)
                .list("ports", &s.ports, |p| {
                    Obj::new()
                        .str("name", &p.name)
                        .int_req("port", p.port)
                        .str("protocol", &p.protocol)
                        .str_ptr("appProtocol", &p.app_protocol)
                        .done()
                })
                .done()
        })
        .done()
}

pub(crate) fn event(e: &core::Event) -> Res {
    Obj::new()
        .val("metadata", &e.metadata, object_meta)
        .val("involvedObject", &e.involved_object, object_reference)
        .str("reason", &e.reason)
        .str("message", &e.message)
        .val("source", &e.source, |s| {
            Obj::new()
                .str("component", &s.component)
                .str("host", &s.host)
                .done()
        })
        .time("firstTimestamp", &e.first_timestamp)
        .time("lastTimestamp", &e.last_timestamp)
        .int("count", e.count)
        .str("type", &e.r#type)
        .micro_time("eventTime", &e.event_time)
        .ptr("series", &e.series, |s| {
            Obj::new()
                .int("count", s.count)
                .micro_time("lastObservedTime", &s.last_observed_time)
                .done()
        })
        .str("action", &e.action)
        .ptr("related", &e.related, object_reference)
        .str_req("reportingComponent", &e.reporting_component)
        .str_req("reportingInstance", &e.reporting_instance)
        .done()
}

pub(crate) fn node(n: &core::Node) -> Res {
    Obj::new()
        .val("metadata", &n.metadata, object_meta)
        .val("spec", &n.spec, node_spec)
        .val("status", &n.status, node_status)
        .done()
}

// ----- shared references -----

pub(crate) fn object_reference(r: &core::ObjectReference) -> Res {
    Obj::new()
        .str("kind", &r.kind)
        .str("namespace", &r.namespace)
        .str("name", &r.name)
        .str("uid", &r.uid)
        .str("apiVersion", &r.api_version)
        .str("resourceVersion", &r.resource_version)
        .str("fieldPath", &r.field_path)
        .done()
}

fn local_object_reference(r: &core::LocalObjectReference) -> Res {
    Obj::new().str("name", &r.name).done()
}

// ----- pod template and pod spec -----

pub(crate) fn pod_template_spec(t: &core::PodTemplateSpec) -> Res {
    Obj::new()
        .val("metadata", &t.metadata, object_meta)
        .val("spec", &t.spec, pod_spec)
        .done()
}

fn pod_spec(s: &core::PodSpec) -> Res {
    Obj::new()
        .list("volumes", &s.volumes, volume)
        .list("initContainers", &s.init_containers, container)
        .list("containers", &s.containers, container)
        .list(
            "ephemeralContainers",
            &s.ephemeral_containers,
            ephemeral_container,
        )
        .str("restartPolicy", &s.restart_policy)
        .int_ptr(
            "terminationGracePeriodSeconds",
            s.termination_grace_period_seconds,
        )
        .int_ptr("activeDeadlineSeconds", s.active_deadline_seconds)
        .str("dnsPolicy", &s.dns_policy)
        .str_map("nodeSelector", &s.node_selector)
        .str("serviceAccountName", &s.service_account_name)
        .str("serviceAccount", &s.service_account)
        .bool_ptr(
            "automountServiceAccountToken",
            s.automount_service_account_token,
        )
        .str("nodeName", &s.node_name)
        .bool("hostNetwork", s.host_network)
        .bool("hostPID", s.host_pid)
        .bool("hostIPC", s.host_ipc)
        .bool_ptr("shareProcessNamespace", s.share_process_namespace)
        .ptr("securityContext", &s.security_context, pod_security_context)
        .list(
            "imagePullSecrets",
            &s.image_pull_secrets,
            local_object_reference,
        )
        .str("hostname", &s.hostname)
        .str("subdomain", &s.subdomain)
        .ptr("affinity", &s.affinity, affinity)
        .str("schedulerName", &s.scheduler_name)
        .list("tolerations", &s.tolerations, toleration)
        .list("hostAliases", &s.host_aliases, |h| {
            Obj::new()
                .str_req("ip", &h.ip)
                .strs("hostnames", &h.hostnames)
                .done()
        })
        .str("priorityClassName", &s.priority_class_name)
        .int_ptr("priority", s.priority)
        .ptr("dnsConfig", &s.dns_config, |d| {
            Obj::new()
                .strs("nameservers", &d.nameservers)
                .strs("searches", &d.searches)
                .list("options", &d.options, |o| {
                    Obj::new()
                        .str("name", &o.name)
                        .str_ptr("value", &o.value)
                        .done()
                })
                .done()
        })
        .list("readinessGates", &s.readiness_gates, |g| {
            Obj::new()
                .str_req("conditionType", &g.condition_type)
                .done()
        })
        .str_ptr("runtimeClassName", &s.runtime_class_name)
        .bool_ptr("enableServiceLinks", s.enable_service_links)
        .str_ptr("preemptionPolicy", &s.preemption_policy)
        .quantity_map("overhead", &s.overhead)
        .list(
            "topologySpreadConstraints",
            &s.topology_spread_constraints,
            topology_spread_constraint,
        )
        .bool_ptr("setHostnameAsFQDN", s.set_hostname_as_fqdn)
        .ptr("os", &s.os, |o| Obj::new().str_req("name", &o.name).done())
        .bool_ptr("hostUsers", s.host_users)
        .list("schedulingGates", &s.scheduling_gates, |g| {
            Obj::new().str_req("name", &g.name).done()
        })
        .list("resourceClaims", &s.resource_claims, |c| {
            Obj::new()
                .str_req("name", &c.name)
                .str_ptr("resourceClaimName", &c.resource_claim_name)
                .str_ptr("resourceClaimTemplateName", &c.resource_claim_template_name)
                .done()
        })
        .ptr("resources", &s.resources, resource_requirements)
        .str_ptr("hostnameOverride", &s.hostname_override)
        .ptr("workloadRef", &s.workload_ref, |_| {
            Err(unsupported_field("workloadRef"))
        })
        .done()
}

/// A field this crate knows exists but does not convert. Dropping it would
/// silently change the object, so the request fails and the client is told
/// to use JSON.
fn unsupported_field(field: &str) -> ProtobufError {
    ProtobufError::invalid(format!(
        "{field} is not supported in protobuf request bodies; send the object as JSON instead"
    ))
}

fn toleration(t: &core::Toleration) -> Res {
    Obj::new()
        .str("key", &t.key)
        .str("operator", &t.operator)
        .str("value", &t.value)
        .str("effect", &t.effect)
        .int_ptr("tolerationSeconds", t.toleration_seconds)
        .done()
}

fn topology_spread_constraint(c: &core::TopologySpreadConstraint) -> Res {
    Obj::new()
        .int_req("maxSkew", c.max_skew)
        .str_req("topologyKey", &c.topology_key)
        .str_req("whenUnsatisfiable", &c.when_unsatisfiable)
        .ptr("labelSelector", &c.label_selector, label_selector)
        .int_ptr("minDomains", c.min_domains)
        .str_ptr("nodeAffinityPolicy", &c.node_affinity_policy)
        .str_ptr("nodeTaintsPolicy", &c.node_taints_policy)
        .strs("matchLabelKeys", &c.match_label_keys)
        .done()
}

// ----- affinity -----

fn affinity(a: &core::Affinity) -> Res {
    Obj::new()
        .ptr("nodeAffinity", &a.node_affinity, |n| {
            Obj::new()
                .ptr(
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    &n.required_during_scheduling_ignored_during_execution,
                    |sel| {
                        Obj::new()
                            .list(
                                "nodeSelectorTerms",
                                &sel.node_selector_terms,
                                node_selector_term,
                            )
                            .done()
                    },
                )
                .list(
                    "preferredDuringSchedulingIgnoredDuringExecution",
                    &n.preferred_during_scheduling_ignored_during_execution,
                    |p| {
                        Obj::new()
                            .int_req("weight", p.weight)
                            .val("preference", &p.preference, node_selector_term)
                            .done()
                    },
                )
                .done()
        })
        .ptr("podAffinity", &a.pod_affinity, |p| {
            pod_affinity(
                &p.required_during_scheduling_ignored_during_execution,
                &p.preferred_during_scheduling_ignored_during_execution,
            )
        })
        .ptr("podAntiAffinity", &a.pod_anti_affinity, |p| {
            pod_affinity(
                &p.required_during_scheduling_ignored_during_execution,
                &p.preferred_during_scheduling_ignored_during_execution,
            )
        })
        .done()
}

/// PodAffinity and PodAntiAffinity have the same two fields.
fn pod_affinity(
    required: &[core::PodAffinityTerm],
    preferred: &[core::WeightedPodAffinityTerm],
) -> Res {
    Obj::new()
        .list(
            "requiredDuringSchedulingIgnoredDuringExecution",
            required,
            pod_affinity_term,
        )
        .list(
            "preferredDuringSchedulingIgnoredDuringExecution",
            preferred,
            |w| {
                Obj::new()
                    .int_req("weight", w.weight)
                    .val("podAffinityTerm", &w.pod_affinity_term, pod_affinity_term)
                    .done()
            },
        )
        .done()
}

fn pod_affinity_term(t: &core::PodAffinityTerm) -> Res {
    Obj::new()
        .ptr("labelSelector", &t.label_selector, label_selector)
        .strs("namespaces", &t.namespaces)
        .str_req("topologyKey", &t.topology_key)
        .ptr("namespaceSelector", &t.namespace_selector, label_selector)
        .strs("matchLabelKeys", &t.match_label_keys)
        .strs("mismatchLabelKeys", &t.mismatch_label_keys)
        .done()
}

fn node_selector_term(t: &core::NodeSelectorTerm) -> Res {
    Obj::new()
        .list(
            "matchExpressions",
            &t.match_expressions,
            node_selector_requirement,
        )
        .list("matchFields", &t.match_fields, node_selector_requirement)
        .done()
}

fn node_selector_requirement(r: &core::NodeSelectorRequirement) -> Res {
    Obj::new()
        .str_req("key", &r.key)
        .str_req("operator", &r.operator)
        .strs("values", &r.values)
        .done()
}

// ----- security contexts -----

fn pod_security_context(s: &core::PodSecurityContext) -> Res {
    Obj::new()
        .ptr("seLinuxOptions", &s.se_linux_options, se_linux_options)
        .ptr("windowsOptions", &s.windows_options, windows_options)
        .int_ptr("runAsUser", s.run_as_user)
        .int_ptr("runAsGroup", s.run_as_group)
        .bool_ptr("runAsNonRoot", s.run_as_non_root)
        .ints("supplementalGroups", &s.supplemental_groups)
        .str_ptr("supplementalGroupsPolicy", &s.supplemental_groups_policy)
        .int_ptr("fsGroup", s.fs_group)
        .list("sysctls", &s.sysctls, |c| {
            Obj::new()
                .str_req("name", &c.name)
                .str_req("value", &c.value)
                .done()
        })
        .str_ptr("fsGroupChangePolicy", &s.fs_group_change_policy)
        .ptr("seccompProfile", &s.seccomp_profile, |p| {
            profile(&p.r#type, &p.localhost_profile)
        })
        .ptr("appArmorProfile", &s.app_armor_profile, |p| {
            profile(&p.r#type, &p.localhost_profile)
        })
        .str_ptr("seLinuxChangePolicy", &s.se_linux_change_policy)
        .done()
}

fn security_context(s: &core::SecurityContext) -> Res {
    Obj::new()
        .ptr("capabilities", &s.capabilities, |c| {
            Obj::new().strs("add", &c.add).strs("drop", &c.drop).done()
        })
        .bool_ptr("privileged", s.privileged)
        .ptr("seLinuxOptions", &s.se_linux_options, se_linux_options)
        .ptr("windowsOptions", &s.windows_options, windows_options)
        .int_ptr("runAsUser", s.run_as_user)
        .int_ptr("runAsGroup", s.run_as_group)
        .bool_ptr("runAsNonRoot", s.run_as_non_root)
        .bool_ptr("readOnlyRootFilesystem", s.read_only_root_filesystem)
        .bool_ptr("allowPrivilegeEscalation", s.allow_privilege_escalation)
        .str_ptr("procMount", &s.proc_mount)
        .ptr("seccompProfile", &s.seccomp_profile, |p| {
            profile(&p.r#type, &p.localhost_profile)
        })
        .ptr("appArmorProfile", &s.app_armor_profile, |p| {
            profile(&p.r#type, &p.localhost_profile)
        })
        .done()
}

/// SeccompProfile and AppArmorProfile have the same shape.
fn profile(kind: &Option<String>, localhost_profile: &Option<String>) -> Res {
    Obj::new()
        .str_req("type", kind)
        .str_ptr("localhostProfile", localhost_profile)
        .done()
}

fn se_linux_options(o: &core::SeLinuxOptions) -> Res {
    Obj::new()
        .str("user", &o.user)
        .str("role", &o.role)
        .str("type", &o.r#type)
        .str("level", &o.level)
        .done()
}

fn windows_options(o: &core::WindowsSecurityContextOptions) -> Res {
    Obj::new()
        .str_ptr("gmsaCredentialSpecName", &o.gmsa_credential_spec_name)
        .str_ptr("gmsaCredentialSpec", &o.gmsa_credential_spec)
        .str_ptr("runAsUserName", &o.run_as_user_name)
        .bool_ptr("hostProcess", o.host_process)
        .done()
}

// ----- containers -----

/// Container and EphemeralContainerCommon are separate messages with the same
/// fields, so one field list serves both.
macro_rules! container_fields {
    ($c:expr) => {
        Obj::new()
            .str_req("name", &$c.name)
            .str("image", &$c.image)
            .strs("command", &$c.command)
            .strs("args", &$c.args)
            .str("workingDir", &$c.working_dir)
            .list("ports", &$c.ports, container_port)
            .list("envFrom", &$c.env_from, env_from_source)
            .list("env", &$c.env, env_var)
            .val("resources", &$c.resources, resource_requirements)
            .list("resizePolicy", &$c.resize_policy, |p| {
                Obj::new()
                    .str_req("resourceName", &p.resource_name)
                    .str_req("restartPolicy", &p.restart_policy)
                    .done()
            })
            .str_ptr("restartPolicy", &$c.restart_policy)
            .list(
                "restartPolicyRules",
                &$c.restart_policy_rules,
                container_restart_rule,
            )
            .list("volumeMounts", &$c.volume_mounts, volume_mount)
            .list("volumeDevices", &$c.volume_devices, |d| {
                Obj::new()
                    .str_req("name", &d.name)
                    .str_req("devicePath", &d.device_path)
                    .done()
            })
            .ptr("livenessProbe", &$c.liveness_probe, probe)
            .ptr("readinessProbe", &$c.readiness_probe, probe)
            .ptr("startupProbe", &$c.startup_probe, probe)
            .ptr("lifecycle", &$c.lifecycle, lifecycle)
            .str("terminationMessagePath", &$c.termination_message_path)
            .str("terminationMessagePolicy", &$c.termination_message_policy)
            .str("imagePullPolicy", &$c.image_pull_policy)
            .ptr("securityContext", &$c.security_context, security_context)
            .bool("stdin", $c.stdin)
            .bool("stdinOnce", $c.stdin_once)
            .bool("tty", $c.tty)
    };
}

fn container(c: &core::Container) -> Res {
    container_fields!(c).done()
}

fn ephemeral_container(e: &core::EphemeralContainer) -> Res {
    let common = e.ephemeral_container_common.clone().unwrap_or_default();
    container_fields!(common)
        .str("targetContainerName", &e.target_container_name)
        .done()
}

fn container_port(p: &core::ContainerPort) -> Res {
    Obj::new()
        .str("name", &p.name)
        .int("hostPort", p.host_port)
        .int_req("containerPort", p.container_port)
        .str("protocol", &p.protocol)
        .str("hostIP", &p.host_ip)
        .done()
}

fn container_restart_rule(r: &core::ContainerRestartRule) -> Res {
    Obj::new()
        .str_req("action", &r.action)
        .ptr("exitCodes", &r.exit_codes, |e| {
            Obj::new()
                .str_req("operator", &e.operator)
                .ints("values", &e.values)
                .done()
        })
        .done()
}

fn env_var(e: &core::EnvVar) -> Res {
    Obj::new()
        .str_req("name", &e.name)
        .str("value", &e.value)
        .ptr("valueFrom", &e.value_from, |s| {
            Obj::new()
                .ptr("fieldRef", &s.field_ref, object_field_selector)
                .ptr(
                    "resourceFieldRef",
                    &s.resource_field_ref,
                    resource_field_selector,
                )
                .ptr("configMapKeyRef", &s.config_map_key_ref, |k| {
                    key_selector(&k.local_object_reference, &k.key, k.optional)
                })
                .ptr("secretKeyRef", &s.secret_key_ref, |k| {
                    key_selector(&k.local_object_reference, &k.key, k.optional)
                })
                .ptr("fileKeyRef", &s.file_key_ref, |k| {
                    Obj::new()
                        .str_req("volumeName", &k.volume_name)
                        .str_req("path", &k.path)
                        .str_req("key", &k.key)
                        .bool_ptr("optional", k.optional)
                        .done()
                })
                .done()
        })
        .done()
}

/// ConfigMapKeySelector and SecretKeySelector: an inline
/// LocalObjectReference, a key and an optional flag.
fn key_selector(
    local: &Option<core::LocalObjectReference>,
    key: &Option<String>,
    optional: Option<bool>,
) -> Res {
    Obj::new()
        .inline(local, local_object_reference)
        .str_req("key", key)
        .bool_ptr("optional", optional)
        .done()
}

fn env_from_source(e: &core::EnvFromSource) -> Res {
    Obj::new()
        .str("prefix", &e.prefix)
        .ptr("configMapRef", &e.config_map_ref, |r| {
            Obj::new()
                .inline(&r.local_object_reference, local_object_reference)
                .bool_ptr("optional", r.optional)
                .done()
        })
        .ptr("secretRef", &e.secret_ref, |r| {
            Obj::new()
                .inline(&r.local_object_reference, local_object_reference)
                .bool_ptr("optional", r.optional)
                .done()
        })
        .done()
}

fn object_field_selector(f: &core::ObjectFieldSelector) -> Res {
    Obj::new()
        .str("apiVersion", &f.api_version)
        .str_req("fieldPath", &f.field_path)
        .done()
}

fn resource_field_selector(f: &core::ResourceFieldSelector) -> Res {
    Obj::new()
        .str("containerName", &f.container_name)
        .str_req("resource", &f.resource)
        .quantity_val("divisor", &f.divisor)
        .done()
}

fn resource_requirements(r: &core::ResourceRequirements) -> Res {
    Obj::new()
        .quantity_map("limits", &r.limits)
        .quantity_map("requests", &r.requests)
        .list("claims", &r.claims, |c| {
            Obj::new()
                .str_req("name", &c.name)
                .str("request", &c.request)
                .done()
        })
        .done()
}

fn volume_mount(m: &core::VolumeMount) -> Res {
    Obj::new()
        .str_req("name", &m.name)
        .bool("readOnly", m.read_only)
        .str_ptr("recursiveReadOnly", &m.recursive_read_only)
        .str_req("mountPath", &m.mount_path)
        .str("subPath", &m.sub_path)
        .str_ptr("mountPropagation", &m.mount_propagation)
        .str("subPathExpr", &m.sub_path_expr)
        .done()
}

// ----- probes and lifecycle hooks -----

fn probe(p: &core::Probe) -> Res {
    Obj::new()
        .inline(&p.handler, |h| {
            Obj::new()
                .ptr("exec", &h.exec, exec_action)
                .ptr("httpGet", &h.http_get, http_get_action)
                .ptr("tcpSocket", &h.tcp_socket, tcp_socket_action)
                .ptr("grpc", &h.grpc, |g| {
                    Obj::new()
                        .int_req("port", g.port)
                        .str_ptr("service", &g.service)
                        .done()
                })
                .done()
        })
        .int("initialDelaySeconds", p.initial_delay_seconds)
        .int("timeoutSeconds", p.timeout_seconds)
        .int("periodSeconds", p.period_seconds)
        .int("successThreshold", p.success_threshold)
        .int("failureThreshold", p.failure_threshold)
        .int_ptr(
            "terminationGracePeriodSeconds",
            p.termination_grace_period_seconds,
        )
        .done()
}

fn lifecycle(l: &core::Lifecycle) -> Res {
    Obj::new()
        .ptr("postStart", &l.post_start, lifecycle_handler)
        .ptr("preStop", &l.pre_stop, lifecycle_handler)
        .str_ptr("stopSignal", &l.stop_signal)
        .done()
}

fn lifecycle_handler(h: &core::LifecycleHandler) -> Res {
    Obj::new()
        .ptr("exec", &h.exec, exec_action)
        .ptr("httpGet", &h.http_get, http_get_action)
        .ptr("tcpSocket", &h.tcp_socket, tcp_socket_action)
        .ptr("sleep", &h.sleep, |s| {
            Obj::new().int_req("seconds", s.seconds).done()
        })
        .done()
}

fn exec_action(e: &core::ExecAction) -> Res {
    Obj::new().strs("command", &e.command).done()
}

fn http_get_action(h: &core::HttpGetAction) -> Res {
    Obj::new()
        .str("path", &h.path)
        .int_or_string_val("port", &h.port)
        .str("host", &h.host)
        .str("scheme", &h.scheme)
        .list("httpHeaders", &h.http_headers, |hdr| {
            Obj::new()
                .str_req("name", &hdr.name)
                .str_req("value", &hdr.value)
                .done()
        })
        .done()
}

fn tcp_socket_action(t: &core::TcpSocketAction) -> Res {
    Obj::new()
        .int_or_string_val("port", &t.port)
        .str("host", &t.host)
        .done()
}

// ----- volumes -----

fn volume(v: &core::Volume) -> Res {
    Obj::new()
        .str_req("name", &v.name)
        .inline(&v.volume_source, volume_source)
        .done()
}

fn volume_source(s: &core::VolumeSource) -> Res {
    // Legacy in-tree plugins are not converted. Leaving one out would turn
    // the volume into an emptyDir (the default for a volume with no source),
    // so their presence fails the request instead.
    let legacy = [
        ("gcePersistentDisk", s.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", s.aws_elastic_block_store.is_some()),
        ("gitRepo", s.git_repo.is_some()),
        ("iscsi", s.iscsi.is_some()),
        ("glusterfs", s.glusterfs.is_some()),
        ("rbd", s.rbd.is_some()),
        ("flexVolume", s.flex_volume.is_some()),
        ("cinder", s.cinder.is_some()),
        ("cephfs", s.cephfs.is_some()),
        ("flocker", s.flocker.is_some()),
        ("fc", s.fc.is_some()),
        ("azureFile", s.azure_file.is_some()),
        ("vsphereVolume", s.vsphere_volume.is_some()),
        ("quobyte", s.quobyte.is_some()),
        ("azureDisk", s.azure_disk.is_some()),
        ("photonPersistentDisk", s.photon_persistent_disk.is_some()),
        ("portworxVolume", s.portworx_volume.is_some()),
        ("scaleIO", s.scale_io.is_some()),
        ("storageos", s.storageos.is_some()),
    ];
    if let Some((name, _)) = legacy.iter().find(|(_, present)| *present) {
        return Err(unsupported_field(&format!("the {name} volume source")));
    }
    Obj::new()
        .ptr("hostPath", &s.host_path, |h| {
            Obj::new()
                .str_req("path", &h.path)
                .str_ptr("type", &h.r#type)
                .done()
        })
        .ptr("emptyDir", &s.empty_dir, |e| {
            Obj::new()
                .str("medium", &e.medium)
                .quantity_ptr("sizeLimit", &e.size_limit)
                .done()
        })
        .ptr("secret", &s.secret, |sv| {
            Obj::new()
                .str("secretName", &sv.secret_name)
                .list("items", &sv.items, key_to_path)
                .int_ptr("defaultMode", sv.default_mode)
                .bool_ptr("optional", sv.optional)
                .done()
        })
        .ptr("nfs", &s.nfs, |n| {
            Obj::new()
                .str_req("server", &n.server)
                .str_req("path", &n.path)
                .bool("readOnly", n.read_only)
                .done()
        })
        .ptr("persistentVolumeClaim", &s.persistent_volume_claim, |p| {
            Obj::new()
                .str_req("claimName", &p.claim_name)
                .bool("readOnly", p.read_only)
                .done()
        })
        .ptr("downwardAPI", &s.downward_api, |d| {
            Obj::new()
                .list("items", &d.items, downward_api_volume_file)
                .int_ptr("defaultMode", d.default_mode)
                .done()
        })
        .ptr("configMap", &s.config_map, |c| {
            Obj::new()
                .inline(&c.local_object_reference, local_object_reference)
                .list("items", &c.items, key_to_path)
                .int_ptr("defaultMode", c.default_mode)
                .bool_ptr("optional", c.optional)
                .done()
        })
        .ptr("projected", &s.projected, |p| {
            Obj::new()
                .list("sources", &p.sources, volume_projection)
                .int_ptr("defaultMode", p.default_mode)
                .done()
        })
        .ptr("csi", &s.csi, |c| {
            Obj::new()
                .str_req("driver", &c.driver)
                .bool_ptr("readOnly", c.read_only)
                .str_ptr("fsType", &c.fs_type)
                .str_map("volumeAttributes", &c.volume_attributes)
                .ptr(
                    "nodePublishSecretRef",
                    &c.node_publish_secret_ref,
                    local_object_reference,
                )
                .done()
        })
        .ptr("ephemeral", &s.ephemeral, |e| {
            Obj::new()
                .ptr("volumeClaimTemplate", &e.volume_claim_template, |t| {
                    Obj::new()
                        .val("metadata", &t.metadata, object_meta)
                        .val("spec", &t.spec, persistent_volume_claim_spec)
                        .done()
                })
                .done()
        })
        .ptr("image", &s.image, |i| {
            Obj::new()
                .str("reference", &i.reference)
                .str("pullPolicy", &i.pull_policy)
                .done()
        })
        .done()
}

fn key_to_path(k: &core::KeyToPath) -> Res {
    Obj::new()
        .str_req("key", &k.key)
        .str_req("path", &k.path)
        .int_ptr("mode", k.mode)
        .done()
}

fn downward_api_volume_file(f: &core::DownwardAPIVolumeFile) -> Res {
    Obj::new()
        .str_req("path", &f.path)
        .ptr("fieldRef", &f.field_ref, object_field_selector)
        .ptr(
            "resourceFieldRef",
            &f.resource_field_ref,
            resource_field_selector,
        )
        .int_ptr("mode", f.mode)
        .done()
}

fn volume_projection(p: &core::VolumeProjection) -> Res {
    Obj::new()
        .ptr("secret", &p.secret, |s| {
            Obj::new()
                .inline(&s.local_object_reference, local_object_reference)
                .list("items", &s.items, key_to_path)
                .bool_ptr("optional", s.optional)
                .done()
        })
        .ptr("downwardAPI", &p.downward_api, |d| {
            Obj::new()
                .list("items", &d.items, downward_api_volume_file)
                .done()
        })
        .ptr("configMap", &p.config_map, |c| {
            Obj::new()
                .inline(&c.local_object_reference, local_object_reference)
                .list("items", &c.items, key_to_path)
                .bool_ptr("optional", c.optional)
                .done()
        })
        .ptr("serviceAccountToken", &p.service_account_token, |t| {
            Obj::new()
                .str("audience", &t.audience)
                .int_ptr("expirationSeconds", t.expiration_seconds)
                .str_req("path", &t.path)
                .done()
        })
        .ptr("clusterTrustBundle", &p.cluster_trust_bundle, |b| {
            Obj::new()
                .str_ptr("name", &b.name)
                .str_ptr("signerName", &b.signer_name)
                .ptr("labelSelector", &b.label_selector, label_selector)
                .bool_ptr("optional", b.optional)
                .str_req("path", &b.path)
                .done()
        })
        .ptr("podCertificate", &p.pod_certificate, |_| {
            Err(unsupported_field("the podCertificate projection"))
        })
        .done()
}

// ----- persistent volume claims (StatefulSet volumeClaimTemplates) -----

pub(crate) fn persistent_volume_claim(p: &core::PersistentVolumeClaim) -> Res {
    Obj::new()
        .val("metadata", &p.metadata, object_meta)
        .val("spec", &p.spec, persistent_volume_claim_spec)
        .val("status", &p.status, |s| {
            Obj::new()
                .str("phase", &s.phase)
                .strs("accessModes", &s.access_modes)
                .quantity_map("capacity", &s.capacity)
                .quantity_map("allocatedResources", &s.allocated_resources)
                .str_map("allocatedResourceStatuses", &s.allocated_resource_statuses)
                .str_ptr(
                    "currentVolumeAttributesClassName",
                    &s.current_volume_attributes_class_name,
                )
                .done()
        })
        .done()
}

fn persistent_volume_claim_spec(s: &core::PersistentVolumeClaimSpec) -> Res {
    Obj::new()
        .strs("accessModes", &s.access_modes)
        .ptr("selector", &s.selector, label_selector)
        .val("resources", &s.resources, |r| {
            Obj::new()
                .quantity_map("limits", &r.limits)
                .quantity_map("requests", &r.requests)
                .done()
        })
        .str("volumeName", &s.volume_name)
        .str_ptr("storageClassName", &s.storage_class_name)
        .str_ptr("volumeMode", &s.volume_mode)
        .ptr("dataSource", &s.data_source, |d| {
            Obj::new()
                .str_ptr("apiGroup", &d.api_group)
                .str_req("kind", &d.kind)
                .str_req("name", &d.name)
                .done()
        })
        .ptr("dataSourceRef", &s.data_source_ref, |d| {
            Obj::new()
                .str_ptr("apiGroup", &d.api_group)
                .str_req("kind", &d.kind)
                .str_req("name", &d.name)
                .str_ptr("namespace", &d.namespace)
                .done()
        })
        .str_ptr("volumeAttributesClassName", &s.volume_attributes_class_name)
        .done()
}

// ----- pod status -----

fn pod_status(s: &core::PodStatus) -> Res {
    let ip = |v: &Option<String>| Obj::new().str_req("ip", v).done();
    Obj::new()
        .int("observedGeneration", s.observed_generation)
        .str("phase", &s.phase)
        .list("conditions", &s.conditions, |c| {
            Obj::new()
                .str_req("type", &c.r#type)
                .int("observedGeneration", c.observed_generation)
                .str_req("status", &c.status)
                .time("lastProbeTime", &c.last_probe_time)
                .time("lastTransitionTime", &c.last_transition_time)
                .str("reason", &c.reason)
                .str("message", &c.message)
                .done()
        })
        .str("message", &s.message)
        .str("reason", &s.reason)
        .str("nominatedNodeName", &s.nominated_node_name)
        .str("hostIP", &s.host_ip)
        .list("hostIPs", &s.host_ips, |h| ip(&h.ip))
        .str("podIP", &s.pod_ip)
        .list("podIPs", &s.pod_ips, |p| ip(&p.ip))
        .time("startTime", &s.start_time)
        .list(
            "initContainerStatuses",
            &s.init_container_statuses,
            container_status,
        )
        .list("containerStatuses", &s.container_statuses, container_status)
        .str("qosClass", &s.qos_class)
        .list(
            "ephemeralContainerStatuses",
            &s.ephemeral_container_statuses,
            container_status,
        )
        .str("resize", &s.resize)
        .quantity_map("allocatedResources", &s.allocated_resources)
        .ptr("resources", &s.resources, resource_requirements)
        .done()
}

fn container_status(s: &core::ContainerStatus) -> Res {
    Obj::new()
        .str_req("name", &s.name)
        .val("state", &s.state, container_state)
        .val("lastState", &s.last_state, container_state)
        .bool_req("ready", s.ready)
        .int_req("restartCount", s.restart_count)
        .str_req("image", &s.image)
        .str_req("imageID", &s.image_id)
        .str("containerID", &s.container_id)
        .bool_ptr("started", s.started)
        .quantity_map("allocatedResources", &s.allocated_resources)
        .ptr("resources", &s.resources, resource_requirements)
        .str_ptr("stopSignal", &s.stop_signal)
        .done()
}

fn container_state(s: &core::ContainerState) -> Res {
    Obj::new()
        .ptr("waiting", &s.waiting, |w| {
            Obj::new()
                .str("reason", &w.reason)
                .str("message", &w.message)
                .done()
        })
        .ptr("running", &s.running, |r| {
            Obj::new().time("startedAt", &r.started_at).done()
        })
        .ptr("terminated", &s.terminated, |t| {
            Obj::new()
                .int_req("exitCode", t.exit_code)
                .int("signal", t.signal)
                .str("reason", &t.reason)
                .str("message", &t.message)
                .time("startedAt", &t.started_at)
                .time("finishedAt", &t.finished_at)
                .str("containerID", &t.container_id)
                .done()
        })
        .done()
}

// ----- service -----

fn service_spec(s: &core::ServiceSpec) -> Res {
    Obj::new()
        .list("ports", &s.ports, |p| {
            Obj::new()
                .str("name", &p.name)
                .str("protocol", &p.protocol)
                .str_ptr("appProtocol", &p.app_protocol)
                .int_req("port", p.port)
                .int_or_string_val("targetPort", &p.target_port)
                .int("nodePort", p.node_port)
                .done()
        })
        .str_map("selector", &s.selector)
        .str("clusterIP", &s.cluster_ip)
        .strs("clusterIPs", &s.cluster_ips)
        .str("type", &s.r#type)
        .strs("externalIPs", &s.external_ips)
        .str("sessionAffinity", &s.session_affinity)
        .str("loadBalancerIP", &s.load_balancer_ip)
        .strs("loadBalancerSourceRanges", &s.load_balancer_source_ranges)
        .str("externalName", &s.external_name)
        .str("externalTrafficPolicy", &s.external_traffic_policy)
        .int("healthCheckNodePort", s.health_check_node_port)
        .bool("publishNotReadyAddresses", s.publish_not_ready_addresses)
        .ptr("sessionAffinityConfig", &s.session_affinity_config, |c| {
            Obj::new()
                .ptr("clientIP", &c.client_ip, |ip| {
                    Obj::new()
                        .int_ptr("timeoutSeconds", ip.timeout_seconds)
                        .done()
                })
                .done()
        })
        .strs("ipFamilies", &s.ip_families)
        .str_ptr("ipFamilyPolicy", &s.ip_family_policy)
        .bool_ptr(
            "allocateLoadBalancerNodePorts",
            s.allocate_load_balancer_node_ports,
        )
        .str_ptr("loadBalancerClass", &s.load_balancer_class)
        .str_ptr("internalTrafficPolicy", &s.internal_traffic_policy)
        .str_ptr("trafficDistribution", &s.traffic_distribution)
        .done()
}

fn load_balancer_status(s: &core::LoadBalancerStatus) -> Res {
    Obj::new()
        .list("ingress", &s.ingress, |i| {
            Obj::new()
                .str("ip", &i.ip)
                .str("hostname", &i.hostname)
                .str_ptr("ipMode", &i.ip_mode)
                .list("ports", &i.ports, |p| {
                    Obj::new()
                        .int_req("port", p.port)
                        .str_req("protocol", &p.protocol)
                        .str_ptr("error", &p.error)
                        .done()
                })
                .done()
        })
        .done()
}

// ----- node -----

fn node_spec(s: &core::NodeSpec) -> Res {
    Obj::new()
        .str("podCIDR", &s.pod_cidr)
        .strs("podCIDRs", &s.pod_cid_rs)
        .str("providerID", &s.provider_id)
        .bool("unschedulable", s.unschedulable)
        .list("taints", &s.taints, |t| {
            Obj::new()
                .str_req("key", &t.key)
                .str("value", &t.value)
                .str_req("effect", &t.effect)
                .time("timeAdded", &t.time_added)
                .done()
        })
        .ptr("configSource", &s.config_source, |_| {
            Err(unsupported_field("configSource"))
        })
        .str("externalID", &s.external_id)
        .done()
}

fn node_status(s: &core::NodeStatus) -> Res {
    Obj::new()
        .quantity_map("capacity", &s.capacity)
        .quantity_map("allocatable", &s.allocatable)
        .str("phase", &s.phase)
        .list("conditions", &s.conditions, |c| {
            Obj::new()
                .str_req("type", &c.r#type)
                .str_req("status", &c.status)
                .time("lastHeartbeatTime", &c.last_heartbeat_time)
                .time("lastTransitionTime", &c.last_transition_time)
                .str("reason", &c.reason)
                .str("message", &c.message)
                .done()
        })
        .list("addresses", &s.addresses, |a| {
            Obj::new()
                .str_req("type", &a.r#type)
                .str_req("address", &a.address)
                .done()
        })
        .val("daemonEndpoints", &s.daemon_endpoints, |d| {
            Obj::new()
                .val("kubeletEndpoint", &d.kubelet_endpoint, |e| {
                    // The one capitalised JSON name in the core API.
                    Obj::new().int_req("Port", e.port).done()
                })
                .done()
        })
        .val("nodeInfo", &s.node_info, node_system_info)
        .list("images", &s.images, |i| {
            Obj::new()
                .strs("names", &i.names)
                .int("sizeBytes", i.size_bytes)
                .done()
        })
        .strs("volumesInUse", &s.volumes_in_use)
        .list("volumesAttached", &s.volumes_attached, |v| {
            Obj::new()
                .str_req("name", &v.name)
                .str_req("devicePath", &v.device_path)
                .done()
        })
        .list("runtimeHandlers", &s.runtime_handlers, |h| {
            Obj::new()
                .str("name", &h.name)
                .ptr("features", &h.features, |f| {
                    Obj::new()
                        .bool_ptr("recursiveReadOnlyMounts", f.recursive_read_only_mounts)
                        .bool_ptr("userNamespaces", f.user_namespaces)
                        .done()
                })
                .done()
        })
        .ptr("features", &s.features, |f| {
            Obj::new()
                .bool_ptr("supplementalGroupsPolicy", f.supplemental_groups_policy)
                .done()
        })
        .done()
}

fn node_system_info(i: &core::NodeSystemInfo) -> Res {
    Obj::new()
        .str_req("machineID", &i.machine_id)
        .str_req("systemUUID", &i.system_uuid)
        .str_req("bootID", &i.boot_id)
        .str_req("kernelVersion", &i.kernel_version)
        .str_req("osImage", &i.os_image)
        .str_req("containerRuntimeVersion", &i.container_runtime_version)
        .str_req("kubeletVersion", &i.kubelet_version)
        .str_req("kubeProxyVersion", &i.kube_proxy_version)
        .str_req("operatingSystem", &i.operating_system)
        .str_req("architecture", &i.architecture)
        .ptr("swap", &i.swap, |s| {
            Obj::new().int_ptr("capacity", s.capacity).done()
        })
        .done()
}
