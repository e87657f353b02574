//! An etcd-shaped key-value store for the control plane.
//!
//! The API server needs exactly what etcd gives the real kube-apiserver: one
//! global, monotonically increasing revision; per-key `create_revision` and
//! `mod_revision`; compare-and-swap on `mod_revision` (optimistic
//! concurrency, surfaced to clients as `resourceVersion` and 409 Conflict);
//! prefix range reads at a consistent revision; and watches that start at a
//! revision and fail with [`StoreError::Compacted`] when that revision is no
//! longer in history (surfaced as 410 Gone, upon which clients relist).
//!
//! [`KvStore`] is that contract. The embedded implementation,
//! [`redb_store::RedbStore`], is the default; an etcd implementation can sit
//! behind the same trait, so nothing backend-specific crosses it.

pub mod redb_store;
mod watch;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use redb_store::{RedbStore, RedbStoreOptions};
pub use watch::Watcher;

/// The store's global revision. Every successful write gets its own.
pub type Revision = i64;

/// A boxed future, so that [`KvStore`] stays object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// The result of a prefix range read: the matching keys at `revision`.
#[derive(Debug, Clone)]
pub struct RangeResult {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
}

/// The condition a write is made under, checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// The key must not exist (create).
    MustNotExist,
    /// The key must exist with exactly this `mod_revision` (update/delete
    /// of a version the caller has seen).
    ModRevision(Revision),
    /// The key must exist, at any revision.
    MustExist,
}

#[derive(Debug, Clone)]
pub enum WriteOp {
    Put {
        key: String,
        value: Bytes,
        precondition: Precondition,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
}

impl WriteOp {
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// What a successful write did.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// The revision this write was committed at.
    pub revision: Revision,
    /// The key as it is after a put (absent after a delete).
    pub current: Option<KeyValue>,
    /// The key as it was before the write.
    pub previous: Option<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One committed change, as delivered to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: EventType,
    /// For a put, the new value. For a delete, the deleted key with the
    /// value it had and `mod_revision` set to the deletion's revision.
    pub kv: KeyValue,
    /// The value before this change, if the key existed.
    pub previous: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("precondition failed for key {key}")]
    PreconditionFailed {
        key: String,
        current: Option<Box<KeyValue>>,
    },
    #[error("required revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("watcher fell too far behind and was dropped; restart the watch from a fresh list")]
    WatcherTooSlow,
    #[error("the store is shut down")]
    Closed,
    #[error("storage backend failure: {0}")]
    Backend(String),
}

/// The store contract, shaped like etcd's KV and Watch services.
pub trait KvStore: Send + Sync + 'static {
    /// The value of one key, if it exists.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>>;
    /// Every key that starts with `prefix`, in key order, at one revision.
    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, RangeResult>;
    /// Applies one write atomically with its precondition. Returns once the
    /// write is durable.
    fn write(&self, op: WriteOp) -> StoreFuture<'_, WriteResult>;
    /// Streams every change under `prefix` with a revision greater than
    /// `after_revision`.
    fn watch(&self, prefix: &str, after_revision: Revision) -> Result<Watcher, StoreError>;
    /// The revision of the last committed write.
    fn current_revision(&self) -> Revision;
}
