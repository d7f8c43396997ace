//! The Deployment's status: replica counts and the `Progressing`/`Available` conditions
//! `kubectl rollout status` reads.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use super::{spec_replicas, status_of, Controller, Plan};
use crate::queue::Requeue;
use crate::{api_code, ControlPlaneError};

impl Controller {
    pub(super) async fn sync_status(
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
