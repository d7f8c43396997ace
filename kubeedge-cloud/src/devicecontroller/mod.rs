//! DeviceController (PROTOCOL.md §6.3): Device and DeviceModel watches
//! (`devices.kubeedge.io` v1beta1, or v1alpha2 as v1.12 used them) turned into membership and
//! desired-twin pushes to each device's node, and the edge's reports turned into the Device
//! status.
//!
//! - Membership: a device bound to a node is pushed as `membership` `added_devices` with its
//!   desired twins (`expected_version.cloud` = the object's resourceVersion); unbinding or
//!   deleting pushes `removed_devices`. NO-ACK, as upstream.
//! - A changed desired value is pushed as `device/<id>/twin/cloud_updated`.
//! - The full Device object goes as `<ns>/device/<name>` (ACK mode) when its spec changes,
//!   for the edge's store.
//! - `device/<id>/twin/edge_updated` updates `status.twins[*].reported`; a report only replaces
//!   an older one (by its timestamp, then its edge version), so a late or repeated report
//!   never reverts a newer value. Writes are coalesced per device (newest wins) and several
//!   devices are written at once. Each report is answered `OK` as upstream does.
//! - `device/<id>/state/update` sets `status.state` and `status.lastOnlineTime` (v1beta1).
//! - `membership/detail` (sent by the edge after connecting) is answered with every device of
//!   that node, so that changes made while the node was away reach it.
//! - A node may only report on its own devices; anything else is dropped with one log line.

mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kubeedge_proto::api::{v1alpha2, v1beta1};
use kubeedge_proto::twin::{DeviceStateResult, MembershipGetResult, MembershipUpdate, TwinUpdate};
use kubeedge_proto::{
    now_millis, Content, Group, Message, Operation, ResourceKind, ResourcePath, Route, Source,
    TwinEvent,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::{Downstream, Upstream};
pub use view::{DeviceKey, DeviceView, Reported};

/// DeviceController failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceControllerError {
    /// The upstream stream ended.
    #[error("upstream closed")]
    Closed,
}

/// Which API version the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceApi {
    /// `devices.kubeedge.io/v1beta1` (KubeEdge v1.15+).
    V1beta1,
    /// `devices.kubeedge.io/v1alpha2` (KubeEdge v1.12).
    V1alpha2,
}

/// Settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeviceControllerConfig {
    /// The watched version.
    pub api: DeviceApi,
    /// Twin ids as `<namespace>/<name>` (v1.17+) rather than `<name>` (v1.12–v1.16).
    pub namespaced_ids: bool,
    /// Status writes in flight at once (each for a different device).
    pub status_concurrency: usize,
    /// Push the full Device/DeviceModel objects to the edge's store.
    pub push_objects: bool,
}

impl Default for DeviceControllerConfig {
    fn default() -> Self {
        Self {
            api: DeviceApi::V1beta1,
            namespaced_ids: true,
            status_concurrency: 32,
            push_objects: true,
        }
    }
}

/// Whether the cloud hub should hand `up` to this controller (upstream routes by source `twin`).
pub fn is_device_message(up: &Upstream) -> bool {
    up.msg.route.source == Some(Source::Twin)
}

/// The controller.
#[derive(Clone)]
pub struct DeviceController {
    client: kube::Client,
    down: Downstream,
    config: DeviceControllerConfig,
}

impl std::fmt::Debug for DeviceController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceController")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Input {
    Device(Option<Box<DeviceView>>, DeviceKey),
    Resync,
    Synced,
    Model(view::ModelTypes),
    Up(Upstream),
    Written(DeviceKey, bool),
}

struct Tracked {
    view: DeviceView,
    reported: BTreeMap<String, Reported>,
    state: Option<(String, String)>,
}

#[derive(Default)]
struct State {
    devices: HashMap<DeviceKey, Tracked>,
    by_id: HashMap<String, DeviceKey>,
    models: HashMap<(String, String), BTreeMap<String, String>>,
    dirty: HashSet<DeviceKey>,
    in_flight: HashSet<DeviceKey>,
    /// The device list is complete (the watch's first list is done).
    synced: bool,
    /// Nodes that asked for their membership before the list was complete.
    pending_detail: HashSet<String>,
}

impl DeviceController {
    /// A controller writing through `client` and pushing through `down`.
    pub fn new(client: kube::Client, down: Downstream, config: DeviceControllerConfig) -> Self {
        Self {
            client,
            down,
            config,
        }
    }

    /// Run until `cancel` fires. `upstream` carries the hub's messages from source `twin`
    /// (see [`is_device_message`]).
    pub async fn run(
        self,
        mut upstream: mpsc::Receiver<Upstream>,
        cancel: CancellationToken,
    ) -> Result<(), DeviceControllerError> {
        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        let watches = self.watches(tx.clone(), cancel.clone());
        tokio::pin!(watches);
        let mut st = State::default();
        let writers = Arc::new(Semaphore::new(self.config.status_concurrency.max(1)));
        info!(api = ?self.config.api, "device controller running");
        loop {
            let input = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = &mut watches => return Ok(()),
                i = rx.recv() => match i { Some(i) => i, None => return Ok(()) },
                u = upstream.recv() => match u {
                    Some(u) => Input::Up(u),
                    None => return Err(DeviceControllerError::Closed),
                },
            };
            match input {
                Input::Device(Some(v), key) => self.device_changed(&mut st, key, *v).await,
                Input::Device(None, key) => self.device_deleted(&mut st, key).await,
                Input::Resync => {}
                Input::Synced => {
                    st.synced = true;
                    // Answered only now: an early, partial answer would remove devices.
                    for node in std::mem::take(&mut st.pending_detail) {
                        self.membership_detail(&st, &node).await;
                    }
                }
                Input::Model(m) => {
                    st.models.insert(m.key.clone(), m.types);
                }
                Input::Up(u) => self.upstream(&mut st, u).await,
                Input::Written(key, ok) => {
                    st.in_flight.remove(&key);
                    if !ok {
                        st.dirty.insert(key);
                    }
                }
            }
            self.write_dirty(&mut st, &writers, &tx);
        }
    }

    async fn watches(&self, tx: mpsc::Sender<Input>, cancel: CancellationToken) {
        let cfg = watcher::Config::default();
        let devices = {
            let tx = tx.clone();
            let client = self.client.clone();
            let api = self.config.api;
            let ids = self.config.namespaced_ids;
            async move {
                match api {
                    DeviceApi::V1beta1 => {
                        let s = watcher::watcher(Api::<v1beta1::Device>::all(client), cfg.clone())
                            .default_backoff();
                        pump(s, tx, move |d| view::from_v1beta1(d, ids)).await
                    }
                    DeviceApi::V1alpha2 => {
                        let s = watcher::watcher(Api::<v1alpha2::Device>::all(client), cfg.clone())
                            .default_backoff();
                        pump(s, tx, move |d| view::from_v1alpha2(d, ids)).await
                    }
                }
            }
        };
        let models = {
            let client = self.client.clone();
            let api = self.config.api;
            async move {
                match api {
                    DeviceApi::V1beta1 => {
                        let s = watcher::watcher(
                            Api::<v1beta1::DeviceModel>::all(client),
                            watcher::Config::default(),
                        )
                        .default_backoff();
                        pump_models(s, tx, view::model_v1beta1).await
                    }
                    DeviceApi::V1alpha2 => {
                        let s = watcher::watcher(
                            Api::<v1alpha2::DeviceModel>::all(client),
                            watcher::Config::default(),
                        )
                        .default_backoff();
                        pump_models(s, tx, view::model_v1alpha2).await
                    }
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async { tokio::join!(devices, models) } => {}
        }
    }

    async fn push(&self, node: &str, msg: Message) {
        if node.is_empty() {
            return;
        }
        if let Err(e) = self.down.send(node, msg).await {
            warn!(node, error = %e, "cannot queue device message");
        }
    }

    fn types_for(&self, st: &State, v: &DeviceView) -> BTreeMap<String, String> {
        v.model
            .as_ref()
            .and_then(|m| st.models.get(&(v.key.namespace.clone(), m.clone())))
            .cloned()
            .unwrap_or_default()
    }

    async fn device_changed(&self, st: &mut State, key: DeviceKey, v: DeviceView) {
        let types = self.types_for(st, &v);
        let old = st.devices.remove(&key);
        let (reported, state) = match &old {
            Some(t) => {
                // Keep what we know is newer than the watched status.
                let mut r = v.reported.clone();
                for (k, mine) in &t.reported {
                    match r.get(k) {
                        Some(theirs) if !mine.newer_than(theirs) => {}
                        _ => {
                            r.insert(k.clone(), mine.clone());
                        }
                    }
                }
                (r, t.state.clone().or(v.state.clone()))
            }
            None => (v.reported.clone(), v.state.clone()),
        };
        let old_node = old.as_ref().and_then(|t| t.view.node.clone());
        if old_node.is_some() && old_node != v.node {
            if let Some(n) = &old_node {
                let o = &old.as_ref().map(|t| t.view.clone()).unwrap_or_default();
                self.push(n, view::membership(&[], std::slice::from_ref(o), &types))
                    .await;
            }
        }
        let spec_changed = old.as_ref().map(|t| &t.view.spec) != Some(&v.spec);
        if let Some(node) = &v.node {
            let joined = old_node.as_ref() != Some(node);
            if joined {
                info!(device = %v.id, node = %node, "device bound to node");
                self.push(
                    node,
                    view::membership(std::slice::from_ref(&v), &[], &types),
                )
                .await;
            } else if old.as_ref().map(|t| &t.view.desired) != Some(&v.desired) {
                self.push(node, view::cloud_updated(&v, &types)).await;
            }
            if self.config.push_objects && (joined || spec_changed) {
                if let Some(obj) = v.object_message(if old.is_some() { "update" } else { "insert" })
                {
                    self.push(node, obj).await;
                }
            }
        }
        st.by_id.insert(v.id.clone(), key.clone());
        st.devices.insert(
            key,
            Tracked {
                view: v,
                reported,
                state,
            },
        );
    }

    async fn device_deleted(&self, st: &mut State, key: DeviceKey) {
        let Some(t) = st.devices.remove(&key) else {
            return;
        };
        st.by_id.remove(&t.view.id);
        st.dirty.remove(&key);
        if let Some(node) = &t.view.node {
            info!(device = %t.view.id, node = %node, "device removed from node");
            let types = BTreeMap::new();
            self.push(
                node,
                view::membership(&[], std::slice::from_ref(&t.view), &types),
            )
            .await;
            if self.config.push_objects {
                if let Some(obj) = t.view.object_message("delete") {
                    self.push(node, obj).await;
                }
            }
        }
    }

    /// The device `id` if `node` owns it.
    ///
    /// v1.12–v1.16 edges name devices without their namespace: a bare `id` also finds the
    /// one device of that name bound to `node` when twin ids are namespaced.
    fn owned(&self, st: &State, node: &str, id: &str) -> Option<DeviceKey> {
        if let Some(key) = st.by_id.get(id) {
            let t = st.devices.get(key)?;
            return (t.view.node.as_deref() == Some(node)).then(|| key.clone());
        }
        if id.contains('/') {
            return None;
        }
        let mut found = st
            .devices
            .iter()
            .filter(|(k, t)| k.name == id && t.view.node.as_deref() == Some(node));
        match (found.next(), found.next()) {
            (Some((k, _)), None) => Some(k.clone()),
            _ => None,
        }
    }

    async fn upstream(&self, st: &mut State, up: Upstream) {
        let Upstream { node, msg } = up;
        if msg.is_reply() || msg.route.is_operation(&Operation::Response) {
            return;
        }
        match ResourcePath::parse(&msg.route.resource).kind().clone() {
            ResourceKind::DeviceTwin {
                device,
                event: TwinEvent::EdgeUpdated,
            } => {
                let id = device.id();
                let Some(key) = self.owned(st, &node, &id) else {
                    warn!(node = %node, device = %id, "report for a device this node does not have: dropped");
                    return;
                };
                let update: TwinUpdate = match msg.content.decode() {
                    Ok(u) => u,
                    Err(e) => {
                        warn!(node = %node, device = %id, error = %e, "malformed twin report dropped");
                        return;
                    }
                };
                let mut changed = false;
                if let Some(t) = st.devices.get_mut(&key) {
                    for (name, twin) in update.twin.unwrap_or_default() {
                        let Some(r) = twin.as_ref().and_then(Reported::from_twin) else {
                            continue;
                        };
                        let newer = t.reported.get(&name).is_none_or(|old| r.newer_than(old));
                        if newer {
                            t.reported.insert(name, r);
                            changed = true;
                        }
                    }
                }
                if changed {
                    st.dirty.insert(key);
                }
                // Upstream's answer: group twin, resource `twin`, content "OK".
                let reply = Message::new(
                    Route::new(
                        Source::DeviceController,
                        Group::Twin,
                        Operation::Response,
                        "twin",
                    ),
                    Content::string(kubeedge_proto::ACK_CONTENT),
                )
                .with_parent(msg.id().clone());
                self.push(&node, reply).await;
            }
            ResourceKind::DeviceState { device } => {
                let id = device.id();
                let Some(key) = self.owned(st, &node, &id) else {
                    warn!(node = %node, device = %id, "state for a device this node does not have: dropped");
                    return;
                };
                let Ok(s) = msg.content.decode::<DeviceStateResult>() else {
                    warn!(node = %node, device = %id, "malformed device state dropped");
                    return;
                };
                if let Some(t) = st.devices.get_mut(&key) {
                    let new = Some((s.device.state, s.device.last_online));
                    if t.state != new {
                        t.state = new;
                        st.dirty.insert(key);
                    }
                }
            }
            ResourceKind::MembershipDetail => {
                if st.synced {
                    self.membership_detail(st, &node).await;
                } else {
                    st.pending_detail.insert(node);
                }
            }
            _ => debug!(node = %node, resource = %msg.route.resource, "not a device message"),
        }
    }

    async fn membership_detail(&self, st: &State, node: &str) {
        let mut devices: Vec<&DeviceView> = st
            .devices
            .values()
            .filter(|t| t.view.node.as_deref() == Some(node))
            .map(|t| &t.view)
            .collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let body = MembershipGetResult {
            event_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_millis(),
            devices: devices
                .iter()
                .map(|v| view::edge_device(v, &self.types_for(st, v)))
                .collect(),
        };
        debug!(node = %node, devices = body.devices.len(), "membership detail");
        let msg = Message::new(
            Route::new(
                Source::DeviceController,
                Group::Twin,
                Operation::Update,
                "membership/detail",
            ),
            Content::json(&body).unwrap_or_default(),
        );
        self.push(node, msg).await;
    }

    fn write_dirty(&self, st: &mut State, writers: &Arc<Semaphore>, tx: &mpsc::Sender<Input>) {
        let ready: Vec<DeviceKey> = st
            .dirty
            .iter()
            .filter(|k| !st.in_flight.contains(*k))
            .cloned()
            .collect();
        for key in ready {
            let Ok(permit) = writers.clone().try_acquire_owned() else {
                return;
            };
            st.dirty.remove(&key);
            let Some(t) = st.devices.get(&key) else {
                continue;
            };
            let patch = view::status_patch(&t.view, &t.reported, t.state.as_ref(), self.config.api);
            st.in_flight.insert(key.clone());
            let client = self.client.clone();
            let api = self.config.api;
            let tx = tx.clone();
            tokio::spawn(async move {
                let ok = write_status(client, api, &key, patch).await;
                drop(permit);
                let _ = tx.send(Input::Written(key, ok)).await;
            });
        }
    }
}

async fn write_status(
    client: kube::Client,
    api: DeviceApi,
    key: &DeviceKey,
    patch: serde_json::Value,
) -> bool {
    let pp = PatchParams::default();
    let r = match api {
        DeviceApi::V1beta1 => Api::<v1beta1::Device>::namespaced(client, &key.namespace)
            .patch_status(&key.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        DeviceApi::V1alpha2 => Api::<v1alpha2::Device>::namespaced(client, &key.namespace)
            .patch_status(&key.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            debug!(device = %key, "device gone before its status was written");
            true
        }
        Err(e) => {
            warn!(device = %key, error = %e, "device status write failed; retrying");
            false
        }
    }
}

async fn pump<K, S>(stream: S, tx: mpsc::Sender<Input>, to_view: impl Fn(&K) -> DeviceView)
where
    K: kube::Resource,
    S: futures_util::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    tokio::pin!(stream);
    while let Some(ev) = stream.next().await {
        let input = match ev {
            Ok(Event::Apply(d) | Event::InitApply(d)) => {
                let v = to_view(&d);
                let key = v.key.clone();
                Input::Device(Some(Box::new(v)), key)
            }
            Ok(Event::Delete(d)) => {
                let v = to_view(&d);
                Input::Device(None, v.key)
            }
            Ok(Event::Init) => Input::Resync,
            Ok(Event::InitDone) => Input::Synced,
            Err(e) => {
                debug!(error = %e, "device watch error; retrying");
                continue;
            }
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

async fn pump_models<K, S>(
    stream: S,
    tx: mpsc::Sender<Input>,
    to_types: impl Fn(&K) -> view::ModelTypes,
) where
    K: kube::Resource,
    S: futures_util::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    tokio::pin!(stream);
    while let Some(ev) = stream.next().await {
        let m = match ev {
            Ok(Event::Apply(m) | Event::InitApply(m)) => to_types(&m),
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "device model watch error; retrying");
                continue;
            }
        };
        if tx.send(Input::Model(m)).await.is_err() {
            return;
        }
    }
}

/// A membership update as the cloud pushes it (for tests and tools).
pub fn decode_membership(msg: &Message) -> Option<MembershipUpdate> {
    msg.content.decode().ok()
}
