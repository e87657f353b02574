//! Per-kind create/update rules: decoding into the `k8s-openapi` type,
//! defaulting and validation, the way kube-apiserver's registry strategies
//! do them.
//!
//! Everything here is pure: it takes the incoming object (and the stored one
//! on update) and returns the object to store, or the field errors that make
//! it `Invalid`. Decoding through the typed struct is what makes the stored
//! JSON match Kubernetes field for field: type errors are caught, and the
//! object is re-serialised in the canonical shape.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Endpoints, Event, Namespace, Node, Pod, PodSpec, PodTemplateSpec,
    ReplicationController, Secret, Service, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use skiff_apimachinery::labels;
use skiff_apimachinery::names;

use super::errors::{ApiError, FieldError};
use super::resources::ResourceInfo;

/// ConfigMaps and Secrets are capped at 1 MiB, as in Kubernetes.
const MAX_DATA_BYTES: usize = 1024 * 1024;

type Errors = Vec<FieldError>;

/// Decodes a JSON object into its typed form, reporting type errors the way
/// the apiserver's decoder does.
pub fn decode<T: DeserializeOwned>(info: &ResourceInfo, object: Value) -> Result<T, ApiError> {
    serde_json::from_value(object).map_err(|error| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {error}",
            kind = info.kind,
            version = info.version
        ))
    })
}

fn encode<T: Serialize>(typed: &T) -> Result<Value, ApiError> {
    serde_json::to_value(typed)
        .map_err(|error| ApiError::Internal(format!("cannot encode object: {error}")))
}

/// Decodes into `T`, lets `rules` default and validate it, and encodes the
/// result back.
fn typed<T: DeserializeOwned + Serialize>(
    info: &ResourceInfo,
    object: Value,
    rules: impl FnOnce(&mut T, &mut Errors),
) -> Result<(Value, Errors), ApiError> {
    let mut value: T = decode(info, object)?;
    let mut errors = Vec::new();
    rules(&mut value, &mut errors);
    Ok((encode(&value)?, errors))
}

/// Defaults and validates a whole object (metadata has already been
/// prepared by the caller). `old` is the stored object on update.
pub fn default_and_validate(
    info: &ResourceInfo,
    object: Value,
    old: Option<&Value>,
) -> Result<Value, ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut errors = validate_metadata(info, &object);
    let (object, kind_errors) = match info.kind {
        "Pod" => typed::<Pod>(info, object, |pod, errors| {
            let spec = pod.spec.get_or_insert_with(Default::default);
            default_pod_spec(spec);
            if old.is_none() {
                add_default_toleration_seconds(spec);
            }
            validate_pod_spec(spec, "spec", errors);
            if let Some(old_spec) = old.and_then(|old| old.get("spec")) {
                validate_pod_spec_update(spec, old_spec, errors);
            }
            let status = pod.status.get_or_insert_with(Default::default);
            if status.phase.is_none() {
                status.phase = Some("Pending".into());
            }
            status.qos_class = Some(qos_class(spec).into());
        })?,
        "ReplicationController" => typed::<ReplicationController>(info, object, |rc, errors| {
            let spec = rc.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            spec.min_ready_seconds.get_or_insert(0);
            let template_labels = spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone());
            if spec
                .selector
                .as_ref()
                .is_none_or(|selector| selector.is_empty())
            {
                spec.selector = template_labels.clone();
            }
            let metadata = &mut rc.metadata;
            if metadata
                .labels
                .as_ref()
                .is_none_or(|labels| labels.is_empty())
            {
                metadata.labels = template_labels;
            }
            validate_replicas(spec.replicas, errors);
            let selector = spec.selector.clone().unwrap_or_default();
            if selector.is_empty() {
                errors.push(FieldError::required("spec.selector", ""));
            }
            match spec.template.as_mut() {
                Some(template) => {
                    let parsed = labels::LabelSelector::from_map(&to_map(&selector))
                        .unwrap_or_else(|error| {
                            errors.push(FieldError::invalid(
                                "spec.selector",
                                format!("{selector:?}"),
                                error.to_string(),
                            ));
                            labels::LabelSelector::everything()
                        });
                    validate_template(template, "spec.template", &parsed, errors)
                }
                None => errors.push(FieldError::required("spec.template", "")),
            }
        })?,
        "ReplicaSet" => typed::<ReplicaSet>(info, object, |rs, errors| {
            let spec = rs.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            spec.min_ready_seconds.get_or_insert(0);
            validate_replicas(spec.replicas, errors);
            let selector =
                validate_label_selector(&Some(spec.selector.clone()), "spec.selector", errors);
            match spec.template.as_mut() {
                Some(template) => validate_template(template, "spec.template", &selector, errors),
                None => errors.push(FieldError::required("spec.template", "")),
            }
        })?,
        "Deployment" => typed::<Deployment>(info, object, |deployment, errors| {
            let spec = deployment.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            spec.revision_history_limit.get_or_insert(10);
            spec.progress_deadline_seconds.get_or_insert(600);
            spec.min_ready_seconds.get_or_insert(0);
            let strategy = spec.strategy.get_or_insert_with(Default::default);
            let strategy_type = strategy
                .type_
                .get_or_insert_with(|| "RollingUpdate".into())
                .clone();
            match strategy_type.as_str() {
                "RollingUpdate" => {
                    let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
                    rolling
                        .max_surge
                        .get_or_insert(IntOrString::String("25%".into()));
                    rolling
                        .max_unavailable
                        .get_or_insert(IntOrString::String("25%".into()));
                    validate_rolling_update(rolling, errors);
                }
                "Recreate" => {
                    if strategy.rolling_update.is_some() {
                        errors.push(FieldError::forbidden(
                            "spec.strategy.rollingUpdate",
                            "may not be specified when strategy `type` is 'Recreate'",
                        ));
                    }
                }
                other => errors.push(FieldError::not_supported(
                    "spec.strategy.type",
                    other,
                    &["Recreate", "RollingUpdate"],
                )),
            }
            validate_replicas(spec.replicas, errors);
            validate_deployment_timing(spec, errors);
            let selector =
                validate_label_selector(&Some(spec.selector.clone()), "spec.selector", errors);
            validate_template(&mut spec.template, "spec.template", &selector, errors);
        })?,
        "DaemonSet" => typed::<DaemonSet>(info, object, |daemonset, errors| {
            let spec = daemonset.spec.get_or_insert_with(Default::default);
            spec.revision_history_limit.get_or_insert(10);
            spec.min_ready_seconds.get_or_insert(0);
            let strategy = spec.update_strategy.get_or_insert_with(Default::default);
            if strategy.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
                let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
                rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
                rolling.max_surge.get_or_insert(IntOrString::Int(0));
            }
            let selector =
                validate_label_selector(&Some(spec.selector.clone()), "spec.selector", errors);
            validate_template(&mut spec.template, "spec.template", &selector, errors);
        })?,
        "Job" => {
            let uid = object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            typed::<Job>(info, object, |job, errors| {
                let name = job.metadata.name.clone().unwrap_or_default();
                let spec = job.spec.get_or_insert_with(Default::default);
                spec.parallelism.get_or_insert(1);
                spec.completions.get_or_insert(1);
                spec.backoff_limit.get_or_insert(6);
                spec.completion_mode
                    .get_or_insert_with(|| "NonIndexed".into());
                spec.suspend.get_or_insert(false);
                if !spec.manual_selector.unwrap_or(false) && spec.selector.is_none() {
                    // The Job controller finds its pods through a label
                    // that no other object can carry: the Job's own uid.
                    let generated: BTreeMap<String, String> =
                        [("batch.kubernetes.io/controller-uid".to_owned(), uid.clone())].into();
                    spec.selector = Some(LabelSelector {
                        match_labels: Some(generated),
                        ..Default::default()
                    });
                    let template_labels = spec
                        .template
                        .metadata
                        .get_or_insert_with(Default::default)
                        .labels
                        .get_or_insert_with(Default::default);
                    for (key, value) in [
                        ("batch.kubernetes.io/controller-uid", uid.as_str()),
                        ("controller-uid", uid.as_str()),
                        ("batch.kubernetes.io/job-name", name.as_str()),
                        ("job-name", name.as_str()),
                    ] {
                        template_labels
                            .entry(key.to_owned())
                            .or_insert_with(|| value.to_owned());
                    }
                }
                for (field, value) in [
                    ("spec.parallelism", spec.parallelism),
                    ("spec.completions", spec.completions),
                    ("spec.backoffLimit", spec.backoff_limit),
                ] {
                    if let Some(value) = value.filter(|value| *value < 0) {
                        errors.push(FieldError::invalid(
                            field,
                            value,
                            "must be greater than or equal to 0",
                        ));
                    }
                }
                let selector = validate_label_selector(&spec.selector, "spec.selector", errors);
                let restart = spec
                    .template
                    .spec
                    .as_ref()
                    .and_then(|s| s.restart_policy.clone());
                validate_template(&mut spec.template, "spec.template", &selector, errors);
                if !matches!(restart.as_deref(), Some("Never") | Some("OnFailure")) {
                    errors.push(FieldError {
                        value: restart.clone(),
                        ..FieldError::not_supported(
                            "spec.template.spec.restartPolicy",
                            restart.unwrap_or_default(),
                            &["OnFailure", "Never"],
                        )
                    });
                }
            })?
        }
        "CronJob" => typed::<CronJob>(info, object, |cron_job, errors| {
            default_and_validate_cron_job(cron_job, &name, errors)
        })?,
        "Service" => typed::<Service>(info, object, |service, errors| {
            default_and_validate_service(service, errors)
        })?,
        "Namespace" => typed::<Namespace>(info, object, |namespace, _| {
            let spec = namespace.spec.get_or_insert_with(Default::default);
            let finalizers = spec.finalizers.get_or_insert_with(Vec::new);
            if !finalizers.iter().any(|f| f == "kubernetes") {
                finalizers.push("kubernetes".into());
            }
            let status = namespace.status.get_or_insert_with(Default::default);
            status.phase.get_or_insert_with(|| "Active".into());
        })?,
        "ConfigMap" => typed::<ConfigMap>(info, object, |config_map, errors| {
            let mut size = 0;
            for (field, keys) in [
                (
                    "data",
                    config_map.data.as_ref().map(|d| {
                        d.iter()
                            .map(|(k, v)| (k.clone(), v.len()))
                            .collect::<Vec<_>>()
                    }),
                ),
                (
                    "binaryData",
                    config_map
                        .binary_data
                        .as_ref()
                        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.len())).collect()),
                ),
            ] {
                for (key, length) in keys.unwrap_or_default() {
                    validate_data_key(field, &key, errors);
                    size += length;
                }
            }
            if size > MAX_DATA_BYTES {
                errors.push(FieldError {
                    field: "[]".into(),
                    kind: super::errors::FieldErrorKind::TooLong,
                    detail: format!("must have at most {MAX_DATA_BYTES} bytes"),
                    value: None,
                });
            }
        })?,
        "Secret" => typed::<Secret>(info, object, |secret, errors| {
            secret.type_.get_or_insert_with(|| "Opaque".into());
            // stringData is a write-only convenience: it lands in data.
            if let Some(strings) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(Default::default);
                for (key, value) in strings {
                    data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
                }
            }
            let mut size = 0;
            for (key, value) in secret.data.iter().flatten() {
                validate_data_key("data", key, errors);
                size += value.0.len();
            }
            if size > MAX_DATA_BYTES {
                errors.push(FieldError {
                    field: "data".into(),
                    kind: super::errors::FieldErrorKind::TooLong,
                    detail: format!("must have at most {MAX_DATA_BYTES} bytes"),
                    value: None,
                });
            }
        })?,
        "Node" => typed::<Node>(info, object, |_, _| {})?,
        "Endpoints" => typed::<Endpoints>(info, object, |_, _| {})?,
        "Event" => typed::<Event>(info, object, |event, errors| {
            if event.involved_object.name.is_none() && event.involved_object.kind.is_none() {
                errors.push(FieldError::required("involvedObject", ""));
            }
        })?,
        _ => (object, Vec::new()),
    };
    errors.extend(kind_errors);
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(ApiError::invalid(info, &name, errors))
    }
}

fn to_map(selector: &BTreeMap<String, String>) -> serde_json::Map<String, Value> {
    selector
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect()
}

/// CronJob defaults and rules, as kube-apiserver's: the schedule must
/// parse and the time zone must exist; the job template follows the Job's
/// pod rules.
fn default_and_validate_cron_job(cron_job: &mut CronJob, name: &str, errors: &mut Errors) {
    use crate::controllers::cronjob::schedule;
    // The Job names `<name>-<minutes>` must stay within 63 characters.
    if name.len() > 52 {
        errors.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let spec = cron_job.spec.get_or_insert_with(Default::default);
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if spec.schedule.is_empty() {
        errors.push(FieldError::required("spec.schedule", ""));
    } else if let Err(error) = schedule::Schedule::parse(&spec.schedule) {
        errors.push(FieldError::invalid(
            "spec.schedule",
            spec.schedule.clone(),
            error.to_string(),
        ));
    }
    if let Some(zone) = spec.time_zone.as_deref() {
        if let Err(error) = schedule::time_zone(Some(zone)) {
            errors.push(FieldError::invalid(
                "spec.timeZone",
                zone,
                error.to_string(),
            ));
        }
    }
    let policy = spec.concurrency_policy.clone().unwrap_or_default();
    if !matches!(policy.as_str(), "Allow" | "Forbid" | "Replace") {
        errors.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for (field, value) in [
        (
            "spec.startingDeadlineSeconds",
            spec.starting_deadline_seconds,
        ),
        (
            "spec.successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit.map(i64::from),
        ),
        (
            "spec.failedJobsHistoryLimit",
            spec.failed_jobs_history_limit.map(i64::from),
        ),
    ] {
        if let Some(value) = value.filter(|value| *value < 0) {
            errors.push(FieldError::invalid(
                field,
                value,
                "must be greater than or equal to 0",
            ));
        }
    }
    let job_spec = spec.job_template.spec.get_or_insert_with(Default::default);
    // Without a selector (the usual case) the Job gets one when created.
    let selector = match &job_spec.selector {
        Some(_) => {
            validate_label_selector(&job_spec.selector, "spec.jobTemplate.spec.selector", errors)
        }
        None => labels::LabelSelector::everything(),
    };
    let restart = job_spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone());
    validate_template(
        &mut job_spec.template,
        "spec.jobTemplate.spec.template",
        &selector,
        errors,
    );
    if !matches!(restart.as_deref(), Some("Never") | Some("OnFailure")) {
        errors.push(FieldError {
            value: restart.clone(),
            ..FieldError::not_supported(
                "spec.jobTemplate.spec.template.spec.restartPolicy",
                restart.unwrap_or_default(),
                &["OnFailure", "Never"],
            )
        });
    }
}

fn validate_replicas(replicas: Option<i32>, errors: &mut Errors) {
    if let Some(replicas) = replicas.filter(|replicas| *replicas < 0) {
        errors.push(FieldError::invalid(
            "spec.replicas",
            replicas,
            "must be greater than or equal to 0",
        ));
    }
}

/// Kubernetes' `ValidatePositiveIntOrPercent`; returns the number (or
/// percentage) when it is valid.
fn validate_int_or_percent(value: &IntOrString, field: &str, errors: &mut Errors) -> Option<i32> {
    match value {
        IntOrString::Int(number) if *number < 0 => {
            errors.push(FieldError::invalid(
                field,
                number,
                "must be greater than or equal to 0",
            ));
            None
        }
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(text) => {
            let digits = text
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits.and_then(|d| d.parse().ok()) {
                Some(percent) => Some(percent),
                None => {
                    errors.push(FieldError::invalid(
                        field,
                        text,
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    ));
                    None
                }
            }
        }
    }
}

/// Kubernetes' `ValidateRollingUpdateDeployment`: the deployment
/// controller relies on both values being well formed and not both zero.
fn validate_rolling_update(
    rolling: &k8s_openapi::api::apps::v1::RollingUpdateDeployment,
    errors: &mut Errors,
) {
    const PATH: &str = "spec.strategy.rollingUpdate";
    let zero = IntOrString::Int(0);
    let unavailable = rolling.max_unavailable.as_ref().unwrap_or(&zero);
    let surge = rolling.max_surge.as_ref().unwrap_or(&zero);
    let unavailable_value =
        validate_int_or_percent(unavailable, &format!("{PATH}.maxUnavailable"), errors);
    let surge_value = validate_int_or_percent(surge, &format!("{PATH}.maxSurge"), errors);
    let shown = |value: &IntOrString| match value {
        IntOrString::Int(number) => number.to_string(),
        IntOrString::String(text) => text.clone(),
    };
    if unavailable_value == Some(0) && surge_value == Some(0) {
        errors.push(FieldError::invalid(
            format!("{PATH}.maxUnavailable"),
            shown(unavailable),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    if matches!(unavailable, IntOrString::String(_)) && unavailable_value.is_some_and(|p| p > 100) {
        errors.push(FieldError::invalid(
            format!("{PATH}.maxUnavailable"),
            shown(unavailable),
            "must not be greater than 100%",
        ));
    }
}

/// The deadline must leave room for `minReadySeconds`, or no rollout
/// could ever be on time.
fn validate_deployment_timing(
    spec: &k8s_openapi::api::apps::v1::DeploymentSpec,
    errors: &mut Errors,
) {
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready < 0 {
        errors.push(FieldError::invalid(
            "spec.minReadySeconds",
            min_ready,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(deadline) = spec.progress_deadline_seconds {
        if deadline < 0 {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than or equal to 0",
            ));
        }
        if deadline <= min_ready {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(limit) = spec.revision_history_limit.filter(|limit| *limit < 0) {
        errors.push(FieldError::invalid(
            "spec.revisionHistoryLimit",
            limit,
            "must be greater than or equal to 0",
        ));
    }
}

fn validate_data_key(field: &str, key: &str, errors: &mut Errors) {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && key != "."
        && key != "..";
    if !valid {
        errors.push(FieldError::invalid(
            format!("{field}[{key}]"),
            key,
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ));
    }
}

/// Checks a metav1.LabelSelector and returns it parsed (an empty selector
/// if it is unusable, so that template checks can still run).
fn validate_label_selector(
    selector: &Option<LabelSelector>,
    field: &str,
    errors: &mut Errors,
) -> labels::LabelSelector {
    let Some(selector) = selector else {
        errors.push(FieldError::required(field, ""));
        return labels::LabelSelector::everything();
    };
    let as_json = serde_json::to_value(selector).unwrap_or(Value::Null);
    match labels::LabelSelector::from_api(&as_json) {
        Ok(parsed) if parsed.is_empty() => {
            errors.push(FieldError::invalid(
                field,
                "{}",
                "empty selector is invalid for deployment",
            ));
            parsed
        }
        Ok(parsed) => parsed,
        Err(error) => {
            errors.push(FieldError::invalid(field, as_json, error.to_string()));
            labels::LabelSelector::everything()
        }
    }
}

/// A workload's pod template: its labels must be selected by the
/// workload's own selector, or the controller could never find its pods.
fn validate_template(
    template: &mut PodTemplateSpec,
    field: &str,
    selector: &labels::LabelSelector,
    errors: &mut Errors,
) {
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !selector.is_empty() && !selector.matches(&to_map(&labels)) {
        let rendered: Vec<String> = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        errors.push(FieldError::invalid(
            format!("{field}.metadata.labels"),
            format!("map[{}]", rendered.join(" ")),
            "`selector` does not match template `labels`",
        ));
    }
    for (key, value) in &labels {
        validate_label(&format!("{field}.metadata.labels"), key, value, errors);
    }
    let spec = template.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    validate_pod_spec(spec, &format!("{field}.spec"), errors);
}

fn validate_label(field: &str, key: &str, value: &str, errors: &mut Errors) {
    for message in names::is_qualified_name(key) {
        errors.push(FieldError::invalid(field, key, message));
    }
    for message in names::is_valid_label_value(value) {
        errors.push(FieldError::invalid(field, value, message));
    }
}

/// Metadata rules common to every kind.
fn validate_metadata(info: &ResourceInfo, object: &Value) -> Errors {
    let mut errors = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        // Names that become DNS labels (namespaces, services) are stricter.
        let messages = match info.plural {
            "namespaces" => names::is_dns1123_label(name),
            "services" => names::is_dns1035_label(name),
            _ => names::is_dns1123_subdomain(name),
        };
        for message in messages {
            errors.push(FieldError::invalid("metadata.name", name, message));
        }
    }
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            match value.as_str() {
                Some(value) => validate_label("metadata.labels", key, value, &mut errors),
                None => errors.push(FieldError::invalid(
                    "metadata.labels",
                    key,
                    "label values must be strings",
                )),
            }
        }
    }
    if let Some(annotations) = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (key, value) in annotations {
            for message in names::is_qualified_name(&key.to_lowercase()) {
                errors.push(FieldError::invalid("metadata.annotations", key, message));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errors.push(FieldError {
                field: "metadata.annotations".into(),
                kind: super::errors::FieldErrorKind::TooLong,
                detail: format!("must have at most {} bytes", 256 * 1024),
                value: None,
            });
        }
    }
    errors
}

/// The `tolerationSeconds` Kubernetes' DefaultTolerationSeconds admission
/// gives the `not-ready` and `unreachable` NoExecute tolerations it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    pub not_ready: i64,
    pub unreachable: i64,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: 300,
            unreachable: 300,
        }
    }
}

static DEFAULT_TOLERATION_SECONDS: std::sync::OnceLock<DefaultTolerationSeconds> =
    std::sync::OnceLock::new();

/// Sets the admission's `tolerationSeconds` once, at start-up (the
/// `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds` flags); later calls are
/// ignored.
pub fn configure_default_toleration_seconds(seconds: DefaultTolerationSeconds) {
    let _ = DEFAULT_TOLERATION_SECONDS.set(seconds);
}

fn default_toleration_seconds() -> DefaultTolerationSeconds {
    DEFAULT_TOLERATION_SECONDS
        .get()
        .copied()
        .unwrap_or_default()
}

/// Pod spec defaults, as the apiserver's defaulting functions and its
/// default admission plugins set them.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
    spec.priority.get_or_insert(0);
    if spec.service_account_name.is_none() {
        spec.service_account_name = Some("default".into());
        spec.service_account = Some("default".into());
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(container);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(config_map) = volume.config_map.as_mut() {
            config_map.default_mode.get_or_insert(0o644);
        }
        if let Some(secret) = volume.secret.as_mut() {
            secret.default_mode.get_or_insert(0o644);
        }
        if let Some(host_path) = volume.host_path.as_mut() {
            host_path.type_.get_or_insert_with(String::new);
        }
    }
}

/// Kubernetes' DefaultTolerationSeconds admission, for pods being created
/// (not templates): pods ride out a short node outage (five minutes unless
/// configured) before the node lifecycle controller evicts them.
fn add_default_toleration_seconds(spec: &mut PodSpec) {
    let seconds = default_toleration_seconds();
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", seconds.not_ready),
        ("node.kubernetes.io/unreachable", seconds.unreachable),
    ] {
        let taint = k8s_openapi::api::core::v1::Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        if !tolerations
            .iter()
            .any(|t| crate::scheduler::filters::tolerates(t, &taint))
        {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(seconds),
                ..Default::default()
            });
        }
    }
}

fn default_container(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or_default();
        let tag = image.rsplit('/').next().unwrap_or_default();
        let latest = !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
        container.image_pull_policy = Some(if latest { "Always" } else { "IfNotPresent" }.into());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".into());
    container.resources.get_or_insert_with(Default::default);
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
    }
}

fn validate_pod_spec(spec: &PodSpec, field: &str, errors: &mut Errors) {
    if spec.containers.is_empty() {
        errors.push(FieldError::required(format!("{field}.containers"), ""));
    }
    let mut seen = BTreeSet::new();
    let groups = [
        ("containers", &spec.containers[..]),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
        ),
    ];
    for (list, containers) in groups {
        for (index, container) in containers.iter().enumerate() {
            let path = format!("{field}.{list}[{index}]");
            validate_container(container, &path, errors);
            if !container.name.is_empty() && !seen.insert(container.name.clone()) {
                errors.push(FieldError::duplicate(
                    format!("{path}.name"),
                    &container.name,
                ));
            }
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref() {
        if !matches!(policy, "Always" | "OnFailure" | "Never") {
            errors.push(FieldError::not_supported(
                format!("{field}.restartPolicy"),
                policy,
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
    if let Some(policy) = spec.dns_policy.as_deref() {
        let allowed = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !allowed.contains(&policy) {
            errors.push(FieldError::not_supported(
                format!("{field}.dnsPolicy"),
                policy,
                &allowed,
            ));
        }
    }
    if let Some(seconds) = spec.termination_grace_period_seconds.filter(|s| *s < 0) {
        errors.push(FieldError::invalid(
            format!("{field}.terminationGracePeriodSeconds"),
            seconds,
            "must be >= 0",
        ));
    }
    let mut volume_names = BTreeSet::new();
    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("{field}.volumes[{index}].name");
        for message in names::is_dns1123_label(&volume.name) {
            errors.push(FieldError::invalid(&path, &volume.name, message));
        }
        if !volume_names.insert(volume.name.clone()) {
            errors.push(FieldError::duplicate(&path, &volume.name));
        }
    }
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
            if !volume_names.contains(&mount.name) {
                errors.push(FieldError {
                    field: format!(
                        "{field}.containers[{}].volumeMounts[{index}].name",
                        container.name
                    ),
                    kind: super::errors::FieldErrorKind::NotSupported,
                    detail: "must match the name of a volume".into(),
                    value: Some(mount.name.clone()),
                });
            }
        }
    }
}

fn validate_container(container: &Container, path: &str, errors: &mut Errors) {
    if container.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        for message in names::is_dns1123_label(&container.name) {
            errors.push(FieldError::invalid(
                format!("{path}.name"),
                &container.name,
                message,
            ));
        }
    }
    if container
        .image
        .as_deref()
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    }
    for (index, port) in container.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&port.container_port) {
            errors.push(FieldError::invalid(
                format!("{path}.ports[{index}].containerPort"),
                port.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(protocol) = port.protocol.as_deref() {
            if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                errors.push(FieldError::not_supported(
                    format!("{path}.ports[{index}].protocol"),
                    protocol,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    for (index, variable) in container.env.iter().flatten().enumerate() {
        if variable.name.is_empty() {
            errors.push(FieldError::required(
                format!("{path}.env[{index}].name"),
                "",
            ));
        }
    }
}

/// Pods are immutable apart from a few fields (Kubernetes' rule).
fn validate_pod_spec_update(new: &PodSpec, old: &Value, errors: &mut Errors) {
    let Ok(mut old) = serde_json::from_value::<PodSpec>(old.clone()) else {
        return;
    };
    let mut comparable = new.clone();
    // The mutable fields: images, the active deadline, added tolerations.
    for (mine, theirs) in comparable.containers.iter_mut().zip(old.containers.iter()) {
        mine.image = theirs.image.clone();
    }
    for (mine, theirs) in comparable
        .init_containers
        .iter_mut()
        .flatten()
        .zip(old.init_containers.iter().flatten())
    {
        mine.image = theirs.image.clone();
    }
    comparable.active_deadline_seconds = old.active_deadline_seconds;
    comparable.tolerations = old.tolerations.clone();
    // The scheduler binds pods by setting nodeName once.
    if old.node_name.is_none() {
        old.node_name = comparable.node_name.clone();
    }
    if comparable != old {
        errors.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

/// The QoS class Kubernetes derives from requests and limits.
fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any_set = false;
    let mut guaranteed = true;
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        if !requests.is_empty() || !limits.is_empty() {
            any_set = true;
        }
        for resource in ["cpu", "memory"] {
            match (requests.get(resource), limits.get(resource)) {
                (_, None) => guaranteed = false,
                (Some(request), Some(limit)) if request != limit => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn default_and_validate_service(service: &mut Service, errors: &mut Errors) {
    let spec = service.spec.get_or_insert_with(Default::default);
    let service_type = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    let allowed = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !allowed.contains(&service_type.as_str()) {
        errors.push(FieldError::not_supported(
            "spec.type",
            &service_type,
            &allowed,
        ));
    }
    if service_type != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
        spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let config = spec
            .session_affinity_config
            .get_or_insert_with(Default::default);
        let client_ip = config.client_ip.get_or_insert_with(Default::default);
        client_ip.timeout_seconds.get_or_insert(10800);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.get_or_insert_with(Vec::new);
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let many = ports.len() > 1;
    let mut port_names = BTreeSet::new();
    for (index, port) in ports.iter_mut().enumerate() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        port.target_port.get_or_insert(IntOrString::Int(port.port));
        let path = format!("spec.ports[{index}]");
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(
                format!("{path}.port"),
                port.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        match port.name.as_deref() {
            Some(name) if !name.is_empty() => {
                for message in names::is_dns1123_label(name) {
                    errors.push(FieldError::invalid(format!("{path}.name"), name, message));
                }
                if !port_names.insert(name.to_owned()) {
                    errors.push(FieldError::duplicate(format!("{path}.name"), name));
                }
            }
            _ if many => errors.push(FieldError::required(format!("{path}.name"), "")),
            _ => {}
        }
        if port.node_port.is_some() && !matches!(service_type.as_str(), "NodePort" | "LoadBalancer")
        {
            errors.push(FieldError::forbidden(
                format!("{path}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    let status = service.status.get_or_insert_with(Default::default);
    status.load_balancer.get_or_insert_with(Default::default);
}

/// The pod template inside a workload, as JSON, for callers that need to
/// inspect it without knowing the kind.
pub fn template_of(object: &Value) -> Option<&Value> {
    object.pointer("/spec/template")
}

/// Whether an update changed anything outside metadata and status, which is
/// what bumps `metadata.generation`.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |object: &Value| -> Value {
        let mut copy = object.clone();
        if let Some(map) = copy.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        copy
    };
    strip(old) != strip(new)
}

/// An empty object of a kind, used for responses that need one.
pub fn empty_object(info: &ResourceInfo) -> Value {
    json!({"apiVersion": info.api_version(), "kind": info.kind, "metadata": {}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        find(group, "v1", plural).expect("resource")
    }

    fn causes(error: ApiError) -> Vec<String> {
        match error {
            ApiError::Invalid { causes, .. } => {
                causes.into_iter().map(|cause| cause.message()).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn pod_defaults_match_the_apiserver() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
        let stored = default_and_validate(info("", "pods"), pod, None).expect("valid");
        assert_eq!(stored["spec"]["restartPolicy"], "Always");
        assert_eq!(stored["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            stored["spec"]["containers"][0]["ports"][0]["protocol"],
            "TCP"
        );
        assert_eq!(stored["status"]["phase"], "Pending");
        assert_eq!(stored["status"]["qosClass"], "BestEffort");
        assert_eq!(
            stored["spec"]["tolerations"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn a_pod_without_containers_or_with_a_bad_name_is_invalid() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}, "spec": {}});
        let messages =
            causes(default_and_validate(info("", "pods"), pod, None).expect_err("invalid"));
        assert!(
            messages.iter().any(|m| m.starts_with(
                "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
            )),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m == "spec.containers: Required value"),
            "{messages:?}"
        );
    }

    #[test]
    fn type_errors_are_bad_requests() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}});
        let error = default_and_validate(info("", "pods"), pod, None).expect_err("bad");
        assert_eq!(error.code(), 400);
        assert!(error
            .to_string()
            .starts_with("Pod in version \"v1\" cannot be handled as a Pod"));
    }

    #[test]
    fn rc_selector_and_labels_default_from_the_template() {
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "fe"},
            "spec": {"template": {"metadata": {"labels": {"app": "fe"}},
                "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        let stored =
            default_and_validate(info("", "replicationcontrollers"), rc, None).expect("valid");
        assert_eq!(stored["spec"]["selector"], json!({"app": "fe"}));
        assert_eq!(stored["metadata"]["labels"], json!({"app": "fe"}));
        assert_eq!(stored["spec"]["replicas"], 1);
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let messages = causes(
            default_and_validate(
                find("apps", "v1", "deployments").expect("d"),
                deployment,
                None,
            )
            .expect_err("invalid"),
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`selector` does not match template `labels`")),
            "{messages:?}"
        );
    }

    #[test]
    fn deployment_rollout_parameters_are_validated() {
        let info = find("apps", "v1", "deployments").expect("d");
        let deployment = |spec: Value| {
            let mut object = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": "x"}},
                    "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
            json_patch::merge(&mut object, &spec);
            object
        };
        let rolling = |surge: Value, unavailable: Value| {
            deployment(json!({"spec": {"strategy": {"rollingUpdate":
                {"maxSurge": surge, "maxUnavailable": unavailable}}}}))
        };
        for (object, message) in [
            (rolling(json!("1"), json!(1)), "a valid percent string must be a numeric string"),
            (rolling(json!(-1), json!(1)), "maxSurge: Invalid value: \"-1\": must be greater than or equal to 0"),
            (rolling(json!(0), json!("0%")), "may not be 0 when `maxSurge` is 0"),
            (rolling(json!(1), json!("101%")), "must not be greater than 100%"),
            (deployment(json!({"spec": {"minReadySeconds": 10, "progressDeadlineSeconds": 10}})),
                "spec.progressDeadlineSeconds: Invalid value: \"10\": must be greater than minReadySeconds"),
        ] {
            let messages = causes(default_and_validate(info, object, None).expect_err("invalid"));
            assert!(messages.iter().any(|m| m.contains(message)), "{messages:?} lacks {message}");
        }
        default_and_validate(info, rolling(json!("50%"), json!(0)), None).expect("valid");
    }

    #[test]
    fn deployment_defaults_rolling_update() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "strategy": {},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}}}});
        let stored = default_and_validate(
            find("apps", "v1", "deployments").expect("d"),
            deployment,
            None,
        )
        .expect("valid");
        assert_eq!(stored["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(
            stored["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            "25%"
        );
        assert_eq!(stored["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn service_defaults_and_port_rules() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let stored = default_and_validate(info("", "services"), service, None).expect("valid");
        assert_eq!(stored["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(stored["spec"]["externalTrafficPolicy"], "Cluster");

        let two_unnamed = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let messages = causes(
            default_and_validate(info("", "services"), two_unnamed, None).expect_err("invalid"),
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("spec.ports[0].name: Required value")),
            "{messages:?}"
        );
    }

    #[test]
    fn job_restart_policy_must_not_be_always() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "uid": "u1"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let messages = causes(
            default_and_validate(find("batch", "v1", "jobs").expect("j"), job, None)
                .expect_err("invalid"),
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("spec.template.spec.restartPolicy: Unsupported value")),
            "{messages:?}"
        );
    }

    #[test]
    fn pod_spec_is_immutable_except_images() {
        let pods = info("", "pods");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let stored = default_and_validate(pods, pod, None).expect("valid");
        let mut new_image = stored.clone();
        new_image["spec"]["containers"][0]["image"] = json!("i:2");
        assert!(default_and_validate(pods, new_image, Some(&stored)).is_ok());
        let mut new_command = stored.clone();
        new_command["spec"]["containers"][0]["command"] = json!(["sh"]);
        assert!(default_and_validate(pods, new_command, Some(&stored)).is_err());
    }

    #[test]
    fn secret_string_data_moves_into_data() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}});
        let stored = default_and_validate(info("", "secrets"), secret, None).expect("valid");
        assert_eq!(stored["data"]["k"], "dg==");
        assert!(stored.get("stringData").is_none());
        assert_eq!(stored["type"], "Opaque");
    }
}
