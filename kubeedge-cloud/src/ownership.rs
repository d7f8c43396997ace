//! Which replica holds which edge node: a `coordination.k8s.io/v1` Lease per node,
//! `<namespace>/node-<node>`, labelled `kubeedge.io/owner-record=node`. This hub writes itself
//! as the holder when the node's websocket arrives, whoever held it before (the edge is where it
//! is), and clears the holder when the session ends, unless another replica took the node
//! meanwhile. `kubectl get lease -n kubeedge -l kubeedge.io/owner-record=node` shows where each
//! edge is connected.
//!
//! Every replica's controllers queue every change for every node. A replica whose node was
//! taken by another keeps, of what it queued for that node, only what the node has not acked
//! anywhere: with [`NodeOwnership::shared_ledger`] (the ObjectSync ledger is in the API, which
//! the SyncController follows) the NO-ACK messages go at once and each ACK-mode message goes
//! when the ledger shows the node acked it through another replica. Should the node come back,
//! the rest is sent, and nothing the new holder failed to deliver before it died is lost.
//! Without a shared ledger the whole queue goes.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::{CloudHub, HubEvent};

/// The label every node record carries.
pub const LABEL: &str = "kubeedge.io/owner-record";

/// The record's name for `node`.
pub fn record_name(node: &str) -> String {
    format!("node-{node}")
}

/// Settings of [`NodeOwnership`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeOwnership {
    /// Where the records live (`kubeedge`).
    pub namespace: String,
    /// This replica's identity, as in its leader election.
    pub identity: String,
    /// Where other replicas reach this one, written into each record it holds: its stream
    /// server ([`STREAM_SERVER`]) and its Router ([`ROUTER_SERVER`]).
    pub annotations: BTreeMap<String, String>,
    /// The SyncController keeps the ledger in the API and follows the rows other replicas
    /// write (on by default): the queue of a node held elsewhere keeps its ACK-mode messages.
    pub shared_ledger: bool,
}

/// The annotation that tells other replicas where the holder's stream server is.
pub const STREAM_SERVER: &str = "kubeedge.io/stream-server";
/// The annotation that tells other replicas where the holder's Router is.
pub const ROUTER_SERVER: &str = "kubeedge.io/router-server";

impl NodeOwnership {
    /// Records in `namespace`, written as `identity`.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            annotations: BTreeMap::new(),
            shared_ledger: true,
        }
    }

    /// Keeps the records of `hub`'s nodes, and drops the queues of nodes other replicas took,
    /// until `cancel`.
    pub async fn run(self, client: kube::Client, hub: CloudHub, cancel: CancellationToken) {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut events = hub.events();
        let records = watcher(
            api.clone(),
            watcher::Config::default().labels(&format!("{LABEL}=node")),
        );
        let mut records = std::pin::pin!(records);
        // Sessions that started before this task subscribed.
        for node in hub.connected_nodes() {
            self.take(&api, &hub, &node).await;
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(HubEvent::Connected { node }) => self.take(&api, &hub, &node).await,
                    Ok(HubEvent::Disconnected { node }) => self.release(&api, &hub, &node).await,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        for node in hub.connected_nodes() {
                            self.take(&api, &hub, &node).await;
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                ev = records.next() => match ev {
                    Some(Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) => {
                        self.observe(&hub, &l);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => debug!(error = %e, "node records watch"),
                    None => return,
                },
            }
        }
    }

    /// Another replica holds the node of `lease` and it has no session here: drop its queue.
    fn observe(&self, hub: &CloudHub, lease: &Lease) {
        let Some(node) = lease
            .metadata
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("node-"))
        else {
            return;
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder.is_some_and(|h| h != self.identity) && !hub.is_connected(node) {
            let dropped = self.forget(hub, node);
            if dropped > 0 {
                info!(%node, holder = holder.unwrap_or_default(), dropped, "node held by another replica; its queue here is dropped");
            }
        }
    }

    /// Writes this replica as the holder of `node` (retried on conflicts, a few times).
    async fn take(&self, api: &Api<Lease>, hub: &CloudHub, node: &str) {
        for _ in 0..5 {
            if !hub.is_connected(node) {
                return;
            }
            match self.write(api, node, true).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    warn!(%node, error = %e, "cannot record the node's holder");
                    return;
                }
            }
        }
    }

    /// Clears the holder of `node` if it is still this replica.
    async fn release(&self, api: &Api<Lease>, hub: &CloudHub, node: &str) {
        for _ in 0..5 {
            if hub.is_connected(node) {
                return;
            }
            match self.write(api, node, false).await {
                // Taken by another replica while this session ended: its queue goes.
                Ok(Some(other)) => {
                    let dropped = self.forget(hub, node);
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

    /// Drops what `node`'s queue here no longer needs: it is served elsewhere.
    fn forget(&self, hub: &CloudHub, node: &str) -> usize {
        if self.shared_ledger {
            hub.served_elsewhere(node)
        } else {
            hub.forget(node)
        }
    }

    fn annotations(&self) -> Option<BTreeMap<String, String>> {
        (!self.annotations.is_empty()).then(|| self.annotations.clone())
    }

    /// Takes (`hold`) or clears the record; `Ok(Some(other))` when another replica holds it and
    /// it was left alone.
    async fn write(
        &self,
        api: &Api<Lease>,
        node: &str,
        hold: bool,
    ) -> Result<Option<String>, kube::Error> {
        let name = record_name(node);
        let now = MicroTime(jiff::Timestamp::now());
        let Some(mut lease) = api.get_opt(&name).await? else {
            if !hold {
                return Ok(None);
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(BTreeMap::from([(LABEL.to_owned(), "node".to_owned())])),
                    annotations: self.annotations(),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return api
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| None);
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if hold {
            let current = lease.metadata.annotations.clone().unwrap_or_default();
            if mine && current == self.annotations {
                return Ok(None);
            }
            lease.metadata.annotations = self.annotations();
            if !mine {
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                spec.acquire_time = Some(now.clone());
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.renew_time = Some(now);
        } else {
            if !mine {
                return Ok(spec.holder_identity);
            }
            spec.holder_identity = None;
            spec.renew_time = Some(now);
        }
        lease.spec = Some(spec);
        api.replace(
            &lease.metadata.name.clone().unwrap_or_default(),
            &PostParams::default(),
            &lease,
        )
        .await
        .map(|_| None)
    }
}
