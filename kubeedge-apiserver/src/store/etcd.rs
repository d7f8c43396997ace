//! etcd v3 implementation of [`Store`], for API servers that share one cluster (HA replicas).
//!
//! As in kube-apiserver, an object's resourceVersion is its etcd mod revision (the stored JSON
//! carries none; reads stamp it), a compare-and-swap is an etcd transaction on that revision,
//! and keys follow kube-apiserver's layout (see `keys`). One etcd watch on the whole prefix feeds
//! every API watch of this process, through a bounded window of recent events, so that writes
//! by any replica reach the watchers of all.

mod conn;
mod keys;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::history::History;
use super::{Event, EventType, ListPage, ObjectKey, Scope, Store, Stored, Subscription, WriteOp};
use crate::error::StoreError;
pub use conn::EtcdTls;
use conn::{etcd, unsent_retried};
use keys::Layout;

/// Where the owner index lives: `<OWNERS>/<owner uid>/<object's etcd key>` (empty values).
const OWNERS: &str = "/kubeedge-rs/owners/";

/// Settings of an [`EtcdStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// The cluster's client URLs (`http://127.0.0.1:2379`, …).
    pub endpoints: Vec<String>,
    /// The key prefix, kube-apiserver's `--etcd-prefix` (`/registry`).
    pub prefix: String,
    /// How many recent events are kept for resuming watches; older resumes get 410 Gone.
    pub history: usize,
    /// Capacity of each watcher's live feed before it is considered lagging.
    pub watch_buffer: usize,
    /// How often old revisions are compacted away, kube-apiserver's
    /// `--etcd-compaction-interval` (5 minutes); `None` leaves compaction to others.
    pub compaction_interval: Option<Duration>,
    /// TLS to the members (`https://` endpoints), kube-apiserver's `--etcd-cafile`,
    /// `--etcd-certfile` and `--etcd-keyfile`.
    pub tls: Option<EtcdTls>,
}

impl EtcdConfig {
    /// Settings for the cluster at `endpoints`, with kube-apiserver's prefix.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/registry".into(),
            history: 10_000,
            watch_buffer: 4_096,
            compaction_interval: Some(Duration::from_secs(300)),
            tls: None,
        }
    }
}

pub(super) struct Shared {
    client: Client,
    pub(super) layout: Layout,
    pub(super) history: Mutex<History>,
    pub(super) feed: Mutex<broadcast::Sender<Arc<Event>>>,
    pub(super) revision: AtomicU64,
    watch_buffer: usize,
}

/// A [`Store`] on an etcd v3 cluster.
///
/// Cheap to clone; its watch task stops when the last clone is dropped.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    _stop: Arc<(oneshot::Sender<()>, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.shared.layout.root())
            .field("revision", &self.revision())
            .finish()
    }
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// `value` with `metadata.resourceVersion` set to `rv`, encoded.
fn stamp(raw: &[u8], rv: u64, key: &ObjectKey) -> Result<Bytes, StoreError> {
    let mut value: Value = serde_json::from_slice(raw).map_err(|source| StoreError::Corrupt {
        key: format!("{}/{}/{}", key.resource, key.namespace, key.name),
        source,
    })?;
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(StoreError::Encode)
}

/// A stored object from an etcd key-value, stamped with its mod revision.
pub(super) fn stored(key: ObjectKey, kv: &KeyValue) -> Result<Stored, StoreError> {
    let rv = rev(kv.mod_revision());
    let raw = stamp(kv.value(), rv, &key)?;
    Ok(Stored { key, rv, raw })
}

fn owner_uids(value: &Value) -> Vec<String> {
    let mut uids: Vec<String> = value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .filter(|u| !u.is_empty() && !u.contains('/'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    uids.sort();
    uids.dedup();
    uids
}

fn owners_of_raw(raw: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(raw)
        .map(|v| owner_uids(&v))
        .unwrap_or_default()
}

/// The encoding kept in etcd: the object without a resourceVersion, as kube-apiserver keeps it.
fn encode(mut value: Value) -> Result<(Vec<u8>, Vec<String>), StoreError> {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let owners = owner_uids(&value);
    let raw = serde_json::to_vec(&value).map_err(StoreError::Encode)?;
    Ok((raw, owners))
}

impl EtcdStore {
    /// Connects to the cluster and starts following its changes.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        // Keep-alives find a member that died under an idle connection (a watch).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.options());
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(etcd)?;
        let layout = Layout::new(&config.prefix);
        let head = client
            .kv_client()
            .get(layout.root(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd)?;
        let revision = head.header().map_or(0, |h| rev(h.revision()));
        let (feed, _) = broadcast::channel(config.watch_buffer.max(16));
        let shared = Arc::new(Shared {
            client: client.clone(),
            layout,
            history: Mutex::new(History::new(config.history, revision)),
            feed: Mutex::new(feed),
            revision: AtomicU64::new(revision),
            watch_buffer: config.watch_buffer.max(16),
        });
        let (stop, stopped) = oneshot::channel();
        let (stop_compact, compact_stopped) = oneshot::channel();
        tokio::spawn(watch::follow(
            client.clone(),
            Arc::clone(&shared),
            revision,
            stopped,
        ));
        if let Some(every) = config.compaction_interval {
            tokio::spawn(watch::compact(client.clone(), every, compact_stopped));
        }
        tracing::info!(endpoints = ?config.endpoints, revision, "etcd store connected");
        Ok(Self {
            shared,
            _stop: Arc::new((stop, stop_compact)),
        })
    }

    async fn current(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut resp = unsent_retried(|| {
            let mut kv = self.shared.client.kv_client();
            async move { kv.get(key, None).await }
        })
        .await
        .map_err(etcd)?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// The etcd key and the stored state of `key`, which must exist and, with `expected`, be at
    /// that revision.
    async fn existing(
        &self,
        key: &ObjectKey,
        expected: Option<u64>,
    ) -> Result<(String, KeyValue), StoreError> {
        let ek = self.shared.layout.key(key);
        let cur = self
            .current(&ek)
            .await?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        check(key, expected, &cur)?;
        Ok((ek, cur))
    }

    /// The owner-index writes that move `etcd_key` from `old` owners to `new` ones.
    fn index_ops(etcd_key: &str, old: &[String], new: &[String]) -> Vec<TxnOp> {
        let mut ops = Vec::new();
        for uid in old.iter().filter(|u| !new.contains(u)) {
            ops.push(TxnOp::delete(format!("{OWNERS}{uid}{etcd_key}"), None));
        }
        for uid in new.iter().filter(|u| !old.contains(u)) {
            ops.push(TxnOp::put(format!("{OWNERS}{uid}{etcd_key}"), "", None));
        }
        ops
    }

    /// Commits `ops` if `etcd_key` is still at `at` (0: absent). `Ok(None)` when it moved.
    async fn commit(
        &self,
        etcd_key: &str,
        at: i64,
        ops: Vec<TxnOp>,
    ) -> Result<Option<u64>, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(etcd_key, CompareOp::Equal, at)])
            .and_then(ops);
        let resp = unsent_retried(|| {
            let (mut kv, txn) = (self.shared.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(etcd)?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let rv = resp.header().map_or(0, |h| rev(h.revision()));
        self.shared.revision.fetch_max(rv, Ordering::SeqCst);
        Ok(Some(rv))
    }

    async fn apply(&self, op: &WriteOp) -> Result<Option<Event>, StoreError> {
        match op {
            WriteOp::Create { key, value } => {
                let ek = self.shared.layout.key(key);
                let (raw, owners) = encode(value.clone())?;
                let mut ops = vec![TxnOp::put(ek.as_str(), raw.clone(), None)];
                ops.extend(Self::index_ops(&ek, &[], &owners));
                let Some(rv) = self.commit(&ek, 0, ops).await? else {
                    return Err(StoreError::AlreadyExists(key.clone()));
                };
                Ok(Some(Event {
                    kind: EventType::Added,
                    object: Stored {
                        key: key.clone(),
                        rv,
                        raw: stamp(&raw, rv, key)?,
                    },
                    prev: None,
                }))
            }
            WriteOp::Update {
                key,
                value,
                expected_rv,
            } => {
                let (ek, cur) = self.existing(key, *expected_rv).await?;
                let (raw, owners) = encode(value.clone())?;
                let mut ops = vec![TxnOp::put(ek.as_str(), raw.clone(), None)];
                ops.extend(Self::index_ops(&ek, &owners_of_raw(cur.value()), &owners));
                let Some(rv) = self.commit(&ek, cur.mod_revision(), ops).await? else {
                    return Ok(None);
                };
                Ok(Some(Event {
                    kind: EventType::Modified,
                    object: Stored {
                        key: key.clone(),
                        rv,
                        raw: stamp(&raw, rv, key)?,
                    },
                    prev: Some(stored(key.clone(), &cur)?),
                }))
            }
            WriteOp::Delete { key, expected_rv } => {
                let (ek, cur) = self.existing(key, *expected_rv).await?;
                let mut ops = vec![TxnOp::delete(ek.as_str(), None)];
                ops.extend(Self::index_ops(&ek, &owners_of_raw(cur.value()), &[]));
                let Some(rv) = self.commit(&ek, cur.mod_revision(), ops).await? else {
                    return Ok(None);
                };
                Ok(Some(Event {
                    kind: EventType::Deleted,
                    object: Stored {
                        key: key.clone(),
                        rv,
                        raw: stamp(cur.value(), rv, key)?,
                    },
                    prev: Some(stored(key.clone(), &cur)?),
                }))
            }
        }
    }
}

/// The compare-and-swap precondition of an update or delete.
fn check(key: &ObjectKey, expected: Option<u64>, cur: &KeyValue) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != rev(cur.mod_revision()) => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual: rev(cur.mod_revision()),
        }),
        _ => Ok(()),
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store for EtcdStore {
    async fn get(&self, key: ObjectKey) -> Result<Option<Stored>, StoreError> {
        let ek = self.shared.layout.key(&key);
        self.current(&ek)
            .await?
            .map(|kv| stored(key, &kv))
            .transpose()
    }

    /// Objects come in etcd key order, as kube-apiserver lists them.
    async fn list(
        &self,
        scope: Scope,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        let prefix = self
            .shared
            .layout
            .scope(&scope.resource, scope.namespace.as_deref());
        let start = match after {
            Some((ns, name)) => {
                let mut k = self
                    .shared
                    .layout
                    .key(&ObjectKey::new(scope.resource.clone(), ns, name))
                    .into_bytes();
                k.push(0);
                k
            }
            None => prefix.clone().into_bytes(),
        };
        // One more than asked tells whether another page follows.
        let want = limit.map(|l| l.saturating_add(1));
        // Read in chunks, all at the first chunk's revision (one consistent list): a gRPC
        // answer is capped at 4 MiB, which a list of 10,000 pods exceeds. A chunk that is still
        // too large is asked again in halves.
        let mut chunk: usize = 500;
        let mut start = start;
        let mut at: Option<i64> = None;
        let mut items = Vec::new();
        loop {
            let room = want.map_or(chunk, |w| w.saturating_sub(items.len()).min(chunk));
            let mut opts = GetOptions::new()
                .with_range(prefix_end(&prefix))
                .with_limit(i64::try_from(room).unwrap_or(i64::MAX));
            if let Some(r) = at {
                opts = opts.with_revision(r);
            }
            let resp = match unsent_retried(|| {
                let mut kv = self.shared.client.kv_client();
                let (start, opts) = (start.clone(), opts.clone());
                async move { kv.get(start, Some(opts)).await }
            })
            .await
            {
                Ok(r) => r,
                Err(etcd_client::Error::GRpcStatus(s))
                    if chunk > 1
                        && matches!(
                            s.code(),
                            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                        ) =>
                {
                    chunk /= 2;
                    continue;
                }
                Err(e) => return Err(etcd(e)),
            };
            at.get_or_insert(resp.header().map_or(0, |h| h.revision()));
            for kv in resp.kvs() {
                // A key of another resource under a shared path (`services/…`) is skipped.
                let Some(key) = self.shared.layout.parse(kv.key()) else {
                    continue;
                };
                if key.resource != scope.resource {
                    continue;
                }
                items.push(stored(key, kv)?);
            }
            let full = want.is_some_and(|w| items.len() >= w);
            match resp.kvs().last() {
                Some(last) if resp.more() && !full => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        let rv = rev(at.unwrap_or(0));
        self.shared.revision.fetch_max(rv, Ordering::SeqCst);
        Ok(ListPage::from_overfetch(rv, items, limit))
    }

    async fn write(&self, op: WriteOp) -> Result<Arc<Event>, StoreError> {
        // Read, then swap on the revision read; a concurrent writer makes the swap fail and the
        // write is decided again against the newer state.
        loop {
            if let Some(ev) = self.apply(&op).await? {
                return Ok(Arc::new(ev));
            }
        }
    }

    async fn dependents(&self, uid: String) -> Result<Vec<ObjectKey>, StoreError> {
        if uid.is_empty() || uid.contains('/') {
            return Ok(Vec::new());
        }
        let prefix = format!("{OWNERS}{uid}");
        let resp = unsent_retried(|| {
            let mut kv = self.shared.client.kv_client();
            let prefix = prefix.clone();
            async move {
                kv.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
            }
        })
        .await
        .map_err(etcd)?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                self.shared
                    .layout
                    .parse(kv.key().strip_prefix(prefix.as_bytes())?)
            })
            .collect())
    }

    fn subscribe(&self, from: Option<u64>) -> Result<Subscription, StoreError> {
        let history = self
            .shared
            .history
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        let live = self
            .shared
            .feed
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .subscribe();
        let rv = self.shared.revision.load(Ordering::SeqCst);
        let backlog = history.after(from)?;
        Ok(Subscription { backlog, live, rv })
    }

    fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// Publishes events from the cluster in revision order, under the history lock so that
    /// subscribers see no gap and no duplicate.
    pub(super) fn publish(&self, events: Vec<Arc<Event>>, revision: u64) {
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        let Ok(feed) = self.feed.lock() else { return };
        for ev in events {
            history.push(Arc::clone(&ev));
            let _ = feed.send(ev);
        }
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }

    /// Forgets the history after a gap (the cluster compacted past the watch): every live
    /// watcher is closed, and resumes from before `revision` get 410 Gone.
    pub(super) fn reset(&self, revision: u64) {
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        let Ok(mut feed) = self.feed.lock() else {
            return;
        };
        history.reset(revision);
        *feed = broadcast::channel(self.watch_buffer).0;
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), vec![b'a', 0x80]);
    }

    #[test]
    fn stored_objects_carry_no_resource_version() -> Result<(), StoreError> {
        let (raw, owners) = encode(serde_json::json!({
            "metadata": {"name": "a", "resourceVersion": "7",
                "ownerReferences": [{"uid": "u2"}, {"uid": "u1"}, {"uid": "u1"}, {"uid": "x/y"}]}
        }))?;
        assert_eq!(owners, ["u1", "u2"]);
        let v: Value = serde_json::from_slice(&raw).map_err(StoreError::Encode)?;
        assert!(v.pointer("/metadata/resourceVersion").is_none());
        let key = ObjectKey::new("core/pods", "d", "a");
        let v: Value =
            serde_json::from_slice(&stamp(&raw, 9, &key)?).map_err(StoreError::Encode)?;
        assert_eq!(v.pointer("/metadata/resourceVersion"), Some(&"9".into()));
        Ok(())
    }
}
