//! The embedded control plane: the controllers a Kubernetes cluster normally runs, so that one
//! cloudcore with kubeedge-apiserver is a working single-machine cluster.
//!
//! Everything goes through a [`kube::Client`] and kube-runtime watchers and reflector stores, so
//! the same code runs against kubeedge-apiserver in-process, over HTTPS, or a real cluster
//! (where it should not run: the cluster's own controllers do this work).
//!
//! [`run`] creates the default namespaces (`default`, `kube-system`, `kube-node-lease`,
//! `kube-public`, `kubeedge`) and, when configured, the `default/kubernetes` Service and its
//! Endpoints (kept as kube-apiserver keeps them), then runs, until cancelled:
//!
//! - **scheduler**: binds pods without `spec.nodeName` (through `pods/<name>/binding`) to a Ready,
//!   schedulable node that satisfies `nodeSelector`, required node affinity (`In`, `NotIn`,
//!   `Exists`, `DoesNotExist`, `Gt`, `Lt`, `matchFields` on `metadata.name`), NoSchedule and
//!   NoExecute taints, free host ports (NodePorts), and cpu/memory/ephemeral-storage/extended-resource requests and the pod
//!   count against allocatable. Scores: preferred node affinity, spreading a controller's pods,
//!   least allocated, PreferNoSchedule taints. Emits `Scheduled`/`FailedScheduling` events and
//!   sets `PodScheduled=False` (`Unschedulable`) with upstream's "0/N nodes are available" text.
//! - **deployment**: ReplicaSets per pod template (`pod-template-hash`), RollingUpdate with
//!   maxSurge/maxUnavailable, Recreate, revisions (`deployment.kubernetes.io/revision`),
//!   `revisionHistoryLimit`, pause, `Progressing`/`Available` conditions and the status counts
//!   `kubectl rollout status` reads.
//! - **replicaset**: creates and deletes pods to match `replicas` (with expectations, so a stale
//!   cache never doubles pods), status counts including `minReadySeconds`.
//! - **daemonset**: one pod per node that matches the template's selector, affinity and taints
//!   (pods are placed with `spec.nodeName`), RollingUpdate (maxUnavailable) and OnDelete.
//! - **endpoints**: Endpoints per Service with a selector: ready and not-ready pod addresses,
//!   ports resolved from numeric or named target ports.
//! - **namespace**: empties a Terminating namespace and finalizes it; **defaults**: a `default`
//!   ServiceAccount in every namespace.
//! - **gc**: deletes objects (pods, ReplicaSets, Endpoints, DaemonSets, Deployments) whose
//!   owners are all gone (confirmed by a live GET), and drops dangling owner references.
//! - **nodelifecycle**: a node whose Lease and status both stop renewing for the grace period
//!   goes `Ready=Unknown` (`NodeStatusUnknown`) and gets the `unreachable` (or `not-ready`) taint.
//!   Edge nodes (label `node-role.kubernetes.io/edge`) get only the NoSchedule taint and their
//!   pods are left alone: no eviction, no readiness change (edge autonomy). Cloud nodes get the
//!   NoExecute taint too; their pods are marked not ready and evicted after their toleration
//!   seconds, [`ControlPlaneConfig::pod_eviction_timeout`] for pods without one.
//!
//! The controllers share one watch cache per resource (see `informer`). The workload
//! controllers (deployment, replicaset, daemonset, endpoints, namespace, service accounts) are
//! each one `reconcile::Reconcile` implementation driven by the same loop (`reconcile::run`:
//! wait for the caches, then workers over a work queue with per-key backoff). Each writes only
//! through the API, so a restart resumes from what is stored.
//!
//! Not implemented: pod affinity and anti-affinity, topology spread constraints, volumes, preemption and priorities; `progressDeadlineSeconds` (a stuck rollout
//! stays `Progressing`, never `ProgressDeadlineExceeded`); proportional scaling of several
//! active ReplicaSets during a rollout (the newest takes the whole change); adoption of orphaned
//! pods or ReplicaSets that match a selector; ControllerRevisions (DaemonSets track revisions by
//! a hash label, so `kubectl rollout history/undo daemonset` has nothing to show); StatefulSets,
//! Jobs, CronJobs, EndpointSlices, HPA, PodGC of pods on deleted nodes; foreground-deletion and
//! orphan finalizers (kubeedge-apiserver cascades deletes itself); leader election (run one
//! control plane per API server).
//!
//! # Example
//!
//! The control plane over an in-process kubeedge-apiserver: a ReplicaSet gets its pods.
//!
//! ```
//! use std::time::Duration;
//!
//! use k8s_openapi::api::apps::v1::ReplicaSet;
//! use k8s_openapi::api::core::v1::Pod;
//! use kube::api::{Api, ListParams, PostParams};
//! use kubeedge_apiserver::{ApiConfig, ApiService, SqliteStore};
//! use kubeedge_controlplane::ControlPlaneConfig;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("state.db"))?;
//! let client = kube::Client::new(ApiService::new(store, ApiConfig::default()).await?, "default");
//!
//! let cancel = CancellationToken::new();
//! let control_plane = tokio::spawn(kubeedge_controlplane::run(
//!     client.clone(),
//!     ControlPlaneConfig::default(),
//!     cancel.clone(),
//! ));
//!
//! let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web"},
//!     "spec": {
//!         "replicas": 2,
//!         "selector": {"matchLabels": {"app": "web"}},
//!         "template": {
//!             "metadata": {"labels": {"app": "web"}},
//!             "spec": {"containers": [{"name": "web", "image": "nginx"}]}
//!         }
//!     }
//! }))?;
//! Api::<ReplicaSet>::default_namespaced(client.clone()).create(&PostParams::default(), &rs).await?;
//!
//! let pods: Api<Pod> = Api::default_namespaced(client);
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
//! while pods.list(&ListParams::default().labels("app=web")).await?.items.len() < 2 {
//!     assert!(tokio::time::Instant::now() < deadline, "no pods");
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//! }
//! cancel.cancel();
//! control_plane.await??;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod daemonset;
mod defaults;
mod deployment;
mod endpoints;
mod events;
mod expectations;
mod gc;
mod informer;
mod matching;
mod namespace;
mod nodelifecycle;
mod pod;
mod ports;
mod queue;
mod reconcile;
mod replicaset;
mod scheduler;

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use kube::Client;
use tokio_util::sync::CancellationToken;

pub use defaults::KubernetesService;
pub use scheduler::DEFAULT_SCHEDULER;

/// Settings of the embedded control plane. Build with `Default` and assign fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControlPlaneConfig {
    /// How long a node may go without renewing its Lease or posting status before it is
    /// marked `Ready=Unknown` (upstream's `--node-monitor-grace-period`, 40 s).
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked (upstream's `--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// How long pods on an unreachable or not-ready **cloud** node stay before eviction when
    /// they carry no toleration of their own (upstream's default toleration, 300 s). Pods on
    /// edge nodes are never evicted for that.
    pub pod_eviction_timeout: Duration,
    /// Node labels that mark an edge node (presence is enough).
    pub edge_node_labels: Vec<String>,
    /// Namespaces created at start.
    pub default_namespaces: Vec<String>,
    /// The `spec.schedulerName` this scheduler serves (pods with no name are served too).
    pub scheduler_name: String,
    /// Bindings in flight at once.
    pub bind_concurrency: usize,
    /// How long an unschedulable pod waits before it is tried again when nothing changed.
    pub unschedulable_retry: Duration,
    /// How often the garbage collector scans for objects whose owners are gone.
    pub gc_interval: Duration,
    /// Reconcile workers per workload controller.
    pub workers: usize,
    /// The `default/kubernetes` Service to keep (None: none, as when the API server is not
    /// ours).
    pub kubernetes_service: Option<KubernetesService>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            pod_eviction_timeout: Duration::from_secs(300),
            edge_node_labels: vec!["node-role.kubernetes.io/edge".into()],
            default_namespaces: [
                "default",
                "kube-system",
                "kube-node-lease",
                "kube-public",
                "kubeedge",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            scheduler_name: DEFAULT_SCHEDULER.into(),
            bind_concurrency: 128,
            unschedulable_retry: Duration::from_secs(30),
            gc_interval: Duration::from_secs(30),
            workers: 2,
            kubernetes_service: None,
        }
    }
}

/// A failure of the control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlPlaneError {
    /// A request to the Kubernetes API failed. Retryable: controllers retry with backoff;
    /// [`run`] returns it only when the start-up defaults cannot be written.
    #[error("kubernetes api request failed: {what}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object could not be built or read (a bad quantity, a serialisation failure).
    #[error("invalid object: {what}")]
    Invalid {
        /// What was wrong.
        what: String,
    },
    /// A watch cache was dropped before it synced (the control plane is shutting down).
    #[error("the {resource} cache never synced")]
    CacheNotSynced {
        /// The resource watched.
        resource: &'static str,
    },
}

impl ControlPlaneError {
    pub(crate) fn api(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// The HTTP status code the API answered with, if it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Api { source, .. } => api_code(source),
            _ => None,
        }
    }
}

/// The HTTP status code of an API error.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Runs the control plane until `cancel` fires: creates the default namespaces and
/// ServiceAccounts, then runs every controller over shared watch caches.
///
/// Returns an error only when the start-up writes fail; after that, API failures are retried.
pub async fn run(
    client: Client,
    config: ControlPlaneConfig,
    cancel: CancellationToken,
) -> Result<(), ControlPlaneError> {
    defaults::ensure_namespaces(&client, &config.default_namespaces).await?;
    let mut inf = informer::Informers::new(&client);
    let (recorder, event_writer) = events::Recorder::new(client.clone());
    let mut tasks: Vec<BoxFuture<'static, Result<(), ControlPlaneError>>> = Vec::new();
    let sched = scheduler::Scheduler::new(&client, &config, &mut inf, recorder.clone());
    let rs = replicaset::Controller::new(&client, &mut inf, recorder.clone());
    let deploy = deployment::Controller::new(&client, &mut inf, recorder.clone());
    let ds = daemonset::Controller::new(&client, &mut inf, recorder.clone());
    let ep = endpoints::Controller::new(&client, &mut inf);
    let ns = namespace::Controller::new(&client, &mut inf);
    let sa = defaults::ServiceAccounts::new(&client, &mut inf);
    let gc = gc::Collector::new(&client, &config, &mut inf);
    let nl = nodelifecycle::Controller::new(&client, &config, &mut inf, recorder);
    tasks.push(
        event_writer
            .run(cancel.clone())
            .map(|()| Ok::<(), ControlPlaneError>(()))
            .boxed(),
    );
    if let Some(k) = config.kubernetes_service.clone() {
        k.ensure(&client).await?;
        tasks.push(k.run(client.clone(), cancel.clone()).boxed());
    }
    tasks.push(sched.run(cancel.clone()).boxed());
    tasks.push(reconcile::run(rs, config.workers, cancel.clone()).boxed());
    tasks.push(reconcile::run(deploy, config.workers, cancel.clone()).boxed());
    tasks.push(reconcile::run(ds, config.workers, cancel.clone()).boxed());
    tasks.push(reconcile::run(ep, config.workers, cancel.clone()).boxed());
    tasks.push(reconcile::run(ns, 1, cancel.clone()).boxed());
    tasks.push(reconcile::run(sa, 1, cancel.clone()).boxed());
    tasks.push(gc.run(cancel.clone()).boxed());
    tasks.push(nl.run(cancel.clone()).boxed());
    tasks.push(
        inf.run(cancel.clone())
            .map(|()| Ok::<(), ControlPlaneError>(()))
            .boxed(),
    );
    tracing::info!("control plane started");
    let results = futures_util::future::join_all(tasks).await;
    tracing::info!("control plane stopped");
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}
