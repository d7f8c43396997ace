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
//!
//! resourceVersions are compared as numbers when both are numbers, otherwise any difference
//! counts as newer; nothing here panics on odd versions.

mod crd;
mod ledger;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubeedge_proto::api::reliablesyncs::{
    object_sync_name, ClusterObjectSync, ObjectSync, ObjectSyncSpec,
};
use kubeedge_proto::{ack_mode, AckMode, Compat, Content, Message, Operation, ResourceType};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use crd::ensure_crds;

use crate::error::ControllerError;
use crate::hub::{CloudHub, Downstream, HubEvent, Pushed, TrySend};
use crate::object::{is_delete, newer, ObjectHead};
use ledger::{Admit, Ledger, Tracked, Write};

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
        self.pending
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((node.to_owned(), uid.to_owned()), w);
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
        let writer = write_loop(inner.clone(), cancel.clone());
        let acks = event_loop(inner.clone(), events, cancel.clone());
        let resync = resync_loop(inner.clone(), self.hub.clone(), cancel.clone());
        tokio::join!(writer, acks, resync);
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

async fn write_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        let batch: Vec<((String, String), Write)> = {
            let mut w = inner
                .pending
                .writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            w.drain().collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = inner.pending.wake.notified() => continue,
            }
        }
        let client = inner.client.clone();
        let failed: Vec<((String, String), Write)> = futures::stream::iter(batch)
            .map(|((node, uid), w)| {
                let client = client.clone();
                async move {
                    match persist(&client, &node, &uid, &w).await {
                        Ok(()) => None,
                        Err(e) => {
                            warn!(%node, %uid, error = %e, "object sync write failed; retrying");
                            Some(((node, uid), w))
                        }
                    }
                }
            })
            .buffer_unordered(inner.config.write_concurrency.max(1))
            .filter_map(futures::future::ready)
            .collect()
            .await;
        if !failed.is_empty() {
            {
                let mut w = inner
                    .pending
                    .writes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for (k, v) in failed {
                    // A newer write for the same row wins over the retry.
                    w.entry(k).or_insert(v);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn persist(
    client: &kube::Client,
    node: &str,
    uid: &str,
    w: &Write,
) -> Result<(), ControllerError> {
    let name = object_sync_name(node, uid);
    match w {
        Write::Delete { namespace } => {
            let r = match namespace {
                Some(ns) => Api::<ObjectSync>::namespaced(client.clone(), ns)
                    .delete(&name, &Default::default())
                    .await
                    .map(|_| ()),
                None => Api::<ClusterObjectSync>::all(client.clone())
                    .delete(&name, &Default::default())
                    .await
                    .map(|_| ()),
            };
            match r {
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(ControllerError::kube(
                    format!("delete objectsync {name}"),
                    e,
                )),
            }
        }
        Write::Upsert { object, rv, exists } => {
            let spec = ObjectSyncSpec {
                object_api_version: object.api_version.clone(),
                object_kind: object.kind.clone(),
                object_name: object.name.clone(),
            };
            let status = Patch::Merge(serde_json::json!({
                "status": {"objectResourceVersion": rv}
            }));
            let pp = PatchParams::default();
            match &object.namespace {
                Some(ns) => {
                    let api = Api::<ObjectSync>::namespaced(client.clone(), ns);
                    if !exists {
                        match api
                            .create(&PostParams::default(), &ObjectSync::new(&name, spec))
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if is_status(&e, 409) => {}
                            Err(e) => {
                                return Err(ControllerError::kube(
                                    format!("create objectsync {name}"),
                                    e,
                                ))
                            }
                        }
                    }
                    api.patch_status(&name, &pp, &status)
                        .await
                        .map(|_| ())
                        .map_err(|e| ControllerError::kube(format!("objectsync {name} status"), e))
                }
                None => {
                    let api = Api::<ClusterObjectSync>::all(client.clone());
                    if !exists {
                        match api
                            .create(&PostParams::default(), &ClusterObjectSync::new(&name, spec))
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if is_status(&e, 409) => {}
                            Err(e) => {
                                return Err(ControllerError::kube(
                                    format!("create clusterobjectsync {name}"),
                                    e,
                                ))
                            }
                        }
                    }
                    api.patch_status(&name, &pp, &status)
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            ControllerError::kube(format!("clusterobjectsync {name} status"), e)
                        })
                }
            }
        }
    }
}

async fn resync_loop(inner: Arc<Inner>, hub: CloudHub, cancel: CancellationToken) {
    let period = inner.config.resync_period.max(Duration::from_millis(10));
    let mut next = tokio::time::Instant::now() + period;
    loop {
        let nodes: Vec<String> = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {
                next = tokio::time::Instant::now() + period;
                inner.ledger().nodes()
            }
            _ = inner.resync_wake.notified() => {
                let mut now = inner.resync_now.lock().unwrap_or_else(PoisonError::into_inner);
                std::mem::take(&mut *now)
            }
        };
        for node in nodes {
            // An offline node gets its resync when it connects.
            if !hub.is_connected(&node) {
                continue;
            }
            resync_node(&inner, &node).await;
        }
    }
}

fn lookup(inner: &Inner, node: &str, t: &Tracked) -> Live {
    let sources = inner
        .sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for s in sources {
        match s.lookup(
            node,
            &t.api_version,
            &t.kind,
            t.namespace.as_deref(),
            &t.name,
        ) {
            Live::NotMine => continue,
            other => return other,
        }
    }
    Live::NotMine
}

async fn resync_node(inner: &Inner, node: &str) {
    let rows = inner.ledger().rows(node);
    for (uid, e) in rows {
        let live = match lookup(inner, node, &e.object) {
            Live::NotMine => fetch(&inner.client, &e.object).await,
            other => other,
        };
        let msg = match live {
            Live::NotReady | Live::NotWanted | Live::NotMine => continue,
            Live::Gone => delete_message(&e.object, &uid),
            Live::Found { uid: live_uid, .. } if live_uid != uid => delete_message(&e.object, &uid),
            Live::Found {
                resource_version,
                push,
                ..
            } => {
                if !newer(&resource_version, &e.acked_rv) {
                    continue;
                }
                Some(*push)
            }
        };
        let Some(msg) = msg else { continue };
        debug!(%node, op = msg.route.operation_str(), resource = %msg.route.resource, "resync");
        match inner.down.try_send(node, msg) {
            Ok(_) | Err(TrySend::Full(_)) => {}
            Err(TrySend::Failed(e)) => debug!(%node, error = %e, "resync send failed"),
        }
    }
}

/// The delete upstream's synccontroller sends for a vanished object: name, namespace, UID.
fn delete_message(t: &Tracked, uid: &str) -> Option<Message> {
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), t.name.clone().into());
    if let Some(ns) = &t.namespace {
        meta.insert("namespace".into(), ns.clone().into());
    }
    meta.insert("uid".into(), uid.into());
    let obj = serde_json::json!({
        "apiVersion": t.api_version,
        "kind": kind_name(&t.kind),
        "metadata": meta,
    });
    let ns = t
        .namespace
        .as_deref()
        .unwrap_or(kubeedge_proto::NULL_SEGMENT);
    let resource =
        kubeedge_proto::ResourcePath::object(ns, ResourceType::from(t.kind.as_str()), &t.name);
    let route = kubeedge_proto::Route::new(
        kubeedge_proto::Source::EdgeController,
        kubeedge_proto::Group::Resource,
        Operation::Delete,
        resource.to_string(),
    );
    Content::json(&obj).ok().map(|c| Message::new(route, c))
}

/// A Kind from upstream's lower-case `objectKind`, for the kinds KubeEdge sends.
fn kind_name(kind: &str) -> String {
    match kind {
        "pod" => "Pod".into(),
        "configmap" => "ConfigMap".into(),
        "secret" => "Secret".into(),
        "service" => "Service".into(),
        "endpoints" => "Endpoints".into(),
        "node" => "Node".into(),
        "lease" => "Lease".into(),
        "device" => "Device".into(),
        "devicemodel" => "DeviceModel".into(),
        "persistentvolume" => "PersistentVolume".into(),
        "persistentvolumeclaim" => "PersistentVolumeClaim".into(),
        "volumeattachment" => "VolumeAttachment".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// Look an object up in the API (kinds no controller cache holds).
async fn fetch(client: &kube::Client, t: &Tracked) -> Live {
    let (group, version) = match t.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", t.api_version.as_str()),
    };
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind_name(&t.kind)));
    let api: Api<DynamicObject> = match &t.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    match api.get_opt(&t.name).await {
        Ok(None) => Live::Gone,
        Ok(Some(obj)) => {
            let uid = obj.metadata.uid.clone().unwrap_or_default();
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            let ns = t
                .namespace
                .as_deref()
                .unwrap_or(kubeedge_proto::NULL_SEGMENT);
            match crate::object::push(
                Operation::Update,
                ns,
                ResourceType::from(t.kind.as_str()),
                &t.name,
                &rv,
                &obj,
            ) {
                Ok(push) => Live::Found {
                    uid,
                    resource_version: rv,
                    push: Box::new(push),
                },
                Err(_) => Live::NotReady,
            }
        }
        Err(e) => {
            debug!(object = %t.name, error = %e, "resync lookup failed");
            Live::NotReady
        }
    }
}
