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

pub(super) async fn write_loop(inner: Arc<Inner>, cancel: CancellationToken) {
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

pub(super) async fn persist(
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
