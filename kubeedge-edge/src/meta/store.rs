//! The edge's metadata store: upstream's `meta` table (key = edge-view resource, type, value =
//! content bytes) on SQLite, owned by one thread that commits in groups: a burst of pushes
//! costs a few fsyncs, and each caller hears back only after its write is committed.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, error, warn};

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("sqlite operation failed")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file is not a usable database; it was moved to `moved_to`.
    #[error("database {path} is corrupt; it was moved to {moved_to} and a new one created")]
    Corrupt {
        /// The configured path.
        path: String,
        /// Where the bad file now is.
        moved_to: String,
    },
    /// Moving a corrupt file aside failed.
    #[error("cannot move the corrupt database {path} aside")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The store thread has stopped.
    #[error("meta store is closed")]
    Closed,
}

/// One row of the `meta` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRecord {
    /// Edge-view resource, e.g. `default/pod/nginx`.
    pub key: String,
    /// Resource type token, e.g. `pod`.
    pub resource_type: String,
    /// Content bytes (JSON text of the object, or a raw patch string).
    pub value: String,
}

/// A write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaOp {
    /// Upstream `insert`: keep an existing row (`INSERT OR IGNORE`).
    Insert(MetaRecord),
    /// Upstream `update`: `INSERT OR REPLACE`.
    Upsert(MetaRecord),
    /// Delete by key.
    Delete {
        /// The key.
        key: String,
    },
    /// Upstream's pod delete: only when the stored pod has `uid`; also drops the pod's
    /// `podstatus`/`podpatch` rows.
    DeletePod {
        /// `<ns>/pod/<name>`.
        key: String,
        /// The UID of the pod being deleted (empty = unconditional).
        uid: String,
    },
    /// Put a message in the durable upstream outbox; one per key, the latest wins and moves
    /// to the end of the line.
    OutboxPut {
        /// Coalescing key (the resource).
        key: String,
        /// The message JSON.
        message: String,
    },
    /// Remove an outbox entry if it is still the one with `seq` (a newer one stays).
    OutboxDone {
        /// The key.
        key: String,
        /// The entry's sequence number.
        seq: i64,
    },
}

/// An upstream outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Coalescing key.
    pub key: String,
    /// Position in line.
    pub seq: i64,
    /// The message JSON.
    pub message: String,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A row was written or removed.
    Changed,
    /// Nothing to do (duplicate insert, delete of a missing row, UID mismatch).
    Unchanged,
}

/// Synchronous store operations; the default implementation is [`SqliteStore`].
pub trait MetaStore: Send + 'static {
    /// Apply writes in one transaction.
    fn apply(&mut self, ops: &[MetaOp]) -> Result<Vec<Applied>, StoreError>;
    /// One row.
    fn get(&self, key: &str) -> Result<Option<MetaRecord>, StoreError>;
    /// All rows of a type.
    fn list(&self, resource_type: &str) -> Result<Vec<MetaRecord>, StoreError>;
    /// The oldest `limit` upstream outbox entries, in order.
    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
}

/// The SQLite store (WAL, `synchronous=NORMAL`: every commit survives a process crash).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Open or create the database at `path`. A file that is not a usable database is moved
    /// aside (never deleted) and a fresh one is created: the error says where it went.
    pub fn open(path: &Path) -> Result<(Self, Option<StoreError>), StoreError> {
        match Self::open_checked(path) {
            Ok(s) => Ok((s, None)),
            Err(StoreError::Sqlite(e)) if is_corruption(&e) => {
                let moved = aside_name(path);
                std::fs::rename(path, &moved).map_err(|source| StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                for ext in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{ext}", path.display()));
                    if side.exists() {
                        let _ = std::fs::rename(&side, format!("{}{ext}", moved.display()));
                    }
                }
                let warning = StoreError::Corrupt {
                    path: path.display().to_string(),
                    moved_to: moved.display().to_string(),
                };
                warn!(error = %warning, "meta database was corrupt");
                Ok((Self::open_checked(path)?, Some(warning)))
            }
            Err(e) => Err(e),
        }
    }

    /// An in-memory store (tests, examples).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        Self::init(&conn)?;
        Ok(Self { conn })
    }

    fn open_checked(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 1 MiB of page cache: the edge's footprint matters more than cache hits.
        conn.pragma_update(None, "cache_size", -1024)?;
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(ok),
            )));
        }
        Self::init(&conn)?;
        Ok(Self { conn })
    }

    fn init(conn: &Connection) -> Result<(), StoreError> {
        // The `meta` table as upstream's beego ORM creates it.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (
                 key varchar(256) NOT NULL PRIMARY KEY,
                 type varchar(32) NOT NULL DEFAULT '',
                 value text
             );
             CREATE TABLE IF NOT EXISTS upstream_outbox (
                 key text NOT NULL PRIMARY KEY,
                 seq integer NOT NULL,
                 message text NOT NULL
             );
             CREATE INDEX IF NOT EXISTS upstream_outbox_seq ON upstream_outbox (seq);",
        )?;
        Ok(())
    }
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn aside_name(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("{}.corrupt-{stamp}", path.display()))
}

fn stored_pod_uid(value: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    v.get("metadata")?.get("uid")?.as_str().map(str::to_owned)
}

impl MetaStore for SqliteStore {
    fn apply(&mut self, ops: &[MetaOp]) -> Result<Vec<Applied>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let changed = match op {
                MetaOp::Insert(r) => tx.execute(
                    "INSERT OR IGNORE INTO meta (key, type, value) VALUES (?1, ?2, ?3)",
                    params![r.key, r.resource_type, r.value],
                )?,
                MetaOp::Upsert(r) => tx.execute(
                    "INSERT OR REPLACE INTO meta (key, type, value) VALUES (?1, ?2, ?3)",
                    params![r.key, r.resource_type, r.value],
                )?,
                MetaOp::Delete { key } => {
                    tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?
                }
                MetaOp::DeletePod { key, uid } => {
                    let stored: Option<String> = tx
                        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    let matches = match &stored {
                        None => false,
                        Some(v) => {
                            uid.is_empty() || stored_pod_uid(v).as_deref() == Some(uid.as_str())
                        }
                    };
                    if matches {
                        let n = tx.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
                        // <ns>/pod/<name> -> <ns>/podstatus/<name>, <ns>/podpatch/<name>
                        if let Some((ns, name)) = key.split_once("/pod/") {
                            for t in ["podstatus", "podpatch"] {
                                tx.execute(
                                    "DELETE FROM meta WHERE key = ?1",
                                    params![format!("{ns}/{t}/{name}")],
                                )?;
                            }
                        }
                        n
                    } else {
                        0
                    }
                }
                MetaOp::OutboxPut { key, message } => tx.execute(
                    "INSERT OR REPLACE INTO upstream_outbox (key, seq, message)
                     VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM upstream_outbox), ?2)",
                    params![key, message],
                )?,
                MetaOp::OutboxDone { key, seq } => tx.execute(
                    "DELETE FROM upstream_outbox WHERE key = ?1 AND seq = ?2",
                    params![key, seq],
                )?,
            };
            out.push(if changed > 0 {
                Applied::Changed
            } else {
                Applied::Unchanged
            });
        }
        tx.commit()?;
        Ok(out)
    }

    fn get(&self, key: &str) -> Result<Option<MetaRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT key, type, value FROM meta WHERE key = ?1",
                params![key],
                |r| {
                    Ok(MetaRecord {
                        key: r.get(0)?,
                        resource_type: r.get(1)?,
                        value: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    })
                },
            )
            .optional()?)
    }

    fn list(&self, resource_type: &str) -> Result<Vec<MetaRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, type, value FROM meta WHERE type = ?1 ORDER BY key")?;
        let rows = stmt.query_map(params![resource_type], |r| {
            Ok(MetaRecord {
                key: r.get(0)?,
                resource_type: r.get(1)?,
                value: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, seq, message FROM upstream_outbox ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(OutboxEntry {
                key: r.get(0)?,
                seq: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

enum Request {
    Outbox(usize, oneshot::Sender<Result<Vec<OutboxEntry>, StoreError>>),
    Apply(
        Vec<MetaOp>,
        oneshot::Sender<Result<Vec<Applied>, StoreError>>,
    ),
    Get(
        String,
        oneshot::Sender<Result<Option<MetaRecord>, StoreError>>,
    ),
    List(String, oneshot::Sender<Result<Vec<MetaRecord>, StoreError>>),
}

/// A committed change to an object row (outbox entries are not reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaChange {
    /// Edge-view resource, e.g. `default/pod/nginx`.
    pub key: String,
    /// Resource type token, e.g. `pod`.
    pub resource_type: String,
    /// The new content, `None` when the row was deleted.
    pub value: Option<String>,
    /// For a deletion: the content the row had before the batch that deleted it (when known).
    pub last: Option<String>,
}

impl MetaChange {
    fn of(op: &MetaOp, last: Option<String>) -> Option<Self> {
        let type_of = |key: &str| key.split('/').nth(1).unwrap_or_default().to_owned();
        match op {
            MetaOp::Insert(r) | MetaOp::Upsert(r) => Some(Self {
                key: r.key.clone(),
                resource_type: r.resource_type.clone(),
                value: Some(r.value.clone()),
                last: None,
            }),
            MetaOp::Delete { key } | MetaOp::DeletePod { key, .. } => Some(Self {
                key: key.clone(),
                resource_type: type_of(key),
                value: None,
                last,
            }),
            MetaOp::OutboxPut { .. } | MetaOp::OutboxDone { .. } => None,
        }
    }
}

/// How many committed changes a slow [`MetaDb::changes`] subscriber may fall behind before it
/// sees `Lagged` (and must reload).
const CHANGE_FEED: usize = 1024;

/// Async handle to a [`MetaStore`] owned by its own thread. Cheap to clone. Writes that
/// arrive together are committed in one transaction (group commit).
#[derive(Debug, Clone)]
pub struct MetaDb {
    tx: std_mpsc::SyncSender<Request>,
    changes: broadcast::Sender<MetaChange>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Apply(..) => "Apply",
            Self::Get(..) => "Get",
            Self::List(..) => "List",
            Self::Outbox(..) => "Outbox",
        })
    }
}

/// Most writes committed in one transaction.
const GROUP: usize = 512;

impl MetaDb {
    /// Start the store thread.
    pub fn spawn<S: MetaStore>(store: S) -> Self {
        let (tx, rx) = std_mpsc::sync_channel::<Request>(4096);
        let (changes, _) = broadcast::channel(CHANGE_FEED);
        let feed = changes.clone();
        let spawned = thread::Builder::new()
            .name("meta-store".into())
            .spawn(move || run(store, rx, feed));
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the meta store thread");
        }
        Self { tx, changes }
    }

    /// Every later committed change to an object row, in commit order. Subscribe before
    /// reading what is stored, so nothing falls between the read and the feed.
    pub fn changes(&self) -> broadcast::Receiver<MetaChange> {
        self.changes.subscribe()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let req = make(tx);
        // A full queue means the disk is behind: wait for room off the runtime threads.
        let sender = self.tx.clone();
        match sender.try_send(req) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(req)) => {
                tokio::task::spawn_blocking(move || sender.send(req))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(|_| StoreError::Closed)?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Apply writes; returns once they are committed.
    pub async fn apply(&self, ops: Vec<MetaOp>) -> Result<Vec<Applied>, StoreError> {
        self.call(|tx| Request::Apply(ops, tx)).await
    }

    /// One row.
    pub async fn get(&self, key: &str) -> Result<Option<MetaRecord>, StoreError> {
        let key = key.to_owned();
        self.call(|tx| Request::Get(key, tx)).await
    }

    /// The oldest `limit` upstream outbox entries.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.call(|tx| Request::Outbox(limit, tx)).await
    }

    /// All rows of a type.
    pub async fn list(&self, resource_type: &str) -> Result<Vec<MetaRecord>, StoreError> {
        let t = resource_type.to_owned();
        self.call(|tx| Request::List(t, tx)).await
    }
}

fn run<S: MetaStore>(
    mut store: S,
    rx: std_mpsc::Receiver<Request>,
    feed: broadcast::Sender<MetaChange>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Reads are answered in order; writes between them commit together.
        let mut writes: Pending = Vec::new();
        for req in batch {
            match req {
                Request::Apply(ops, tx) => writes.push((ops, tx)),
                Request::Get(key, tx) => {
                    commit(&mut store, &mut writes, &feed);
                    let _ = tx.send(store.get(&key));
                }
                Request::List(t, tx) => {
                    commit(&mut store, &mut writes, &feed);
                    let _ = tx.send(store.list(&t));
                }
                Request::Outbox(n, tx) => {
                    commit(&mut store, &mut writes, &feed);
                    let _ = tx.send(store.outbox(n));
                }
            }
        }
        commit(&mut store, &mut writes, &feed);
    }
    debug!("meta store thread stopped");
}

type Pending = Vec<(
    Vec<MetaOp>,
    oneshot::Sender<Result<Vec<Applied>, StoreError>>,
)>;

fn commit<S: MetaStore>(store: &mut S, writes: &mut Pending, feed: &broadcast::Sender<MetaChange>) {
    if writes.is_empty() {
        return;
    }
    // Changes are announced after the commit, in order; nobody listening is fine. Deletions
    // carry the row's last content, read before the commit (only when somebody listens).
    let before = |store: &S, ops: &[MetaOp]| -> Vec<Option<String>> {
        ops.iter()
            .map(|op| match op {
                MetaOp::Delete { key } | MetaOp::DeletePod { key, .. }
                    if feed.receiver_count() > 0 =>
                {
                    store.get(key).ok().flatten().map(|r| r.value)
                }
                _ => None,
            })
            .collect()
    };
    let announce = |ops: &[MetaOp], last: Vec<Option<String>>, results: &[Applied]| {
        if feed.receiver_count() == 0 {
            return;
        }
        for ((op, last), r) in ops.iter().zip(last).zip(results) {
            if *r == Applied::Changed {
                if let Some(c) = MetaChange::of(op, last) {
                    let _ = feed.send(c);
                }
            }
        }
    };
    let all: Vec<MetaOp> = writes
        .iter()
        .flat_map(|(ops, _)| ops.iter().cloned())
        .collect();
    let last = before(store, &all);
    match store.apply(&all) {
        Ok(results) => {
            announce(&all, last, &results);
            let mut it = results.into_iter();
            for (ops, tx) in writes.drain(..) {
                let mine: Vec<Applied> = it.by_ref().take(ops.len()).collect();
                let _ = tx.send(Ok(mine));
            }
        }
        Err(_) => {
            // One bad write must not fail the others: retry each alone.
            for (ops, tx) in writes.drain(..) {
                let last = before(store, &ops);
                let r = store.apply(&ops);
                if let Ok(results) = &r {
                    announce(&ops, last, results);
                }
                let _ = tx.send(r);
            }
        }
    }
}
