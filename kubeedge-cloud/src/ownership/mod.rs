//! Which replica holds which edge node, so that no node is ever served by two replicas.
//!
//! - **Node records.** A `coordination.k8s.io/v1` Lease per node, `<namespace>/node-<node>`,
//!   labelled `kubeedge.io/owner-record=node`, names the replica that serves the node.
//!   `kubectl get lease -n kubeedge -l kubeedge.io/owner-record=node` shows where each edge is
//!   connected.
//! - **Replica heartbeats.** Each replica renews its own Lease `<namespace>/replica-<identity>`
//!   with leader election's timings (client-go's 15 s / 10 s / 2 s by default). A replica that
//!   cannot renew within the renew deadline (it lost the API, or etcd) steps down: it ends every
//!   session and admits no new one until it renews again, so its edges reconnect elsewhere.
//! - **Taking a node.** A new session writes nothing until this replica holds the node's record
//!   (the hub's [`Admission`](crate::hub::Admission)). The record is free when nobody holds it, when its holder's
//!   heartbeat has not moved for a lease duration by this replica's clock (the holder stepped
//!   down before that, since its renew deadline is shorter), or when the holder's process is
//!   gone (its peer address refuses connections). Otherwise the new replica asks the holder to
//!   let go (the annotation [`TAKEOVER`] on the record): a live holder ends its stale session
//!   and clears the record at once. Records are taken with compare-and-swap.
//!
//! Every replica's controllers queue every change for every node. A replica whose node is
//! held by another keeps, of what it queued for that node, only what the node has not acked
//! anywhere: with [`NodeOwnership::shared_ledger`] (the ObjectSync ledger is in the API, which
//! the SyncController follows) the NO-ACK messages go at once and each ACK-mode message goes
//! when the ledger shows the node acked it through another replica. Should the node come back,
//! the rest is sent, and nothing the other holder failed to deliver before it died is lost.
//! Without a shared ledger the whole queue goes.

mod admit;
mod records;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt as _};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::hub::{CloudHub, HubEvent};
use crate::leader::LeaderElection;
use records::Shared;

/// The label every node record carries.
pub const LABEL: &str = "kubeedge.io/owner-record";

/// The annotation that tells other replicas where the holder's stream server is.
pub const STREAM_SERVER: &str = "kubeedge.io/stream-server";
/// The annotation that tells other replicas where the holder's Router is.
pub const ROUTER_SERVER: &str = "kubeedge.io/router-server";
/// The annotation by which a replica asks the holder of a node record to let the node go: its
/// value is the asking replica's identity.
pub const TAKEOVER: &str = "kubeedge.io/takeover-requested-by";

/// The record's name for `node`.
pub fn record_name(node: &str) -> String {
    format!("node-{node}")
}

/// The name of the heartbeat Lease of the replica `identity`: `replica-<identity>`, made a
/// valid object name (client-go identities are `<host>_<uuid>`; only `a-z`, `0-9` and `-` are
/// kept). An identity that had to change
/// gets a hash of itself appended, so that two identities never share a heartbeat.
pub fn replica_lease_name(identity: &str) -> String {
    let clean: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    let clean = clean.trim_matches('-');
    let plain = format!("replica-{clean}");
    if clean == identity && !clean.is_empty() && plain.len() <= 253 {
        return plain;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut name = plain;
    name.truncate(253 - 17);
    format!("{}-{:016x}", name.trim_end_matches('-'), hash)
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
    /// How long a replica's heartbeat holds without renewal before others take its nodes.
    pub lease_duration: Duration,
    /// How long a replica keeps trying to renew its heartbeat before it steps down. Shorter
    /// than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the heartbeat is renewed, and a waiting session looks again.
    pub retry_period: Duration,
    /// The heartbeat is fresh: this replica serves.
    live: Arc<watch::Sender<bool>>,
}

impl NodeOwnership {
    /// Records in `namespace`, written as `identity`, with client-go's timings.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            annotations: BTreeMap::new(),
            shared_ledger: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            live: Arc::new(watch::channel(false).0),
        }
    }

    /// Whether this replica serves (its heartbeat is fresh): `/readyz`, so that a load balancer
    /// sends edges elsewhere while it does not.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.live.subscribe()
    }

    /// Becomes `hub`'s admission, keeps this replica's heartbeat and the records of its nodes,
    /// and drops the queues of nodes held elsewhere, until `cancel`.
    pub async fn run(self, client: kube::Client, hub: CloudHub, cancel: CancellationToken) {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let mut heartbeat = LeaderElection::new(
            self.namespace.clone(),
            replica_lease_name(&self.identity),
            self.identity.clone(),
        );
        heartbeat.lease_duration = self.lease_duration;
        heartbeat.renew_deadline = self.renew_deadline;
        heartbeat.retry_period = self.retry_period;
        let shared = Arc::new(Shared::new(self, api.clone(), hub.clone()));
        hub.set_admission(Arc::new(admit::Admitter(shared.clone())));
        let beat = {
            let (shared, stop) = (shared.clone(), cancel.clone());
            heartbeat.run(client, cancel.clone(), move |serving| {
                let (shared, stop) = (shared.clone(), stop.clone());
                async move { shared.serve_while(serving, &stop).await }
            })
        };
        let follow = follow(shared, hub, api, cancel);
        tokio::join!(beat, follow);
    }
}

async fn follow(shared: Arc<Shared>, hub: CloudHub, api: Api<Lease>, cancel: CancellationToken) {
    let mut events = hub.events();
    let leases = watcher(api, watcher::Config::default()).default_backoff();
    let mut leases = std::pin::pin!(leases);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(HubEvent::Disconnected { node }) => shared.release(&node).await,
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    warn!(missed = n, "node ownership lagged behind hub events");
                    shared.release_all_unconnected().await;
                }
                Err(RecvError::Closed) => return,
            },
            ev = leases.next() => match ev {
                Some(Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) => {
                    shared.observe(&l).await;
                }
                Some(Ok(watcher::Event::Delete(l))) => shared.observe_deleted(&l),
                Some(Ok(watcher::Event::InitDone)) => shared.synced(),
                Some(Ok(watcher::Event::Init)) => {}
                Some(Err(e)) => debug!(error = %e, "node records watch"),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::replica_lease_name;

    #[test]
    fn heartbeat_names_are_object_names() {
        assert_eq!(replica_lease_name("replica-a"), "replica-replica-a");
        let go = replica_lease_name("VM_a6a1fee1b887d26a");
        assert!(go.starts_with("replica-vm-a6a1fee1b887d26a-"), "{go}");
        assert_ne!(go, replica_lease_name("vm-a6a1fee1b887d26a"));
        assert_ne!(replica_lease_name("a_b"), replica_lease_name("a.b_"));
        for id in ["_", "", "x".repeat(400).as_str(), "ünïcode/ø"] {
            let n = replica_lease_name(id);
            assert!(n.len() <= 253, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-'), "{n}");
        }
    }
}
