//! [`MetaView`]: what this node holds in its meta store, seen as a Kubernetes API [`Store`].
//!
//! Only an index lives in memory (per object: its meta key, its local revision and a hash of
//! its content, about 100 bytes); bodies are read from SQLite when a client asks, so memory
//! does not grow with what the node stores (upstream's MetaServer grew to 700 MB, #3527). A
//! short window of recent events is kept for watches that resume. The view follows the meta
//! store's change feed, so a push the cloud sends is visible on MetaServer (and to its
//! watchers) as soon as it is committed. Revisions start from the wall
//! clock in microseconds, so that they keep growing across restarts: a client that resumes a
//! watch from a revision of an earlier run gets 410 and re-lists instead of missing changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use kubeedge_apiserver::{
    Event, EventType, ListPage, ObjectKey, Scope, Store, StoreError, Stored, Subscription, WriteOp,
};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::meta::{MetaChange, MetaDb};

/// A resource MetaServer serves: its API store name, the meta type token, and its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// `<group>/<plural>` (`core` for the legacy group).
    pub resource: &'static str,
    /// The meta table's type token.
    pub meta_type: &'static str,
    /// Namespaced (false: cluster-scoped, the meta key's namespace is ignored).
    pub namespaced: bool,
}

/// The resources MetaServer serves.
pub const SERVED: &[Served] = &[
    Served {
        resource: "core/pods",
        meta_type: "pod",
        namespaced: true,
    },
    Served {
        resource: "core/configmaps",
        meta_type: "configmap",
        namespaced: true,
    },
    Served {
        resource: "core/secrets",
        meta_type: "secret",
        namespaced: true,
    },
    Served {
        resource: "core/services",
        meta_type: "service",
        namespaced: true,
    },
    Served {
        resource: "core/endpoints",
        meta_type: "endpoints",
        namespaced: true,
    },
    Served {
        resource: "core/nodes",
        meta_type: "node",
        namespaced: false,
    },
    Served {
        resource: "coordination.k8s.io/leases",
        meta_type: "lease",
        namespaced: true,
    },
];

fn served_by_type(meta_type: &str) -> Option<&'static Served> {
    SERVED.iter().find(|s| s.meta_type == meta_type)
}

/// Events kept for resuming watches (enough for a list followed by a watch).
const HISTORY: usize = 128;
/// Live events a watcher may fall behind by before it is cut off (and re-lists).
const FEED: usize = 1024;

struct Entry {
    rv: u64,
    /// Hash of the meta row's content, to tell a real change from a repeat.
    source: u64,
    /// The meta table key.
    key: String,
}

struct State {
    revision: u64,
    /// Oldest revision a watch can resume from.
    compacted: u64,
    objects: HashMap<&'static str, BTreeMap<(String, String), Entry>>,
    history: VecDeque<Arc<Event>>,
}

struct Shared {
    state: Mutex<State>,
    feed: broadcast::Sender<Arc<Event>>,
    db: Option<MetaDb>,
}

/// The meta store as a read-only Kubernetes API store. Cheap to clone.
#[derive(Clone)]
pub struct MetaView {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MetaView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaView")
            .field("revision", &self.revision())
            .finish()
    }
}

fn hash_of(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// `<ns>/<type>/<name>` → `(namespace, name)` in the API's terms.
fn split_key(key: &str, served: &Served) -> Option<(String, String)> {
    let mut parts = key.splitn(3, '/');
    let ns = parts.next()?;
    let _type = parts.next()?;
    let name = parts.next()?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let ns = if served.namespaced { ns } else { "" };
    Some((ns.to_owned(), name.to_owned()))
}

/// The served form of a meta row: its JSON with the local revision stamped in.
fn stamp(value: &str, ns: &str, name: &str, rv: u64) -> Option<Bytes> {
    let mut v: Value = serde_json::from_str(value).ok()?;
    let meta = v.as_object_mut()?.entry("metadata").or_insert(Value::Null);
    if !meta.is_object() {
        *meta = Value::Object(serde_json::Map::new());
    }
    let m = meta.as_object_mut()?;
    m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    m.entry("name")
        .or_insert_with(|| Value::String(name.to_owned()));
    if !ns.is_empty() {
        m.entry("namespace")
            .or_insert_with(|| Value::String(ns.to_owned()));
    }
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

fn start_revision() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .max(1)
}

impl MetaView {
    fn empty(db: Option<MetaDb>) -> Self {
        let revision = start_revision();
        let (feed, _) = broadcast::channel(FEED);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    revision,
                    compacted: revision,
                    objects: HashMap::new(),
                    history: VecDeque::new(),
                }),
                feed,
                db,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Load what `db` holds and follow its changes until `cancel` fires.
    pub async fn load(
        db: MetaDb,
        cancel: CancellationToken,
    ) -> Result<Self, crate::meta::StoreError> {
        let view = Self::empty(Some(db.clone()));
        // Subscribe first: a change committed during the load is then applied after it.
        let changes = db.changes();
        view.resync(&db).await?;
        let v = view.clone();
        tokio::spawn(async move { v.follow(db, changes, cancel).await });
        Ok(view)
    }

    async fn follow(
        self,
        db: MetaDb,
        mut changes: broadcast::Receiver<MetaChange>,
        cancel: CancellationToken,
    ) {
        loop {
            let c = tokio::select! {
                () = cancel.cancelled() => return,
                c = changes.recv() => c,
            };
            match c {
                Ok(c) => self.apply(&c),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "metaserver fell behind the meta store; reloading"
                    );
                    if let Err(e) = self.resync(&db).await {
                        warn!(error = %e, "metaserver reload failed");
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Bring the view in line with the store, emitting an event per difference.
    async fn resync(&self, db: &MetaDb) -> Result<(), crate::meta::StoreError> {
        for served in SERVED {
            let rows = db.list(served.meta_type).await?;
            let mut seen = std::collections::HashSet::new();
            for r in rows {
                if let Some(k) = split_key(&r.key, served) {
                    seen.insert(k);
                }
                self.apply(&MetaChange {
                    key: r.key,
                    resource_type: r.resource_type,
                    value: Some(r.value),
                    last: None,
                });
            }
            let gone: Vec<(String, String)> = self
                .lock()
                .objects
                .get(served.resource)
                .map(|m| m.keys().filter(|k| !seen.contains(*k)).cloned().collect())
                .unwrap_or_default();
            for (ns, name) in gone {
                self.remove(served, &ns, &name);
            }
        }
        Ok(())
    }

    fn apply(&self, c: &MetaChange) {
        let Some(served) = served_by_type(&c.resource_type) else {
            return;
        };
        let Some((ns, name)) = split_key(&c.key, served) else {
            return;
        };
        match &c.value {
            Some(value) => self.put(served, ns, name, &c.key, value),
            None => self.remove_with(served, &ns, &name, c.last.as_deref()),
        }
    }

    fn put(&self, served: &'static Served, ns: String, name: String, meta_key: &str, value: &str) {
        let source = hash_of(value);
        let mut st = self.lock();
        let rv = st.revision + 1;
        let map = st.objects.entry(served.resource).or_default();
        let prev = map
            .get(&(ns.clone(), name.clone()))
            .map(|p| (p.rv, p.source));
        if prev.is_some_and(|(_, s)| s == source) {
            return;
        }
        let Some(raw) = stamp(value, &ns, &name, rv) else {
            debug!(resource = served.resource, %ns, %name, "meta row is not a json object; not served");
            return;
        };
        let key = ObjectKey::new(served.resource, ns.clone(), name.clone());
        map.insert(
            (ns, name),
            Entry {
                rv,
                source,
                key: meta_key.to_owned(),
            },
        );
        st.revision = rv;
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        // The previous body is gone from the store already; watchers only need the new one.
        let prev = prev.map(|(prv, _)| Stored {
            key: key.clone(),
            rv: prv,
            raw: raw.clone(),
        });
        let ev = Arc::new(Event {
            kind,
            object: Stored { key, rv, raw },
            prev,
        });
        self.record(&mut st, ev);
    }

    fn remove(&self, served: &'static Served, ns: &str, name: &str) {
        self.remove_with(served, ns, name, None);
    }

    fn remove_with(&self, served: &'static Served, ns: &str, name: &str, last: Option<&str>) {
        let mut st = self.lock();
        let rv = st.revision + 1;
        let Some(old) = st
            .objects
            .get_mut(served.resource)
            .and_then(|m| m.remove(&(ns.to_owned(), name.to_owned())))
        else {
            return;
        };
        st.revision = rv;
        let key = ObjectKey::new(served.resource, ns, name);
        // The last state when the store told us, else the object's identity alone.
        let raw = last
            .and_then(|v| stamp(v, ns, name, rv))
            .or_else(|| stamp("{}", ns, name, rv))
            .unwrap_or_default();
        let ev = Arc::new(Event {
            kind: EventType::Deleted,
            object: Stored {
                key: key.clone(),
                rv,
                raw: raw.clone(),
            },
            prev: Some(Stored {
                key,
                rv: old.rv,
                raw,
            }),
        });
        self.record(&mut st, ev);
    }

    /// The served body of an indexed object, read from the store.
    async fn body(
        &self,
        meta_key: &str,
        ns: &str,
        name: &str,
        rv: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let Some(db) = &self.shared.db else {
            return Ok(None);
        };
        let row = db
            .get(meta_key)
            .await
            .map_err(|e| StoreError::Commit(format!("meta store: {e}")))?;
        Ok(row.and_then(|r| stamp(&r.value, ns, name, rv)))
    }

    fn record(&self, st: &mut State, ev: Arc<Event>) {
        st.history.push_back(Arc::clone(&ev));
        while st.history.len() > HISTORY {
            if let Some(old) = st.history.pop_front() {
                st.compacted = old.object.rv;
            }
        }
        // Sent under the lock, so that the feed's order is the revision order.
        let _ = self.shared.feed.send(ev);
    }

    /// How many objects of `resource` the view holds.
    pub fn len(&self, resource: &str) -> usize {
        self.lock().objects.get(resource).map_or(0, BTreeMap::len)
    }
}

impl Store for MetaView {
    async fn get(&self, key: ObjectKey) -> Result<Option<Stored>, StoreError> {
        let found = {
            let st = self.lock();
            st.objects
                .get(key.resource.as_str())
                .and_then(|m| m.get(&(key.namespace.clone(), key.name.clone())))
                .map(|e| (e.key.clone(), e.rv))
        };
        let Some((meta_key, rv)) = found else {
            return Ok(None);
        };
        Ok(self
            .body(&meta_key, &key.namespace, &key.name, rv)
            .await?
            .map(|raw| Stored { key, rv, raw }))
    }

    async fn list(
        &self,
        scope: Scope,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        let (rv, wanted, more_after) = {
            let st = self.lock();
            let mut wanted: Vec<(String, String, String, u64)> = Vec::new();
            let mut more_after = None;
            if let Some(map) = st.objects.get(scope.resource.as_str()) {
                let start = match &after {
                    Some((ns, name)) => match &scope.namespace {
                        Some(want) => (want.clone(), name.clone()),
                        None => (ns.clone(), name.clone()),
                    },
                    None => (scope.namespace.clone().unwrap_or_default(), String::new()),
                };
                let iter = map
                    .range(start..)
                    .filter(|((ns, name), _)| {
                        after
                            .as_ref()
                            .is_none_or(|(a_ns, a_name)| (ns, name) > (a_ns, a_name))
                    })
                    .take_while(|((ns, _), _)| scope.namespace.as_ref().is_none_or(|w| w == ns));
                for ((ns, name), e) in iter {
                    if limit.is_some_and(|l| wanted.len() >= l) {
                        more_after = wanted.last().map(|w| (w.0.clone(), w.1.clone()));
                        break;
                    }
                    wanted.push((ns.clone(), name.clone(), e.key.clone(), e.rv));
                }
            }
            (st.revision, wanted, more_after)
        };
        let mut items = Vec::with_capacity(wanted.len());
        let served = SERVED.iter().find(|s| s.resource == scope.resource);
        // A large page reads the type's rows at once; a small one reads row by row.
        let rows: Option<HashMap<String, String>> = match (served, &self.shared.db) {
            (Some(s), Some(db)) if wanted.len() > 32 => Some(
                db.list(s.meta_type)
                    .await
                    .map_err(|e| StoreError::Commit(format!("meta store: {e}")))?
                    .into_iter()
                    .map(|r| (r.key, r.value))
                    .collect(),
            ),
            _ => None,
        };
        for (ns, name, meta_key, orv) in wanted {
            let raw = match &rows {
                Some(rows) => rows.get(&meta_key).and_then(|v| stamp(v, &ns, &name, orv)),
                None => self.body(&meta_key, &ns, &name, orv).await?,
            };
            if let Some(raw) = raw {
                items.push(Stored {
                    key: ObjectKey::new(scope.resource.clone(), ns, name),
                    rv: orv,
                    raw,
                });
            }
        }
        Ok(ListPage {
            rv,
            items,
            more_after,
        })
    }

    async fn write(&self, _op: WriteOp) -> Result<Arc<Event>, StoreError> {
        // Writes go to the cloud (the Application path) before they reach this view.
        Err(StoreError::Unavailable(
            "metaserver's local store is read-only; writes go to the cloud".into(),
        ))
    }

    async fn dependents(&self, _uid: String) -> Result<Vec<ObjectKey>, StoreError> {
        Ok(Vec::new())
    }

    fn subscribe(&self, from: Option<u64>) -> Result<Subscription, StoreError> {
        let st = self.lock();
        let live = self.shared.feed.subscribe();
        let backlog = match from {
            None => Vec::new(),
            Some(from) if from < st.compacted => {
                return Err(StoreError::Gone {
                    requested: from,
                    oldest: st.compacted,
                })
            }
            Some(from) => {
                let start = st.history.partition_point(|e| e.object.rv <= from);
                st.history.iter().skip(start).cloned().collect()
            }
        };
        Ok(Subscription {
            backlog,
            live,
            rv: st.revision,
        })
    }

    fn revision(&self) -> u64 {
        self.lock().revision
    }
}

#[cfg(test)]
mod tests;
