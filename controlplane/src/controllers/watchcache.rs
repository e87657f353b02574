//! A list-then-watch cache over a few store prefixes, and the loop that
//! feeds a per-object work queue from it, shared by the DaemonSet, Job,
//! CronJob and node lifecycle controllers.
//!
//! Ordering rules:
//! - Every prefix is listed first, then watched from right after its own
//!   list revision, so no change falls between the list and the watch.
//! - A controller folds its own writes into the cache at once
//!   ([`Informer::fold_written`], [`Informer::fold_deleted`]), so the next
//!   reconcile sees them even before the watch delivers them; this is what
//!   stops a second round of creations. A watch event older than what the
//!   cache holds for a key (or than a folded deletion) is ignored.
//! - After each reconcile the loop drains whatever the watches already hold
//!   before taking the next key.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use futures_util::FutureExt;
use jiff::Timestamp;
use serde_json::Value;
use skiff_store::{Event, EventType, KeyValue, KvStore, Revision, StoreError, Watcher};
use tokio::time::Instant;

use super::workqueue::WorkQueue;
use crate::api::objects;

/// How often everything is relisted and every object reconciled.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// What the loop should do with a key after reconciling it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Action {
    pub requeue_after: Option<Duration>,
}

impl Action {
    pub fn requeue(after: Option<Duration>) -> Action {
        Action {
            requeue_after: after,
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    revision: Revision,
    object: Value,
}

struct Source {
    prefix: String,
    objects: BTreeMap<String, Cached>,
    /// Keys deleted by the controller's own writes, with the revision of
    /// the deletion: older puts for them are stale.
    tombstones: HashMap<String, Revision>,
    watcher: Watcher,
}

/// One change the cache took in.
#[derive(Debug, Clone)]
pub struct Change {
    /// Which prefix, by its index in the list given to [`Informer::start`].
    pub source: usize,
    pub key: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl Change {
    /// The object after the change, or before it for a deletion.
    pub fn latest(&self) -> Option<&Value> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// The cached objects of several prefixes, kept current by watches.
pub struct Informer {
    sources: Vec<Source>,
}

impl Informer {
    /// Lists every prefix and starts watching each.
    pub async fn start(store: &dyn KvStore, prefixes: &[String]) -> Result<Informer, StoreError> {
        let mut sources = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let listed = store.range(prefix).await?;
            let mut objects = BTreeMap::new();
            for kv in &listed.items {
                if let Some(object) = parse(kv) {
                    objects.insert(
                        kv.key.clone(),
                        Cached {
                            revision: kv.mod_revision,
                            object,
                        },
                    );
                }
            }
            sources.push(Source {
                prefix: prefix.clone(),
                objects,
                tombstones: HashMap::new(),
                watcher: store.watch(prefix, listed.revision)?,
            });
        }
        Ok(Informer { sources })
    }

    /// Every cached object of one source, by store key.
    pub fn objects(&self, source: usize) -> impl Iterator<Item = (&str, &Value)> {
        self.sources
            .get(source)
            .into_iter()
            .flat_map(|s| s.objects.iter())
            .map(|(key, cached)| (key.as_str(), &cached.object))
    }

    /// The cached objects of one source in one namespace.
    pub fn in_namespace<'a>(
        &'a self,
        source: usize,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let start = self
            .sources
            .get(source)
            .map(|s| format!("{}{namespace}/", s.prefix))
            .unwrap_or_default();
        let end = format!("{start}\u{10FFFF}");
        self.sources
            .get(source)
            .into_iter()
            .flat_map(move |s| s.objects.range(start.clone()..end.clone()))
            .map(|(_, cached)| &cached.object)
    }

    pub fn get(&self, source: usize, key: &str) -> Option<&Value> {
        self.sources
            .get(source)
            .and_then(|s| s.objects.get(key))
            .map(|cached| &cached.object)
    }

    /// The store key prefix of one source.
    pub fn prefix(&self, source: usize) -> &str {
        self.sources
            .get(source)
            .map(|s| s.prefix.as_str())
            .unwrap_or_default()
    }

    /// Takes in an object the controller itself wrote.
    pub fn fold_written(&mut self, source: usize, kv: &KeyValue) {
        let Some(object) = parse(kv) else { return };
        if let Some(s) = self.sources.get_mut(source) {
            s.tombstones.remove(&kv.key);
            let stale = s
                .objects
                .get(&kv.key)
                .is_some_and(|c| c.revision > kv.mod_revision);
            if !stale {
                s.objects.insert(
                    kv.key.clone(),
                    Cached {
                        revision: kv.mod_revision,
                        object,
                    },
                );
            }
        }
    }

    /// Takes in an object the controller itself wrote, from its JSON (with
    /// `metadata.resourceVersion`, as the registry returns it).
    pub fn fold_object(&mut self, source: usize, key: &str, object: &Value) {
        let revision = objects::str_at(object, "/metadata/resourceVersion")
            .and_then(|v| v.parse::<Revision>().ok())
            .unwrap_or(0);
        if let Some(s) = self.sources.get_mut(source) {
            let stale = s.objects.get(key).is_some_and(|c| c.revision > revision);
            if !stale {
                s.objects.insert(
                    key.to_owned(),
                    Cached {
                        revision,
                        object: object.clone(),
                    },
                );
            }
        }
    }

    /// Forgets an object the controller itself deleted at `revision`.
    pub fn fold_deleted(&mut self, source: usize, key: &str, revision: Revision) {
        if let Some(s) = self.sources.get_mut(source) {
            s.objects.remove(key);
            s.tombstones.insert(key.to_owned(), revision);
        }
    }

    /// Waits for the next change on any source and takes it in.
    pub async fn next(&mut self) -> Result<Option<Change>, StoreError> {
        if self.sources.is_empty() {
            std::future::pending::<()>().await;
        }
        let (index, result) = {
            let waits =
                self.sources.iter_mut().enumerate().map(|(index, source)| {
                    async move { (index, source.watcher.next().await) }.boxed()
                });
            let ((index, result), _, _) = select_all(waits).await;
            (index, result)
        };
        let event = result?;
        Ok(self.apply(index, &event))
    }

    /// Takes in every change the watches already hold.
    pub fn drain(&mut self) -> Result<Vec<Change>, StoreError> {
        let mut changes = Vec::new();
        for index in 0..self.sources.len() {
            loop {
                let next = match self.sources.get_mut(index) {
                    Some(source) => source.watcher.next().now_or_never(),
                    None => None,
                };
                match next {
                    Some(event) => {
                        let event = event?;
                        changes.extend(self.apply(index, &event));
                    }
                    None => break,
                }
            }
        }
        Ok(changes)
    }

    fn apply(&mut self, index: usize, event: &Arc<Event>) -> Option<Change> {
        let source = self.sources.get_mut(index)?;
        let key = event.kv.key.clone();
        let revision = event.revision();
        if source
            .tombstones
            .get(&key)
            .is_some_and(|deleted| *deleted >= revision)
        {
            return None;
        }
        if source
            .objects
            .get(&key)
            .is_some_and(|c| c.revision >= revision)
        {
            return None;
        }
        source.tombstones.remove(&key);
        let new = match event.event_type {
            EventType::Put => parse(&event.kv),
            EventType::Delete => None,
        };
        let old = match &new {
            Some(object) => source
                .objects
                .insert(
                    key.clone(),
                    Cached {
                        revision,
                        object: object.clone(),
                    },
                )
                .map(|c| c.object),
            None => source.objects.remove(&key).map(|c| c.object),
        };
        Some(Change {
            source: index,
            key,
            old,
            new,
        })
    }
}

fn parse(kv: &KeyValue) -> Option<Value> {
    match objects::value(kv) {
        Ok(object) => Some(object),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "a controller skips an object it cannot read");
            None
        }
    }
}

/// A controller driven by [`run`]: which prefixes it watches, which keys a
/// change concerns, and how one key is reconciled.
pub trait Reconciler: Send + Sync {
    type Key: Clone + Eq + Hash + Ord + Display + Send;
    type Error: Display + Send;

    /// The controller's name, for logs.
    fn name(&self) -> &'static str;
    /// The store prefixes to list and watch.
    fn prefixes(&self) -> Vec<String>;
    /// The keys a change concerns.
    fn keys_for(&self, change: &Change, informer: &Informer) -> Vec<Self::Key>;
    /// Every key, after a (re)list.
    fn all_keys(&self, informer: &Informer) -> Vec<Self::Key>;
    /// Brings one key in line; `now` is the wall clock.
    fn reconcile(
        &self,
        key: &Self::Key,
        informer: &mut Informer,
        now: Timestamp,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;
}

/// Runs a reconciler forever, starting over from a fresh list after any
/// watch failure and every [`RESYNC_PERIOD`].
pub async fn run<R: Reconciler>(reconciler: R, store: Arc<dyn KvStore>) {
    loop {
        if let Err(error) = sync_and_follow(&reconciler, store.as_ref()).await {
            tracing::warn!(controller = reconciler.name(), %error, "controller restarting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn sync_and_follow<R: Reconciler>(
    reconciler: &R,
    store: &dyn KvStore,
) -> Result<(), StoreError> {
    let mut informer = Informer::start(store, &reconciler.prefixes()).await?;
    let mut queue: WorkQueue<R::Key> = WorkQueue::default();
    for key in reconciler.all_keys(&informer) {
        queue.add(key);
    }
    let resync = tokio::time::sleep(RESYNC_PERIOD);
    tokio::pin!(resync);
    loop {
        while let Some(key) = queue.pop(Instant::now()) {
            let result = reconciler
                .reconcile(&key, &mut informer, Timestamp::now())
                .await;
            let now = Instant::now();
            queue.done(&key);
            match result {
                Ok(action) => {
                    queue.forget(&key);
                    if let Some(after) = action.requeue_after {
                        queue.add_at(key, now + after, now);
                    }
                }
                Err(error) => {
                    tracing::warn!(controller = reconciler.name(), %key, %error, "reconcile failed; will retry");
                    queue.add_rate_limited(key, now);
                }
            }
            for change in informer.drain()? {
                for key in reconciler.keys_for(&change, &informer) {
                    queue.add(key);
                }
            }
        }
        let wakeup = queue
            .next_wakeup()
            .unwrap_or_else(|| Instant::now() + RESYNC_PERIOD);
        tokio::select! {
            change = informer.next() => {
                if let Some(change) = change? {
                    for key in reconciler.keys_for(&change, &informer) {
                        queue.add(key);
                    }
                }
            }
            _ = tokio::time::sleep_until(wakeup) => {}
            _ = &mut resync => return Ok(()),
        }
    }
}

/// Namespace and name from a namespaced store key under `prefix`.
pub fn split_key<'a>(key: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;
    use skiff_store::{Precondition, RedbStore, RedbStoreOptions, WriteOp};

    async fn put(store: &RedbStore, key: &str, object: Value) -> KeyValue {
        let written = store
            .write(WriteOp::Put {
                key: key.into(),
                value: Bytes::from(serde_json::to_vec(&object).expect("json")),
                precondition: Precondition::None,
            })
            .await
            .expect("write");
        written.current.expect("current")
    }

    #[tokio::test]
    async fn lists_then_follows_and_ignores_stale_events_after_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbStoreOptions::default())
            .expect("store");
        put(
            &store,
            "/registry/core/pods/ns/a",
            json!({"metadata": {"name": "a"}}),
        )
        .await;
        let mut informer = Informer::start(&store, &["/registry/core/pods/".to_owned()])
            .await
            .expect("start");
        assert_eq!(informer.in_namespace(0, "ns").count(), 1);

        let first = put(
            &store,
            "/registry/core/pods/ns/b",
            json!({"metadata": {"name": "b", "v": 1}}),
        )
        .await;
        let second = put(
            &store,
            "/registry/core/pods/ns/b",
            json!({"metadata": {"name": "b", "v": 2}}),
        )
        .await;
        // The controller folds in its newest write before the watch
        // delivers the older one.
        informer.fold_written(0, &second);
        assert_eq!(first.key, second.key);
        let change = informer.next().await.expect("next");
        assert!(change.is_none(), "the older event is stale: {change:?}");
        let change = informer.next().await.expect("next");
        assert!(change.is_none(), "the folded event is not news");
        assert_eq!(
            informer.get(0, "/registry/core/pods/ns/b").expect("b")["metadata"]["v"],
            2
        );
        assert_eq!(informer.in_namespace(0, "ns").count(), 2);
        assert_eq!(informer.in_namespace(0, "other").count(), 0);
    }
}
