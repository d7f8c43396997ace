//! A deduplicating work queue of object keys with delayed re-adds and per-key failure backoff,
//! and the worker loop that drains it (client-go's workqueue).
//!
//! A key is held by at most one worker at a time; adding a key that is being processed marks
//! it dirty, and it is queued again when the worker is done with it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ControlPlaneError;

/// The namespace and name of an object (namespace empty for cluster-scoped ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Key {
    pub(crate) fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The reference that finds this object in a reflector store.
    pub(crate) fn object_ref<K>(&self) -> kube::runtime::reflector::ObjectRef<K>
    where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        kube::runtime::reflector::ObjectRef::new(&self.name).within(&self.namespace)
    }

    /// The key of a cached object.
    pub(crate) fn of<K: kube::Resource>(o: &K) -> Self {
        let m = o.meta();
        Self::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

struct State<T> {
    ready: VecDeque<T>,
    queued: HashSet<T>,
    processing: HashSet<T>,
    dirty: HashSet<T>,
    delayed: BTreeMap<(Instant, u64), T>,
    seq: u64,
    failures: HashMap<T, u32>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

/// A work queue; clones share it.
pub(crate) struct WorkQueue<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for WorkQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue").finish_non_exhaustive()
    }
}

impl<T: Clone + Eq + Hash> WorkQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    ready: VecDeque::new(),
                    queued: HashSet::new(),
                    processing: HashSet::new(),
                    dirty: HashSet::new(),
                    delayed: BTreeMap::new(),
                    seq: 0,
                    failures: HashMap::new(),
                }),
                notify: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves consistent sets behind; keep going.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item` now (no-op if it is already waiting).
    pub(crate) fn add(&self, item: T) {
        {
            let mut s = self.lock();
            if s.processing.contains(&item) {
                s.dirty.insert(item);
                return;
            }
            if !s.queued.insert(item.clone()) {
                return;
            }
            s.ready.push_back(item);
        }
        self.shared.notify.notify_waiters();
    }

    /// Queues `item` after `delay`.
    pub(crate) fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        {
            let mut s = self.lock();
            s.seq += 1;
            let seq = s.seq;
            s.delayed.insert((Instant::now() + delay, seq), item);
        }
        self.shared.notify.notify_waiters();
    }

    /// Moves due delayed items to the ready queue; returns the next deadline.
    fn promote(s: &mut State<T>) -> Option<Instant> {
        let now = Instant::now();
        while let Some(entry) = s.delayed.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let item = entry.remove();
            if s.processing.contains(&item) {
                s.dirty.insert(item);
            } else if s.queued.insert(item.clone()) {
                s.ready.push_back(item);
            }
        }
        None
    }

    /// Waits for the next item and marks it as being processed. Cancel-safe.
    pub(crate) async fn next(&self) -> T {
        loop {
            let notified = self.shared.notify.notified();
            futures_util::pin_mut!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut s = self.lock();
                let deadline = Self::promote(&mut s);
                if let Some(item) = s.ready.pop_front() {
                    s.queued.remove(&item);
                    s.processing.insert(item.clone());
                    return item;
                }
                deadline
            };
            match deadline {
                Some(d) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(d) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `item` done; it is queued again if it was added meanwhile.
    pub(crate) fn done(&self, item: &T) {
        let again = {
            let mut s = self.lock();
            s.processing.remove(item);
            if s.dirty.remove(item) && s.queued.insert(item.clone()) {
                s.ready.push_back(item.clone());
                true
            } else {
                false
            }
        };
        if again {
            self.shared.notify.notify_waiters();
        }
    }

    /// Records a failure of `item`; returns the backoff before retrying it.
    pub(crate) fn failed(&self, item: &T) -> Duration {
        let mut s = self.lock();
        let n = s.failures.entry(item.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = (*n).min(12);
        Duration::from_millis(10u64 << exp).min(Duration::from_secs(30))
    }

    /// Clears the failure count of `item`.
    pub(crate) fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }
}

/// What a reconcile asks for next.
pub(crate) type Requeue = Option<Duration>;

/// Runs `workers` loops that take keys from `queue` and reconcile them until `cancel` fires.
/// An error is logged and the key retried with backoff; `Some(d)` requeues after `d`.
pub(crate) async fn run_workers<T, F, Fut>(
    name: &'static str,
    queue: WorkQueue<T>,
    workers: usize,
    cancel: CancellationToken,
    reconcile: F,
) where
    T: Clone + Eq + Hash + fmt::Display + Send + 'static,
    F: Fn(T) -> Fut + Clone,
    Fut: Future<Output = Result<Requeue, ControlPlaneError>>,
{
    let loops = (0..workers.max(1)).map(|_| {
        let queue = queue.clone();
        let cancel = cancel.clone();
        let reconcile = reconcile.clone();
        async move {
            loop {
                let item = tokio::select! {
                    () = cancel.cancelled() => return,
                    item = queue.next() => item,
                };
                let res = tokio::select! {
                    () = cancel.cancelled() => return,
                    res = reconcile(item.clone()) => res,
                };
                queue.done(&item);
                match res {
                    Ok(again) => {
                        queue.forget(&item);
                        if let Some(d) = again {
                            queue.add_after(item, d);
                        }
                    }
                    Err(e) => {
                        let backoff = queue.failed(&item);
                        tracing::warn!(controller = name, object = %item, error = %e, ?backoff, "reconcile failed");
                        queue.add_after(item, backoff);
                    }
                }
            }
        }
    });
    futures_util::future::join_all(loops).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dedups_delays_and_requeues_dirty_items() {
        let q: WorkQueue<u32> = WorkQueue::new();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.next().await, 1);
        q.add(1); // while processing: dirty
        assert_eq!(q.next().await, 2);
        q.done(&1);
        q.done(&2);
        assert_eq!(q.next().await, 1);
        q.done(&1);
        q.add_after(3, Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(q.next().await, 3);
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert!(q.failed(&3) < q.failed(&3));
    }
}
