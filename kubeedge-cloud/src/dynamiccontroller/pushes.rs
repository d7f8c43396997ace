//! A watch Application's pushes: its objects and their changes sent to the node as
//! `<namespace|null>/<kind>/<name>` insert/update/delete messages from `dynamiccontroller`
//! (upstream `cloud/pkg/dynamiccontroller/application/listener.go`, `sendObj`).
//!
//! Each deletion reaches the node once. Deletions pass the sync ledger's version check (a
//! delete must always go through), and an upstream edge's MetaServer turns every delete
//! message into a watch `DELETED` event (`Inject` in upstream's
//! `edge/pkg/metamanager/metaserver/kubernetes/storage/sqlite/imitator/imitator.go`), so a
//! second delete of the same object is a duplicate event on the edge's watches. Hence:
//! - the deletion of a pod bound to the node is left to the edge controller, which pushes it
//!   to that node in any case;
//! - a deletion several watches of one node see is pushed by the first only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kubeedge_proto::{ApplicationKey, Operation, ResourceType, Source};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::object::push_as;
use crate::synccontroller::SyncHandle;

/// Deleted object UIDs remembered per node (a UID never comes back, so an old one forgotten
/// only matters if a watch reports that deletion again this much later).
const TOMBSTONES_PER_NODE: usize = 1024;

/// One node's pushed deletions: the set, and its order (oldest first) for forgetting.
#[derive(Debug, Default)]
struct NodeTombstones {
    set: HashSet<String>,
    order: VecDeque<String>,
}

/// The deletions pushed to each node.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    nodes: Mutex<HashMap<String, NodeTombstones>>,
}

impl Tombstones {
    /// Record the deletion of `uid` on `node`; false when it was recorded already.
    fn first(&self, node: &str, uid: &str) -> bool {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let t = nodes.entry(node.to_owned()).or_default();
        if !t.set.insert(uid.to_owned()) {
            return false;
        }
        t.order.push_back(uid.to_owned());
        while t.order.len() > TOMBSTONES_PER_NODE {
            if let Some(old) = t.order.pop_front() {
                t.set.remove(&old);
            }
        }
        true
    }
}

impl Tombstones {
    /// Forget `node`'s deletions (it has no watch left to repeat them).
    pub(super) fn forget(&self, node: &str) {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
    }
}

/// True when the edge controller pushes this object's deletion to `node` itself: a pod bound
/// to the node.
fn edge_controller_deletes(node: &str, key: &ApplicationKey, obj: &DynamicObject) -> bool {
    key.is_core()
        && key.resource == "pods"
        && obj.data.pointer("/spec/nodeName").and_then(|v| v.as_str()) == Some(node)
}

/// One registered watch, run until its token is cancelled.
pub(super) struct WatchTask {
    pub(super) api: Api<DynamicObject>,
    pub(super) config: watcher::Config,
    pub(super) sync: SyncHandle,
    pub(super) node: String,
    pub(super) key: ApplicationKey,
    pub(super) deleted: Arc<Tombstones>,
    pub(super) token: CancellationToken,
}

impl WatchTask {
    /// Push the watch's events to the node.
    pub(super) async fn run(self) {
        let node = self.node.as_str();
        let fallback_kind = self.key.resource.trim_end_matches('s').to_owned();
        let stream = watcher::watcher(self.api.clone(), self.config.clone()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut known = HashSet::new();
        loop {
            let ev = tokio::select! {
                _ = self.token.cancelled() => return,
                ev = stream.next() => ev,
            };
            let (op, obj) = match ev {
                None => return,
                Some(Err(e)) => {
                    debug!(%node, error = %e, "application watch failed; retrying");
                    continue;
                }
                Some(Ok(Event::Apply(o))) => {
                    let uid = o.metadata.uid.clone().unwrap_or_default();
                    let op = if known.insert(uid) {
                        Operation::Insert
                    } else {
                        Operation::Update
                    };
                    (op, o)
                }
                // The edge may hold an older copy: upsert.
                Some(Ok(Event::InitApply(o))) => {
                    known.insert(o.metadata.uid.clone().unwrap_or_default());
                    (Operation::Update, o)
                }
                Some(Ok(Event::Delete(o))) => {
                    let uid = o.metadata.uid.clone().unwrap_or_default();
                    known.remove(&uid);
                    if edge_controller_deletes(node, &self.key, &o)
                        || (!uid.is_empty() && !self.deleted.first(node, &uid))
                    {
                        continue;
                    }
                    (Operation::Delete, o)
                }
                Some(Ok(Event::Init | Event::InitDone)) => continue,
            };
            let kind = obj
                .types
                .as_ref()
                .map(|t| t.kind.to_ascii_lowercase())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| fallback_kind.clone());
            let ns = obj
                .metadata
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| kubeedge_proto::NULL_SEGMENT.to_owned());
            let name = obj.metadata.name.clone().unwrap_or_default();
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            match push_as(
                Source::DynamicController,
                op,
                &ns,
                ResourceType::from(kind),
                &name,
                &rv,
                &obj,
            ) {
                Ok(m) => {
                    if let Err(e) = self.sync.send(node, m).await {
                        debug!(%node, error = %e, "watch event not sent");
                    }
                }
                Err(e) => debug!(error = %e, "watch event not encoded"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_is_first_once_per_node_and_old_ones_are_forgotten() {
        let t = Tombstones::default();
        assert!(t.first("n1", "u1"));
        assert!(!t.first("n1", "u1"));
        assert!(t.first("n2", "u1"), "per node");
        for i in 0..TOMBSTONES_PER_NODE {
            assert!(t.first("n1", &format!("x{i}")));
        }
        assert!(t.first("n1", "u1"), "the oldest went first");
        t.forget("n2");
        assert!(t.first("n2", "u1"));
    }
}
