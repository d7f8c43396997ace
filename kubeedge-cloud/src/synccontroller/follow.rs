//! The ledger rows other replicas write. When several cloudcores serve one control plane,
//! each node's acks are recorded by the replica that holds it, as ObjectSyncs in the API.
//! Every replica follows those objects, so that:
//! - its ledger stays current for the nodes it does not hold, and a node that moves here is
//!   neither sent again what it acked there nor resynced against stale rows;
//! - what it queued for such a node (every replica's controllers queue every change) leaves
//!   its outbox as soon as the node acks it elsewhere, so that the queue holds only what the
//!   node still lacks.
//!
//! Rows only move forward, so this replica's own writes coming back change nothing, and a row
//! that arrives while the node's session here is still closing is not missed.

use std::sync::Arc;

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt as _};
use kubeedge_proto::api::reliablesyncs::{ClusterObjectSync, ObjectSync};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ledger::Tracked;
use super::Inner;

/// One ObjectSync, as the ledger keeps it.
struct Row {
    node: String,
    uid: String,
    object: Tracked,
    rv: String,
}

/// A row from an object's name (`<node>.<uid>`), namespace, spec and status.
fn row(
    name: Option<&str>,
    namespace: Option<&str>,
    spec: &kubeedge_proto::api::reliablesyncs::ObjectSyncSpec,
    status: Option<&kubeedge_proto::api::reliablesyncs::ObjectSyncStatus>,
) -> Option<Row> {
    // Node names may contain dots, UIDs do not.
    let (node, uid) = name?.rsplit_once('.')?;
    Some(Row {
        node: node.to_owned(),
        uid: uid.to_owned(),
        object: Tracked {
            api_version: spec.object_api_version.clone(),
            kind: spec.object_kind.clone(),
            namespace: namespace.map(str::to_owned),
            name: spec.object_name.clone(),
        },
        rv: status
            .map(|s| s.object_resource_version.clone())
            .unwrap_or_default(),
    })
}

/// Follow ObjectSyncs and ClusterObjectSyncs until `cancel`.
pub(super) async fn follow_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    let namespaced = follow(
        inner.clone(),
        Api::<ObjectSync>::all(inner.client.clone()),
        |o: &ObjectSync| {
            row(
                o.metadata.name.as_deref(),
                o.metadata.namespace.as_deref(),
                &o.spec,
                o.status.as_ref(),
            )
        },
        cancel.clone(),
    );
    let cluster = follow(
        inner.clone(),
        Api::<ClusterObjectSync>::all(inner.client.clone()),
        |o: &ClusterObjectSync| row(o.metadata.name.as_deref(), None, &o.spec, o.status.as_ref()),
        cancel,
    );
    tokio::join!(namespaced, cluster);
}

async fn follow<K>(
    inner: Arc<Inner>,
    api: Api<K>,
    row: fn(&K) -> Option<Row>,
    cancel: CancellationToken,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        let ev = tokio::select! {
            () = cancel.cancelled() => return,
            ev = events.next() => ev,
        };
        match ev {
            None => return,
            Some(Err(e)) => debug!(error = %e, "object sync watch"),
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                if let Some(r) = row(&o) {
                    acked_elsewhere(&inner, r);
                }
            }
            Some(Ok(watcher::Event::Delete(o))) => {
                if let Some(r) = row(&o) {
                    deleted_elsewhere(&inner, &r);
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

fn acked_elsewhere(inner: &Inner, r: Row) {
    // A row without a version yet says nothing.
    if r.rv.is_empty() {
        return;
    }
    let dropped = inner.down.acked_elsewhere(&r.node, &r.uid, Some(&r.rv));
    let moved = inner.ledger().observed(&r.node, &r.uid, r.object, &r.rv);
    if moved || dropped > 0 {
        debug!(node = %r.node, uid = %r.uid, rv = %r.rv, dropped, "acked through another replica");
    }
}

fn deleted_elsewhere(inner: &Inner, r: &Row) {
    let dropped = inner.down.acked_elsewhere(&r.node, &r.uid, None);
    let removed = inner.ledger().observed_gone(&r.node, &r.uid);
    if removed || dropped > 0 {
        debug!(node = %r.node, uid = %r.uid, dropped, "delete acked through another replica");
    }
}
