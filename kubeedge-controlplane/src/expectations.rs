//! Controller expectations: the pod creations and deletions a controller has asked for and not
//! yet seen in its cache. While some are outstanding it does not act on the (stale) cache, so
//! it never creates or deletes the same replica twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Pod;

use super::informer::Change;
use super::queue::Key;

/// Outstanding expectations older than this are dropped (a watch event was lost).
const EXPIRY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Expect {
    adds: i64,
    dels: HashSet<String>,
    at: Instant,
}

/// Expectations per controller object.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    inner: Mutex<HashMap<Key, Expect>>,
}

impl Expectations {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Expect>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry<'a>(m: &'a mut HashMap<Key, Expect>, key: &Key) -> &'a mut Expect {
        m.entry(key.clone()).or_insert_with(|| Expect {
            adds: 0,
            dels: HashSet::new(),
            at: Instant::now(),
        })
    }

    /// `true` when nothing is outstanding (or it expired).
    pub(crate) fn satisfied(&self, key: &Key) -> bool {
        let mut m = self.lock();
        match m.get(key) {
            None => true,
            Some(e) if (e.adds <= 0 && e.dels.is_empty()) || e.at.elapsed() > EXPIRY => {
                m.remove(key);
                true
            }
            Some(_) => false,
        }
    }

    /// `n` creations are about to be requested.
    pub(crate) fn expect_creations(&self, key: &Key, n: usize) {
        let mut m = self.lock();
        let e = Self::entry(&mut m, key);
        e.adds += i64::try_from(n).unwrap_or(i64::MAX);
        e.at = Instant::now();
    }

    /// One creation was seen in the cache, or its request failed.
    pub(crate) fn creation_observed(&self, key: &Key) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// The deletion of the pod with `uid` is about to be requested.
    pub(crate) fn expect_deletion(&self, key: &Key, uid: String) {
        let mut m = self.lock();
        let e = Self::entry(&mut m, key);
        e.dels.insert(uid);
        e.at = Instant::now();
    }

    /// The pod with `uid` was seen deleted (or marked for deletion), or the request failed.
    pub(crate) fn deletion_observed(&self, key: &Key, uid: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.dels.remove(uid);
        }
    }

    /// Accounts a change of a pod the object behind `key` controls: a new pod is a creation
    /// seen, a pod marked for deletion or gone a deletion seen.
    pub(crate) fn observe(&self, key: &Key, change: &Change<'_, Pod>) {
        let uid = change.object().metadata.uid.as_deref().unwrap_or_default();
        match change {
            Change::Applied { old: None, new } if new.metadata.deletion_timestamp.is_none() => {
                self.creation_observed(key);
            }
            Change::Applied { new, .. } if new.metadata.deletion_timestamp.is_some() => {
                self.deletion_observed(key, uid);
            }
            Change::Deleted(_) => self.deletion_observed(key, uid),
            Change::Applied { .. } => {}
        }
    }

    /// The controller object is gone.
    pub(crate) fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }
}
