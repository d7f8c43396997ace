//! The DaemonSet controller: one pod on every node that matches the template's node selector,
//! required node affinity and taints (with the tolerations upstream adds to daemon pods), placed
//! with `spec.nodeName`. RollingUpdate replaces old pods at most maxUnavailable at a time;
//! OnDelete waits for the user. Revisions are a hash label on the pods.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;

use super::deployment::{resolve, template_hash};
use super::events::{self, Recorder};
use super::expectations::Expectations;
use super::informer::{Change, Informers};
use super::queue::{Key, Requeue, WorkQueue};
use super::reconcile::{Cache, Reconcile};
use super::replicaset::pod_from_template;
use super::{api_code, matching, pod, ControlPlaneError};

const COMPONENT: &str = "daemonset-controller";
/// The label with the template revision of a daemon pod.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The tolerations upstream adds to every daemon pod.
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
        t("node.kubernetes.io/not-ready", "NoSchedule"),
        t("node.kubernetes.io/unreachable", "NoSchedule"),
    ]
}

/// The DaemonSet controller.
pub(crate) struct Controller {
    client: Client,
    ds: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    queue: WorkQueue<Key>,
    expectations: Expectations,
    recorder: Recorder,
}

fn owner_key(p: &Pod) -> Option<Key> {
    let r = pod::controller_of(&p.metadata)?;
    (r.kind == "DaemonSet")
        .then(|| Key::new(p.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

impl Controller {
    pub(crate) fn new(client: &Client, inf: &mut Informers, recorder: Recorder) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            ds: inf.daemonsets.store(),
            pods: inf.pods.store(),
            nodes: inf.nodes.store(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            recorder,
        });
        let q = this.queue.clone();
        inf.daemonsets.on(move |c| q.add(Key::of(c.object())));
        let i = Arc::clone(&this);
        inf.pods.on(move |c| {
            let p = c.object();
            if let Some(k) = owner_key(p) {
                i.expectations.observe(&k, c);
                i.queue.add(k);
            }
        });
        let i = Arc::clone(&this);
        inf.nodes.on(move |c| {
            let relevant = |n: &Node| {
                (
                    n.metadata.labels.clone(),
                    n.spec.as_ref().and_then(|s| s.taints.clone()),
                )
            };
            let changed = match c {
                Change::Applied {
                    old: Some(old),
                    new,
                } => relevant(old) != relevant(new),
                _ => true,
            };
            if changed {
                for ds in i.ds.state() {
                    i.queue.add(Key::of(ds.as_ref()));
                }
            }
        });
        this
    }
}

/// `true` when a daemon pod of this template belongs on the node.
fn should_run(template_spec: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> bool {
    if !matching::node_matches(template_spec, node) {
        return false;
    }
    let mut tols = template_spec.tolerations.clone().unwrap_or_default();
    tols.extend(daemon_tolerations());
    matching::untolerated_taint(node, Some(&tols)).is_none()
}

impl Reconcile for Controller {
    const NAME: &'static str = COMPONENT;

    fn queue(&self) -> &WorkQueue<Key> {
        &self.queue
    }

    fn caches(&self) -> Vec<Cache> {
        vec![
            Cache::of(&self.ds, "daemonsets"),
            Cache::of(&self.pods, "pods"),
            Cache::of(&self.nodes, "nodes"),
        ]
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(ds) = self.ds.get(&key.object_ref()) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let spec = ds.spec.clone().unwrap_or_default();
        let template = spec.template.clone();
        let tspec = template.spec.clone().unwrap_or_default();
        let hash = template_hash(&template);
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let nodes = self.nodes.state();
        let pods: Vec<Arc<Pod>> = self.pods.state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && pod::controlled_by(&p.metadata, &uid)
                && pod::is_active(p)
        });
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in &pods {
            by_node
                .entry(pod::node_name(p).unwrap_or_default().to_owned())
                .or_default()
                .push(Arc::clone(p));
        }
        let revision_of = |p: &Pod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .cloned()
                .unwrap_or_default()
        };
        let now = Timestamp::now();
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let mut old_pods: Vec<Arc<Pod>> = Vec::new();
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut updated, mut available) = (0, 0, 0);
        for n in &nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let on_node = by_node.remove(&name).unwrap_or_default();
            if should_run(&tspec, n) {
                desired += 1;
                match on_node.split_first() {
                    None => create_on.push(name),
                    Some((keep, extra)) => {
                        current += 1;
                        delete.extend(extra.iter().cloned());
                        ready += i32::from(pod::is_ready(keep));
                        available += i32::from(pod::is_available(keep, min_ready, now));
                        if revision_of(keep) == hash {
                            updated += 1;
                        } else {
                            old_pods.push(Arc::clone(keep));
                        }
                    }
                }
            } else if !on_node.is_empty() {
                misscheduled += 1;
                delete.extend(on_node);
            }
        }
        // Pods on nodes that no longer exist (or never bound).
        for (_, rest) in by_node {
            delete.extend(rest);
        }
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        if rolling && !old_pods.is_empty() {
            let max_unavailable = resolve(
                spec.update_strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.as_ref()),
                desired,
                true,
                "1",
            )
            .max(1);
            let unavailable = desired - available;
            // Old pods that are unavailable anyway go first, then as many as the budget allows.
            old_pods.sort_by_key(|p| pod::is_available(p, min_ready, now));
            let mut budget = max_unavailable - unavailable;
            for p in old_pods {
                if !pod::is_available(&p, min_ready, now) {
                    delete.push(p);
                } else if budget > 0 {
                    budget -= 1;
                    delete.push(p);
                }
            }
        }
        if self.expectations.satisfied(key) && ds.metadata.deletion_timestamp.is_none() {
            self.create_pods(key, &ds, &hash, &create_on).await?;
            self.delete_pods(key, &ds, &delete).await?;
        }
        let current_status = ds.status.clone().unwrap_or_default();
        let mut status: DaemonSetStatus = current_status.clone();
        status.desired_number_scheduled = desired;
        status.current_number_scheduled = current;
        status.number_misscheduled = misscheduled;
        status.number_ready = ready;
        status.updated_number_scheduled = Some(updated);
        status.number_available = Some(available);
        status.number_unavailable = Some((desired - available).max(0));
        status.observed_generation = ds.metadata.generation;
        if status != current_status {
            let patch = json!({"status": status});
            match Api::<DaemonSet>::namespaced(self.client.clone(), &key.namespace)
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(ControlPlaneError::api(format!("update status of {key}"), e)),
            }
        }
        Ok((ready != available).then(|| std::time::Duration::from_secs(1)))
    }
}

impl Controller {
    async fn create_pods(
        &self,
        key: &Key,
        ds: &DaemonSet,
        hash: &str,
        nodes: &[String],
    ) -> Result<(), ControlPlaneError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut base = pod_from_template(
            &template,
            &key.namespace,
            &format!("{}-", key.name),
            pod::owner_ref(ds),
        );
        base.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), hash.into());
        if let Some(spec) = base.spec.as_mut() {
            let tols = spec.tolerations.get_or_insert_with(Vec::new);
            for t in daemon_tolerations() {
                if !tols.contains(&t) {
                    tols.push(t);
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        self.expectations.expect_creations(key, nodes.len());
        let results = futures_util::future::join_all(nodes.iter().map(|n| {
            let mut p = base.clone();
            if let Some(spec) = p.spec.as_mut() {
                spec.node_name = Some(n.clone());
            }
            let api = api.clone();
            async move { api.create(&PostParams::default(), &p).await }
        }))
        .await;
        let mut first_err = None;
        for (r, node) in results.into_iter().zip(nodes) {
            match r {
                Ok(p) => {
                    self.recorder
                        .publish(
                            COMPONENT,
                            events::reference(ds),
                            events::NORMAL,
                            "SuccessfulCreate",
                            format!(
                                "Created pod: {}",
                                p.metadata.name.as_deref().unwrap_or_default()
                            ),
                        )
                        .await;
                }
                Err(e) => {
                    self.expectations.creation_observed(key);
                    tracing::debug!(daemonset = %key, node, error = %e, "create failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(ControlPlaneError::api(format!("create pods for {key}"), e)),
        }
    }

    async fn delete_pods(
        &self,
        key: &Key,
        ds: &DaemonSet,
        pods: &[Arc<Pod>],
    ) -> Result<(), ControlPlaneError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        for p in pods {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            self.expectations.expect_deletion(key, uid.clone());
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    self.recorder
                        .publish(
                            COMPONENT,
                            events::reference(ds),
                            events::NORMAL,
                            "SuccessfulDelete",
                            format!("Deleted pod: {name}"),
                        )
                        .await;
                }
                Err(e) if api_code(&e) == Some(404) || api_code(&e) == Some(409) => {
                    self.expectations.deletion_observed(key, &uid);
                }
                Err(e) => {
                    self.expectations.deletion_observed(key, &uid);
                    return Err(ControlPlaneError::api(format!("delete pod {name}"), e));
                }
            }
        }
        Ok(())
    }
}
