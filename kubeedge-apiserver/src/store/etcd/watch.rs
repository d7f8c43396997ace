//! The one etcd watch of a store: every change under the prefix, by any writer, in revision
//! order, turned into [`Event`]s for the API's watches. A broken stream is reopened from the
//! next revision; a compacted one resets the history (live watchers are closed and relist).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType as EtcdEventType, WatchOptions, WatchResponse};
use tokio::sync::oneshot;

use super::{rev, stamp, stored, Shared};
use crate::store::{Event, EventType, Stored};

/// Follows the cluster from `revision` until `stop` fires (the store was dropped).
pub(super) async fn follow(
    client: Client,
    shared: Arc<Shared>,
    mut revision: u64,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(i64::try_from(revision + 1).unwrap_or(i64::MAX));
        let mut watch_client = client.watch_client();
        let opened = tokio::select! {
            _ = &mut stop => return,
            r = watch_client.watch(shared.layout.root(), Some(opts)) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch cannot open; retrying");
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                _ = &mut stop => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(resp)) if resp.compact_revision() > 0 => {
                    let at = rev(resp.compact_revision());
                    tracing::warn!(
                        from = revision + 1,
                        compacted = at,
                        "etcd compacted past the watch; watchers must relist"
                    );
                    // The next watch starts at the compaction revision.
                    revision = at.saturating_sub(1).max(revision);
                    shared.reset(revision);
                    break;
                }
                Ok(Some(resp)) if resp.canceled() => {
                    tracing::warn!(reason = resp.cancel_reason(), "etcd watch canceled");
                    break;
                }
                Ok(Some(resp)) => {
                    backoff = Duration::from_millis(100);
                    revision = take(&shared, &resp, revision);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd watch broke; reopening");
                    break;
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Publishes one watch response; returns the newest revision seen.
fn take(shared: &Shared, resp: &WatchResponse, mut revision: u64) -> u64 {
    let mut events = Vec::with_capacity(resp.events().len());
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let at = rev(kv.mod_revision());
        revision = revision.max(at);
        let Some(key) = shared.layout.parse(kv.key()) else {
            continue;
        };
        let prev = ev.prev_kv().and_then(|p| stored(key.clone(), p).ok());
        let event = match ev.event_type() {
            EtcdEventType::Put => {
                let Ok(object) = stored(key, kv) else {
                    tracing::warn!(key = ?kv.key_str(), "etcd holds an object that is not json");
                    continue;
                };
                let kind = if kv.create_revision() == kv.mod_revision() {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                Event { kind, object, prev }
            }
            EtcdEventType::Delete => {
                // The last state, stamped with the deleting revision.
                let Some(last) = ev.prev_kv() else { continue };
                let Ok(raw) = stamp(last.value(), at, &key) else {
                    continue;
                };
                Event {
                    kind: EventType::Deleted,
                    object: Stored { key, rv: at, raw },
                    prev,
                }
            }
        };
        events.push(Arc::new(event));
    }
    shared.publish(events, revision);
    revision
}

/// Compacts, every `every`, to the revision the previous round saw (as kube-apiserver does), so
/// that etcd keeps at least one interval of history for watches to resume from.
pub(super) async fn compact(client: Client, every: Duration, mut stop: oneshot::Receiver<()>) {
    let mut kv = client.kv_client();
    let mut seen: Option<i64> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Some(at) = seen.filter(|r| *r > 0) {
            match kv.compact(at, None).await {
                Ok(_) => tracing::debug!(revision = at, "etcd compacted"),
                // Another replica compacted there first, or the cluster is away: next round.
                Err(e) => tracing::debug!(revision = at, error = %e, "etcd compaction skipped"),
            }
        }
        seen = match kv
            .get("/", Some(etcd_client::GetOptions::new().with_count_only()))
            .await
        {
            Ok(r) => r.header().map(|h| h.revision()),
            Err(_) => None,
        };
    }
}
