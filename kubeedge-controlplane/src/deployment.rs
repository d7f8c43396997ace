//! The Deployment controller: one ReplicaSet per pod template (named by its
//! `pod-template-hash`), RollingUpdate (maxSurge, maxUnavailable) and Recreate, revisions and
//! their history limit, and the status counts and conditions `kubectl rollout status` reads.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;

use super::events::Recorder;
use super::informer::Informers;
use super::pod;
use super::queue::{Key, Requeue, WorkQueue};
use super::reconcile::{Cache, Reconcile};
use super::ControlPlaneError;

mod rollout;
mod status;

const COMPONENT: &str = "deployment-controller";
/// The revision annotation on Deployments and their ReplicaSets.
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that ties a ReplicaSet and its pods to one pod template.
pub(crate) const HASH_LABEL: &str = "pod-template-hash";

/// FNV-1a over the template's JSON, spelled with upstream's safe alphabet.
pub(crate) fn template_hash<T: serde::Serialize>(t: &T) -> String {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Resolves an int-or-percent against `total`.
pub(crate) fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let s = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse().unwrap_or(0);
    };
    let scaled = pct * i64::from(total);
    let r = if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    };
    i32::try_from(r).unwrap_or(i32::MAX)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// The Deployment controller.
pub(crate) struct Controller {
    client: Client,
    deployments: Store<Deployment>,
    rs: Store<ReplicaSet>,
    queue: WorkQueue<Key>,
    recorder: Recorder,
}

fn owner_key(rs: &ReplicaSet) -> Option<Key> {
    let r = pod::controller_of(&rs.metadata)?;
    (r.kind == "Deployment")
        .then(|| Key::new(rs.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

impl Controller {
    pub(crate) fn new(client: &Client, inf: &mut Informers, recorder: Recorder) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            deployments: inf.deployments.store(),
            rs: inf.replicasets.store(),
            queue: WorkQueue::new(),
            recorder,
        });
        let q = this.queue.clone();
        inf.deployments.on(move |c| q.add(Key::of(c.object())));
        let q = this.queue.clone();
        inf.replicasets.on(move |c| {
            if let Some(k) = owner_key(c.object()) {
                q.add(k);
            }
        });
        this
    }
}

/// The settings of one rollout.
struct Plan {
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    recreate: bool,
}

impl Plan {
    fn of(d: &Deployment) -> Self {
        let spec = d.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.strategy.unwrap_or_default();
        let recreate = strategy.type_.as_deref() == Some("Recreate");
        let ru = strategy.rolling_update.unwrap_or_default();
        let mut max_surge = resolve(ru.max_surge.as_ref(), replicas, true, "25%");
        let mut max_unavailable = resolve(ru.max_unavailable.as_ref(), replicas, false, "25%");
        if recreate {
            max_surge = 0;
            max_unavailable = replicas;
        } else if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        max_unavailable = max_unavailable.min(replicas);
        Self {
            replicas,
            max_surge,
            max_unavailable,
            recreate,
        }
    }
}

impl Controller {
    fn api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }
}

impl Reconcile for Controller {
    const NAME: &'static str = COMPONENT;

    fn queue(&self) -> &WorkQueue<Key> {
        &self.queue
    }

    fn caches(&self) -> Vec<Cache> {
        vec![
            Cache::of(&self.deployments, "deployments"),
            Cache::of(&self.rs, "replicasets"),
        ]
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(d) = self.deployments.get(&key.object_ref()) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let mut all: Vec<Arc<ReplicaSet>> = self.rs.state_filter(|rs| {
            rs.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && pod::controlled_by(&rs.metadata, &uid)
                && rs.metadata.deletion_timestamp.is_none()
        });
        all.sort_by_key(|rs| revision(rs));
        let spec = d.spec.clone().unwrap_or_default();
        let plan = Plan::of(&d);
        let hash = template_hash(&spec.template);
        let new_rs = all
            .iter()
            .find(|rs| {
                rs.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(HASH_LABEL))
                    .map(String::as_str)
                    == Some(hash.as_str())
            })
            .cloned();
        let old: Vec<Arc<ReplicaSet>> = all
            .iter()
            .filter(|rs| {
                new_rs
                    .as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        let max_rev = all.iter().map(|rs| revision(rs)).max().unwrap_or(0);
        let paused = spec.paused == Some(true);
        if !paused {
            match &new_rs {
                None => {
                    let old_spec: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
                    let replicas = if plan.recreate {
                        for rs in &old {
                            self.scale(&d, rs, 0, &plan).await?;
                        }
                        if old
                            .iter()
                            .any(|rs| status_of(rs).0 > 0 || spec_replicas(rs) > 0)
                        {
                            // Recreate: the new pods wait until the old ones are gone.
                            return self.sync_status(&d, &all, None, &plan).await;
                        }
                        plan.replicas
                    } else {
                        let room = plan.replicas + plan.max_surge - old_spec;
                        room.clamp(0, plan.replicas)
                    };
                    self.create_rs(&d, &hash, replicas, max_rev + 1, &plan)
                        .await?;
                    return Ok(None);
                }
                Some(new) => {
                    if revision(new) < max_rev {
                        // A rollback to an older template: it becomes the newest revision.
                        self.set_revision(new, max_rev + 1).await?;
                    }
                    if plan.recreate {
                        self.recreate(&d, new, &old, &plan).await?;
                    } else {
                        self.rolling(&d, new, &old, &plan).await?;
                    }
                }
            }
        }
        if let Some(new) = &new_rs {
            let rev = revision(new).max(max_rev).to_string();
            let current = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned();
            if current.as_deref() != Some(rev.as_str()) {
                let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
                Api::<Deployment>::namespaced(self.client.clone(), &key.namespace)
                    .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| ControlPlaneError::api(format!("annotate {key}"), e))?;
            }
            self.cleanup(&d, new, &old).await?;
        }
        self.sync_status(&d, &all, new_rs.as_deref(), &plan).await
    }
}

#[cfg(test)]
mod tests;
