//! SyncController: the reliable-sync ledger (PROTOCOL.md §4.5).
//!
//! For every node and every object the node acked, the ledger holds the acked resourceVersion,
//! kept in the Kubernetes API as upstream's `ObjectSync` (namespaced objects) and
//! `ClusterObjectSync` (cluster-scoped ones) named `<node>.<uid>`, so that the state survives a
//! cloudcore restart and can be shared by several cloudcores.
//!
//! - Controllers send through [`SyncHandle::send`]: a version the node already acked is not
//!   sent again (a restarted cloudcore does not replay everything), and an `insert` of an
//!   object the node holds becomes an `update` (upstream edges ignore a duplicate insert).
//! - The hub's ack events update the ledger; the API writes happen off the delivery path,
//!   coalesced per object, a bounded number at a time.
//! - Every `resync_period` (upstream: 5 s), and at once when a node connects, the ledger is
//!   compared with the live objects: an object that is gone (or was replaced, another UID) is
//!   deleted on the edge, one with a newer version is sent again. The live objects come from
//!   the controllers' caches ([`LiveObjects`]) or, for other kinds, from the API.
//! - When a Node is deleted, [`SyncHandle::forget_node`] removes its ObjectSyncs.
//! - With the ledger in the API, the rows other replicas write are followed (`follow.rs`):
//!   a node that moves here is not sent again what it acked there, and what was queued here
//!   for a node held elsewhere leaves once the node acks it there.
//!
//! resourceVersions are compared as numbers when both are numbers, otherwise any difference
//! counts as newer; nothing here panics on odd versions.

mod crd;
mod follow;
mod ledger;
mod persist;
mod resync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::Api;
use kubeedge_proto::api::reliablesyncs::{ClusterObjectSync, ObjectSync};
use kubeedge_proto::{ack_mode, AckMode, Compat, Message, Operation};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use crd::ensure_crds;

use crate::error::ControllerError;
use crate::hub::{CloudHub, Downstream, HubEvent, Pushed, TrySend};
use crate::object::{is_delete, ObjectHead};
use ledger::{Admit, Ledger, Tracked, Write};

use persist::write_loop;
use resync::resync_loop;

/// SyncController settings (cloudcore.yaml `modules.syncController`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncConfig {
    /// How often the ledger is compared with the live objects.
    pub resync_period: Duration,
    /// ObjectSync writes in flight at once.
    pub write_concurrency: usize,
    /// Sends waiting for room in a full outbox, at most.
    pub max_waiting_sends: usize,
    /// The hub's ACK rules.
    pub compat: Compat,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            resync_period: Duration::from_secs(5),
            write_concurrency: 16,
            max_waiting_sends: 65_536,
            compat: Compat::Latest,
        }
    }
}

/// The answer of a [`LiveObjects`] source about one ledger row.
#[derive(Debug)]
#[non_exhaustive]
pub enum Live {
    /// The object exists with this UID; `push` is an `update` message carrying it.
    Found {
        /// Its UID.
        uid: String,
        /// Its resourceVersion.
        resource_version: String,
        /// The message that re-sends it.
        push: Box<Message>,
    },
    /// The object no longer exists.
    Gone,
    /// The node no longer needs the object (leave the edge's copy alone).
    NotWanted,
    /// The source has not finished its initial list: decide nothing yet.
    NotReady,
    /// Not a kind this source knows.
    NotMine,
}

/// A cache of live objects (a controller's watch stores) the resync consults before the API.
pub trait LiveObjects: Send + Sync {
    /// What `node`'s copy of (`api_version`, `kind` as a lower-case resource type,
    /// `namespace`, `name`) should be.
    fn lookup(
        &self,
        node: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Live;
}

struct Pending {
    writes: Mutex<HashMap<(String, String), Write>>,
    wake: Notify,
}

struct Inner {
    client: kube::Client,
    down: Downstream,
    config: SyncConfig,
    persist: bool,
    ledger: Mutex<Ledger>,
    pending: Pending,
    waiting: Arc<Semaphore>,
    tracker: TaskTracker,
    sources: Mutex<Vec<Arc<dyn LiveObjects>>>,
    resync_now: Mutex<Vec<String>>,
    resync_wake: Notify,
}

impl Inner {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue_write(&self, node: &str, uid: &str, w: Write) {
        if !self.persist {
            return;
        }
        let mut writes = self
            .pending
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (node.to_owned(), uid.to_owned());
        // A newer version replaces a pending write, but not the create that write still owes.
        let w = match (writes.remove(&key), w) {
            (Some(Write::Upsert { exists: false, .. }), Write::Upsert { object, rv, .. }) => {
                Write::Upsert {
                    object,
                    rv,
                    exists: false,
                }
            }
            (_, w) => w,
        };
        writes.insert(key, w);
        drop(writes);
        self.pending.wake.notify_one();
    }
}

/// Sends to nodes through the ledger. Cheap to clone.
#[derive(Clone)]
pub struct SyncHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle")
            .field("rows", &self.inner.ledger().len())
            .finish_non_exhaustive()
    }
}

impl SyncHandle {
    /// Send `msg` (edge-view resource) to `node`, unless the node already acked this version
    /// of the object. Never waits: when the node's outbox is full the send continues in the
    /// background (bounded by `max_waiting_sends`, beyond which this waits).
    pub async fn send(&self, node: &str, mut msg: Message) -> Result<Pushed, ControllerError> {
        if ack_mode(&msg, self.inner.config.compat) == AckMode::Ack {
            let head = ObjectHead::of(&msg);
            if !head.metadata.uid.is_empty() && !is_delete(&msg, &head) {
                let rv = msg.header.resource_version.as_str();
                match self.inner.ledger().admit(node, &head.metadata.uid, rv) {
                    Admit::Stale => return Ok(Pushed::Stale),
                    Admit::SendKnown if msg.route.is_operation(&Operation::Insert) => {
                        msg.route.operation = Some(Operation::Update);
                    }
                    Admit::SendKnown | Admit::SendNew => {}
                }
            }
        }
        match self.inner.down.try_send(node, msg) {
            Ok(p) => Ok(p),
            Err(TrySend::Failed(e)) => Err(ControllerError::Hub(e)),
            Err(TrySend::Full(msg)) => {
                let permit = self
                    .inner
                    .waiting
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ControllerError::Hub(crate::HubError::Closed))?;
                let down = self.inner.down.clone();
                let node = node.to_owned();
                self.inner.tracker.spawn(async move {
                    if let Err(e) = down.send(&node, *msg).await {
                        debug!(%node, error = %e, "queued send failed");
                    }
                    drop(permit);
                });
                Ok(Pushed::Queued)
            }
        }
    }

    /// The acked resourceVersion of object `uid` on `node`.
    pub fn acked_version(&self, node: &str, uid: &str) -> Option<String> {
        self.inner
            .ledger()
            .rows(node)
            .into_iter()
            .find(|(u, _)| u == uid)
            .map(|(_, e)| e.acked_rv)
    }

    /// Rows of the ledger (all nodes).
    pub fn len(&self) -> usize {
        self.inner.ledger().len()
    }

    /// True when the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// ObjectSync writes (acked versions, deletions) waiting to reach the API.
    pub fn pending_writes(&self) -> usize {
        self.inner
            .pending
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The Node is gone: drop its rows and delete its ObjectSyncs.
    pub fn forget_node(&self, node: &str) {
        let rows = self.inner.ledger().forget_node(node);
        if !rows.is_empty() {
            info!(%node, objects = rows.len(), "node deleted: removing its object syncs");
        }
        for (uid, e) in rows {
            self.inner.queue_write(
                node,
                &uid,
                Write::Delete {
                    namespace: e.object.namespace,
                },
            );
        }
    }

    /// Compare `node`'s rows with the live objects soon (instead of at the next period).
    pub fn resync_node(&self, node: &str) {
        self.inner
            .resync_now
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(node.to_owned());
        self.inner.resync_wake.notify_one();
    }

    /// Add a source of live objects for the resync.
    pub fn add_source(&self, source: Arc<dyn LiveObjects>) {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }
}

/// The controller: owns the ledger's background work. Build, take [`SyncController::handle`]
/// for the other controllers, then [`SyncController::run`].
pub struct SyncController {
    inner: Arc<Inner>,
    hub: CloudHub,
}

impl std::fmt::Debug for SyncController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncController").finish_non_exhaustive()
    }
}

impl SyncController {
    /// A controller sending through `hub`'s downstream and, with `persist`, keeping the
    /// ledger as ObjectSyncs through `client` (without, it lives in memory only).
    pub fn new(
        client: kube::Client,
        hub: CloudHub,
        down: Downstream,
        config: SyncConfig,
        persist: bool,
    ) -> Self {
        let waiting = Arc::new(Semaphore::new(config.max_waiting_sends.max(1)));
        Self {
            inner: Arc::new(Inner {
                client,
                down,
                config,
                persist,
                ledger: Mutex::new(Ledger::default()),
                pending: Pending {
                    writes: Mutex::new(HashMap::new()),
                    wake: Notify::new(),
                },
                waiting,
                tracker: TaskTracker::new(),
                sources: Mutex::new(Vec::new()),
                resync_now: Mutex::new(Vec::new()),
                resync_wake: Notify::new(),
            }),
            hub,
        }
    }

    /// The sending handle.
    pub fn handle(&self) -> SyncHandle {
        SyncHandle {
            inner: self.inner.clone(),
        }
    }

    /// Read every ObjectSync and ClusterObjectSync into the ledger. Call before the other
    /// controllers start sending, so that a restart does not replay what edges hold.
    pub async fn load(&self) -> Result<usize, ControllerError> {
        let mut rows = Vec::new();
        let namespaced: Api<ObjectSync> = Api::all(self.inner.client.clone());
        for os in namespaced
            .list(&Default::default())
            .await
            .map_err(|e| ControllerError::kube("list objectsyncs", e))?
        {
            rows.push((os.metadata.name, os.metadata.namespace, os.spec, os.status));
        }
        let cluster: Api<ClusterObjectSync> = Api::all(self.inner.client.clone());
        for os in cluster
            .list(&Default::default())
            .await
            .map_err(|e| ControllerError::kube("list clusterobjectsyncs", e))?
        {
            rows.push((os.metadata.name, None, os.spec, os.status));
        }
        let mut ledger = self.inner.ledger();
        let mut n = 0;
        for (name, namespace, spec, status) in rows {
            let Some(name) = name else { continue };
            // `<node>.<uid>`: node names may contain dots, UIDs do not.
            let Some((node, uid)) = name.rsplit_once('.') else {
                continue;
            };
            let tracked = Tracked {
                api_version: spec.object_api_version,
                kind: spec.object_kind,
                namespace,
                name: spec.object_name,
            };
            let rv = status
                .map(|s| s.object_resource_version)
                .unwrap_or_default();
            ledger.load(node, uid, tracked, rv);
            n += 1;
        }
        info!(rows = n, "sync ledger loaded");
        Ok(n)
    }

    /// Follow the hub's acks, write the ledger to the API and resync until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ControllerError> {
        let events = self.hub.events();
        let inner = self.inner.clone();
        let writer = write_loop(inner.clone(), self.hub.clone(), cancel.clone());
        let acks = event_loop(inner.clone(), events, cancel.clone());
        let resync = resync_loop(inner.clone(), self.hub.clone(), cancel.clone());
        let follower = async {
            if inner.persist {
                follow::follow_loop(inner.clone(), cancel.clone()).await;
            }
        };
        tokio::join!(writer, acks, resync, follower);
        inner.tracker.close();
        // Waiting sends end when the hub does; do not hold shutdown on them.
        inner.tracker.wait().await;
        Ok(())
    }
}

fn tracked_of(head: &ObjectHead, msg: &Message) -> Tracked {
    let path = kubeedge_proto::ResourcePath::parse(&msg.route.resource);
    let kind = path
        .resource_type()
        .map(|t| t.as_str().to_owned())
        .unwrap_or_else(|| head.kind.to_ascii_lowercase());
    Tracked {
        api_version: head.api_version.clone(),
        kind,
        namespace: head.metadata.namespace.clone().filter(|n| !n.is_empty()),
        name: head.metadata.name.clone(),
    }
}

async fn event_loop(
    inner: Arc<Inner>,
    mut events: broadcast::Receiver<HubEvent>,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = events.recv() => ev,
        };
        match ev {
            Ok(HubEvent::Acked { node, msg }) => {
                if msg.route.group != Some(kubeedge_proto::Group::Resource) {
                    continue;
                }
                let head = ObjectHead::of(&msg);
                let uid = head.metadata.uid.clone();
                if uid.is_empty() || msg.route.is_operation(&Operation::Response) {
                    continue;
                }
                let write = if is_delete(&msg, &head) {
                    inner.ledger().deleted(&node, &uid)
                } else {
                    let rv = msg.header.resource_version.clone();
                    let tracked = tracked_of(&head, &msg);
                    inner.ledger().acked(&node, &uid, tracked, &rv)
                };
                if let Some(w) = write {
                    inner.queue_write(&node, &uid, w);
                }
            }
            Ok(HubEvent::Connected { node }) => {
                inner
                    .resync_now
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(node);
                inner.resync_wake.notify_one();
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Lost acks only mean the resync sends those objects again.
                warn!(missed = n, "sync controller lagged behind hub events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
