//! How a Deployment's ReplicaSets are created, scaled and retired: Recreate, RollingUpdate
//! (maxSurge, maxUnavailable), revisions and the history limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{
    spec_replicas, status_of, Controller, Plan, COMPONENT, DESIRED, HASH_LABEL, MAX_REPLICAS,
    REVISION,
};
use crate::events;
use crate::pod;
use crate::{api_code, ControlPlaneError};

impl Controller {
    pub(super) async fn scale(
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

    pub(super) async fn create_rs(
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

    pub(super) async fn set_revision(
        &self,
        rs: &ReplicaSet,
        rev: i64,
    ) -> Result<(), ControlPlaneError> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        self.api(&ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| ControlPlaneError::api(format!("set revision of {ns}/{name}"), e))
    }

    pub(super) async fn recreate(
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

    pub(super) async fn rolling(
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
        let scaled = scale_down(new, old, plan);
        for rs in old {
            if let Some(r) = scaled.get(rs.metadata.uid.as_deref().unwrap_or_default()) {
                self.scale(d, rs, *r, plan).await?;
            }
        }
        Ok(())
    }
}

/// How far each old ReplicaSet (by uid) may be scaled down now, as the deployment controller's
/// `reconcileOldReplicaSets` decides: never below `replicas - maxUnavailable` available pods,
/// first the old pods that are unavailable anyway, then available ones, oldest first.
fn scale_down(new: &ReplicaSet, old: &[Arc<ReplicaSet>], plan: &Plan) -> BTreeMap<String, i32> {
    let new_spec = spec_replicas(new);
    let all_spec = new_spec + old.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
    let min_available = plan.replicas - plan.max_unavailable;
    let new_unavailable = (new_spec - available(new)).max(0);
    let mut budget = all_spec - min_available - new_unavailable;
    if budget <= 0 {
        return BTreeMap::new();
    }
    // First the old pods that are not available anyway.
    let mut scaled: BTreeMap<String, i32> = BTreeMap::new();
    for rs in old {
        if budget <= 0 {
            break;
        }
        let cur = spec_replicas(rs);
        let unhealthy = (cur - available(rs)).max(0).min(budget);
        if unhealthy > 0 {
            scaled.insert(rs.metadata.uid.clone().unwrap_or_default(), cur - unhealthy);
            budget -= unhealthy;
        }
    }
    // Then available ones, oldest first, keeping min_available.
    let available_now: i32 = old.iter().map(|rs| available(rs)).sum::<i32>() + available(new);
    let mut down = (available_now - min_available).max(0).min(budget);
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
    scaled
}

/// The available pods of a ReplicaSet, never more than it asks for: right after a scale-down
/// the ReplicaSet's status still counts the pods being deleted, and counting them would let a
/// second scale-down take the rollout below `replicas - maxUnavailable`.
fn available(rs: &ReplicaSet) -> i32 {
    status_of(rs).2.min(spec_replicas(rs))
}

impl Controller {
    pub(super) async fn cleanup(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;

    fn rs(uid: &str, spec: i32, available: i32) -> Arc<ReplicaSet> {
        Arc::new(ReplicaSet {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: available.max(spec),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..ReplicaSetStatus::default()
            }),
        })
    }

    const PLAN: Plan = Plan {
        replicas: 4,
        max_surge: 1,
        max_unavailable: 1,
        recreate: false,
    };

    #[test]
    fn a_stale_status_after_a_scale_down_does_not_take_a_second_step() {
        // The old ReplicaSet was scaled 4 -> 3 and its status still counts 4 available; the new
        // one has 2 pods, 1 available. Real availability is 3 + 1 = 4, so one more may go.
        let plan = scale_down(&rs("new", 2, 1), &[rs("old", 3, 4)], &PLAN);
        assert_eq!(plan.get("old"), Some(&2));
    }

    #[test]
    fn nothing_goes_while_the_surge_is_unavailable() {
        let plan = scale_down(&rs("new", 1, 0), &[rs("old", 3, 4)], &PLAN);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn unavailable_old_pods_go_first() {
        // 4 old pods of which 2 are unavailable, 1 surge pod not yet available.
        let plan = scale_down(&rs("new", 1, 0), &[rs("old", 4, 2)], &PLAN);
        assert_eq!(plan.get("old"), Some(&3));
    }
}
