//! The embedded, durable [`KvStore`]: redb in the control plane's data dir.
//!
//! Writes go through one writer thread that does group commit: it takes
//! every write queued while the previous commit was syncing, applies them in
//! one redb transaction (each still gets its own revision, checked against
//! its own precondition in queue order), commits with an fsync, and only then
//! answers the callers and publishes the events. So an acknowledged write is
//! on disk, and many concurrent writers share one fsync instead of queueing
//! behind one each.
//!
//! Layout: table `kv` maps a key to `[create_revision][mod_revision][value]`
//! (two little-endian i64s, then the bytes); table `meta` holds the global
//! revision, which only moves forward, even across deletes and restarts.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::watch::WatchHub;
use crate::{
    Event, EventType, KeyValue, KvStore, Precondition, RangeResult, Revision, StoreError,
    StoreFuture, WriteOp, WriteResult,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
const HEADER_LEN: usize = 16;

/// Tunables for [`RedbStore`].
#[derive(Debug, Clone)]
pub struct RedbStoreOptions {
    /// redb's page cache. Small by default: the control plane is meant to
    /// stay lean, and reads are mostly recent, hot pages.
    pub cache_bytes: usize,
    /// How many recent events are kept for watches that resume from an
    /// older revision.
    pub watch_history: usize,
    /// How many events a watcher may fall behind before it is dropped.
    pub watch_channel: usize,
    /// The most writes committed in one transaction.
    pub max_batch: usize,
}

impl Default for RedbStoreOptions {
    fn default() -> Self {
        // Every event a watcher may still need is kept alive by the history
        // and the broadcast ring, values and previous values both, so these
        // two bounds are most of the store's memory. A watcher that falls
        // further behind relists, as clients of the real apiserver do.
        RedbStoreOptions { cache_bytes: 16 << 20, watch_history: 1024, watch_channel: 1024, max_batch: 2048 }
    }
}

type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

pub struct RedbStore {
    db: Arc<Database>,
    /// `None` only while dropping: closing the queue stops the writer.
    queue: Option<mpsc::Sender<(WriteOp, Reply)>>,
    writer: Option<thread::JoinHandle<()>>,
    revision: Arc<AtomicI64>,
    hub: Arc<WatchHub>,
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Let the writer finish its batch and release the database file, so
        // that the same path can be opened again right away.
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn backend(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(error.into().to_string())
}

fn encode(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(HEADER_LEN + value.len());
    buffer.extend_from_slice(&create_revision.to_le_bytes());
    buffer.extend_from_slice(&mod_revision.to_le_bytes());
    buffer.extend_from_slice(value);
    buffer
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < HEADER_LEN {
        return Err(StoreError::Backend(format!(
            "record for {key} is truncated ({} bytes)",
            raw.len()
        )));
    }
    let mut create = [0u8; 8];
    let mut modified = [0u8; 8];
    create.copy_from_slice(&raw[0..8]);
    modified.copy_from_slice(&raw[8..16]);
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(&raw[HEADER_LEN..]),
        create_revision: i64::from_le_bytes(create),
        mod_revision: i64::from_le_bytes(modified),
    })
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and starts its writer.
    pub fn open(path: &Path, options: RedbStoreOptions) -> Result<RedbStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(backend)?;
        let setup = db.begin_write().map_err(backend)?;
        let revision = {
            setup.open_table(KV).map_err(backend)?;
            let meta = setup.open_table(META).map_err(backend)?;
            let stored = meta
                .get(REVISION_KEY)
                .map_err(backend)?
                .map(|guard| guard.value());
            stored.unwrap_or(0)
        };
        setup.commit().map_err(backend)?;

        let db = Arc::new(db);
        let revision = Arc::new(AtomicI64::new(revision));
        let hub = Arc::new(WatchHub::new(
            revision.load(Ordering::SeqCst),
            options.watch_history,
            options.watch_channel,
        ));
        let (queue, receiver) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            revision: revision.clone(),
            hub: hub.clone(),
            max_batch: options.max_batch,
        };
        let writer = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|error| {
                StoreError::Backend(format!("cannot start the store writer: {error}"))
            })?;
        Ok(RedbStore {
            db,
            queue: Some(queue),
            writer: Some(writer),
            revision,
            hub,
        })
    }

    fn read_key(db: &Database, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = db.begin_read().map_err(backend)?;
        let table = txn.open_table(KV).map_err(backend)?;
        let found = table.get(key).map_err(backend)?;
        found.map(|guard| decode(key, guard.value())).transpose()
    }

    fn read_range(db: &Database, prefix: &str) -> Result<RangeResult, StoreError> {
        let txn = db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let revision = meta
            .get(REVISION_KEY)
            .map_err(backend)?
            .map(|guard| guard.value())
            .unwrap_or(0);
        let table = txn.open_table(KV).map_err(backend)?;
        let mut items = Vec::new();
        for entry in table.range(prefix..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            items.push(decode(key, value.value())?);
        }
        Ok(RangeResult { items, revision })
    }
}

impl KvStore for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        Box::pin(async move { Self::read_key(&self.db, key) })
    }

    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, RangeResult> {
        let db = self.db.clone();
        let prefix = prefix.to_owned();
        // Large ranges read many pages; keep them off the async workers.
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::read_range(&db, &prefix))
                .await
                .map_err(|error| StoreError::Backend(format!("range read task failed: {error}")))?
        })
    }

    fn write(&self, op: WriteOp) -> StoreFuture<'_, WriteResult> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
            queue.send((op, reply)).map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn watch(&self, prefix: &str, after_revision: Revision) -> Result<crate::Watcher, StoreError> {
        self.hub.watch(prefix, after_revision)
    }

    fn current_revision(&self) -> Revision {
        self.revision.load(Ordering::SeqCst)
    }
}

struct Writer {
    db: Arc<Database>,
    revision: Arc<AtomicI64>,
    hub: Arc<WatchHub>,
    max_batch: usize,
}

impl Writer {
    fn run(self, receiver: mpsc::Receiver<(WriteOp, Reply)>) {
        // Blocks for the first write, then takes whatever queued up behind it.
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&self, batch: Vec<(WriteOp, Reply)>) {
        let start = self.revision.load(Ordering::SeqCst);
        match self.apply(start, &batch) {
            Ok((outcomes, last_revision)) => {
                self.revision.store(last_revision, Ordering::SeqCst);
                let mut events = Vec::new();
                let mut replies = Vec::with_capacity(batch.len());
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    if let Ok((_, event)) = &outcome {
                        events.push(event.clone());
                    }
                    replies.push((reply, outcome.map(|(result, _)| result)));
                }
                // Publish before answering, so that a client that watches
                // from the revision it was just given cannot miss its write.
                self.hub.publish(events);
                for (reply, outcome) in replies {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, "store commit failed; {} writes rejected", batch.len());
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Backend(error.to_string())));
                }
            }
        }
    }

    /// Applies the batch in one transaction. Each op's outcome is its own;
    /// the `Err` of the outer result means nothing was committed.
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        start: Revision,
        batch: &[(WriteOp, Reply)],
    ) -> Result<(Vec<Result<(WriteResult, Event), StoreError>>, Revision), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let mut revision = start;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut table = txn.open_table(KV).map_err(backend)?;
            for (op, _) in batch {
                let key = op.key();
                let previous = match table.get(key).map_err(backend)? {
                    Some(guard) => Some(decode(key, guard.value())?),
                    None => None,
                };
                let precondition = match op {
                    WriteOp::Put { precondition, .. } | WriteOp::Delete { precondition, .. } => {
                        *precondition
                    }
                };
                let satisfied = match (precondition, &previous) {
                    (Precondition::None, _) => true,
                    (Precondition::MustNotExist, existing) => existing.is_none(),
                    (Precondition::MustExist, existing) => existing.is_some(),
                    (Precondition::ModRevision(expected), Some(existing)) => {
                        existing.mod_revision == expected
                    }
                    (Precondition::ModRevision(_), None) => false,
                };
                let deleting_nothing = matches!(op, WriteOp::Delete { .. }) && previous.is_none();
                if !satisfied || deleting_nothing {
                    outcomes.push(Err(StoreError::PreconditionFailed {
                        key: key.to_owned(),
                        current: previous.map(Box::new),
                    }));
                    continue;
                }
                revision += 1;
                match op {
                    WriteOp::Put { key, value, .. } => {
                        let create_revision = previous
                            .as_ref()
                            .map_or(revision, |existing| existing.create_revision);
                        table
                            .insert(
                                key.as_str(),
                                encode(create_revision, revision, value).as_slice(),
                            )
                            .map_err(backend)?;
                        let current = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision,
                            mod_revision: revision,
                        };
                        let event = Event {
                            event_type: EventType::Put,
                            kv: current.clone(),
                            previous: previous.clone(),
                        };
                        outcomes.push(Ok((
                            WriteResult {
                                revision,
                                current: Some(current),
                                previous,
                            },
                            event,
                        )));
                    }
                    WriteOp::Delete { key, .. } => {
                        table.remove(key.as_str()).map_err(backend)?;
                        let mut tombstone = previous.clone().unwrap_or_else(|| KeyValue {
                            key: key.clone(),
                            value: Bytes::new(),
                            create_revision: revision,
                            mod_revision: revision,
                        });
                        tombstone.mod_revision = revision;
                        let event = Event {
                            event_type: EventType::Delete,
                            kv: tombstone,
                            previous: previous.clone(),
                        };
                        outcomes.push(Ok((
                            WriteResult {
                                revision,
                                current: None,
                                previous,
                            },
                            event,
                        )));
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(REVISION_KEY, revision).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok((outcomes, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, precondition: Precondition) -> WriteOp {
        WriteOp::Put {
            key: key.into(),
            value: Bytes::from(value.to_owned()),
            precondition,
        }
    }

    fn open(dir: &tempfile::TempDir) -> RedbStore {
        RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default())
            .expect("open store")
    }

    #[tokio::test]
    async fn revisions_are_global_and_compare_and_swap_checks_mod_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        let a = store
            .write(put("/a", "1", Precondition::MustNotExist))
            .await
            .expect("create a");
        let b = store
            .write(put("/b", "1", Precondition::MustNotExist))
            .await
            .expect("create b");
        assert_eq!((a.revision, b.revision), (1, 2));

        let duplicate = store
            .write(put("/a", "2", Precondition::MustNotExist))
            .await;
        assert!(matches!(
            duplicate,
            Err(StoreError::PreconditionFailed { .. })
        ));

        let stale = store
            .write(put("/a", "2", Precondition::ModRevision(7)))
            .await;
        match stale {
            Err(StoreError::PreconditionFailed {
                current: Some(current),
                ..
            }) => assert_eq!(current.mod_revision, 1),
            other => panic!("expected a precondition failure, got {other:?}"),
        }
        let updated = store
            .write(put("/a", "2", Precondition::ModRevision(1)))
            .await
            .expect("cas update");
        assert_eq!(updated.revision, 3);
        let current = updated.current.expect("current");
        assert_eq!((current.create_revision, current.mod_revision), (1, 3));
        assert_eq!(store.current_revision(), 3);
    }

    #[tokio::test]
    async fn range_reads_only_the_prefix_at_one_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        for key in ["/pods/a", "/pods/b", "/podsx/c", "/services/d"] {
            store
                .write(put(key, "v", Precondition::None))
                .await
                .expect("put");
        }
        let range = store.range("/pods/").await.expect("range");
        let keys: Vec<_> = range.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/pods/a", "/pods/b"]);
        assert_eq!(range.revision, 4);
    }

    #[tokio::test]
    async fn delete_of_a_missing_key_fails_and_does_not_bump_the_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        let missing = store
            .write(WriteOp::Delete {
                key: "/x".into(),
                precondition: Precondition::None,
            })
            .await;
        assert!(matches!(
            missing,
            Err(StoreError::PreconditionFailed { .. })
        ));
        assert_eq!(store.current_revision(), 0);
    }

    #[tokio::test]
    async fn data_and_revision_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(&dir);
            store
                .write(put("/a", "1", Precondition::None))
                .await
                .expect("put");
            store
                .write(put("/b", "1", Precondition::None))
                .await
                .expect("put");
            store
                .write(WriteOp::Delete {
                    key: "/b".into(),
                    precondition: Precondition::None,
                })
                .await
                .expect("delete");
        }
        let store = open(&dir);
        assert_eq!(store.current_revision(), 3);
        assert!(store.get("/b").await.expect("get").is_none());
        let a = store.get("/a").await.expect("get").expect("a exists");
        assert_eq!(a.value, Bytes::from_static(b"1"));
        let next = store
            .write(put("/c", "1", Precondition::None))
            .await
            .expect("put");
        assert_eq!(next.revision, 4, "revisions never go back after a restart");
    }

    #[tokio::test]
    async fn watch_replays_history_then_streams_and_reports_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .write(put("/pods/a", "1", Precondition::None))
            .await
            .expect("put");
        store
            .write(put("/services/s", "1", Precondition::None))
            .await
            .expect("put");
        let mut watcher = store.watch("/pods/", 0).expect("watch");
        store
            .write(WriteOp::Delete {
                key: "/pods/a".into(),
                precondition: Precondition::None,
            })
            .await
            .expect("del");

        let first = watcher.next().await.expect("event");
        assert_eq!((first.event_type, first.revision()), (EventType::Put, 1));
        let second = watcher.next().await.expect("event");
        assert_eq!(
            (second.event_type, second.revision()),
            (EventType::Delete, 3)
        );
        assert_eq!(
            second.kv.value,
            Bytes::from_static(b"1"),
            "a delete carries the last value"
        );
    }

    #[tokio::test]
    async fn watch_from_before_history_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = RedbStoreOptions {
            watch_history: 2,
            ..RedbStoreOptions::default()
        };
        let store = RedbStore::open(&dir.path().join("s.redb"), options).expect("open");
        for index in 0..5 {
            store
                .write(put(&format!("/k{index}"), "v", Precondition::None))
                .await
                .expect("put");
        }
        assert!(matches!(
            store.watch("/", 1),
            Err(StoreError::Compacted { .. })
        ));
        assert!(store.watch("/", 3).is_ok());
    }

    #[tokio::test]
    async fn concurrent_writers_share_commits_and_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(&dir));
        let mut tasks = Vec::new();
        for index in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(put(&format!("/k/{index}"), "v", Precondition::MustNotExist))
                    .await
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("write");
        }
        assert_eq!(store.range("/k/").await.expect("range").items.len(), 200);
        assert_eq!(store.current_revision(), 200);
    }
}
