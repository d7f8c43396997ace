//! The garbage collector: deletes cached objects (pods, ReplicaSets, Endpoints, DaemonSets,
//! Deployments) whose owners are all gone, and drops references to the owners that are gone
//! when others remain. An owner is gone only when a live GET says so (404, or another uid
//! under that name), never on the word of a possibly stale cache.
//!
//! kubeedge-apiserver already cascades deletes through owner references; this catches what a
//! cascade cannot see, such as a pod created by a controller just after its owner was deleted.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::informer::{synced, Change, Informers};
use super::{api_code, ControlPlaneConfig, ControlPlaneError};

/// The garbage collector.
pub(crate) struct Collector {
    client: Client,
    interval: std::time::Duration,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    daemonsets: Store<DaemonSet>,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    wake: Arc<Notify>,
}

/// Known kinds: (apiVersion, kind) -> (plural, namespaced).
fn known(api_version: &str, kind: &str) -> Option<(&'static str, bool)> {
    Some(match (api_version, kind) {
        ("v1", "Pod") => ("pods", true),
        ("v1", "Service") => ("services", true),
        ("v1", "ConfigMap") => ("configmaps", true),
        ("v1", "Secret") => ("secrets", true),
        ("v1", "Node") => ("nodes", false),
        ("v1", "Namespace") => ("namespaces", false),
        ("apps/v1", "ReplicaSet") => ("replicasets", true),
        ("apps/v1", "Deployment") => ("deployments", true),
        ("apps/v1", "DaemonSet") => ("daemonsets", true),
        ("apps/v1", "StatefulSet") => ("statefulsets", true),
        _ => return None,
    })
}

fn uids<K: Resource<DynamicType = ()> + Clone + 'static>(
    store: &Store<K>,
    into: &mut HashSet<String>,
) {
    for o in store.state() {
        if let Some(u) = &o.meta().uid {
            into.insert(u.clone());
        }
    }
}

impl Collector {
    pub(crate) fn new(client: &Client, config: &ControlPlaneConfig, inf: &mut Informers) -> Self {
        let wake = Arc::new(Notify::new());
        macro_rules! wake_on_delete {
            ($inf:expr) => {{
                let w = Arc::clone(&wake);
                $inf.on(move |c| {
                    if matches!(c, Change::Deleted(_)) {
                        w.notify_one();
                    }
                });
            }};
        }
        wake_on_delete!(inf.replicasets);
        wake_on_delete!(inf.deployments);
        wake_on_delete!(inf.daemonsets);
        wake_on_delete!(inf.services);
        Self {
            client: client.clone(),
            interval: config.gc_interval,
            pods: inf.pods.store(),
            replicasets: inf.replicasets.store(),
            deployments: inf.deployments.store(),
            daemonsets: inf.daemonsets.store(),
            services: inf.services.store(),
            endpoints: inf.endpoints.store(),
            nodes: inf.nodes.store(),
            namespaces: inf.namespaces.store(),
            wake,
        }
    }

    /// Runs until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) -> Result<(), ControlPlaneError> {
        synced(&self.pods, "pods").await?;
        synced(&self.replicasets, "replicasets").await?;
        synced(&self.deployments, "deployments").await?;
        synced(&self.daemonsets, "daemonsets").await?;
        synced(&self.services, "services").await?;
        synced(&self.endpoints, "endpoints").await?;
        synced(&self.nodes, "nodes").await?;
        synced(&self.namespaces, "namespaces").await?;
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "garbage collection pass failed");
            }
        }
    }

    async fn pass(&self) -> Result<(), ControlPlaneError> {
        let mut live = HashSet::new();
        uids(&self.pods, &mut live);
        uids(&self.replicasets, &mut live);
        uids(&self.deployments, &mut live);
        uids(&self.daemonsets, &mut live);
        uids(&self.services, &mut live);
        uids(&self.nodes, &mut live);
        uids(&self.namespaces, &mut live);
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        self.collect(&self.pods, &live, &mut verdicts).await?;
        self.collect(&self.replicasets, &live, &mut verdicts)
            .await?;
        self.collect(&self.endpoints, &live, &mut verdicts).await?;
        self.collect(&self.daemonsets, &live, &mut verdicts).await?;
        self.collect(&self.deployments, &live, &mut verdicts)
            .await?;
        Ok(())
    }

    /// `true` when the owner is confirmed gone.
    async fn owner_gone(
        &self,
        namespace: Option<&str>,
        r: &OwnerReference,
    ) -> Result<bool, ControlPlaneError> {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &r.kind);
        let (ar, namespaced) = match known(&r.api_version, &r.kind) {
            Some((plural, namespaced)) => {
                (ApiResource::from_gvk_with_plural(&gvk, plural), namespaced)
            }
            None => match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok((ar, caps)) => (ar, caps.scope == Scope::Namespaced),
                // The kind is not served (any more): nothing of it can exist.
                Err(kube::Error::Discovery(_)) => return Ok(true),
                Err(e) if api_code(&e) == Some(404) => return Ok(true),
                Err(e) => return Err(ControlPlaneError::api(format!("discover {}", r.kind), e)),
            },
        };
        let api: Api<DynamicObject> = match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            // A cluster-scoped dependent cannot have a namespaced owner.
            (true, None) => return Ok(true),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        };
        match api.get_opt(&r.name).await {
            Ok(None) => Ok(true),
            Ok(Some(o)) => Ok(o.metadata.uid.as_deref() != Some(r.uid.as_str())),
            Err(e) => Err(ControlPlaneError::api(
                format!("get owner {}/{}", r.kind, r.name),
                e,
            )),
        }
    }

    async fn collect<K>(
        &self,
        store: &Store<K>,
        live: &HashSet<String>,
        verdicts: &mut HashMap<String, bool>,
    ) -> Result<(), ControlPlaneError>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        for o in store.state() {
            let m = o.meta();
            let Some(refs) = m.owner_references.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            if m.deletion_timestamp.is_some() || refs.iter().all(|r| live.contains(&r.uid)) {
                continue;
            }
            let ns = m.namespace.as_deref();
            let mut gone = Vec::new();
            for r in refs {
                if live.contains(&r.uid) {
                    continue;
                }
                let v = match verdicts.get(&r.uid) {
                    Some(v) => *v,
                    None => {
                        let v = self.owner_gone(ns, r).await?;
                        verdicts.insert(r.uid.clone(), v);
                        v
                    }
                };
                if v {
                    gone.push(r.uid.clone());
                }
            }
            if gone.is_empty() {
                continue;
            }
            let name = m.name.clone().unwrap_or_default();
            let ar = ApiResource::erase::<K>(&());
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
                None => Api::all_with(self.client.clone(), &ar),
            };
            if gone.len() == refs.len() {
                tracing::info!(kind = %K::kind(&()), namespace = ns.unwrap_or_default(), name, "deleting object whose owners are gone");
                let dp = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: m.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                    Err(e) => return Err(ControlPlaneError::api(format!("delete {name}"), e)),
                }
            } else {
                let keep: Vec<&OwnerReference> =
                    refs.iter().filter(|r| !gone.contains(&r.uid)).collect();
                let patch = json!({"metadata": {"ownerReferences": keep, "resourceVersion": m.resource_version}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                    Err(e) => {
                        return Err(ControlPlaneError::api(format!("drop owners of {name}"), e))
                    }
                }
            }
        }
        Ok(())
    }
}
