//! The ledger written through: acks queued per object, persisted as ObjectSync objects with
//! bounded concurrency, retried on conflicts.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_proto::api::reliablesyncs::{
    object_sync_name, ClusterObjectSync, ObjectSync, ObjectSyncSpec,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::ledger::Write;
use super::Inner;
use crate::error::ControllerError;
use crate::hub::CloudHub;
use crate::object::newer;

pub(super) async fn write_loop(inner: Arc<Inner>, hub: CloudHub, cancel: CancellationToken) {
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
                // A node held here has one writer of its rows: this replica.
                let held = hub.is_connected(&node);
                async move {
                    match persist(&client, &node, &uid, &w, held).await {
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

pub(super) async fn persist(
    client: &kube::Client,
    node: &str,
    uid: &str,
    w: &Write,
    held: bool,
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
            let r = match &object.namespace {
                Some(ns) => {
                    let api = Api::<ObjectSync>::namespaced(client.clone(), ns);
                    let obj = ObjectSync::new(&name, spec);
                    match held {
                        true => upsert(&api, &obj, *exists, &status).await,
                        false => raise(&api, &obj, rv).await,
                    }
                }
                None => {
                    let api = Api::<ClusterObjectSync>::all(client.clone());
                    let obj = ClusterObjectSync::new(&name, spec);
                    match held {
                        true => upsert(&api, &obj, *exists, &status).await,
                        false => raise(&api, &obj, rv).await,
                    }
                }
            };
            r.map_err(|e| ControllerError::kube(format!("objectsync {name}"), e))
        }
    }
}

/// Creates `obj` unless `exists` (someone else creating it first is fine), then sets its
/// status. A row believed to exist but missing (deleted meanwhile) is created again.
async fn upsert<K>(
    api: &Api<K>,
    obj: &K,
    exists: bool,
    status: &Patch<serde_json::Value>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let create = || async {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    };
    if !exists {
        create().await?;
    }
    match api
        .patch_status(&name, &PatchParams::default(), status)
        .await
    {
        Err(e) if exists && is_status(&e, 404) => {
            create().await?;
            api.patch_status(&name, &PatchParams::default(), status)
                .await
                .map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

/// The write of an ack for a node that is no longer held here: the replica holding it now may
/// have written a newer version meanwhile, so the row only moves forward (read, compare, then
/// replace at the version read).
async fn raise<K>(api: &Api<K>, obj: &K, rv: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut contended = None;
    for _ in 0..5 {
        let Some(current) = api.get_opt(&name).await? else {
            match api.create(&PostParams::default(), obj).await {
                Ok(_) => continue,
                Err(e) if is_status(&e, 409) => {
                    contended = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        let mut v = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
        let stored = v["status"]["objectResourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !stored.is_empty() && !newer(rv, stored) {
            return Ok(());
        }
        v["status"] = serde_json::json!({ "objectResourceVersion": rv });
        let next: K = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
        match api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 409) => contended = Some(e),
            Err(e) => return Err(e),
        }
    }
    // Still contended (or created and gone again): the write loop retries it later.
    contended.map_or(Ok(()), Err)
}
