//! Edged, the kubelet of the edge: pods from MetaManager run on a [`ContainerRuntime`]
//! (Docker through bollard by default), with their status reported through the podpatch
//! path, the node registered and kept fresh, and the runtime reconciled at start: the
//! containers of stored pods are adopted (same ids), the rest removed. Pods keep running
//! across edgecore restarts and while the cloud is away.
//!
//! - [`runtime`]: the trait; [`DockerRuntime`]: its implementation.
//! - [`lifecycle`]: the pod lifecycle as a sans-IO `enum` + `step`.
//! - The pod workers, the status reports and the node loop are private.

mod admission;
mod cri;
mod cri_logs;
mod cri_spec;
mod dns;
mod docker;
mod events;
mod lease;
pub mod lifecycle;
mod link;
mod node;
mod probes;
mod pull;
pub mod runtime;
mod runtime_probe;
mod sandbox;
mod services;
mod spec;
mod status;
mod volumes;
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kubeedge_proto::{Message, Operation, ResourcePath, ResourceType};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use cri::{CriRuntime, DEFAULT_CRI_ENDPOINT, DEFAULT_LOG_ROOT};
pub use dns::{DnsConfig, DnsSettings};
pub use docker::DockerRuntime;
pub use lifecycle::Backoff;
pub use link::{Cloud, Link, LinkError};
pub use node::{detect_ip, KUBELET_VERSION};
pub use runtime::{ContainerRuntime, RuntimeError};
pub use runtime_probe::{
    driver_from_cri_config, probe_cri, probe_docker, CgroupDriver, RuntimeProbe,
};
pub use sandbox::BUILTIN_SANDBOX_IMAGE;

use crate::meta::{MetaDb, StoreError};
use runtime::{LABEL_NODE, LABEL_POD_UID};
use worker::{pod_key, PodEvent, Shared, Worker};

/// Edged's runtime settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EdgedConfig {
    /// Node name (`hostnameOverride`).
    pub node_name: String,
    /// `registerNodeNamespace`.
    pub register_namespace: String,
    /// The node's address (`nodeIP`, else detected).
    pub node_ip: String,
    /// Extra node labels (`nodeLabels`).
    pub node_labels: BTreeMap<String, String>,
    /// Where pod volumes live (`rootDirectory`).
    pub root_dir: PathBuf,
    /// `podSandboxImage` (None: the built-in one).
    pub pod_sandbox_image: Option<String>,
    /// The Docker endpoint (`dockerAddress`).
    pub docker_endpoint: String,
    /// The runtime edged drives (Docker, or a CRI endpoint).
    pub runtime: crate::config::RuntimeChoice,
    /// Where a CRI runtime writes container logs (`podLogsDir`).
    pub pod_logs_dir: PathBuf,
    /// `nodeStatusUpdateFrequency`.
    pub node_status_update_frequency: Duration,
    /// `nodeLeaseDurationSeconds`: the Lease is renewed every quarter of it.
    pub node_lease_duration_seconds: u32,
    /// How often a pod is compared with the runtime.
    pub sync_frequency: Duration,
    /// Crash-loop backoff.
    pub backoff: Backoff,
    /// `maxPods`.
    pub max_pods: u32,
    /// The pods' DNS: `clusterDNS`, `clusterDomain`, `resolvConf`.
    pub dns: DnsSettings,
}

impl Default for EdgedConfig {
    fn default() -> Self {
        Self {
            node_name: "edge-node".into(),
            register_namespace: "default".into(),
            node_ip: "127.0.0.1".into(),
            node_labels: BTreeMap::new(),
            root_dir: "/var/lib/edged".into(),
            pod_sandbox_image: None,
            docker_endpoint: "unix:///var/run/docker.sock".into(),
            runtime: crate::config::RuntimeChoice::Docker,
            pod_logs_dir: DEFAULT_LOG_ROOT.into(),
            node_status_update_frequency: Duration::from_secs(10),
            node_lease_duration_seconds: 40,
            sync_frequency: Duration::from_secs(2),
            backoff: Backoff::default(),
            max_pods: 110,
            dns: DnsSettings::default(),
        }
    }
}

impl EdgedConfig {
    /// From the `modules.edged` section of edgecore.yaml.
    pub fn from_file(f: &crate::config::Edged) -> Self {
        let ms = |v: u64| Duration::from_millis(v.max(10));
        Self {
            node_name: f.hostname_override.clone(),
            register_namespace: f.register_node_namespace.clone(),
            node_ip: Some(f.node_ip.clone())
                .filter(|s| !s.is_empty())
                .or_else(detect_ip)
                .unwrap_or_else(|| "127.0.0.1".into()),
            node_labels: f.node_labels.clone(),
            root_dir: f.root_directory.clone(),
            pod_sandbox_image: Some(f.pod_sandbox_image.clone()).filter(|s| !s.is_empty()),
            docker_endpoint: f.docker_address.clone(),
            runtime: f.runtime.choice(),
            pod_logs_dir: f.runtime.pod_logs_dir().into(),
            node_status_update_frequency: Duration::from_secs(
                f.node_status_update_frequency.max(1),
            ),
            node_lease_duration_seconds: f.node_lease_duration_seconds.max(1),
            sync_frequency: ms(f.pod_sync_frequency_ms),
            backoff: Backoff {
                initial: ms(f.restart_backoff_initial_ms),
                max: ms(f.restart_backoff_max_ms.max(f.restart_backoff_initial_ms)),
            },
            max_pods: f.max_pods,
            dns: f.dns_settings(),
        }
    }
}

/// Why edged could not reconcile (retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgedError {
    /// The runtime failed.
    #[error("container runtime")]
    Runtime(#[from] RuntimeError),
    /// The store failed.
    #[error("meta store")]
    Store(#[from] StoreError),
}

/// A view of edged from outside: the latest status of each pod (`ns/name`).
#[derive(Debug, Clone)]
pub struct EdgedHandle {
    statuses: watch::Receiver<BTreeMap<String, PodStatus>>,
}

impl EdgedHandle {
    /// The latest status of pod `ns/name`.
    pub fn status(&self, key: &str) -> Option<PodStatus> {
        self.statuses.borrow().get(key).cloned()
    }

    /// Every pod's latest status, as it changes.
    pub fn statuses(&self) -> watch::Receiver<BTreeMap<String, PodStatus>> {
        self.statuses.clone()
    }
}

struct WorkerRef {
    tx: mpsc::Sender<PodEvent>,
    key: String,
    namespace: String,
    /// The host ports the pod holds (none when it was rejected).
    ports: Vec<admission::HostPort>,
}

/// Edged: build with [`Edged::new`], run with [`Edged::run`].
#[derive(Debug)]
pub struct Edged<R: ContainerRuntime> {
    shared: Arc<Shared<R>>,
    rx: mpsc::Receiver<Message>,
}

impl<R: ContainerRuntime> Edged<R> {
    /// Edged on `runtime`; pods and objects arrive on the returned sender (MetaManager's
    /// `Outputs.edged`).
    pub fn new(
        cfg: EdgedConfig,
        runtime: Arc<R>,
        link: Link,
    ) -> (Self, mpsc::Sender<Message>, EdgedHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let (st_tx, st_rx) = watch::channel(BTreeMap::new());
        let shared = Arc::new(Shared {
            runtime,
            link,
            cfg,
            sandbox_image: tokio::sync::OnceCell::new(),
            services: services::Services::default(),
            statuses: st_tx,
            tracker: TaskTracker::new(),
        });
        (Self { shared, rx }, tx, EdgedHandle { statuses: st_rx })
    }

    /// The stored pods bound to this node.
    async fn stored_pods(&self) -> Result<Vec<Pod>, EdgedError> {
        let mut pods = Vec::new();
        for r in self.shared.link.db().list("pod").await? {
            match serde_json::from_str::<Pod>(&r.value) {
                Ok(p) if self.owns(&p) => pods.push(p),
                Ok(_) => debug!(pod = %r.key, "stored pod is not bound to this node"),
                Err(e) => warn!(pod = %r.key, error = %e, "stored pod does not decode; skipped"),
            }
        }
        Ok(pods)
    }

    /// Remove this node's containers (and pod directories) that no known pod owns.
    async fn remove_orphans(&self, uids: &HashSet<String>) -> Result<(), EdgedError> {
        let cfg = &self.shared.cfg;
        let containers = self
            .shared
            .runtime
            .list_containers(&[(LABEL_NODE, &cfg.node_name)])
            .await?;
        for c in containers {
            let uid = c.label(LABEL_POD_UID).unwrap_or_default();
            if !uids.contains(uid) {
                info!(id = %c.id, pod_uid = uid, "removing an orphan container");
                self.shared.runtime.remove_container(&c.id).await?;
            }
        }
        if let Ok(dirs) = std::fs::read_dir(cfg.root_dir.join("pods")) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if !uids.contains(&name) {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
        Ok(())
    }

    fn owns(&self, pod: &Pod) -> bool {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        pod.metadata.uid.as_deref().is_some_and(|u| !u.is_empty())
            && node.is_none_or(|n| n.is_empty() || n == self.shared.cfg.node_name)
    }

    fn start_worker(
        &self,
        pod: Pod,
        workers: &mut HashMap<String, WorkerRef>,
        finished: &mpsc::Sender<String>,
        cancel: &CancellationToken,
    ) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (tx, rx) = mpsc::channel(64);
        let key = pod_key(&pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let rejection = self.admit(&pod, workers);
        let ports = if rejection.is_none() {
            admission::host_ports(&pod)
        } else {
            Vec::new()
        };
        debug!(pod = %key, uid, admitted = rejection.is_none(), "pod worker starting");
        let w = Worker::new(self.shared.clone(), pod, rejection);
        self.shared
            .tracker
            .spawn(w.run(rx, finished.clone(), cancel.child_token()));
        workers.insert(
            uid,
            WorkerRef {
                tx,
                key,
                namespace,
                ports,
            },
        );
    }

    /// The kubelet's admission of a new pod against the admitted pods that are not terminal
    /// (None: admitted). A pod this edge rejected before stays rejected.
    fn admit(
        &self,
        pod: &Pod,
        workers: &HashMap<String, WorkerRef>,
    ) -> Option<admission::Rejection> {
        if let Some(r) = admission::previous_rejection(pod) {
            return Some(r);
        }
        let statuses = self.shared.statuses.borrow();
        let terminal = |key: &str| {
            statuses
                .get(key)
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed")
        };
        let used = workers
            .values()
            .filter(|w| !terminal(&w.key))
            .flat_map(|w| &w.ports);
        let rejection = admission::admit(pod, used).err();
        if let Some(r) = &rejection {
            info!(pod = %pod_key(pod), reason = %r.reason, message = %r.message, "pod rejected");
        }
        rejection
    }

    async fn handle(
        &self,
        msg: Message,
        workers: &mut HashMap<String, WorkerRef>,
        finished: &mpsc::Sender<String>,
        cancel: &CancellationToken,
    ) {
        let path = ResourcePath::parse(&msg.route.resource).to_edge_view();
        let op = msg.route.operation.clone();
        match (path.resource_type(), op) {
            (Some(ResourceType::Pod), Some(Operation::Insert | Operation::Update)) => {
                let pod: Pod = match msg.content.decode() {
                    Ok(p) => p,
                    Err(e) => {
                        warn!(resource = %msg.route.resource, error = %e, "pod does not decode");
                        return;
                    }
                };
                if !self.owns(&pod) {
                    warn!(resource = %msg.route.resource, "pod without uid or bound to another node; ignored");
                    return;
                }
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let key = pod_key(&pod);
                if let Some(w) = workers.get(&uid) {
                    let _ = w.tx.send(PodEvent::Update(Box::new(pod))).await;
                    return;
                }
                // Same name, new UID: the old pod goes.
                for w in workers.values().filter(|w| w.key == key) {
                    let _ = w.tx.send(PodEvent::Delete { grace: None }).await;
                }
                self.start_worker(pod, workers, finished, cancel);
            }
            (Some(ResourceType::Pod), Some(Operation::Delete)) => {
                let pod: Pod = msg.content.decode().unwrap_or_default();
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64));
                let key = path.to_string().replacen("/pod/", "/", 1);
                for w in workers
                    .iter()
                    .filter(|(u, w)| **u == uid || (uid.is_empty() && w.key == key))
                    .map(|(_, w)| w)
                {
                    let _ = w.tx.send(PodEvent::Delete { grace }).await;
                }
            }
            (Some(t @ (ResourceType::ConfigMap | ResourceType::Secret)), Some(op))
                if op != Operation::Delete =>
            {
                let kind = if *t == ResourceType::ConfigMap {
                    "configmap"
                } else {
                    "secret"
                };
                let ns = path.namespace().unwrap_or_default().to_owned();
                let name = path.name().unwrap_or_default().to_owned();
                for w in workers.values().filter(|w| w.namespace == ns) {
                    let _ = w.tx.send(PodEvent::Refresh(kind, name.clone())).await;
                }
            }
            _ => {
                debug!(resource = %msg.route.resource, op = msg.route.operation_str(), "ignored by edged")
            }
        }
    }

    /// Run until `cancel`: reconcile (retrying while the runtime is down), start the stored
    /// pods, keep the node registered, and follow what MetaManager forwards.
    pub async fn run(mut self, cancel: CancellationToken) {
        let tracker = self.shared.tracker.clone();
        tracker.spawn(
            lease::LeaseRenewer::new(
                self.shared.cfg.node_name.clone(),
                self.shared.cfg.node_lease_duration_seconds,
                self.shared.link.clone(),
            )
            .run(cancel.child_token()),
        );
        tracker.spawn(node::run(
            self.shared.cfg.clone(),
            self.shared.runtime.clone(),
            self.shared.link.clone(),
            cancel.child_token(),
        ));
        let mut retry = Duration::from_millis(200);
        let pods = loop {
            match self.stored_pods().await {
                Ok(p) => break p,
                Err(e) => {
                    warn!(error = %e, retry_in = ?retry, "edged cannot read its pods yet");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                }
            }
        };
        info!(pods = pods.len(), node = %self.shared.cfg.node_name, "edged starting its stored pods");
        // Admitted in creation order, as the kubelet's HandlePodAdditions does.
        let mut pods = pods;
        pods.sort_by(|a, b| {
            let at = |p: &Pod| {
                (
                    p.metadata.creation_timestamp.clone(),
                    p.metadata.name.clone(),
                )
            };
            at(a).cmp(&at(b))
        });
        let (fin_tx, mut fin_rx) = mpsc::channel(64);
        let mut workers = HashMap::new();
        for p in pods {
            self.start_worker(p, &mut workers, &fin_tx, &cancel);
        }
        // Orphans go once the runtime answers; the pods' workers adopt their own containers
        // (and retry on their own while the runtime is down).
        let mut orphans_done = false;
        let mut orphan_retry = Duration::from_millis(100);
        let orphan_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(orphan_timer);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                m = self.rx.recv() => match m {
                    Some(m) => self.handle(m, &mut workers, &fin_tx, &cancel).await,
                    None => break,
                },
                Some(uid) = fin_rx.recv() => { workers.remove(&uid); }
                _ = &mut orphan_timer, if !orphans_done => {
                    let uids: HashSet<String> = workers.keys().cloned().collect();
                    match self.remove_orphans(&uids).await {
                        Ok(()) => {
                            orphans_done = true;
                            info!(node = %self.shared.cfg.node_name, "edged reconciled with the runtime");
                        }
                        Err(e) => {
                            debug!(error = %e, "orphan removal postponed");
                            orphan_retry = (orphan_retry * 2).min(Duration::from_secs(5));
                            orphan_timer.as_mut().reset(tokio::time::Instant::now() + orphan_retry);
                        }
                    }
                }
            }
        }
        drop(workers);
        tracker.close();
        tracker.wait().await;
    }
}

/// The runtime edged was started on, with its pod view (for modules that serve the pods,
/// such as EdgeStream).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Started {
    /// Docker.
    Docker(Arc<DockerRuntime>, EdgedHandle),
    /// A CRI runtime such as containerd.
    Cri(Arc<CriRuntime>, EdgedHandle),
}

impl Started {
    /// The handle to edged's pod statuses.
    pub fn handle(&self) -> &EdgedHandle {
        match self {
            Self::Docker(_, h) | Self::Cri(_, h) => h,
        }
    }
}

/// Start edged for edgecore on the configured runtime (Docker, or a CRI runtime such as
/// containerd): returns the sender MetaManager forwards to, and what it runs on.
pub fn spawn(
    tracker: &TaskTracker,
    cancel: CancellationToken,
    file: &crate::config::Edged,
    db: MetaDb,
    cloud: watch::Receiver<Option<Cloud>>,
) -> (mpsc::Sender<Message>, Started) {
    let cfg = EdgedConfig::from_file(file);
    let link = Link::new(db, cloud);
    match cfg.runtime.clone() {
        crate::config::RuntimeChoice::Remote(endpoint) => {
            info!(endpoint, "edged on a CRI runtime");
            let runtime = Arc::new(CriRuntime::new(endpoint, cfg.pod_logs_dir.clone()));
            let (edged, tx, handle) = Edged::new(cfg, runtime.clone(), link);
            tracker.spawn(edged.run(cancel));
            (tx, Started::Cri(runtime, handle))
        }
        _ => {
            let runtime = Arc::new(DockerRuntime::new(cfg.docker_endpoint.clone()));
            let (edged, tx, handle) = Edged::new(cfg, runtime.clone(), link);
            tracker.spawn(edged.run(cancel));
            (tx, Started::Docker(runtime, handle))
        }
    }
}
