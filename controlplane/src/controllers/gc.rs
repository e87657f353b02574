//! Garbage collection through `ownerReferences`, and namespace deletion.
//!
//! The collector keeps an index of which objects exist (by uid) and which
//! objects each owner has, built from one full read of the store and kept
//! current by a watch on everything. Decisions are pure functions of that
//! index ([`Index::plan`]); the loop applies them through the registry, so
//! they get the same rules as API writes.
//!
//! - An owner deleted in the background: each dependent whose owners are now
//!   all gone is deleted; one that still has a live owner just loses the
//!   dangling reference.
//! - An owner carrying the `orphan` finalizer: dependents lose their
//!   reference to it, then the finalizer is removed (which deletes it).
//! - An owner carrying `foregroundDeletion`: dependents are deleted, and the
//!   finalizer is removed once none remain.
//! - A namespace being deleted: everything in it is deleted, then the
//!   namespace itself.
//!
//! A change the loop could not apply (a conflict, say) is retried by the
//! periodic full resync, which rebuilds the index and replans everything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use skiff_store::{Event, EventType, KeyValue, Precondition, WriteOp};

use crate::api::errors::ApiError;
use crate::api::objects;
use crate::api::registry::{DeleteOptions, Propagation, Registry};
use crate::api::resources::{ResourceInfo, RESOURCES};

/// How often everything is replanned from a fresh read of the store.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerReference {
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
    #[serde(default)]
    finalizers: Vec<String>,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectHeader {
    #[serde(default)]
    metadata: Metadata,
}

/// What the collector knows about one stored object.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uid: String,
    namespace: Option<String>,
    owners: Vec<String>,
    deleting: bool,
    finalizers: Vec<String>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Delete this dependent (its owners are all gone, or are being
    /// deleted in the foreground).
    DeleteDependent { key: String },
    /// Remove the reference to `owner_uid` from this dependent.
    DropOwnerReference { key: String, owner_uid: String },
    /// Remove a finalizer from an owner whose dependents are dealt with.
    RemoveFinalizer { key: String, finalizer: String },
    /// Delete everything left in a terminating namespace.
    DeleteNamespaced { key: String },
    /// The namespace is empty: remove it.
    FinishNamespace { key: String },
}

/// The collector's view of the store, with the reverse indexes that let
/// one event be planned without looking at every object.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<String, Entry>,
    by_uid: HashMap<String, String>,
    /// Owner uid to the keys of objects that reference it.
    dependents: HashMap<String, BTreeSet<String>>,
    /// Namespace name to the keys of the objects in it.
    by_namespace: HashMap<String, BTreeSet<String>>,
}

fn parse_entry(kv: &KeyValue) -> Option<Entry> {
    let header: ObjectHeader = serde_json::from_slice(&kv.value).ok()?;
    let metadata = header.metadata;
    Some(Entry {
        uid: metadata.uid,
        namespace: metadata.namespace,
        owners: metadata
            .owner_references
            .into_iter()
            .map(|owner| owner.uid)
            .filter(|uid| !uid.is_empty())
            .collect(),
        deleting: metadata.deletion_timestamp.is_some(),
        finalizers: metadata.finalizers,
    })
}

const NAMESPACE_PREFIX: &str = "/registry/core/namespaces/";

impl Index {
    fn insert(&mut self, kv: &KeyValue) {
        self.remove(&kv.key);
        let Some(entry) = parse_entry(kv) else { return };
        if !entry.uid.is_empty() {
            self.by_uid.insert(entry.uid.clone(), kv.key.clone());
        }
        for owner in &entry.owners {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(kv.key.clone());
        }
        if let Some(namespace) = &entry.namespace {
            self.by_namespace
                .entry(namespace.clone())
                .or_default()
                .insert(kv.key.clone());
        }
        self.entries.insert(kv.key.clone(), entry);
    }

    fn remove(&mut self, key: &str) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        if self.by_uid.get(&entry.uid).map(String::as_str) == Some(key) {
            self.by_uid.remove(&entry.uid);
        }
        for owner in &entry.owners {
            if let Some(keys) = self.dependents.get_mut(owner) {
                keys.remove(key);
                if keys.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        if let Some(namespace) = &entry.namespace {
            if let Some(keys) = self.by_namespace.get_mut(namespace) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_namespace.remove(namespace);
                }
            }
        }
    }

    /// The keys whose plan may change because `key` changed: the object
    /// itself, its dependents, its owners, and its namespace.
    fn affected_by(&self, key: &str) -> BTreeSet<String> {
        let mut affected = BTreeSet::from([key.to_owned()]);
        if let Some(entry) = self.entries.get(key) {
            affected.extend(
                self.dependents
                    .get(&entry.uid)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            affected.extend(
                entry
                    .owners
                    .iter()
                    .filter_map(|owner| self.by_uid.get(owner))
                    .cloned(),
            );
            if let Some(namespace) = &entry.namespace {
                affected.insert(format!("{NAMESPACE_PREFIX}{namespace}"));
            }
        }
        affected
    }

    /// Applies one event and returns the keys to replan. Keys related
    /// before the change and after it both count: a deleted owner's
    /// dependents are found through its entry before it goes.
    pub fn apply(&mut self, event: &Event) -> BTreeSet<String> {
        let mut affected = self.affected_by(&event.kv.key);
        match event.event_type {
            EventType::Put => self.insert(&event.kv),
            EventType::Delete => self.remove(&event.kv.key),
        }
        affected.extend(self.affected_by(&event.kv.key));
        affected
    }

    fn exists(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Everything that needs doing, for every object.
    pub fn plan(&self) -> BTreeSet<Action> {
        self.plan_for(self.entries.keys())
    }

    /// What needs doing now for the given objects, each seen as a
    /// dependent, as an owner, and (for namespaces) as a container.
    pub fn plan_for<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> BTreeSet<Action> {
        let mut actions = BTreeSet::new();
        for key in keys {
            let Some(entry) = self.entries.get(key) else {
                continue;
            };
            if !entry.owners.is_empty() {
                let any_live = entry.owners.iter().any(|owner| self.exists(owner));
                if !any_live {
                    if !entry.deleting {
                        actions.insert(Action::DeleteDependent { key: key.clone() });
                    }
                } else {
                    for owner in entry.owners.iter().filter(|owner| !self.exists(owner)) {
                        actions.insert(Action::DropOwnerReference {
                            key: key.clone(),
                            owner_uid: owner.clone(),
                        });
                    }
                }
            }
            if !entry.deleting {
                continue;
            }
            let mine: Vec<&String> = self
                .dependents
                .get(&entry.uid)
                .into_iter()
                .flatten()
                .collect();
            if entry.finalizers.iter().any(|f| f == "orphan") {
                if mine.is_empty() {
                    actions.insert(Action::RemoveFinalizer {
                        key: key.clone(),
                        finalizer: "orphan".into(),
                    });
                }
                for dependent in mine {
                    actions.insert(Action::DropOwnerReference {
                        key: dependent.clone(),
                        owner_uid: entry.uid.clone(),
                    });
                }
            } else if entry.finalizers.iter().any(|f| f == "foregroundDeletion") {
                if mine.is_empty() {
                    actions.insert(Action::RemoveFinalizer {
                        key: key.clone(),
                        finalizer: "foregroundDeletion".into(),
                    });
                }
                for dependent in mine {
                    if self.entries.get(dependent).is_some_and(|d| !d.deleting) {
                        actions.insert(Action::DeleteDependent {
                            key: dependent.clone(),
                        });
                    }
                }
            }
            if let Some(name) = key.strip_prefix(NAMESPACE_PREFIX) {
                let contents: Vec<&String> =
                    self.by_namespace.get(name).into_iter().flatten().collect();
                if contents.is_empty() {
                    actions.insert(Action::FinishNamespace { key: key.clone() });
                }
                for other_key in contents {
                    if self
                        .entries
                        .get(other_key)
                        .is_some_and(|other| !other.deleting)
                    {
                        actions.insert(Action::DeleteNamespaced {
                            key: other_key.clone(),
                        });
                    }
                }
            }
        }
        actions
    }
}

/// Finds the resource a storage key belongs to, with the namespace and
/// name it encodes.
fn locate(key: &str) -> Option<(&'static ResourceInfo, Option<String>, String)> {
    RESOURCES.iter().find_map(|info| {
        let rest = key.strip_prefix(&info.key_prefix(None))?;
        if info.namespaced {
            let (namespace, name) = rest.split_once('/')?;
            Some((info, Some(namespace.to_owned()), name.to_owned()))
        } else {
            Some((info, None, rest.to_owned()))
        }
    })
}

pub struct GarbageCollector {
    registry: Arc<Registry>,
}

impl GarbageCollector {
    pub fn new(registry: Arc<Registry>) -> Self {
        GarbageCollector { registry }
    }

    /// Runs forever: full sync, then follow the watch; start over on any
    /// watch failure and every [`RESYNC_PERIOD`].
    pub async fn run(self) {
        loop {
            if let Err(error) = self.sync_and_follow().await {
                tracing::warn!(%error, "garbage collector restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn sync_and_follow(&self) -> Result<(), ApiError> {
        let range = self.registry.store.range("/registry/").await?;
        let mut index = Index::default();
        for kv in &range.items {
            index.insert(kv);
        }
        let mut watcher = self.registry.store.watch("/registry/", range.revision)?;
        self.execute(index.plan()).await;
        let resync = tokio::time::sleep(RESYNC_PERIOD);
        tokio::pin!(resync);
        loop {
            tokio::select! {
                event = watcher.next() => {
                    let event = event?;
                    let mut affected = index.apply(&event);
                    // Drain what is already queued before planning, so a
                    // burst of deletes is planned once.
                    while let Some(Ok(next)) = futures_util::FutureExt::now_or_never(watcher.next()) {
                        affected.extend(index.apply(&next));
                    }
                    self.execute(index.plan_for(&affected)).await;
                }
                _ = &mut resync => return Ok(()),
            }
        }
    }

    async fn execute(&self, actions: BTreeSet<Action>) {
        for action in actions {
            if let Err(error) = self.apply(&action).await {
                match error {
                    ApiError::NotFound { .. } | ApiError::Conflict { .. } => {}
                    other => {
                        tracing::warn!(?action, error = %other, "garbage collection step failed; will retry")
                    }
                }
            }
        }
    }

    async fn apply(&self, action: &Action) -> Result<(), ApiError> {
        match action {
            Action::DeleteDependent { key } | Action::DeleteNamespaced { key } => {
                let Some((info, namespace, name)) = locate(key) else {
                    return Ok(());
                };
                tracing::info!(resource = info.plural, ?namespace, %name, "deleting");
                let options = DeleteOptions {
                    propagation: Some(Propagation::Background),
                    ..DeleteOptions::default()
                };
                self.registry
                    .delete(info, namespace.as_deref(), &name, &options)
                    .await
                    .map(|_| ())
            }
            Action::DropOwnerReference { key, owner_uid } => {
                let Some((info, _, _)) = locate(key) else {
                    return Ok(());
                };
                let Some(kv) = self.registry.store.get(key).await? else {
                    return Ok(());
                };
                let mut object = objects::value(&kv)?;
                if let Some(references) = object
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    references.retain(|reference| {
                        reference.get("uid").and_then(Value::as_str) != Some(owner_uid)
                    });
                    if references.is_empty() {
                        if let Some(metadata) =
                            object.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            metadata.remove("ownerReferences");
                        }
                    }
                }
                self.registry.put_raw(info, &kv, object).await.map(|_| ())
            }
            Action::RemoveFinalizer { key, finalizer } => {
                let Some((info, _, _)) = locate(key) else {
                    return Ok(());
                };
                let Some(kv) = self.registry.store.get(key).await? else {
                    return Ok(());
                };
                self.registry.remove_finalizer(info, &kv, finalizer).await
            }
            Action::FinishNamespace { key } => {
                let Some(kv) = self.registry.store.get(key).await? else {
                    return Ok(());
                };
                tracing::info!(
                    namespace = key.trim_start_matches(NAMESPACE_PREFIX),
                    "namespace is empty; removing it"
                );
                let op = WriteOp::Delete {
                    key: key.clone(),
                    precondition: Precondition::ModRevision(kv.mod_revision),
                };
                self.registry
                    .store
                    .write(op)
                    .await
                    .map(|_| ())
                    .map_err(ApiError::from)
            }
        }
    }
}

/// The `ownerReferences` entry that makes `owner` the controller of an
/// object.
pub fn controller_reference(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": owner.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "uid": owner.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(key: &str, metadata: Value) -> KeyValue {
        let object = json!({"metadata": metadata});
        KeyValue {
            key: key.into(),
            value: Bytes::from(serde_json::to_vec(&object).expect("json")),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    fn index(objects: &[KeyValue]) -> Index {
        let mut index = Index::default();
        for object in objects {
            index.insert(object);
        }
        index
    }

    const RC: &str = "/registry/core/replicationcontrollers/default/web";
    const POD: &str = "/registry/core/pods/default/web-1";

    #[test]
    fn dependents_of_a_deleted_owner_are_deleted() {
        let pod = kv(
            POD,
            json!({"uid": "p1", "namespace": "default", "ownerReferences": [{"uid": "rc1"}]}),
        );
        let with_owner = index(&[
            kv(RC, json!({"uid": "rc1", "namespace": "default"})),
            pod.clone(),
        ]);
        assert!(
            with_owner.plan().is_empty(),
            "nothing to do while the owner exists"
        );
        let without_owner = index(&[pod]);
        assert_eq!(
            without_owner.plan(),
            [Action::DeleteDependent { key: POD.into() }].into()
        );
    }

    #[test]
    fn a_dependent_with_another_live_owner_only_loses_the_reference() {
        let pod = kv(
            POD,
            json!({"uid": "p1", "ownerReferences": [{"uid": "gone"}, {"uid": "rc1"}]}),
        );
        let plan = index(&[kv(RC, json!({"uid": "rc1"})), pod]).plan();
        assert_eq!(
            plan,
            [Action::DropOwnerReference {
                key: POD.into(),
                owner_uid: "gone".into()
            }]
            .into()
        );
    }

    #[test]
    fn orphan_finalizer_releases_dependents_then_itself() {
        let owner = kv(
            RC,
            json!({"uid": "rc1", "deletionTimestamp": "x", "finalizers": ["orphan"]}),
        );
        let pod = kv(
            POD,
            json!({"uid": "p1", "ownerReferences": [{"uid": "rc1"}]}),
        );
        assert_eq!(
            index(&[owner.clone(), pod]).plan(),
            [Action::DropOwnerReference {
                key: POD.into(),
                owner_uid: "rc1".into()
            }]
            .into()
        );
        assert_eq!(
            index(&[owner]).plan(),
            [Action::RemoveFinalizer {
                key: RC.into(),
                finalizer: "orphan".into()
            }]
            .into()
        );
    }

    #[test]
    fn foreground_deletes_dependents_first() {
        let owner = kv(
            RC,
            json!({"uid": "rc1", "deletionTimestamp": "x", "finalizers": ["foregroundDeletion"]}),
        );
        let pod = kv(
            POD,
            json!({"uid": "p1", "ownerReferences": [{"uid": "rc1"}]}),
        );
        assert_eq!(
            index(&[owner.clone(), pod]).plan(),
            [Action::DeleteDependent { key: POD.into() }].into()
        );
        assert_eq!(
            index(&[owner]).plan(),
            [Action::RemoveFinalizer {
                key: RC.into(),
                finalizer: "foregroundDeletion".into()
            }]
            .into()
        );
    }

    #[test]
    fn terminating_namespace_is_emptied_then_removed() {
        let namespace = "/registry/core/namespaces/team";
        let terminating = kv(namespace, json!({"uid": "ns1", "deletionTimestamp": "x"}));
        let config = "/registry/core/configmaps/team/settings";
        let plan = index(&[
            terminating.clone(),
            kv(config, json!({"uid": "c1", "namespace": "team"})),
        ])
        .plan();
        assert_eq!(
            plan,
            [Action::DeleteNamespaced { key: config.into() }].into()
        );
        assert_eq!(
            index(&[terminating]).plan(),
            [Action::FinishNamespace {
                key: namespace.into()
            }]
            .into()
        );
    }

    #[test]
    fn an_owner_delete_event_replans_its_dependents() {
        let owner = kv(RC, json!({"uid": "rc1", "namespace": "default"}));
        let pod = kv(
            POD,
            json!({"uid": "p1", "namespace": "default", "ownerReferences": [{"uid": "rc1"}]}),
        );
        let mut index = index(&[owner.clone(), pod]);
        let affected = index.apply(&Event {
            event_type: EventType::Delete,
            kv: owner,
            previous: None,
        });
        assert!(affected.contains(POD), "{affected:?}");
        assert_eq!(
            index.plan_for(&affected),
            [Action::DeleteDependent { key: POD.into() }].into()
        );
    }

    #[test]
    fn keys_map_back_to_resources() {
        let (info, namespace, name) = locate(POD).expect("pod key");
        assert_eq!(
            (info.plural, namespace.as_deref(), name.as_str()),
            ("pods", Some("default"), "web-1")
        );
        let (info, namespace, name) =
            locate("/registry/apps/deployments/ns/d").expect("deployment key");
        assert_eq!(
            (info.plural, namespace.as_deref(), name.as_str()),
            ("deployments", Some("ns"), "d")
        );
    }
}
