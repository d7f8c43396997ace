//! Defaults every cluster has: the default namespaces (created at start) and a `default`
//! ServiceAccount in every active namespace.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::informer::{synced, Informers};
use super::queue::{run_workers, Key, Requeue, WorkQueue};
use super::{api_code, ControlPlaneError};

/// Creates the namespaces that are missing.
pub(crate) async fn ensure_namespaces(
    client: &Client,
    names: &[String],
) -> Result<(), ControlPlaneError> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => tracing::info!(namespace = %name, "namespace created"),
            Err(e) if api_code(&e) == Some(409) => {}
            Err(e) => {
                return Err(ControlPlaneError::api(
                    format!("create namespace {name}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

struct Inner {
    client: Client,
    namespaces: Store<Namespace>,
    queue: WorkQueue<Key>,
}

/// Keeps a `default` ServiceAccount in every namespace that is not terminating.
pub(crate) struct ServiceAccounts {
    inner: Arc<Inner>,
}

impl ServiceAccounts {
    pub(crate) fn new(client: &Client, inf: &mut Informers) -> Self {
        let inner = Arc::new(Inner {
            client: client.clone(),
            namespaces: inf.namespaces.store(),
            queue: WorkQueue::new(),
        });
        let q = inner.queue.clone();
        inf.namespaces.on(move |c| q.add(Key::of(c.object())));
        Self { inner }
    }

    /// Runs until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) -> Result<(), ControlPlaneError> {
        synced(&self.inner.namespaces, "namespaces").await?;
        let inner = self.inner;
        run_workers(
            "serviceaccount-controller",
            inner.queue.clone(),
            1,
            cancel,
            move |key: Key| {
                let inner = Arc::clone(&inner);
                async move { inner.reconcile(&key).await }
            },
        )
        .await;
        Ok(())
    }
}

impl Inner {
    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(&key.name)) else {
            return Ok(None);
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.name);
        let exists = api
            .get_opt("default")
            .await
            .map_err(|e| {
                ControlPlaneError::api(format!("get serviceaccount {}/default", key.name), e)
            })?
            .is_some();
        if exists {
            return Ok(None);
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(key.name.clone()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(None),
            // Exists already, or the namespace is going away.
            Err(e) if matches!(api_code(&e), Some(409 | 404 | 403)) => Ok(None),
            Err(e) => Err(ControlPlaneError::api(
                format!("create serviceaccount {}/default", key.name),
                e,
            )),
        }
    }
}
