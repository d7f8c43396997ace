//! The RBAC snapshot the authorizer decides from, and Kubernetes' default roles.
//!
//! The snapshot holds the four RBAC kinds. Every RBAC write through the service rebuilds it
//! before the write is answered, so a binding applies to the request right after it; a rebuild
//! also stores the aggregated ClusterRoles' rules (the aggregation controller's job).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::ApiError;
use crate::authz::bootstrap;
use crate::authz::rbac::{self, Policy};
use crate::error::StoreError;
use crate::store::{ObjectKey, Scope, Store, WriteOp};

pub(super) const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The RBAC snapshot and what makes it stale.
#[derive(Debug, Default)]
pub(super) struct Authz {
    /// Bumped by every RBAC write.
    generation: AtomicU64,
    /// The snapshot and the generation it was built at.
    snapshot: tokio::sync::RwLock<(u64, Arc<Policy>)>,
    /// One rebuild at a time.
    rebuild: tokio::sync::Mutex<()>,
}

impl Authz {
    /// Marks the snapshot stale after an RBAC write and rebuilds it now, which also stores
    /// the aggregated ClusterRoles' new rules. A failed rebuild is retried by the next request.
    pub(super) async fn changed<S: Store>(&self, store: &S) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.policy(store).await {
            tracing::debug!(error = %e.message, "rbac snapshot not rebuilt");
        }
    }

    /// Marks the snapshot stale (another API server changed RBAC); the next request rebuilds.
    pub(super) fn stale(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current snapshot, rebuilt from the store when an RBAC write made it stale.
    pub(super) async fn policy<S: Store>(&self, store: &S) -> Result<Arc<Policy>, ApiError> {
        let wanted = self.generation.load(Ordering::SeqCst) + 1;
        {
            let s = self.snapshot.read().await;
            if s.0 == wanted {
                return Ok(Arc::clone(&s.1));
            }
        }
        let _one = self.rebuild.lock().await;
        let wanted = self.generation.load(Ordering::SeqCst) + 1;
        {
            let s = self.snapshot.read().await;
            if s.0 == wanted {
                return Ok(Arc::clone(&s.1));
            }
        }
        let cluster_roles = load(store, "clusterroles").await?;
        let policy = Arc::new(Policy::new(
            &cluster_roles,
            &load(store, "roles").await?,
            &load(store, "clusterrolebindings").await?,
            &load(store, "rolebindings").await?,
        ));
        write_aggregated(store, &cluster_roles).await;
        *self.snapshot.write().await = (wanted, Arc::clone(&policy));
        Ok(policy)
    }
}

async fn load<S: Store>(store: &S, resource: &str) -> Result<Vec<Value>, ApiError> {
    let page = store
        .list(
            Scope {
                resource: format!("{RBAC_GROUP}/{resource}"),
                namespace: None,
            },
            None,
            None,
        )
        .await
        .map_err(super::store_internal)?;
    Ok(page.items.iter().filter_map(|s| s.value().ok()).collect())
}

/// Stores the computed rules of aggregated ClusterRoles whose stored rules differ (the
/// aggregation controller's job). A failed write is retried on the next rebuild.
async fn write_aggregated<S: Store>(store: &S, cluster_roles: &[Value]) {
    for (name, rules) in rbac::aggregate(cluster_roles) {
        let Some(stored) = cluster_roles
            .iter()
            .find(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(&name))
        else {
            continue;
        };
        let want: Vec<Value> = rules.iter().map(rbac::Rule::to_value).collect();
        let have: Vec<rbac::Rule> = stored
            .get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(rbac::Rule::from_value).collect())
            .unwrap_or_default();
        if have == rules {
            continue;
        }
        let mut updated = stored.clone();
        updated["rules"] = Value::Array(want);
        let rv = stored
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let key = ObjectKey::new(format!("{RBAC_GROUP}/clusterroles"), "", &name);
        if let Err(e) = store
            .write(WriteOp::Update {
                key,
                value: updated,
                expected_rv: rv,
            })
            .await
        {
            tracing::debug!(role = %name, error = %e, "aggregated cluster role not written");
        }
    }
}

/// Creates the default ClusterRoles and ClusterRoleBindings, and puts back changed ones whose
/// `autoupdate` annotation is not `"false"`.
pub(super) async fn bootstrap<S: Store>(store: &S) -> Result<(), StoreError> {
    let sets = [
        ("clusterroles", bootstrap::cluster_roles()),
        ("clusterrolebindings", bootstrap::cluster_role_bindings()),
    ];
    for (resource, objects) in sets {
        for mut obj in objects {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = ObjectKey::new(format!("{RBAC_GROUP}/{resource}"), "", &name);
            match store.get(key.clone()).await? {
                None => {
                    obj["metadata"]["uid"] = Value::String(uuid::Uuid::new_v4().to_string());
                    obj["metadata"]["creationTimestamp"] = Value::String(crate::time::now());
                    match store.write(WriteOp::Create { key, value: obj }).await {
                        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(stored) => {
                    let have = stored.value()?;
                    let keep = have
                        .pointer(
                            "/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate",
                        )
                        .and_then(Value::as_str)
                        == Some("false");
                    // An aggregated role's rules are computed, so only its selectors are put
                    // back.
                    let mut fields = vec!["rules", "aggregationRule", "roleRef", "subjects"];
                    if obj.get("aggregationRule").is_some() {
                        fields.retain(|f| *f != "rules");
                    }
                    let mut updated = have.clone();
                    for k in fields {
                        match (obj.get(k), updated.as_object_mut()) {
                            (Some(v), Some(m)) => {
                                m.insert(k.into(), v.clone());
                            }
                            (None, Some(m)) => {
                                m.remove(k);
                            }
                            _ => {}
                        }
                    }
                    if keep || updated == have {
                        continue;
                    }
                    store
                        .write(WriteOp::Update {
                            key,
                            value: updated,
                            expected_rv: Some(stored.rv),
                        })
                        .await?;
                }
            }
        }
    }
    Ok(())
}
