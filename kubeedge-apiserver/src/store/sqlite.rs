//! SQLite implementation of [`Store`]: one writer thread that commits batches of writes in one
//! transaction (group commit), a small pool of reader connections used from `spawn_blocking`,
//! and an in-memory ring of recent events for watch resumption.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, oneshot};

use super::history::History;
use super::{Event, ListPage, ObjectKey, Scope, Store, Stored, Subscription, WriteOp};
use crate::error::StoreError;

mod writer;

use writer::writer_loop;

/// Tuning for [`SqliteStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// How many recent events are kept for resuming watches; older resumes get 410 Gone.
    pub history: usize,
    /// Capacity of each watcher's live feed before it is considered lagging.
    pub watch_buffer: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// `true`: fsync on every commit (survives power loss). `false`: survives a process kill
    /// but not a power loss (SQLite `synchronous=NORMAL` in WAL mode).
    pub fsync: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            history: 10_000,
            watch_buffer: 4_096,
            max_batch: 256,
            fsync: true,
        }
    }
}

struct Shared {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    history: Mutex<History>,
    feed: broadcast::Sender<Arc<Event>>,
    revision: AtomicU64,
}

type Reply = oneshot::Sender<Result<Arc<Event>, StoreError>>;

/// A [`Store`] on a SQLite file in WAL mode.
///
/// Cheap to clone; the writer thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: mpsc::SyncSender<(WriteOp, Reply)>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .field("revision", &self.revision())
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (
    owner_uid TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (owner_uid, resource, namespace, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owners_by_key ON owners (resource, namespace, name);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0);
";

fn open_conn(path: &Path, fsync: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let sync = if fsync { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000;"
    ))
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default tuning.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteConfig::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = open_conn(&path, config.fsync)?;
        conn.execute_batch(SCHEMA)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let revision: i64 = conn
            .query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))
            .map_err(StoreError::Sqlite)?;
        let revision = u64::try_from(revision).unwrap_or(0);
        let (feed, _) = broadcast::channel(config.watch_buffer.max(16));
        let shared = Arc::new(Shared {
            path: path.clone(),
            readers: Mutex::new(Vec::new()),
            history: Mutex::new(History::new(config.history, revision)),
            feed,
            revision: AtomicU64::new(revision),
        });
        let (tx, rx) = mpsc::sync_channel(1024);
        let writer_shared = Arc::clone(&shared);
        let max_batch = config.max_batch.max(1);
        thread::Builder::new()
            .name("apiserver-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, writer_shared, revision, max_batch))
            .map_err(StoreError::Thread)?;
        tracing::info!(path = %path.display(), revision, "sqlite store opened");
        Ok(Self { shared, writer: tx })
    }

    /// Runs `f` with a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let pooled = shared
                .readers
                .lock()
                .map_err(|_| StoreError::Poisoned)?
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(&shared.path, false)?,
            };
            let out = f(&conn);
            if let Ok(mut pool) = shared.readers.lock() {
                if pool.len() < 8 {
                    pool.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn rv_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn row_to_stored(key: ObjectKey, rv: i64, value: Vec<u8>) -> Stored {
    Stored {
        key,
        rv: rv_of(rv),
        raw: Bytes::from(value),
    }
}

impl Store for SqliteStore {
    async fn get(&self, key: ObjectKey) -> Result<Option<Stored>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT rv, value FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
                )?
                .query_row(params![key.resource, key.namespace, key.name], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()?;
            Ok(row.map(|(rv, value)| row_to_stored(key, rv, value)))
        })
        .await
    }

    async fn list(
        &self,
        scope: Scope,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let rv: i64 =
                tx.query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))?;
            // One more than asked tells whether another page follows.
            let fetch = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX).saturating_add(1));
            let fetch = fetch.unwrap_or(-1);
            let (after_ns, after_name) = after.unwrap_or_default();
            let mut items = Vec::new();
            {
                let mut stmt;
                let mut rows = match &scope.namespace {
                    Some(ns) => {
                        stmt = tx.prepare_cached(
                            "SELECT namespace, name, rv, value FROM objects \
                             WHERE resource = ?1 AND namespace = ?2 AND name > ?3 \
                             ORDER BY namespace, name LIMIT ?4",
                        )?;
                        stmt.query(params![scope.resource, ns, after_name, fetch])?
                    }
                    None => {
                        stmt = tx.prepare_cached(
                            "SELECT namespace, name, rv, value FROM objects \
                             WHERE resource = ?1 AND (namespace, name) > (?2, ?3) \
                             ORDER BY namespace, name LIMIT ?4",
                        )?;
                        stmt.query(params![scope.resource, after_ns, after_name, fetch])?
                    }
                };
                while let Some(r) = rows.next()? {
                    let key = ObjectKey::new(
                        scope.resource.clone(),
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                    );
                    items.push(row_to_stored(key, r.get(2)?, r.get(3)?));
                }
            }
            tx.finish()?;
            Ok(ListPage::from_overfetch(rv_of(rv), items, limit))
        })
        .await
    }

    async fn write(&self, op: WriteOp) -> Result<Arc<Event>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let writer = self.writer.clone();
        // The channel is bounded: a full queue parks this blocking task, not the runtime.
        match writer.try_send((op, tx)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(item)) => {
                tokio::task::spawn_blocking(move || writer.send(item).is_ok())
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .then_some(())
                    .ok_or(StoreError::Closed)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn dependents(&self, uid: String) -> Result<Vec<ObjectKey>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT resource, namespace, name FROM owners WHERE owner_uid = ?1",
            )?;
            let rows = stmt.query_map(params![uid], |r| {
                Ok(ObjectKey::new(
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?);
            }
            Ok(out)
        })
        .await
    }

    fn subscribe(&self, from: Option<u64>) -> Result<Subscription, StoreError> {
        let history = self
            .shared
            .history
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        let live = self.shared.feed.subscribe();
        let rv = self.shared.revision.load(Ordering::SeqCst);
        let backlog = history.after(from)?;
        Ok(Subscription { backlog, live, rv })
    }

    fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests;
