//! The ReplicaSet controller: keeps `spec.replicas` active pods per ReplicaSet and reports
//! `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;

use super::events::{self, Recorder};
use super::expectations::Expectations;
use super::informer::Informers;
use super::pod;
use super::queue::{Key, Requeue, WorkQueue};
use super::reconcile::{Cache, Reconcile};
use super::{api_code, ControlPlaneError};

const COMPONENT: &str = "replicaset-controller";

/// Pods created or deleted per reconcile at most (the rest follows on the next pass).
const BURST: usize = 500;

/// Builds a pod from a template, owned by `owner`.
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Deletion preference, lowest first: unbound, pending, not ready, ready for less time.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<Timestamp>>) {
    let bound = u8::from(pod::node_name(p).is_some());
    let running = match pod::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let ready = u8::from(pod::is_ready(p));
    let since = pod::ready_since(p).flatten();
    (bound, running, ready, std::cmp::Reverse(since))
}

/// The ReplicaSet controller.
pub(crate) struct Controller {
    client: Client,
    rs: Store<ReplicaSet>,
    pods: Store<Pod>,
    queue: WorkQueue<Key>,
    expectations: Expectations,
    recorder: Recorder,
}

fn owner_key(p: &Pod) -> Option<Key> {
    let r = pod::controller_of(&p.metadata)?;
    (r.kind == "ReplicaSet")
        .then(|| Key::new(p.metadata.namespace.clone().unwrap_or_default(), &r.name))
}

impl Controller {
    pub(crate) fn new(client: &Client, inf: &mut Informers, recorder: Recorder) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            rs: inf.replicasets.store(),
            pods: inf.pods.store(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            recorder,
        });
        let q = this.queue.clone();
        inf.replicasets.on(move |c| q.add(Key::of(c.object())));
        let i = Arc::clone(&this);
        inf.pods.on(move |c| {
            let p = c.object();
            if let Some(k) = owner_key(p) {
                i.expectations.observe(&k, c);
                i.queue.add(k);
            }
            if let Some(k) = c.previous().and_then(owner_key) {
                i.queue.add(k);
            }
        });
        this
    }
}

impl Reconcile for Controller {
    const NAME: &'static str = COMPONENT;

    fn queue(&self) -> &WorkQueue<Key> {
        &self.queue
    }

    fn caches(&self) -> Vec<Cache> {
        vec![
            Cache::of(&self.rs, "replicasets"),
            Cache::of(&self.pods, "pods"),
        ]
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(rs) = self.rs.get(&key.object_ref()) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let spec = rs.spec.clone().unwrap_or_default();
        let mut pods: Vec<Arc<Pod>> = self.pods.state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && pod::controlled_by(&p.metadata, &uid)
                && pod::is_active(p)
        });
        let mut requeue = None;
        if rs.metadata.deletion_timestamp.is_none() && self.expectations.satisfied(key) {
            let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
            if pods.len() < want {
                let n = (want - pods.len()).min(BURST);
                self.create_pods(key, &rs, n).await?;
                if want - pods.len() > n {
                    requeue = Some(std::time::Duration::from_millis(10));
                }
            } else if pods.len() > want {
                pods.sort_by_key(|p| deletion_rank(p));
                let n = (pods.len() - want).min(BURST);
                let victims: Vec<Arc<Pod>> = pods.drain(..n).collect();
                self.delete_pods(key, &rs, &victims).await?;
            }
        }
        let recheck = self
            .sync_status(key, &rs, &uid, spec.min_ready_seconds.unwrap_or(0))
            .await?;
        if recheck && requeue.is_none() {
            requeue = Some(std::time::Duration::from_secs(1));
        }
        Ok(requeue)
    }
}

impl Controller {
    async fn create_pods(
        &self,
        key: &Key,
        rs: &ReplicaSet,
        n: usize,
    ) -> Result<(), ControlPlaneError> {
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let pod = pod_from_template(
            &template,
            &key.namespace,
            &format!("{}-", key.name),
            pod::owner_ref(rs),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        self.expectations.expect_creations(key, n);
        let pp = PostParams::default();
        let results = futures_util::future::join_all((0..n).map(|_| api.create(&pp, &pod))).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => {
                    self.recorder
                        .publish(
                            COMPONENT,
                            events::reference(rs),
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
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => {
                self.recorder
                    .publish(
                        COMPONENT,
                        events::reference(rs),
                        events::WARNING,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    )
                    .await;
                Err(ControlPlaneError::api(format!("create pods for {key}"), e))
            }
        }
    }

    async fn delete_pods(
        &self,
        key: &Key,
        rs: &ReplicaSet,
        victims: &[Arc<Pod>],
    ) -> Result<(), ControlPlaneError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        for p in victims {
            self.expectations
                .expect_deletion(key, p.metadata.uid.clone().unwrap_or_default());
        }
        let results = futures_util::future::join_all(victims.iter().map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            async move { (name.clone(), api.delete(&name, &dp).await) }
        }))
        .await;
        for ((name, r), p) in results.into_iter().zip(victims) {
            match r {
                Ok(_) => {
                    self.recorder
                        .publish(
                            COMPONENT,
                            events::reference(rs),
                            events::NORMAL,
                            "SuccessfulDelete",
                            format!("Deleted pod: {name}"),
                        )
                        .await;
                }
                Err(e) if api_code(&e) == Some(404) || api_code(&e) == Some(409) => {
                    self.expectations
                        .deletion_observed(key, p.metadata.uid.as_deref().unwrap_or_default());
                }
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, p.metadata.uid.as_deref().unwrap_or_default());
                    return Err(ControlPlaneError::api(format!("delete pod {name}"), e));
                }
            }
        }
        Ok(())
    }

    async fn sync_status(
        &self,
        key: &Key,
        rs: &ReplicaSet,
        uid: &str,
        min_ready: i32,
    ) -> Result<bool, ControlPlaneError> {
        let pods: Vec<Arc<Pod>> = self.pods.state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && pod::controlled_by(&p.metadata, uid)
                && pod::is_active(p)
        });
        let template_labels: BTreeMap<String, String> = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let now = Timestamp::now();
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let current = rs.status.clone().unwrap_or_default();
        let mut status: ReplicaSetStatus = current.clone();
        status.replicas = count(&|_| true);
        status.fully_labeled_replicas = Some(count(&|p| {
            super::matching::map_matches(&template_labels, p.metadata.labels.as_ref())
        }));
        status.ready_replicas = Some(count(&|p| pod::is_ready(p)));
        status.available_replicas = Some(count(&|p| pod::is_available(p, min_ready, now)));
        status.observed_generation = rs.metadata.generation;
        // Pods that are ready but not yet available need another look later.
        let recheck = status.ready_replicas != status.available_replicas;
        if current == status {
            return Ok(recheck);
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"status": status});
        match api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(recheck),
            Err(e) if api_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(ControlPlaneError::api(format!("update status of {key}"), e)),
        }
    }
}
