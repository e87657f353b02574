//! The object registry: create, read, update, patch and delete with
//! Kubernetes semantics, on top of the store.
//!
//! The HTTP handlers and the in-process controllers (garbage collector,
//! namespace lifecycle) both go through here, so every write gets the same
//! defaulting, validation, allocation and optimistic concurrency.
//!
//! Ordering rules:
//! - Service writes hold the allocation lock from "assign IP and ports"
//!   until the store has acknowledged the write, so allocations never
//!   overlap and a failed write frees what it took.
//! - Deletion with finalizers is two-phase: the object first gets
//!   `deletionTimestamp` (and `orphan`/`foregroundDeletion` finalizers for
//!   those propagation policies); it is removed from the store by the
//!   update that empties its finalizers.

use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Value};
use skiff_apimachinery::{fields::FieldSelector, labels::LabelSelector, strategic};
use skiff_store::{KeyValue, KvStore, Precondition, StoreError, WriteOp};
use tokio::sync::Mutex;

use super::errors::{ApiError, FieldError};
use super::objects::{self, str_at};
use super::resources::{self, ResourceInfo, Subresource};
use super::strategy;
use crate::allocators::ServiceAllocations;

/// Namespaces that exist from the start and can never be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];
const UNDELETABLE_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// How many times a patch is retried when the object changes under it.
const PATCH_RETRIES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(text: &str) -> Result<Propagation, ApiError> {
        match text {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// What a DELETE asked for.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Err(ApiError::UnsupportedMediaType(
                "server-side apply is not supported by this server; use client-side `kubectl apply` (without --server-side)".into(),
            )),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// How an update or patch is applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteMode {
    /// Through the `status` subresource: only `status` changes.
    pub status_only: bool,
    /// Validate and compute the result, but store nothing.
    pub dry_run: bool,
}

/// Shared state of the API server.
pub struct Registry {
    pub store: Arc<dyn KvStore>,
    allocations: Mutex<ServiceAllocations>,
}

/// The outcome of a delete request.
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// Deletion started; the object remains until its finalizers are done.
    Pending(Value),
}

fn random_suffix() -> String {
    // The alphabet Kubernetes uses for generated names: no vowels (no
    // accidental words) and no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(metadata) => metadata,
        None => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Registry {
    pub fn new(store: Arc<dyn KvStore>, allocations: ServiceAllocations) -> Registry {
        Registry {
            store,
            allocations: Mutex::new(allocations),
        }
    }

    /// Rebuilds the Service allocations from the stored Services.
    pub async fn load_allocations(&self) -> Result<(), ApiError> {
        let services = resources::find("", "v1", "services")
            .ok_or_else(|| ApiError::Internal("no services".into()))?;
        let stored = self.store.range(&services.key_prefix(None)).await?;
        let mut allocations = self.allocations.lock().await;
        for kv in &stored.items {
            allocations.mark_service(&objects::value(kv)?);
        }
        Ok(())
    }

    pub async fn api_service_ip(&self) -> std::net::Ipv4Addr {
        self.allocations.lock().await.cluster_ips.api_service_ip()
    }

    pub async fn get_kv(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<KeyValue, ApiError> {
        self.store
            .get(&info.key(namespace, name))
            .await?
            .ok_or_else(|| ApiError::not_found(info, name))
    }

    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        objects::value(&self.get_kv(info, namespace, name).await?)
    }

    /// Every object of a resource (in one namespace, or all), filtered by
    /// selectors, with the revision the list was read at.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<(Vec<KeyValue>, i64), ApiError> {
        let range = self.store.range(&info.key_prefix(namespace)).await?;
        if labels.is_empty() && fields.is_empty() {
            return Ok((range.items, range.revision));
        }
        let mut matching = Vec::new();
        for kv in range.items {
            let object = objects::value(&kv)?;
            if labels.matches_object(&object) && fields.matches_object(&object) {
                matching.push(kv);
            }
        }
        Ok((matching, range.revision))
    }

    async fn check_namespace_accepts_writes(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        let (true, Some(namespace)) = (info.namespaced, namespace) else {
            return Ok(());
        };
        let namespaces = resources::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("no namespaces".into()))?;
        match self.store.get(&namespaces.key(None, namespace)).await? {
            None => Err(ApiError::not_found(namespaces, namespace)),
            Some(kv) => {
                let object = objects::value(&kv)?;
                if str_at(&object, "/status/phase") == Some("Terminating") {
                    Err(ApiError::Forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        info.qualified_name(),
                        str_at(&object, "/metadata/name").unwrap_or_default()
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Creates an object. `object` is the decoded request body.
    pub async fn create(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
    ) -> Result<KeyValue, ApiError> {
        check_type_meta(info, &mut object)?;
        let namespace = if info.namespaced {
            let body_namespace = str_at(&object, "/metadata/namespace")
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned);
            match (namespace, body_namespace) {
                (Some(url), Some(body)) if url != body => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ))
                }
                (Some(url), _) => Some(url.to_owned()),
                (None, _) => {
                    return Err(ApiError::MethodNotAllowed(format!(
                        "{} must be created in a namespace: POST to /{}/namespaces/NAMESPACE/{}",
                        info.qualified_name(),
                        if info.group.is_empty() { "api/v1".to_owned() } else { format!("apis/{}", info.api_version()) },
                        info.plural
                    )))
                }
            }
        } else {
            None
        };
        self.check_namespace_accepts_writes(info, namespace.as_deref())
            .await?;

        let generate_name = str_at(&object, "/metadata/generateName")
            .unwrap_or_default()
            .to_owned();
        let explicit_name = str_at(&object, "/metadata/name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let metadata = metadata_mut(&mut object);
        match (&explicit_name, generate_name.is_empty()) {
            (Some(_), _) => {}
            (None, false) => {
                metadata.insert(
                    "name".into(),
                    Value::String(format!("{generate_name}{}", random_suffix())),
                );
            }
            (None, true) => {}
        }
        match &namespace {
            Some(namespace) => {
                metadata.insert("namespace".into(), Value::String(namespace.clone()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
        metadata.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        metadata.insert(
            "creationTimestamp".into(),
            Value::String(objects::now_rfc3339()),
        );
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            metadata.remove(field);
        }
        if info.has_generation {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
        if info.has(Subresource::Status) && info.plural != "nodes" {
            // Status is written by controllers and agents, never by the
            // creator; defaulting then sets the initial status (a pod's
            // Pending phase, a namespace's Active). A node registers with
            // its status, so it keeps it.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }

        let mut object = strategy::default_and_validate(info, object, None)?;
        let name = str_at(&object, "/metadata/name")
            .unwrap_or_default()
            .to_owned();
        let key = info.key(namespace.as_deref(), &name);

        let is_service = info.plural == "services";
        let mut allocations = if is_service {
            Some(self.allocations.lock().await)
        } else {
            None
        };
        let before = allocations.as_deref().cloned();
        if let Some(allocations) = allocations.as_deref_mut() {
            allocations
                .assign(&mut object, None)
                .map_err(|causes| ApiError::invalid(info, &name, causes))?;
        }
        if dry_run {
            if let (Some(allocations), Some(before)) = (allocations.as_deref_mut(), before) {
                *allocations = before;
            }
            return Ok(KeyValue {
                key,
                value: objects::encode(object)?,
                create_revision: 0,
                mod_revision: 0,
            });
        }
        let result = self
            .store
            .write(WriteOp::Put {
                key,
                value: objects::encode(object)?,
                precondition: Precondition::MustNotExist,
            })
            .await;
        match result {
            Ok(written) => written
                .current
                .ok_or_else(|| ApiError::Internal("store returned no value".into())),
            Err(error) => {
                if let (Some(allocations), Some(before)) = (allocations.as_deref_mut(), before) {
                    *allocations = before;
                }
                match error {
                    StoreError::PreconditionFailed { .. } => {
                        Err(ApiError::already_exists(info, &name))
                    }
                    other => Err(other.into()),
                }
            }
        }
    }

    /// Replaces an object (PUT), or its status with `subresource`.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        mode: WriteMode,
    ) -> Result<KeyValue, ApiError> {
        check_type_meta(info, &mut object)?;
        if let Some(body_name) = str_at(&object, "/metadata/name").filter(|n| !n.is_empty()) {
            if body_name != name {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if let (true, Some(url), Some(body)) = (
            info.namespaced,
            namespace,
            str_at(&object, "/metadata/namespace").filter(|ns| !ns.is_empty()),
        ) {
            if url != body {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        let current = self.get_kv(info, namespace, name).await?;
        let requested_version = str_at(&object, "/metadata/resourceVersion")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        if let Some(version) = requested_version {
            if version != current.mod_revision.to_string() {
                return Err(ApiError::conflict(info, name));
            }
        }
        self.write_update(info, current, object, mode).await
    }

    /// Turns a requested new state into the stored one and writes it with
    /// compare-and-swap against `current`.
    async fn write_update(
        &self,
        info: &ResourceInfo,
        current: KeyValue,
        requested: Value,
        WriteMode {
            status_only,
            dry_run,
        }: WriteMode,
    ) -> Result<KeyValue, ApiError> {
        let old = objects::value(&current)?;
        let name = str_at(&old, "/metadata/name")
            .unwrap_or_default()
            .to_owned();
        let mut new = if status_only {
            let mut merged = old.clone();
            merged["status"] = requested.get("status").cloned().unwrap_or(Value::Null);
            merged
        } else {
            let mut merged = requested;
            if info.has(Subresource::Status) {
                match old.get("status") {
                    Some(status) => merged["status"] = status.clone(),
                    None => {
                        if let Some(map) = merged.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            merged
        };
        // Fields only the server sets are kept from the stored object.
        let old_metadata = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let metadata = metadata_mut(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ] {
            match old_metadata.get(field) {
                Some(value) => metadata.insert(field.to_owned(), value.clone()),
                None => metadata.remove(field),
            };
        }
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
        let is_deleting = old_metadata.get("deletionTimestamp").is_some();
        if is_deleting {
            // A terminating object may lose finalizers but never gain them.
            let old_finalizers = finalizers(&old);
            let kept: Vec<Value> = finalizers(&new)
                .into_iter()
                .filter(|f| old_finalizers.contains(f))
                .map(Value::String)
                .collect();
            metadata_mut(&mut new).insert("finalizers".into(), Value::Array(kept));
        }

        let mut new = strategy::default_and_validate(info, new, Some(&old))?;
        if info.has_generation && strategy::spec_changed(&old, &new) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            metadata_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if finalizers(&new).is_empty() {
            metadata_mut(&mut new).remove("finalizers");
        }
        if new == old {
            // A no-op update changes nothing, not even the resourceVersion.
            return Ok(current);
        }

        let is_service = info.plural == "services";
        let mut allocations = if is_service {
            Some(self.allocations.lock().await)
        } else {
            None
        };
        let before = allocations.as_deref().cloned();
        if let Some(allocations) = allocations.as_deref_mut() {
            allocations
                .assign(&mut new, Some(&old))
                .map_err(|causes| ApiError::invalid(info, &name, causes))?;
        }
        let restore = |allocations: &mut Option<
            tokio::sync::MutexGuard<'_, ServiceAllocations>,
        >| {
            if let (Some(allocations), Some(before)) = (allocations.as_deref_mut(), before.clone())
            {
                *allocations = before;
            }
        };
        if dry_run {
            restore(&mut allocations);
            return Ok(KeyValue {
                value: objects::encode(new)?,
                ..current
            });
        }

        // The update that removes the last finalizer of a deleting object
        // completes its deletion.
        let op = if is_deleting && finalizers(&new).is_empty() {
            WriteOp::Delete {
                key: current.key.clone(),
                precondition: Precondition::ModRevision(current.mod_revision),
            }
        } else {
            WriteOp::Put {
                key: current.key.clone(),
                value: objects::encode(new.clone())?,
                precondition: Precondition::ModRevision(current.mod_revision),
            }
        };
        let deleting = matches!(op, WriteOp::Delete { .. });
        match self.store.write(op).await {
            Ok(written) => {
                if deleting {
                    if let Some(allocations) = allocations.as_deref_mut() {
                        allocations.release_service(&new);
                    }
                    return Ok(KeyValue {
                        key: current.key,
                        value: objects::encode(new)?,
                        create_revision: current.create_revision,
                        mod_revision: written.revision,
                    });
                }
                written
                    .current
                    .ok_or_else(|| ApiError::Internal("store returned no value".into()))
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                restore(&mut allocations);
                Err(ApiError::conflict(info, &name))
            }
            Err(other) => {
                restore(&mut allocations);
                Err(other.into())
            }
        }
    }

    /// Applies a patch to the current object and stores the result,
    /// retrying when the object changed concurrently (unless the patch
    /// itself pinned a resourceVersion).
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
        mode: WriteMode,
    ) -> Result<KeyValue, ApiError> {
        let mut last_error = None;
        for _ in 0..PATCH_RETRIES {
            let current = self.get_kv(info, namespace, name).await?;
            let original = objects::value(&current)?;
            let patched = apply_patch(info, &original, patch_type, patch)?;
            let pinned = str_at(&patched, "/metadata/resourceVersion").map(str::to_owned);
            if let Some(version) = &pinned {
                if *version != current.mod_revision.to_string() {
                    return Err(ApiError::conflict(info, name));
                }
            }
            if str_at(&patched, "/metadata/name").is_some_and(|patched_name| patched_name != name) {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    str_at(&patched, "/metadata/name").unwrap_or_default()
                )));
            }
            let mut patched = patched;
            check_type_meta(info, &mut patched)?;
            match self.write_update(info, current, patched, mode).await {
                Err(ApiError::Conflict { .. }) if pinned.is_none() => {
                    last_error = Some(ApiError::conflict(info, name));
                }
                other => return other,
            }
        }
        Err(last_error.unwrap_or_else(|| ApiError::conflict(info, name)))
    }

    /// Deletes an object, honouring finalizers and the propagation policy.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let current = self.get_kv(info, namespace, name).await?;
        let mut object = objects::value(&current)?;
        if let Some(uid) = &options.precondition_uid {
            let actual = str_at(&object, "/metadata/uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::Conflict {
                    message: format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}",
                        info.qualified_name()
                    ),
                    name: name.into(),
                    kind: info.plural.into(),
                    group: info.group.into(),
                });
            }
        }
        if let Some(version) = &options.precondition_resource_version {
            if *version != current.mod_revision.to_string() {
                return Err(ApiError::conflict(info, name));
            }
        }

        if info.plural == "namespaces" {
            if UNDELETABLE_NAMESPACES.contains(&name) {
                return Err(ApiError::Forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                metadata_mut(&mut object).insert(
                    "deletionTimestamp".into(),
                    Value::String(objects::now_rfc3339()),
                );
                metadata_mut(&mut object).insert("deletionGracePeriodSeconds".into(), json!(0));
                object["status"]["phase"] = json!("Terminating");
                if options.dry_run {
                    return Ok(Deleted::Pending(object));
                }
                let written = self.put_raw(info, &current, object).await?;
                return Ok(Deleted::Pending(objects::value(&written)?));
            }
            return Ok(Deleted::Pending(object));
        }

        let mut wanted = finalizers(&object);
        match options.propagation {
            Some(Propagation::Orphan) => wanted.push("orphan".into()),
            Some(Propagation::Foreground) => wanted.push("foregroundDeletion".into()),
            _ => {}
        }
        wanted.dedup();
        let graceful_pod =
            info.plural == "pods" && self.pod_needs_graceful_stop(&object, options).await?;
        if !wanted.is_empty() || graceful_pod {
            if object.pointer("/metadata/deletionTimestamp").is_some()
                && finalizers(&object) == wanted
            {
                return Ok(Deleted::Pending(object));
            }
            let grace = if graceful_pod {
                self.pod_grace_seconds(&object, options)
            } else {
                0
            };
            let metadata = metadata_mut(&mut object);
            if !metadata.contains_key("deletionTimestamp") {
                let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                metadata.insert(
                    "deletionTimestamp".into(),
                    Value::String(deadline.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if !wanted.is_empty() {
                metadata.insert("finalizers".into(), json!(wanted));
            }
            if options.dry_run {
                return Ok(Deleted::Pending(object));
            }
            let written = self.put_raw(info, &current, object).await?;
            return Ok(Deleted::Pending(objects::value(&written)?));
        }

        if options.dry_run {
            return Ok(Deleted::Gone(object));
        }
        let is_service = info.plural == "services";
        let mut allocations = if is_service {
            Some(self.allocations.lock().await)
        } else {
            None
        };
        let op = WriteOp::Delete {
            key: current.key.clone(),
            precondition: Precondition::ModRevision(current.mod_revision),
        };
        match self.store.write(op).await {
            Ok(written) => {
                if let Some(allocations) = allocations.as_deref_mut() {
                    allocations.release_service(&object);
                }
                metadata_mut(&mut object).insert(
                    "resourceVersion".into(),
                    Value::String(written.revision.to_string()),
                );
                Ok(Deleted::Gone(object))
            }
            Err(StoreError::PreconditionFailed { current: None, .. }) => {
                Err(ApiError::not_found(info, name))
            }
            Err(StoreError::PreconditionFailed { .. }) => Err(ApiError::conflict(info, name)),
            Err(other) => Err(other.into()),
        }
    }

    /// A pod bound to a live node is stopped by that node's agent within its
    /// grace period; one that never reached a node can go at once.
    async fn pod_needs_graceful_stop(
        &self,
        pod: &Value,
        options: &DeleteOptions,
    ) -> Result<bool, ApiError> {
        let Some(node) = str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()) else {
            return Ok(false);
        };
        if self.pod_grace_seconds(pod, options) == 0 {
            return Ok(false);
        }
        if matches!(
            str_at(pod, "/status/phase"),
            Some("Succeeded") | Some("Failed")
        ) {
            return Ok(false);
        }
        let nodes = resources::find("", "v1", "nodes")
            .ok_or_else(|| ApiError::Internal("no nodes".into()))?;
        Ok(self.store.get(&nodes.key(None, node)).await?.is_some())
    }

    fn pod_grace_seconds(&self, pod: &Value, options: &DeleteOptions) -> i64 {
        options
            .grace_period_seconds
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// Writes an already-prepared object over `current`, without the
    /// create/update rules (used for deletion bookkeeping).
    pub async fn put_raw(
        &self,
        info: &ResourceInfo,
        current: &KeyValue,
        object: Value,
    ) -> Result<KeyValue, ApiError> {
        let name = str_at(&object, "/metadata/name")
            .unwrap_or_default()
            .to_owned();
        let op = WriteOp::Put {
            key: current.key.clone(),
            value: objects::encode(object)?,
            precondition: Precondition::ModRevision(current.mod_revision),
        };
        match self.store.write(op).await {
            Ok(written) => written
                .current
                .ok_or_else(|| ApiError::Internal("store returned no value".into())),
            Err(StoreError::PreconditionFailed { .. }) => Err(ApiError::conflict(info, &name)),
            Err(other) => Err(other.into()),
        }
    }

    /// Removes one finalizer from an object, deleting it if none remain.
    pub async fn remove_finalizer(
        &self,
        info: &ResourceInfo,
        kv: &KeyValue,
        finalizer: &str,
    ) -> Result<(), ApiError> {
        let mut object = objects::value(kv)?;
        let remaining: Vec<String> = finalizers(&object)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let op = if remaining.is_empty() && object.pointer("/metadata/deletionTimestamp").is_some()
        {
            WriteOp::Delete {
                key: kv.key.clone(),
                precondition: Precondition::ModRevision(kv.mod_revision),
            }
        } else {
            metadata_mut(&mut object).insert("finalizers".into(), json!(remaining));
            WriteOp::Put {
                key: kv.key.clone(),
                value: objects::encode(object.clone())?,
                precondition: Precondition::ModRevision(kv.mod_revision),
            }
        };
        let deleting = matches!(op, WriteOp::Delete { .. });
        let mut allocations = if deleting && info.plural == "services" {
            Some(self.allocations.lock().await)
        } else {
            None
        };
        match self.store.write(op).await {
            Ok(_) => {
                if let Some(allocations) = allocations.as_deref_mut() {
                    allocations.release_service(&object);
                }
                Ok(())
            }
            Err(StoreError::PreconditionFailed { .. }) => Err(ApiError::conflict(
                info,
                str_at(&object, "/metadata/name").unwrap_or_default(),
            )),
            Err(other) => Err(other.into()),
        }
    }
}

/// Fills in `apiVersion`/`kind` when the body left them out, and rejects a
/// body meant for another resource.
fn check_type_meta(info: &ResourceInfo, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    // Everything else is type-checked by decoding into the typed struct;
    // metadata is looked at before that, so it is checked here.
    if let Some(metadata) = object
        .get("metadata")
        .filter(|metadata| !metadata.is_object() && !metadata.is_null())
    {
        return Err(ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: metadata must be an object, got {metadata}",
            kind = info.kind,
            version = info.version
        )));
    }
    let expected_version = info.api_version();
    let api_version = str_at(object, "/apiVersion")
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let kind = str_at(object, "/kind")
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    if let Some(api_version) = &api_version {
        if *api_version != expected_version {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    if let Some(kind) = &kind {
        if kind != info.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({}) for {}",
                info.kind,
                info.qualified_name()
            )));
        }
    }
    object["apiVersion"] = Value::String(expected_version);
    object["kind"] = Value::String(info.kind.to_owned());
    Ok(())
}

/// Applies a patch document of the given type to `original`.
pub fn apply_patch(
    info: &ResourceInfo,
    original: &Value,
    patch_type: PatchType,
    patch: &Value,
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|error| {
                    ApiError::BadRequest(format!("the JSON patch is malformed: {error}"))
                })?;
            let mut patched = original.clone();
            json_patch::patch(&mut patched, &operations).map_err(|error| ApiError::Invalid {
                message: format!("the JSON patch could not be applied: {error}"),
                name: str_at(original, "/metadata/name")
                    .unwrap_or_default()
                    .into(),
                kind: info.kind.into(),
                group: info.group.into(),
                causes: Vec::new(),
            })?;
            Ok(patched)
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            let mut patched = original.clone();
            json_patch::merge(&mut patched, patch);
            Ok(patched)
        }
        PatchType::Strategic => strategic::apply(original, patch, info.kind).map_err(|error| {
            ApiError::BadRequest(format!(
                "the strategic merge patch could not be applied: {error}"
            ))
        }),
    }
}

/// The autoscaling/v1 Scale view of a workload.
pub fn scale_of(info: &ResourceInfo, object: &Value) -> Result<Value, ApiError> {
    let selector = match info.plural {
        "replicationcontrollers" => object
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|map| LabelSelector::from_map(map).map(|s| s.to_string()))
            .transpose(),
        _ => object
            .pointer("/spec/selector")
            .map(|s| LabelSelector::from_api(s).map(|s| s.to_string()))
            .transpose(),
    }
    .map_err(|error| ApiError::Internal(format!("stored selector is invalid: {error}")))?
    .unwrap_or_default();
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut scale_metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = metadata.get(field) {
            scale_metadata[field] = value.clone();
        }
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    }))
}

/// Validates a Scale and returns the replicas it asks for.
pub fn replicas_from_scale(
    info: &ResourceInfo,
    name: &str,
    scale: &Value,
) -> Result<i64, ApiError> {
    match scale.pointer("/spec/replicas") {
        Some(Value::Number(number)) => match number.as_i64() {
            Some(replicas) if replicas >= 0 && replicas <= i64::from(i32::MAX) => Ok(replicas),
            _ => Err(ApiError::invalid(
                info,
                name,
                vec![FieldError::invalid(
                    "spec.replicas",
                    number,
                    "must be greater than or equal to 0",
                )],
            )),
        },
        None | Some(Value::Null) => Ok(0),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Scale spec.replicas must be an integer, got {other}"
        ))),
    }
}
