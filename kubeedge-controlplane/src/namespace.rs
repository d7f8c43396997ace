//! The namespace controller: a namespace marked for deletion is emptied (every namespaced
//! resource found by discovery), then its `kubernetes` finalizer is removed through
//! `namespaces/<name>/finalize` so the API server can delete it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::json;

use super::informer::Informers;
use super::queue::{Key, Requeue, WorkQueue};
use super::reconcile::{Cache, Reconcile};
use super::{api_code, ControlPlaneError};

const FINALIZER: &str = "kubernetes";

/// The namespace controller.
pub(crate) struct Controller {
    client: Client,
    namespaces: Store<Namespace>,
    queue: WorkQueue<Key>,
}

impl Controller {
    pub(crate) fn new(client: &Client, inf: &mut Informers) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            namespaces: inf.namespaces.store(),
            queue: WorkQueue::new(),
        });
        let q = this.queue.clone();
        inf.namespaces.on(move |c| {
            if c.object().metadata.deletion_timestamp.is_some() {
                q.add(Key::of(c.object()));
            }
        });
        this
    }
}

impl Reconcile for Controller {
    const NAME: &'static str = "namespace-controller";

    fn queue(&self) -> &WorkQueue<Key> {
        &self.queue
    }

    fn caches(&self) -> Vec<Cache> {
        vec![Cache::of(&self.namespaces, "namespaces")]
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(&key.name)) else {
            return Ok(None);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        let name = key.name.as_str();
        let api: Api<Namespace> = Api::all(self.client.clone());
        if ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating") {
            let patch = json!({"status": {"phase": "Terminating"}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if api_code(&e) == Some(404) => return Ok(None),
                Err(e) => {
                    return Err(ControlPlaneError::api(
                        format!("mark {name} terminating"),
                        e,
                    ))
                }
            }
        }
        let remaining = self.delete_contents(name).await?;
        if remaining > 0 {
            tracing::debug!(namespace = name, remaining, "namespace not empty yet");
            return Ok(Some(std::time::Duration::from_millis(500)));
        }
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if finalizers.iter().any(|f| f == FINALIZER) {
            let mut body = (*ns).clone();
            if let Some(spec) = body.spec.as_mut() {
                spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
            }
            let bytes = serde_json::to_vec(&body).map_err(|e| ControlPlaneError::Invalid {
                what: format!("namespace {name}: {e}"),
            })?;
            let req = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(bytes)
                .map_err(|e| ControlPlaneError::Invalid {
                    what: format!("finalize request for {name}: {e}"),
                })?;
            match self.client.request::<Namespace>(req).await {
                Ok(_) => tracing::info!(namespace = name, "namespace finalized"),
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(ControlPlaneError::api(format!("finalize {name}"), e)),
            }
        }
        Ok(None)
    }
}

impl Controller {
    /// Deletes everything in the namespace; returns how many objects were still there.
    async fn delete_contents(&self, ns: &str) -> Result<usize, ControlPlaneError> {
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(|e| ControlPlaneError::api("discovery", e))?;
        let mut remaining = 0;
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced
                    || !caps.supports_operation(verbs::LIST)
                    || !caps.supports_operation(verbs::DELETE)
                {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
                let list = match api.list(&ListParams::default()).await {
                    Ok(l) => l,
                    Err(e) if matches!(api_code(&e), Some(404 | 405)) => continue,
                    Err(e) => {
                        return Err(ControlPlaneError::api(
                            format!("list {} in {ns}", ar.plural),
                            e,
                        ))
                    }
                };
                for o in list.items {
                    remaining += 1;
                    let Some(name) = o.metadata.name.as_deref() else {
                        continue;
                    };
                    match api.delete(name, &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                        Err(e) => {
                            return Err(ControlPlaneError::api(
                                format!("delete {}/{name} in {ns}", ar.plural),
                                e,
                            ))
                        }
                    }
                }
            }
        }
        Ok(remaining)
    }
}
