//! [`AnyStore`]: one store type for a program that picks its backend at run time.

use std::sync::Arc;

use super::{Event, ListPage, ObjectKey, Scope, SqliteStore, Store, Stored, Subscription, WriteOp};
use crate::error::StoreError;

/// The store a program chose at run time: SQLite on one machine, or etcd for replicas that
/// share one cluster (with the `etcd` feature).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// An etcd v3 cluster.
    #[cfg(feature = "etcd")]
    Etcd(super::EtcdStore),
}

impl From<SqliteStore> for AnyStore {
    fn from(s: SqliteStore) -> Self {
        Self::Sqlite(s)
    }
}

#[cfg(feature = "etcd")]
impl From<super::EtcdStore> for AnyStore {
    fn from(s: super::EtcdStore) -> Self {
        Self::Etcd(s)
    }
}

/// Runs `$e` on whichever store `$s` holds.
macro_rules! each {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            AnyStore::Sqlite($x) => $e,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd($x) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn get(&self, key: ObjectKey) -> Result<Option<Stored>, StoreError> {
        each!(self, s => s.get(key).await)
    }

    async fn list(
        &self,
        scope: Scope,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        each!(self, s => s.list(scope, after, limit).await)
    }

    async fn write(&self, op: WriteOp) -> Result<Arc<Event>, StoreError> {
        each!(self, s => s.write(op).await)
    }

    async fn dependents(&self, uid: String) -> Result<Vec<ObjectKey>, StoreError> {
        each!(self, s => s.dependents(uid).await)
    }

    fn subscribe(&self, from: Option<u64>) -> Result<Subscription, StoreError> {
        each!(self, s => s.subscribe(from))
    }

    fn revision(&self) -> u64 {
        each!(self, s => s.revision())
    }
}
