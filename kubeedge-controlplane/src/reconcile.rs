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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::reflector::store::Writer;
    use tokio::sync::mpsc;

    use super::*;

    /// Fails its first reconcile of a key, then succeeds; reports every call.
    struct Flaky {
        queue: WorkQueue<Key>,
        calls: mpsc::UnboundedSender<(Key, bool)>,
        failed: std::sync::Mutex<bool>,
        caches: fn() -> Vec<Cache>,
    }

    impl Reconcile for Flaky {
        const NAME: &'static str = "flaky";

        fn queue(&self) -> &WorkQueue<Key> {
            &self.queue
        }

        fn caches(&self) -> Vec<Cache> {
            (self.caches)()
        }

        async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
            let fail = !std::mem::replace(
                &mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()),
                true,
            );
            let _ = self.calls.send((key.clone(), fail));
            if fail {
                Err(ControlPlaneError::Invalid {
                    what: "first".into(),
                })
            } else {
                Ok(None)
            }
        }
    }

    fn flaky(caches: fn() -> Vec<Cache>) -> (Arc<Flaky>, mpsc::UnboundedReceiver<(Key, bool)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = Arc::new(Flaky {
            queue: WorkQueue::new(),
            calls: tx,
            failed: std::sync::Mutex::new(false),
            caches,
        });
        (r, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_key_is_retried_with_backoff() {
        let (r, mut calls) = flaky(Vec::new);
        let key = Key::new("ns", "a");
        r.queue().add(key.clone());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(Arc::clone(&r), 2, cancel.clone()));
        let deadline = Duration::from_secs(60);
        let first = tokio::time::timeout(deadline, calls.recv()).await.unwrap();
        assert_eq!(first, Some((key.clone(), true)));
        let second = tokio::time::timeout(deadline, calls.recv()).await.unwrap();
        assert_eq!(second, Some((key, false)));
        cancel.cancel();
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_cache_that_never_syncs_stops_the_controller() {
        let (r, _calls) = flaky(|| {
            let writer: Writer<Pod> = Writer::default();
            vec![Cache::of(&writer.as_reader(), "pods")]
        });
        let res = run(r, 1, CancellationToken::new()).await;
        assert!(matches!(
            res,
            Err(ControlPlaneError::CacheNotSynced { resource: "pods" })
        ));
    }
}
