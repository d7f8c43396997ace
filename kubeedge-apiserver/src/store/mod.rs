//! The storage boundary: a `Store` keeps JSON objects under one monotonic revision.

mod any;
#[cfg(feature = "etcd")]
mod etcd;
mod history;
mod sqlite;

pub use any::AnyStore;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use sqlite::{SqliteConfig, SqliteStore};

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::StoreError;

/// Where an object lives: its resource (`<group>/<plural>`, `core` for the legacy group),
/// its namespace (empty for cluster-scoped objects) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `<group>/<plural>`, for example `core/pods` or `apps/deployments`.
    pub resource: String,
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A stored object: its key, the revision that last wrote it and its JSON encoding (with
/// `metadata.resourceVersion` already set to that revision).
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where the object lives.
    pub key: ObjectKey,
    /// The revision of the last write.
    pub rv: u64,
    /// The JSON encoding.
    pub raw: Bytes,
}

impl Stored {
    /// Parses the JSON encoding.
    pub fn value(&self) -> Result<Value, StoreError> {
        serde_json::from_slice(&self.raw).map_err(|source| StoreError::Corrupt {
            key: format!(
                "{}/{}/{}",
                self.key.resource, self.key.namespace, self.key.name
            ),
            source,
        })
    }
}

/// Which objects a list or watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `<group>/<plural>`.
    pub resource: String,
    /// `None` for every namespace.
    pub namespace: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The store's revision when the page was read.
    pub rv: u64,
    /// The objects, ordered by namespace then name.
    pub items: Vec<Stored>,
    /// `(namespace, name)` of the last item when more items follow.
    pub more_after: Option<(String, String)>,
}

impl ListPage {
    /// A page from up to `limit + 1` items read at `rv`: the extra item, when there, only
    /// tells that more follow.
    pub(crate) fn from_overfetch(rv: u64, mut items: Vec<Stored>, limit: Option<usize>) -> Self {
        let mut more_after = None;
        if let Some(l) = limit {
            if items.len() > l {
                items.truncate(l);
                more_after = items
                    .last()
                    .map(|s| (s.key.namespace.clone(), s.key.name.clone()));
            }
        }
        Self {
            rv,
            items,
            more_after,
        }
    }
}

/// A write, applied atomically against the current state.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Creates an object; fails with `AlreadyExists` if the key is taken.
    Create {
        /// Where.
        key: ObjectKey,
        /// The object; its `metadata.resourceVersion` is overwritten.
        value: Value,
    },
    /// Replaces an object; fails with `NotFound`, or `Conflict` when `expected_rv` is given and
    /// differs from the stored revision.
    Update {
        /// Where.
        key: ObjectKey,
        /// The new object.
        value: Value,
        /// Compare-and-swap precondition.
        expected_rv: Option<u64>,
    },
    /// Deletes an object; fails with `NotFound`, or `Conflict` on a failed precondition.
    Delete {
        /// Where.
        key: ObjectKey,
        /// Compare-and-swap precondition.
        expected_rv: Option<u64>,
    },
}

/// What kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was replaced.
    Modified,
    /// The object was removed; the event carries its last state at the deleting revision.
    Deleted,
}

impl EventType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as committed.
#[derive(Debug, Clone)]
pub struct Event {
    /// The change.
    pub kind: EventType,
    /// The object after the change (for `Deleted`, the last state stamped with the deleting
    /// revision).
    pub object: Stored,
    /// The object before the change, for `Modified` and `Deleted`.
    pub prev: Option<Stored>,
}

/// A watch registration: the events already due (from the history window) and a live feed.
#[derive(Debug)]
pub struct Subscription {
    /// Events after the requested revision that were already committed.
    pub backlog: Vec<Arc<Event>>,
    /// Every later commit, in order. A receiver that lags is closed by the caller with an error.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The newest revision at registration time.
    pub rv: u64,
}

/// A key-value store of JSON objects with one monotonic revision, compare-and-swap writes and a
/// bounded window of history for resuming watches.
///
/// Implementations must never block the async runtime.
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    fn get(
        &self,
        key: ObjectKey,
    ) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;

    /// Reads up to `limit` objects of `scope` ordered by (namespace, name), strictly after
    /// `after` when given.
    fn list(
        &self,
        scope: Scope,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

    /// Applies one write atomically and returns the resulting event.
    fn write(&self, op: WriteOp) -> impl Future<Output = Result<Arc<Event>, StoreError>> + Send;

    /// Keys of the objects whose `metadata.ownerReferences` name `uid`.
    fn dependents(
        &self,
        uid: String,
    ) -> impl Future<Output = Result<Vec<ObjectKey>, StoreError>> + Send;

    /// Registers a watch. With `Some(rv)`, the backlog holds every committed event after `rv`;
    /// fails with `Gone` when `rv` is older than the history window. With `None` the backlog is
    /// empty and the feed starts at the newest revision.
    fn subscribe(&self, from: Option<u64>) -> Result<Subscription, StoreError>;

    /// The newest committed revision.
    fn revision(&self) -> u64;
}
