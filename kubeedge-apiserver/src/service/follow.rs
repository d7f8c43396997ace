//! What an API server keeps in memory from the store, kept current with writes made by
//! others: several API servers on one etcd see each other's RBAC changes (the authorizer's
//! snapshot) and CustomResourceDefinitions (the served resources), as kube-apiserver's
//! informers keep its own caches.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::RecvError;

use super::{policy::RBAC_GROUP, Inner};
use crate::registry;
use crate::store::{EventType, Scope, Store};

const CRDS: &str = "apiextensions.k8s.io/customresourcedefinitions";

/// Follows the store's changes for as long as the service lives.
pub(super) fn spawn<S: Store>(inner: &Arc<Inner<S>>) {
    let follow_crds = inner.config.resources.is_none();
    if !inner.config.authorization && !follow_crds {
        return;
    }
    let Ok(mut sub) = inner.store.subscribe(None) else {
        return;
    };
    let weak: Weak<Inner<S>> = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let ev = sub.live.recv().await;
            let Some(inner) = weak.upgrade() else { return };
            let ev = match ev {
                Ok(ev) => ev,
                // Missed changes: rebuild everything from the store.
                Err(RecvError::Lagged(_)) => {
                    inner.authz.stale();
                    if follow_crds {
                        reload_crds(&inner).await;
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let key = &ev.object.key;
            if key.resource.starts_with(RBAC_GROUP) {
                inner.authz.stale();
            } else if follow_crds && key.resource == CRDS {
                let def = match ev.kind {
                    EventType::Deleted => None,
                    _ => ev.object.value().ok().and_then(|v| registry::from_crd(&v)),
                };
                inner.registry.set_custom(&key.name, def);
            }
        }
    });
}

async fn reload_crds<S: Store>(inner: &Inner<S>) {
    let scope = Scope {
        resource: CRDS.into(),
        namespace: None,
    };
    let Ok(page) = inner.store.list(scope, None, None).await else {
        return;
    };
    for crd in page.items {
        if let Ok(v) = crd.value() {
            inner
                .registry
                .set_custom(&crd.key.name, registry::from_crd(&v));
        }
    }
}
