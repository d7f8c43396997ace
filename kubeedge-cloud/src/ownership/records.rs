//! What this replica knows of the records and the heartbeats, and the writes it makes to them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{record_name, replica_lease_name, NodeOwnership, LABEL, TAKEOVER};
use crate::hub::CloudHub;

/// A node record as last seen.
#[derive(Debug, Clone, Default)]
pub(super) struct Record {
    pub(super) holder: Option<String>,
    pub(super) annotations: BTreeMap<String, String>,
}

/// A replica heartbeat as last seen, and when this replica saw it move.
#[derive(Debug)]
struct Heartbeat {
    resource_version: Option<String>,
    held: bool,
    duration: Duration,
    moved_at: Instant,
}

#[derive(Default)]
struct State {
    records: HashMap<String, Record>,
    /// By Lease name ([`replica_lease_name`]).
    heartbeats: HashMap<String, Heartbeat>,
    /// Nodes whose session here was admitted and has not ended.
    serving: HashSet<String>,
    /// Peer addresses probed lately: when, and whether they refused.
    probes: HashMap<std::net::SocketAddr, (Instant, bool)>,
}

/// Shared by the watch loop, the heartbeat and the admission.
pub(super) struct Shared {
    pub(super) config: NodeOwnership,
    pub(super) api: Api<Lease>,
    pub(super) hub: CloudHub,
    state: Mutex<State>,
    /// The first list of records and heartbeats is in.
    pub(super) listed: watch::Sender<bool>,
    /// A record or a heartbeat changed.
    pub(super) changed: Notify,
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

impl Shared {
    pub(super) fn new(config: NodeOwnership, api: Api<Lease>, hub: CloudHub) -> Self {
        Self {
            config,
            api,
            hub,
            state: Mutex::default(),
            listed: watch::channel(false).0,
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this replica serves.
    pub(super) fn live(&self) -> watch::Receiver<bool> {
        self.config.live.subscribe()
    }

    pub(super) fn me(&self) -> &str {
        &self.config.identity
    }

    /// The record of `node` as last seen.
    pub(super) fn record(&self, node: &str) -> Option<Record> {
        self.state().records.get(node).cloned()
    }

    /// The heartbeat of `replica` is gone, released, or has not moved for its duration.
    pub(super) fn expired(&self, replica: &str) -> bool {
        self.state()
            .heartbeats
            .get(&replica_lease_name(replica))
            .is_none_or(|h| !h.held || h.moved_at.elapsed() > h.duration)
    }

    /// What probing `addr` answered, if it was asked within `fresh`.
    pub(super) fn probed(&self, addr: std::net::SocketAddr, fresh: Duration) -> Option<bool> {
        let state = self.state();
        let (at, refused) = state.probes.get(&addr)?;
        (at.elapsed() < fresh).then_some(*refused)
    }

    /// Remember what probing `addr` answered (the map keeps the replicas' few addresses).
    pub(super) fn note_probe(&self, addr: std::net::SocketAddr, refused: bool) {
        let mut state = self.state();
        if state.probes.len() > 64 {
            state.probes.clear();
        }
        state.probes.insert(addr, (Instant::now(), refused));
    }

    /// A session of `node` here may write.
    pub(super) fn admitted(&self, node: &str) {
        self.state().serving.insert(node.to_owned());
    }

    /// The heartbeat holds while `lease` is not cancelled: serve until then, then end every
    /// session.
    pub(super) async fn serve_while(&self, lease: CancellationToken, stop: &CancellationToken) {
        self.config.live.send_replace(true);
        self.changed.notify_waiters();
        lease.cancelled().await;
        self.config.live.send_replace(false);
        self.changed.notify_waiters();
        let sessions = self.hub.connected();
        self.hub.disconnect_all().await;
        if !stop.is_cancelled() {
            warn!(identity = %self.me(), sessions, "replica heartbeat not renewed: stepped down");
        }
    }

    pub(super) fn synced(&self) {
        self.listed.send_replace(true);
        self.changed.notify_waiters();
    }

    /// A Lease arrived from the watch: a node record or a replica heartbeat.
    pub(super) async fn observe(&self, lease: &Lease) {
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let is_record = lease
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.get(LABEL).is_some_and(|v| v == "node"));
        if let (true, Some(node)) = (is_record, name.strip_prefix("node-")) {
            self.observe_record(node, lease).await;
        } else if name.starts_with("replica-") {
            self.observe_heartbeat(name, lease);
        }
        self.changed.notify_waiters();
    }

    pub(super) fn observe_deleted(&self, lease: &Lease) {
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let mut state = self.state();
        if let Some(node) = name.strip_prefix("node-") {
            state.records.remove(node);
        } else if name.starts_with("replica-") {
            state.heartbeats.remove(name);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn observe_heartbeat(&self, name: &str, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone();
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let held = holder_of(lease).is_some_and(|h| replica_lease_name(&h) == name);
        let mut state = self.state();
        let moved = state
            .heartbeats
            .get(name)
            .is_none_or(|h| h.resource_version != rv);
        let moved_at = match state.heartbeats.get(name) {
            Some(h) if !moved => h.moved_at,
            _ => Instant::now(),
        };
        state.heartbeats.insert(
            name.to_owned(),
            Heartbeat {
                resource_version: rv,
                held,
                duration,
                moved_at,
            },
        );
    }

    async fn observe_record(&self, node: &str, lease: &Lease) {
        let record = Record {
            holder: holder_of(lease),
            annotations: lease.metadata.annotations.clone().unwrap_or_default(),
        };
        let serving_here = {
            let mut state = self.state();
            state.records.insert(node.to_owned(), record.clone());
            state.serving.contains(node)
        };
        let me = self.me();
        match record.holder.as_deref() {
            Some(h) if h == me => {
                // Another replica has the edge now: this session is stale; let the node go.
                let asker = record
                    .annotations
                    .get(TAKEOVER)
                    .filter(|a| a.as_str() != me);
                if let Some(asker) = asker {
                    info!(%node, %asker, "another replica has the edge now: letting the node go");
                    if self.hub.is_connected(node) {
                        self.hub.disconnect(node).await;
                    } else {
                        self.release(node).await;
                    }
                }
            }
            Some(other) => {
                if serving_here {
                    // Taken while served here (a record edited by hand): stop writing.
                    warn!(%node, holder = other, "node taken by another replica while served here");
                    self.hub.disconnect(node).await;
                } else if !self.hub.is_connected(node) {
                    let dropped = self.forget(node);
                    if dropped > 0 {
                        info!(%node, holder = other, dropped, "node held by another replica; its queue here is trimmed");
                    }
                }
            }
            None => {}
        }
    }

    /// Drops what `node`'s queue here no longer needs: it is served elsewhere.
    fn forget(&self, node: &str) -> usize {
        if self.config.shared_ledger {
            self.hub.served_elsewhere(node)
        } else {
            self.hub.forget(node)
        }
    }

    /// The session of `node` ended: clear the record if this replica still holds it.
    pub(super) async fn release(&self, node: &str) {
        // A newer session of the node here carries on.
        if self.hub.is_connected(node) {
            return;
        }
        self.state().serving.remove(node);
        for _ in 0..5 {
            if self.hub.is_connected(node) {
                return;
            }
            match self.clear(node).await {
                Ok(Some(other)) => {
                    let dropped = self.forget(node);
                    info!(%node, holder = %other, dropped, "node moved to another replica");
                    return;
                }
                Ok(None) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    debug!(%node, error = %e, "cannot clear the node's holder");
                    return;
                }
            }
        }
    }

    /// After lost hub events: release every record held here without a session.
    pub(super) async fn release_all_unconnected(&self) {
        let mine: Vec<String> = {
            let state = self.state();
            state
                .records
                .iter()
                .filter(|(_, r)| r.holder.as_deref() == Some(self.me()))
                .map(|(n, _)| n.clone())
                .collect()
        };
        for node in mine {
            if !self.hub.is_connected(&node) {
                self.release(&node).await;
            }
        }
    }

    /// Clears the holder of `node` if it is this replica; `Ok(Some(other))` when another
    /// holds it and it was left alone.
    async fn clear(&self, node: &str) -> Result<Option<String>, kube::Error> {
        let name = record_name(node);
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            return Ok(None);
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        match spec.holder_identity.as_deref() {
            Some(h) if h == self.me() => {}
            Some(other) if !other.is_empty() => return Ok(Some(other.to_owned())),
            _ => return Ok(None),
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
            .map(|_| None)
    }

    /// Writes this replica as the holder of `node` if the record still names `expected` (or
    /// is missing): `Ok(false)` when it changed meanwhile.
    pub(super) async fn take(
        &self,
        node: &str,
        expected: Option<&str>,
    ) -> Result<bool, kube::Error> {
        let name = record_name(node);
        let now = MicroTime(jiff::Timestamp::now());
        let own = self.config.annotations.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.config.namespace.clone()),
                    labels: Some(BTreeMap::from([(LABEL.to_owned(), "node".to_owned())])),
                    annotations: (!own.is_empty()).then_some(own),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.me().to_owned()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let current = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if current.as_deref() != expected && current.as_deref() != Some(self.me()) {
            return Ok(false);
        }
        if current.as_deref() != Some(self.me()) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.me().to_owned());
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        lease.metadata.annotations = (!own.is_empty()).then_some(own);
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the holder of `node` to let it go (the [`TAKEOVER`] annotation).
    pub(super) async fn ask(&self, node: &str) -> Result<(), kube::Error> {
        let name = record_name(node);
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            return Ok(());
        };
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        if annotations.get(TAKEOVER).map(String::as_str) == Some(self.me()) {
            return Ok(());
        }
        annotations.insert(TAKEOVER.to_owned(), self.me().to_owned());
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Logs why a take failed (not a conflict).
pub(super) fn take_failed(node: &str, e: &kube::Error) {
    warn!(%node, error = %e, "cannot record the node's holder");
}
