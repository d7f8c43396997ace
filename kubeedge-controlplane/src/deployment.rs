//! The Deployment controller: one ReplicaSet per pod template (named by its
//! `pod-template-hash`), RollingUpdate (maxSurge, maxUnavailable) and Recreate, revisions and
//! their history limit, and the status counts and conditions `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::events::{self, Recorder};
use super::informer::{synced, Informers};
use super::pod;
use super::queue::{run_workers, Key, Requeue, WorkQueue};
use super::{api_code, ControlPlaneConfig, ControlPlaneError};

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

struct Inner {
    client: Client,
    deployments: Store<Deployment>,
    rs: Store<ReplicaSet>,
    queue: WorkQueue<Key>,
    recorder: Recorder,
    workers: usize,
}

/// The Deployment controller.
pub(crate) struct Controller {
    inner: Arc<Inner>,
}

fn owner_key(rs: &ReplicaSet) -> Option<Key> {
    let r = pod::controller_of(&rs.metadata)?;
    (r.kind == "Deployment")
        .then(|| Key::new(rs.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

impl Controller {
    pub(crate) fn new(
        client: &Client,
        config: &ControlPlaneConfig,
        inf: &mut Informers,
        recorder: Recorder,
    ) -> Self {
        let inner = Arc::new(Inner {
            client: client.clone(),
            deployments: inf.deployments.store(),
            rs: inf.replicasets.store(),
            queue: WorkQueue::new(),
            recorder,
            workers: config.workers,
        });
        let q = inner.queue.clone();
        inf.deployments.on(move |c| q.add(Key::of(c.object())));
        let q = inner.queue.clone();
        inf.replicasets.on(move |c| {
            if let Some(k) = owner_key(c.object()) {
                q.add(k);
            }
        });
        Self { inner }
    }

    /// Runs until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) -> Result<(), ControlPlaneError> {
        synced(&self.inner.deployments, "deployments").await?;
        synced(&self.inner.rs, "replicasets").await?;
        let inner = self.inner;
        let workers = inner.workers;
        run_workers(
            COMPONENT,
            inner.queue.clone(),
            workers,
            cancel,
            move |key: Key| {
                let inner = Arc::clone(&inner);
                async move { inner.reconcile(&key).await }
            },
        )
        .await;
        Ok(())
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

impl Inner {
    fn api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn scale(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        replicas: i32,
        plan: &Plan,
    ) -> Result<bool, ControlPlaneError> {
        if spec_replicas(rs) == replicas {
            return Ok(false);
        }
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {"annotations": {
                DESIRED: plan.replicas.to_string(),
                MAX_REPLICAS: (plan.replicas + plan.max_surge).to_string(),
            }},
            "spec": {"replicas": replicas},
        });
        match self
            .api(&ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(404) => return Ok(false),
            Err(e) => return Err(ControlPlaneError::api(format!("scale {ns}/{name}"), e)),
        }
        let verb = if replicas > spec_replicas(rs) {
            "up"
        } else {
            "down"
        };
        self.recorder
            .publish(
                COMPONENT,
                events::reference(d),
                events::NORMAL,
                "ScalingReplicaSet",
                format!(
                    "Scaled {verb} replica set {name} from {} to {replicas}",
                    spec_replicas(rs)
                ),
            )
            .await;
        Ok(true)
    }

    async fn create_rs(
        &self,
        d: &Deployment,
        hash: &str,
        replicas: i32,
        rev: i64,
        plan: &Plan,
    ) -> Result<(), ControlPlaneError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let dname = d.metadata.name.clone().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        let mut template: PodTemplateSpec = spec.template.clone();
        let mut tmeta = template.metadata.take().unwrap_or_default();
        let mut labels = tmeta.labels.take().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.into());
        tmeta.labels = Some(labels.clone());
        template.metadata = Some(tmeta);
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.into());
        let mut annotations: BTreeMap<String, String> = d
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "kubectl.kubernetes.io/last-applied-configuration")
            .collect();
        annotations.insert(REVISION.into(), rev.to_string());
        annotations.insert(DESIRED.into(), plan.replicas.to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            (plan.replicas + plan.max_surge).to_string(),
        );
        let name = format!("{dname}-{hash}");
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![pod::owner_ref(d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.api(&ns).create(&PostParams::default(), &rs).await {
            Ok(_) => {
                self.recorder
                    .publish(
                        COMPONENT,
                        events::reference(d),
                        events::NORMAL,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {replicas}"),
                    )
                    .await;
                Ok(())
            }
            // Created already; the cache has not caught up.
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(ControlPlaneError::api(format!("create {ns}/{name}"), e)),
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(d) = self
            .deployments
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
        else {
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

    async fn set_revision(&self, rs: &ReplicaSet, rev: i64) -> Result<(), ControlPlaneError> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        self.api(&ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| ControlPlaneError::api(format!("set revision of {ns}/{name}"), e))
    }

    async fn recreate(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
        old: &[Arc<ReplicaSet>],
        plan: &Plan,
    ) -> Result<(), ControlPlaneError> {
        let mut waiting = false;
        for rs in old {
            self.scale(d, rs, 0, plan).await?;
            waiting |= status_of(rs).0 > 0 || spec_replicas(rs) > 0;
        }
        if !waiting {
            self.scale(d, new, plan.replicas, plan).await?;
        }
        Ok(())
    }

    async fn rolling(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
        old: &[Arc<ReplicaSet>],
        plan: &Plan,
    ) -> Result<(), ControlPlaneError> {
        let new_spec = spec_replicas(new);
        let old_spec: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
        let all_spec = new_spec + old_spec;
        // Scale the new ReplicaSet up within maxSurge (or down to the target).
        let target = if new_spec > plan.replicas {
            plan.replicas
        } else {
            let max_total = plan.replicas + plan.max_surge;
            if all_spec >= max_total {
                new_spec
            } else {
                new_spec + (max_total - all_spec).min(plan.replicas - new_spec)
            }
        };
        if self.scale(d, new, target, plan).await? {
            return Ok(());
        }
        if old_spec == 0 {
            return Ok(());
        }
        // Scale old ReplicaSets down while at least replicas - maxUnavailable stay available.
        let min_available = plan.replicas - plan.max_unavailable;
        let new_unavailable = (new_spec - status_of(new).2).max(0);
        let mut budget = all_spec - min_available - new_unavailable;
        if budget <= 0 {
            return Ok(());
        }
        // First the old pods that are not available anyway.
        let mut scaled: BTreeMap<String, i32> = BTreeMap::new();
        for rs in old {
            if budget <= 0 {
                break;
            }
            let cur = spec_replicas(rs);
            let unhealthy = (cur - status_of(rs).2).max(0).min(budget);
            if unhealthy > 0 {
                scaled.insert(rs.metadata.uid.clone().unwrap_or_default(), cur - unhealthy);
                budget -= unhealthy;
            }
        }
        // Then available ones, oldest first, keeping min_available.
        let available: i32 = old.iter().map(|rs| status_of(rs).2).sum::<i32>() + status_of(new).2;
        let mut down = (available - min_available).max(0);
        for rs in old {
            if down <= 0 {
                break;
            }
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let cur = scaled
                .get(&uid)
                .copied()
                .unwrap_or_else(|| spec_replicas(rs));
            let step = cur.min(down);
            if step > 0 {
                scaled.insert(uid, cur - step);
                down -= step;
            }
        }
        for rs in old {
            if let Some(r) = scaled.get(rs.metadata.uid.as_deref().unwrap_or_default()) {
                self.scale(d, rs, *r, plan).await?;
            }
        }
        Ok(())
    }

    async fn cleanup(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
        old: &[Arc<ReplicaSet>],
    ) -> Result<(), ControlPlaneError> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0);
        let done = spec_replicas(new) == d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            && old.iter().all(|rs| spec_replicas(rs) == 0);
        if !done {
            return Ok(());
        }
        let idle: Vec<&Arc<ReplicaSet>> = old
            .iter()
            .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
            .collect();
        let excess = idle
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for rs in idle.into_iter().take(excess) {
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            let name = rs.metadata.name.clone().unwrap_or_default();
            match self
                .api(&ns)
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => tracing::debug!(replicaset = %name, "old revision removed"),
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(ControlPlaneError::api(format!("delete {ns}/{name}"), e)),
            }
        }
        Ok(())
    }

    async fn sync_status(
        &self,
        d: &Deployment,
        all: &[Arc<ReplicaSet>],
        new: Option<&ReplicaSet>,
        plan: &Plan,
    ) -> Result<Requeue, ControlPlaneError> {
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
        let replicas = sum(&|rs| status_of(rs).0);
        let ready = sum(&|rs| status_of(rs).1);
        let available = sum(&|rs| status_of(rs).2);
        let total_spec = sum(&spec_replicas);
        let updated = new.map_or(0, |n| status_of(n).0);
        let current = d.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let mut conditions: Vec<DeploymentCondition> =
            current.conditions.clone().unwrap_or_default();
        let mut set = |type_: &str, status: &str, reason: &str, message: String| match conditions
            .iter_mut()
            .find(|c| c.type_ == type_)
        {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                if c.status != status
                    || c.reason.as_deref() != Some(reason)
                    || c.message.as_deref() != Some(message.as_str())
                {
                    c.last_update_time = Some(now.clone());
                }
                c.status = status.into();
                c.reason = Some(reason.into());
                c.message = Some(message);
            }
            None => conditions.push(DeploymentCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(now.clone()),
                last_update_time: Some(now.clone()),
            }),
        };
        if available >= plan.replicas - plan.max_unavailable {
            set(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            );
        } else {
            set(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            );
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let new_name = new
            .and_then(|n| n.metadata.name.clone())
            .unwrap_or_default();
        if paused {
            set(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            );
        } else if new.is_some()
            && updated == plan.replicas
            && replicas == plan.replicas
            && new.is_some_and(|n| status_of(n).2 == plan.replicas)
        {
            set(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            );
        } else if new.is_some() {
            set(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            );
        }
        // Upstream lists Available first.
        conditions.sort_by_key(|c| if c.type_ == "Available" { 0 } else { 1 });
        let mut status: DeploymentStatus = current.clone();
        status.observed_generation = d.metadata.generation;
        status.replicas = Some(replicas);
        status.updated_replicas = Some(updated);
        status.ready_replicas = Some(ready);
        status.available_replicas = Some(available);
        status.unavailable_replicas = Some((total_spec - available).max(0));
        status.conditions = Some(conditions);
        if status == current {
            return Ok(None);
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = json!({"status": status});
        match Api::<Deployment>::namespaced(self.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if api_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(ControlPlaneError::api(
                format!("update status of {ns}/{name}"),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_upstream() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&pct), 2, true, "0"), 1);
        assert_eq!(resolve(Some(&pct), 2, false, "0"), 0);
        assert_eq!(resolve(Some(&pct), 4, false, "0"), 1);
        assert_eq!(resolve(Some(&IntOrString::Int(3)), 10, true, "0"), 3);
        assert_eq!(resolve(None, 10, true, "25%"), 3);
    }

    #[test]
    fn hash_uses_the_safe_alphabet_and_is_stable() {
        let a = template_hash(&json!({"spec": {"containers": [{"image": "nginx:1.25"}]}}));
        let b = template_hash(&json!({"spec": {"containers": [{"image": "nginx:1.26"}]}}));
        assert_ne!(a, b);
        assert_eq!(
            a,
            template_hash(&json!({"spec": {"containers": [{"image": "nginx:1.25"}]}}))
        );
        assert!(a
            .bytes()
            .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
    }
}
