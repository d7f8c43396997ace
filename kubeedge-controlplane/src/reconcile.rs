//! The reconcile loop the workload controllers plug into (the shape of kube-runtime's
//! `Controller` and its `reconcile` function, over client-go's work queue).
//!
//! A controller registers its informer handlers when it is built (they add keys to its queue)
//! and implements [`Reconcile`]: its queue, the caches it reads, and `reconcile(key)`. [`run`]
//! waits for those caches to hold their first full list, then drains the queue with
//! `workers` loops: a key is held by one worker at a time, a failure is retried with the
//! queue's per-key backoff, and `Ok(Some(d))` requeues the key after `d`.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use kube::runtime::reflector::Store;
use kube::Resource;
use tokio_util::sync::CancellationToken;

use super::informer::synced;
use super::queue::{run_workers, Key, Requeue, WorkQueue};
use super::ControlPlaneError;

/// A watch cache a controller waits for before it reconciles anything.
pub(crate) struct Cache(BoxFuture<'static, Result<(), ControlPlaneError>>);

impl Cache {
    /// The cache behind `store`, named `resource` in the error when it never syncs.
    pub(crate) fn of<K>(store: &Store<K>, resource: &'static str) -> Self
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let store = store.clone();
        Self(async move { synced(&store, resource).await }.boxed())
    }
}

/// A controller driven by [`run`]: the state it reconciles from and the one step it takes.
pub(crate) trait Reconcile: Send + Sync + 'static {
    /// The controller's name, in logs (and, by convention, the component of its events).
    const NAME: &'static str;

    /// The queue its informer handlers fill.
    fn queue(&self) -> &WorkQueue<Key>;

    /// The caches to wait for before the first reconcile.
    fn caches(&self) -> Vec<Cache>;

    /// Brings the object behind `key` towards its spec. `Ok(Some(d))` asks to look again
    /// after `d`; an error is logged and the key retried with backoff.
    fn reconcile(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Requeue, ControlPlaneError>> + Send;
}

/// Runs `controller` with `workers` reconcile loops until `cancel` fires.
///
/// Fails only when one of its caches is dropped before it synced (the control plane is
/// shutting down).
pub(crate) async fn run<R: Reconcile>(
    controller: Arc<R>,
    workers: usize,
    cancel: CancellationToken,
) -> Result<(), ControlPlaneError> {
    for cache in controller.caches() {
        cache.0.await?;
    }
    let queue = controller.queue().clone();
    run_workers(R::NAME, queue, workers, cancel, move |key: Key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(&key).await }
    })
    .await;
    Ok(())
}
