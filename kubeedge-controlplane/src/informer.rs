//! Shared watch caches: one kube-runtime watcher and reflector store per resource, with change
//! handlers that controllers register before the caches run (client-go's shared informers).
//!
//! A handler runs after the store has taken the change, so a controller woken by it always
//! reads a cache at least as new as the event. Unlike kube-runtime's shared streams, deletes
//! reach the handlers too, and a relist reports what changed or vanished while disconnected.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::ControlPlaneError;

/// One observed change.
pub(crate) enum Change<'a, K> {
    /// Created or updated; `old` is the cached object before (None when new to the cache).
    Applied { old: Option<Arc<K>>, new: &'a K },
    /// Gone from the API.
    Deleted(&'a K),
}

impl<K> Change<'_, K> {
    /// The object after the change (the last known state for a delete).
    pub(crate) fn object(&self) -> &K {
        match self {
            Change::Applied { new, .. } => new,
            Change::Deleted(o) => o,
        }
    }

    /// The object before the change, if any.
    pub(crate) fn previous(&self) -> Option<&K> {
        match self {
            Change::Applied { old, .. } => old.as_deref(),
            Change::Deleted(o) => Some(o),
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// A watch cache of one resource plus its change handlers.
pub(crate) struct Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    handlers: Vec<Handler<K>>,
    resource: &'static str,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn new(api: Api<K>, resource: &'static str) -> Self {
        Self {
            api,
            config: watcher::Config::default(),
            writer: Writer::default(),
            handlers: Vec::new(),
            resource,
        }
    }

    /// A read handle on the cache.
    pub(crate) fn store(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Registers a handler; it must be quick (it runs on the watch task) and must not block.
    pub(crate) fn on(&mut self, f: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers.push(Box::new(f));
    }

    fn dispatch(&self, change: &Change<'_, K>) {
        for h in &self.handlers {
            h(change);
        }
    }

    async fn run(mut self, cancel: CancellationToken) {
        let store = self.writer.as_reader();
        let stream = watcher(self.api.clone(), self.config.clone()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut before_relist: Option<HashMap<ObjectRef<K>, Arc<K>>> = None;
        loop {
            let ev = tokio::select! {
                () = cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            let ev = match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(resource = self.resource, error = %e, "watch failed; retrying");
                    continue;
                }
                Some(Ok(ev)) => ev,
            };
            match &ev {
                watcher::Event::Apply(o) => {
                    let old = store.get(&ObjectRef::from_obj(o));
                    self.writer.apply_watcher_event(&ev);
                    self.dispatch(&Change::Applied { old, new: o });
                }
                watcher::Event::Delete(o) => {
                    self.writer.apply_watcher_event(&ev);
                    self.dispatch(&Change::Deleted(o));
                }
                watcher::Event::Init => {
                    before_relist = Some(
                        store
                            .state()
                            .into_iter()
                            .map(|o| (ObjectRef::from_obj(o.as_ref()), o))
                            .collect(),
                    );
                    self.writer.apply_watcher_event(&ev);
                }
                watcher::Event::InitApply(_) => self.writer.apply_watcher_event(&ev),
                watcher::Event::InitDone => {
                    self.writer.apply_watcher_event(&ev);
                    let mut before = before_relist.take().unwrap_or_default();
                    for o in store.state() {
                        let old = before.remove(&ObjectRef::from_obj(o.as_ref()));
                        let unchanged = old.as_ref().is_some_and(|old| {
                            old.meta().resource_version == o.meta().resource_version
                        });
                        if !unchanged {
                            self.dispatch(&Change::Applied { old, new: &o });
                        }
                    }
                    for gone in before.values() {
                        self.dispatch(&Change::Deleted(gone));
                    }
                    tracing::debug!(resource = self.resource, "cache synced");
                }
            }
        }
    }
}

/// Waits until a cache has its first full list.
pub(crate) async fn synced<K>(
    store: &Store<K>,
    resource: &'static str,
) -> Result<(), ControlPlaneError>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .await
        .map_err(|_| ControlPlaneError::CacheNotSynced { resource })
}

/// The caches every controller shares.
pub(crate) struct Informers {
    pub(crate) pods: Informer<Pod>,
    pub(crate) nodes: Informer<Node>,
    pub(crate) leases: Informer<Lease>,
    pub(crate) replicasets: Informer<ReplicaSet>,
    pub(crate) deployments: Informer<Deployment>,
    pub(crate) daemonsets: Informer<DaemonSet>,
    pub(crate) services: Informer<Service>,
    pub(crate) endpoints: Informer<Endpoints>,
    pub(crate) namespaces: Informer<Namespace>,
}

impl Informers {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            pods: Informer::new(Api::all(client.clone()), "pods"),
            nodes: Informer::new(Api::all(client.clone()), "nodes"),
            leases: Informer::new(Api::namespaced(client.clone(), "kube-node-lease"), "leases"),
            replicasets: Informer::new(Api::all(client.clone()), "replicasets"),
            deployments: Informer::new(Api::all(client.clone()), "deployments"),
            daemonsets: Informer::new(Api::all(client.clone()), "daemonsets"),
            services: Informer::new(Api::all(client.clone()), "services"),
            endpoints: Informer::new(Api::all(client.clone()), "endpoints"),
            namespaces: Informer::new(Api::all(client.clone()), "namespaces"),
        }
    }

    /// Drives every watch until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let tasks: Vec<BoxFuture<'static, ()>> = vec![
            self.pods.run(cancel.clone()).boxed(),
            self.nodes.run(cancel.clone()).boxed(),
            self.leases.run(cancel.clone()).boxed(),
            self.replicasets.run(cancel.clone()).boxed(),
            self.deployments.run(cancel.clone()).boxed(),
            self.daemonsets.run(cancel.clone()).boxed(),
            self.services.run(cancel.clone()).boxed(),
            self.endpoints.run(cancel.clone()).boxed(),
            self.namespaces.run(cancel.clone()).boxed(),
        ];
        futures_util::future::join_all(tasks).await;
    }
}
