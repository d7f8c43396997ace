//! The node lifecycle controller.
//!
//! A node is healthy while its Lease (`kube-node-lease/<node>`) or its Ready condition's
//! heartbeat keeps changing. When neither changed for the grace period, its conditions go
//! `Unknown` (`NodeStatusUnknown`). Taints follow the Ready condition: `unreachable` for
//! Unknown, `not-ready` for False, `unschedulable` for a cordoned node.
//!
//! Edge nodes (see [`ControlPlaneConfig::edge_node_labels`]) get only the NoSchedule taints:
//! their pods keep running at the edge while it is offline (edge autonomy), so they are neither
//! evicted nor marked not ready. Cloud nodes also get the NoExecute taints; their pods are
//! marked not ready and evicted once the taint outlives their toleration, or
//! [`ControlPlaneConfig::pod_eviction_timeout`] for pods that carry none.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{self, Recorder};
use super::informer::{synced, Informers};
use super::{api_code, matching, pod, ControlPlaneConfig, ControlPlaneError};

const COMPONENT: &str = "node-controller";
/// Taint of a node whose Ready condition is False.
pub(crate) const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown.
pub(crate) const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug)]
struct Health {
    probe: Instant,
    lease: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    pods_marked: bool,
}

/// The node lifecycle controller.
pub(crate) struct Controller {
    client: Client,
    config: ControlPlaneConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    recorder: Recorder,
    health: HashMap<String, Health>,
}

fn ready_condition(n: &Node) -> Option<&NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn taints(n: &Node) -> Vec<Taint> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// When a pod on a node with these NoExecute taints is due for eviction: `None` = never.
pub(crate) fn eviction_time(
    pod: &Pod,
    taints: &[Taint],
    default_toleration: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut due: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let matching: Vec<_> = tols
            .iter()
            .filter(|t| matching::tolerates(t, taint))
            .collect();
        let seconds = if matching.is_empty() {
            if taint.key == TAINT_NOT_READY || taint.key == TAINT_UNREACHABLE {
                // Upstream's admission gives every pod this toleration.
                Some(i64::try_from(default_toleration.as_secs()).unwrap_or(i64::MAX))
            } else {
                Some(0)
            }
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            matching.iter().filter_map(|t| t.toleration_seconds).min()
        };
        let Some(secs) = seconds else { continue };
        let at = added
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs.max(0)))
            .unwrap_or(added);
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    due
}

impl Controller {
    pub(crate) fn new(
        client: &Client,
        config: &ControlPlaneConfig,
        inf: &mut Informers,
        recorder: Recorder,
    ) -> Self {
        Self {
            client: client.clone(),
            config: config.clone(),
            nodes: inf.nodes.store(),
            leases: inf.leases.store(),
            pods: inf.pods.store(),
            recorder,
            health: HashMap::new(),
        }
    }

    /// Runs until `cancel` fires.
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> Result<(), ControlPlaneError> {
        synced(&self.nodes, "nodes").await?;
        synced(&self.leases, "leases").await?;
        synced(&self.pods, "pods").await?;
        let mut tick = tokio::time::interval(self.config.node_monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let pass = self.monitor();
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                res = pass => {
                    if let Err(e) = res {
                        tracing::warn!(error = %e, "node monitor pass failed");
                    }
                }
            }
        }
    }

    fn is_edge(&self, n: &Node) -> bool {
        matching::has_any_label(n, &self.config.edge_node_labels)
    }

    async fn monitor(&mut self) -> Result<(), ControlPlaneError> {
        let now = Instant::now();
        let nodes = self.nodes.state();
        self.health.retain(|name, _| {
            nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(name.as_str()))
        });
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = self
                .leases
                .get(&ObjectRef::new(&name).within("kube-node-lease"))
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            let heartbeat =
                ready_condition(&node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
            let h = self.health.entry(name.clone()).or_insert(Health {
                probe: now,
                lease,
                heartbeat,
                pods_marked: false,
            });
            if h.lease != lease || h.heartbeat != heartbeat {
                h.lease = lease;
                h.heartbeat = heartbeat;
                h.probe = now;
            }
            let stale = now.duration_since(h.probe) > self.config.node_monitor_grace_period;
            let mut node = (*node).clone();
            let reported = ready_condition(&node).map(|c| c.status.as_str());
            if stale && reported != Some("Unknown") {
                match self.mark_unknown(&node).await {
                    Ok(Some(n)) => node = n,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "cannot mark node unknown");
                        continue;
                    }
                }
            }
            let edge = self.is_edge(&node);
            if let Err(e) = self.sync_taints(&node, edge).await {
                tracing::debug!(node = %name, error = %e, "taints not updated");
            }
            let ready = matching::node_ready_status(&node) == "True";
            let marked = self.health.get(&name).is_some_and(|h| h.pods_marked);
            if ready {
                if let Some(h) = self.health.get_mut(&name) {
                    h.pods_marked = false;
                }
            } else if !edge && !marked {
                self.mark_pods_not_ready(&name).await;
                if let Some(h) = self.health.get_mut(&name) {
                    h.pods_marked = true;
                }
            }
            if !edge {
                self.evict(&node).await;
            }
        }
        Ok(())
    }

    /// Sets every condition to Unknown; returns the updated node (`None` on a conflict).
    async fn mark_unknown(&self, node: &Node) -> Result<Option<Node>, ControlPlaneError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let mut n = node.clone();
        let status = n.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        if !conds.iter().any(|c| c.type_ == "Ready") {
            conds.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_transition_time: Some(now.clone()),
                last_heartbeat_time: None,
            });
        }
        for c in conds.iter_mut() {
            if c.status != "Unknown" {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
            }
        }
        let api: Api<Node> = Api::all(self.client.clone());
        match api.replace_status(&name, &PostParams::default(), &n).await {
            Ok(updated) => {
                tracing::info!(node = %name, edge = self.is_edge(node), "node stopped reporting: Ready=Unknown");
                self.recorder
                    .publish(
                        COMPONENT,
                        events::reference(node),
                        events::NORMAL,
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
                Ok(Some(updated))
            }
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(None),
            Err(e) => Err(ControlPlaneError::api(
                format!("mark node {name} unknown"),
                e,
            )),
        }
    }

    async fn sync_taints(&self, node: &Node, edge: bool) -> Result<(), ControlPlaneError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut wanted: Vec<(&str, &str)> = Vec::new();
        // A node that never reported gets its taint once the grace period made it Unknown.
        let key = match ready_condition(node).map(|c| c.status.as_str()) {
            None | Some("True") => None,
            Some("False") => Some(TAINT_NOT_READY),
            Some(_) => Some(TAINT_UNREACHABLE),
        };
        if let Some(k) = key {
            wanted.push((k, "NoSchedule"));
            if !edge {
                wanted.push((k, "NoExecute"));
            }
        }
        if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            wanted.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
        }
        let managed = [TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE];
        let current = taints(node);
        let mut next: Vec<Taint> = current
            .iter()
            .filter(|t| {
                !managed.contains(&t.key.as_str())
                    || wanted.contains(&(t.key.as_str(), t.effect.as_str()))
            })
            .cloned()
            .collect();
        for (k, effect) in &wanted {
            if !next.iter().any(|t| t.key == *k && t.effect == *effect) {
                next.push(Taint {
                    key: (*k).into(),
                    effect: (*effect).into(),
                    value: None,
                    time_added: (*effect == "NoExecute").then(|| Time(Timestamp::now())),
                });
            }
        }
        if next == current {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": next},
        });
        Api::<Node>::all(self.client.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| ControlPlaneError::api(format!("taint node {name}"), e))
    }

    async fn mark_pods_not_ready(&self, node: &str) {
        let pods = self
            .pods
            .state_filter(|p| pod::node_name(p) == Some(node) && pod::is_ready(p));
        let now = Time(Timestamp::now());
        for p in pods {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "NodeNotReady"}]}});
            if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "cannot mark pod not ready");
            }
        }
    }

    async fn evict(&self, node: &Node) {
        let t: Vec<Taint> = taints(node)
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if t.is_empty() {
            return;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        let pods = self
            .pods
            .state_filter(|p| pod::node_name(p) == Some(name.as_str()) && pod::is_active(p));
        for p in pods {
            let Some(at) = eviction_time(&p, &t, self.config.pod_eviction_timeout, now) else {
                continue;
            };
            if at > now {
                continue;
            }
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let pname = p.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<Pod>::namespaced(self.client.clone(), &ns)
                .delete(&pname, &dp)
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %pname, node = %name, "evicted from a tainted node");
                    self.recorder
                        .publish(
                            "taint-eviction-controller",
                            events::reference(p.as_ref()),
                            events::NORMAL,
                            "TaintManagerEviction",
                            format!("Marking for deletion Pod {ns}/{pname}"),
                        )
                        .await;
                }
                Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                Err(e) => tracing::warn!(pod = %pname, error = %e, "eviction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_follows_tolerations() {
        let now = Timestamp::now();
        let taint = Taint {
            key: TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(now)),
        };
        let pod = |tols: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tols}}),
            )
            .expect("pod")
        };
        let five = Duration::from_secs(5);
        let plain =
            eviction_time(&pod(json!([])), std::slice::from_ref(&taint), five, now).expect("due");
        assert_eq!(plain.as_second() - now.as_second(), 5);
        let forever =
            pod(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]));
        assert!(eviction_time(&forever, std::slice::from_ref(&taint), five, now).is_none());
        let short = pod(
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]),
        );
        let at = eviction_time(&short, std::slice::from_ref(&taint), five, now).expect("due");
        assert_eq!(at.as_second() - now.as_second(), 1);
        let other = Taint {
            key: "dedicated".into(),
            ..taint
        };
        let at = eviction_time(&pod(json!([])), &[other], five, now).expect("due");
        assert_eq!(at, now);
    }
}
