//! HTTP-facing handlers: decode bodies, negotiate the response form
//! (object, list or Table), and call the registry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_apimachinery::{fields::FieldSelector, labels::LabelSelector, tables};
use skiff_store::KeyValue;
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::objects;
use super::registry::{self, DeleteOptions, Deleted, PatchType, Propagation, Registry, WriteMode};
use super::request::{self, ApiRequest, Query, SubresourcePath, Target, Verb};
use super::resources::{self, ResourceInfo};
use super::watch::{self, Rendering, Start, WatchFilter, WatchRequest};

/// The largest request body accepted, as kube-apiserver's default.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What to send back.
pub enum Reply {
    Json {
        status: u16,
        body: Vec<u8>,
    },
    Raw {
        status: u16,
        content_type: &'static str,
        body: Bytes,
    },
    Stream(mpsc::Receiver<Bytes>),
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply::Json {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn error(error: &ApiError) -> Reply {
        Reply::json(error.code(), &error.status())
    }
}

/// The parts of a request the handlers look at.
pub struct Incoming<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub accept: &'a str,
    pub content_type: &'a str,
    pub body: Bytes,
}

/// Facts about this server that some responses carry.
pub struct ServerFacts {
    pub address: String,
    pub version: Value,
    /// The cluster CA PEM, served as is at `/cacerts`.
    pub ca_pem: String,
}

pub async fn handle(
    registry: &Arc<Registry>,
    facts: &ServerFacts,
    incoming: Incoming<'_>,
) -> Reply {
    match dispatch(registry, facts, incoming).await {
        Ok(reply) => reply,
        Err(error) => Reply::error(&error),
    }
}

async fn dispatch(
    registry: &Arc<Registry>,
    facts: &ServerFacts,
    incoming: Incoming<'_>,
) -> Result<Reply, ApiError> {
    let query = Query::parse(incoming.query);
    match request::parse(incoming.method, incoming.path, &query)? {
        ApiRequest::Health => Ok(Reply::Raw {
            status: 200,
            content_type: "text/plain",
            body: Bytes::from_static(b"ok"),
        }),
        ApiRequest::Version => Ok(Reply::json(200, &facts.version)),
        ApiRequest::CaCerts => Ok(Reply::Raw {
            status: 200,
            content_type: "text/plain",
            body: Bytes::from(facts.ca_pem.clone()),
        }),
        ApiRequest::OpenApiV2 => Ok(openapi_v2(incoming.accept)),
        ApiRequest::OpenApiV3 => Err(ApiError::NotFound {
            message: "the server could not find the requested resource".into(),
            name: String::new(),
            kind: String::new(),
            group: String::new(),
        }),
        ApiRequest::CoreVersions => Ok(Reply::json(200, &resources::core_versions(&facts.address))),
        ApiRequest::GroupList => Ok(Reply::json(200, &resources::group_list())),
        ApiRequest::Group(group) => resources::group(&group)
            .map(|document| Reply::json(200, &document))
            .ok_or_else(not_found_path),
        ApiRequest::ResourceList { group, version } => resources::resource_list(&group, &version)
            .map(|document| Reply::json(200, &document))
            .ok_or_else(not_found_path),
        ApiRequest::Resource { verb, target } => {
            resource(registry, verb, target, &query, incoming).await
        }
    }
}

fn not_found_path() -> ApiError {
    ApiError::NotFound {
        message: "the server could not find the requested resource".into(),
        name: String::new(),
        kind: String::new(),
        group: String::new(),
    }
}

/// kubectl validates against `/openapi/v2` before create and apply. An
/// empty document (protobuf) or a minimal swagger (JSON) validates
/// everything; the content type must parse, so the protobuf form goes out
/// as octet-stream.
fn openapi_v2(accept: &str) -> Reply {
    if accept.contains("protobuf")
        || accept.is_empty()
        || accept.contains("*/*") && !accept.contains("json")
    {
        Reply::Raw {
            status: 200,
            content_type: "application/octet-stream",
            body: Bytes::new(),
        }
    } else {
        Reply::json(
            200,
            &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": {}}),
        )
    }
}

fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn selectors(
    info: &ResourceInfo,
    query: &Query,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    for requirement in fields.requirements() {
        if !info.supports_field(&requirement.field) {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {}",
                requirement.field
            )));
        }
    }
    Ok((labels, fields))
}

/// Decodes a request body: JSON, or Kubernetes protobuf for the kinds
/// `kubectl create` generators send that way.
fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|error| {
            ApiError::BadRequest(format!("the request body is not valid JSON: {error}"))
        }),
        "application/vnd.kubernetes.protobuf" => skiff_k8s_protobuf::decode_to_json(body).map_err(|error| match error {
            skiff_k8s_protobuf::ProtobufError::UnsupportedKind { .. } => ApiError::UnsupportedMediaType(error.to_string()),
            other => ApiError::BadRequest(format!("the protobuf request body could not be decoded: {other}")),
        }),
        "application/yaml" => Err(ApiError::UnsupportedMediaType(
            "YAML request bodies are not accepted; send application/json (kubectl converts YAML files itself)".into(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got {other:?})"
        ))),
    }
}

fn is_dry_run(query: &Query) -> bool {
    query.all("dryRun").iter().any(|value| value == "All")
}

fn object_reply(
    status: u16,
    kv: &KeyValue,
    info: &ResourceInfo,
    accept: &str,
) -> Result<Reply, ApiError> {
    if wants_table(accept) {
        let object = objects::value(kv)?;
        let table = tables::table(
            info.plural,
            &[object],
            &kv.mod_revision.to_string(),
            jiff::Timestamp::now(),
            true,
        );
        return Ok(Reply::json(status, &table));
    }
    Ok(Reply::Json {
        status,
        body: objects::json_bytes(kv),
    })
}

fn value_reply(status: u16, object: &Value, info: &ResourceInfo, accept: &str) -> Reply {
    if wants_table(accept) {
        let version = objects::str_at(object, "/metadata/resourceVersion").unwrap_or_default();
        return Reply::json(
            status,
            &tables::table(
                info.plural,
                std::slice::from_ref(object),
                version,
                jiff::Timestamp::now(),
                true,
            ),
        );
    }
    Reply::json(status, object)
}

async fn resource(
    registry: &Arc<Registry>,
    verb: Verb,
    target: Target,
    query: &Query,
    incoming: Incoming<'_>,
) -> Result<Reply, ApiError> {
    let info = target.info;
    let namespace = target.namespace.as_deref();
    let name = target.name.as_deref().unwrap_or_default();
    let accept = incoming.accept;
    match (&target.subresource, verb) {
        (None, Verb::Get) => {
            if query.flag("watch") {
                return watch_one(registry, &target, query, accept).await;
            }
            let kv = registry.get_kv(info, namespace, name).await?;
            object_reply(200, &kv, info, accept)
        }
        (None, Verb::List) => list(registry, info, namespace, query, accept).await,
        (None, Verb::Watch) => watch(registry, info, namespace, query, accept, None).await,
        (None, Verb::Create) => {
            let body = decode_body(incoming.content_type, &incoming.body)?;
            let kv = registry
                .create(info, namespace, body, is_dry_run(query))
                .await?;
            object_reply(201, &kv, info, accept)
        }
        (None, Verb::Update) | (Some(SubresourcePath::Status), Verb::Update) => {
            let body = decode_body(incoming.content_type, &incoming.body)?;
            let status_only = target.subresource.is_some();
            let kv = registry
                .update(
                    info,
                    namespace,
                    name,
                    body,
                    WriteMode {
                        status_only,
                        dry_run: is_dry_run(query),
                    },
                )
                .await?;
            object_reply(200, &kv, info, accept)
        }
        (None, Verb::Patch) | (Some(SubresourcePath::Status), Verb::Patch) => {
            let patch_type = PatchType::from_content_type(incoming.content_type)?;
            let patch: Value = serde_json::from_slice(&incoming.body).map_err(|error| {
                ApiError::BadRequest(format!("the patch is not valid JSON: {error}"))
            })?;
            let status_only = target.subresource.is_some();
            let kv = registry
                .patch(
                    info,
                    namespace,
                    name,
                    patch_type,
                    &patch,
                    WriteMode {
                        status_only,
                        dry_run: is_dry_run(query),
                    },
                )
                .await?;
            object_reply(200, &kv, info, accept)
        }
        (None, Verb::Delete) => {
            let options = delete_options(query, &incoming.body)?;
            match registry.delete(info, namespace, name, &options).await? {
                Deleted::Gone(object) => Ok(value_reply(200, &object, info, accept)),
                // The apiserver answers 202 while finalizers still hold the
                // object; kubectl treats both as success.
                Deleted::Pending(object) => Ok(value_reply(
                    if options.propagation.is_some() {
                        200
                    } else {
                        202
                    },
                    &object,
                    info,
                    accept,
                )),
            }
        }
        (None, Verb::DeleteCollection) => {
            let options = delete_options(query, &incoming.body)?;
            let (labels, fields) = selectors(info, query)?;
            let (items, _) = registry.list(info, namespace, &labels, &fields).await?;
            let mut deleted = Vec::new();
            for kv in items {
                let object = objects::value(&kv)?;
                let item_namespace =
                    objects::str_at(&object, "/metadata/namespace").map(str::to_owned);
                let item_name = objects::str_at(&object, "/metadata/name")
                    .unwrap_or_default()
                    .to_owned();
                match registry
                    .delete(info, item_namespace.as_deref(), &item_name, &options)
                    .await
                {
                    Ok(Deleted::Gone(object)) | Ok(Deleted::Pending(object)) => {
                        deleted.push(object)
                    }
                    Err(ApiError::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(Reply::json(
                200,
                &list_document(info, deleted, registry.store.current_revision()),
            ))
        }
        (Some(SubresourcePath::Status), Verb::Get) => {
            let kv = registry.get_kv(info, namespace, name).await?;
            object_reply(200, &kv, info, accept)
        }
        (Some(SubresourcePath::Scale), verb) if info.has(resources::Subresource::Scale) => {
            scale(registry, info, namespace, name, verb, query, &incoming).await
        }
        (Some(SubresourcePath::Other(sub)), _)
            if info.plural == "pods"
                && matches!(sub.as_str(), "log" | "exec" | "attach" | "portforward") =>
        {
            let pod = registry.get(info, namespace, name).await?;
            match objects::str_at(&pod, "/spec/nodeName").filter(|node| !node.is_empty()) {
                None => Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned"))),
                Some(node) if sub == "log" => {
                    super::agentproxy::container_logs(registry, &pod, node, query).await
                }
                // Upgrades are relayed before reaching here (api::streaming);
                // what is left did not ask for one.
                Some(_) => Err(ApiError::BadRequest("Upgrade request required".into())),
            }
        }
        (Some(SubresourcePath::Other(sub)), _)
            if info.plural == "namespaces" && sub == "finalize" =>
        {
            let body = decode_body(incoming.content_type, &incoming.body)?;
            let kv = registry
                .update(
                    info,
                    None,
                    name,
                    body,
                    WriteMode {
                        status_only: false,
                        dry_run: is_dry_run(query),
                    },
                )
                .await?;
            object_reply(200, &kv, info, accept)
        }
        _ => Err(not_found_path()),
    }
}

fn list_document(info: &ResourceInfo, items: Vec<Value>, revision: i64) -> Value {
    json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

async fn list(
    registry: &Arc<Registry>,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    query: &Query,
    accept: &str,
) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(info, query)?;
    let (items, revision) = registry.list(info, namespace, &labels, &fields).await?;
    if wants_table(accept) {
        let objects: Vec<Value> = items.iter().map(objects::value).collect::<Result<_, _>>()?;
        let table = tables::table(
            info.plural,
            &objects,
            &revision.to_string(),
            jiff::Timestamp::now(),
            true,
        );
        return Ok(Reply::json(200, &table));
    }
    // The list is assembled from the stored bytes without re-parsing them.
    let head = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}},\"items\":[",
        info.kind,
        info.api_version()
    );
    let total: usize = items.iter().map(|kv| kv.value.len() + 32).sum();
    let mut body = Vec::with_capacity(head.len() + total + 2);
    body.extend_from_slice(head.as_bytes());
    for (index, kv) in items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&objects::json_bytes(kv));
    }
    body.extend_from_slice(b"]}");
    Ok(Reply::Json { status: 200, body })
}

async fn watch(
    registry: &Arc<Registry>,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    query: &Query,
    accept: &str,
    only_name: Option<&str>,
) -> Result<Reply, ApiError> {
    let (labels, mut fields) = selectors(info, query)?;
    if let Some(name) = only_name {
        fields = FieldSelector::parse(&format!(
            "metadata.name={}",
            skiff_apimachinery::fields::escape_value(name)
        ))
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    }
    let start =
        match query
            .get("resourceVersion")
            .filter(|version| !version.is_empty() && *version != "0")
        {
            None => Start::Now,
            Some(version) => Start::After(version.parse().map_err(|_| {
                ApiError::BadRequest(format!("invalid resource version: {version:?}"))
            })?),
        };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .map(Duration::from_secs);
    let rendering = if wants_table(accept) {
        Rendering::Table {
            resource: info.plural,
        }
    } else {
        Rendering::Object
    };
    let receiver = watch::start(
        registry.store.clone(),
        WatchRequest {
            info,
            namespace: namespace.map(str::to_owned),
            filter: WatchFilter { labels, fields },
            rendering,
            start,
            timeout,
        },
    )
    .await?;
    Ok(Reply::Stream(receiver))
}

/// `GET .../name?watch=true`: the legacy single-object watch.
async fn watch_one(
    registry: &Arc<Registry>,
    target: &Target,
    query: &Query,
    accept: &str,
) -> Result<Reply, ApiError> {
    watch(
        registry,
        target.info,
        target.namespace.as_deref(),
        query,
        accept,
        target.name.as_deref(),
    )
    .await
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|error| {
            ApiError::BadRequest(format!("the DeleteOptions body is not valid JSON: {error}"))
        })?
    };
    let mut options = DeleteOptions::default();
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| query.get("propagationPolicy").map(str::to_owned));
    options.propagation = match policy {
        Some(policy) => Some(Propagation::parse(&policy)?),
        // The deprecated boolean still used by some clients.
        None => match body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or_else(|| query.get("orphanDependents").map(|v| v == "true"))
        {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => None,
        },
    };
    options.grace_period_seconds = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            query
                .get("gracePeriodSeconds")
                .and_then(|value| value.parse().ok())
        });
    options.precondition_uid = body
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    options.precondition_resource_version = body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    options.dry_run = is_dry_run(query)
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|values| values.iter().any(|v| v == "All"));
    Ok(options)
}

async fn scale(
    registry: &Arc<Registry>,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    verb: Verb,
    query: &Query,
    incoming: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let current = registry.get(info, namespace, name).await?;
    let current_scale = registry::scale_of(info, &current)?;
    let requested = match verb {
        Verb::Get => return Ok(Reply::json(200, &current_scale)),
        Verb::Update => {
            let scale = decode_body(incoming.content_type, &incoming.body)?;
            if let Some(version) =
                objects::str_at(&scale, "/metadata/resourceVersion").filter(|v| !v.is_empty())
            {
                if Some(version) != objects::str_at(&current, "/metadata/resourceVersion") {
                    return Err(ApiError::conflict(info, name));
                }
            }
            scale
        }
        Verb::Patch => {
            let patch_type = PatchType::from_content_type(incoming.content_type)?;
            let patch: Value = serde_json::from_slice(&incoming.body).map_err(|error| {
                ApiError::BadRequest(format!("the patch is not valid JSON: {error}"))
            })?;
            // A Scale has no merge keys, so a strategic patch is a merge patch.
            let patch_type = if patch_type == PatchType::Strategic {
                PatchType::Merge
            } else {
                patch_type
            };
            registry::apply_patch(info, &current_scale, patch_type, &patch)?
        }
        _ => {
            return Err(ApiError::MethodNotAllowed(
                "the scale subresource supports get, update and patch".into(),
            ))
        }
    };
    let replicas = registry::replicas_from_scale(info, name, &requested)?;
    let patch = json!({"spec": {"replicas": replicas}});
    let kv = registry
        .patch(
            info,
            namespace,
            name,
            PatchType::Merge,
            &patch,
            WriteMode {
                status_only: false,
                dry_run: is_dry_run(query),
            },
        )
        .await?;
    let updated = objects::value(&kv)?;
    Ok(Reply::json(200, &registry::scale_of(info, &updated)?))
}
