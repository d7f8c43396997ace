//! One task per pod: observe the runtime, step the lifecycle, perform its actions, report
//! the status. Probes and graceful stops run as their own tasks and come back as inputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kubeedge_proto::{Content, Operation};

use super::admission::Rejection;
use super::events::{self, Subject};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::lifecycle::{Action, Input, Observation, PodLifecycle, PodPlan, ProbeKind, Run, Seen};
use super::link::{edged_message, Link};
use super::probes;
use super::runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, NetworkMode, RuntimeError, LABEL_ATTEMPT,
    LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID, SANDBOX,
};
use super::sandbox::{ensure_sandbox_image, sandbox_config};
use super::spec::{self, Placement};
use super::status;
use super::volumes;
use super::EdgedConfig;

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Shared<R> {
    pub(crate) runtime: Arc<R>,
    pub(crate) link: Link,
    pub(crate) cfg: EdgedConfig,
    pub(crate) sandbox_image: tokio::sync::OnceCell<String>,
    pub(crate) services: super::services::Services,
    pub(crate) statuses: watch::Sender<BTreeMap<String, PodStatus>>,
    pub(crate) tracker: tokio_util::task::TaskTracker,
}

/// An event for a pod's worker.
#[derive(Debug)]
pub(crate) enum PodEvent {
    /// A new version of the pod.
    Update(Box<Pod>),
    /// The pod is gone from the cloud: stop it within `grace` (None: the pod's own).
    Delete { grace: Option<Duration> },
    /// A configMap or secret (`configmap`/`secret`, namespace, name) changed.
    Refresh(&'static str, String),
}

enum Done {
    Probe {
        container: String,
        kind: ProbeKind,
        success: bool,
    },
    Killed,
}

/// The pod's key, `ns/name`.
pub(crate) fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn to_instant(now: Instant, wall: SystemTime, t: SystemTime) -> Instant {
    match wall.duration_since(t) {
        Ok(d) => now.checked_sub(d).unwrap_or(now),
        Err(_) => now,
    }
}

pub(crate) struct Worker<R> {
    shared: Arc<Shared<R>>,
    pod: Pod,
    key: String,
    lc: PodLifecycle,
    infos: BTreeMap<String, ContainerInfo>,
    previous: BTreeMap<String, ContainerInfo>,
    sandbox: Option<ContainerInfo>,
    sandbox_attempt: u32,
    image_ids: BTreeMap<String, String>,
    last_status: Option<PodStatus>,
    last_fingerprint: String,
    runtime_error: Option<String>,
    /// Delete the pod upstream once stopped (a graceful delete from the cloud).
    delete_upstream: bool,
    /// Why admission refused the pod: it never runs, its status says why.
    rejection: Option<Rejection>,
    events: events::Recorder,
    cancel: CancellationToken,
}

impl<R: ContainerRuntime> Worker<R> {
    pub(crate) fn new(shared: Arc<Shared<R>>, pod: Pod, rejection: Option<Rejection>) -> Self {
        let lc = spec::lifecycle(&pod, shared.cfg.backoff);
        Self {
            key: pod_key(&pod),
            shared,
            pod,
            lc,
            infos: BTreeMap::new(),
            previous: BTreeMap::new(),
            sandbox: None,
            sandbox_attempt: 0,
            image_ids: BTreeMap::new(),
            last_status: None,
            last_fingerprint: String::new(),
            runtime_error: None,
            delete_upstream: false,
            rejection,
            events: events::Recorder::default(),
            cancel: CancellationToken::new(),
        }
    }

    fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let placeholder = PodLifecycle::new(PodPlan::default(), self.shared.cfg.backoff);
        let lc = std::mem::replace(&mut self.lc, placeholder);
        let (lc, actions) = lc.step(input);
        self.lc = lc;
        actions
    }

    fn grace_of(&self, pod: &Pod) -> Duration {
        let secs = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// Run until the pod is stopped and removed, or until `cancel` (containers keep running
    /// then, to be adopted at the next start).
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<PodEvent>,
        finished: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) {
        if self.rejection.is_some() {
            return self.run_rejected(rx, finished, cancel).await;
        }
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
        self.cancel = cancel.clone();
        if self.pod.metadata.deletion_timestamp.is_some() {
            self.delete_upstream = true;
            let grace = self.grace_of(&self.pod);
            let actions = self.feed(Input::Delete {
                grace,
                now: Instant::now(),
            });
            self.execute(actions, &done_tx).await;
        }
        let mut retry = Duration::from_millis(100);
        loop {
            let mut rounds = 0;
            loop {
                rounds += 1;
                let obs = match self.observe().await {
                    Ok(o) => {
                        self.runtime_error = None;
                        retry = Duration::from_millis(100);
                        o
                    }
                    Err(e) => {
                        debug!(pod = %self.key, error = %e, "cannot observe the runtime");
                        self.runtime_error = Some(e.to_string());
                        retry = (retry * 2).min(self.shared.cfg.sync_frequency.max(retry));
                        break;
                    }
                };
                let actions = self.feed(Input::Observed(obs));
                let busy = actions.iter().any(|a| !matches!(a, Action::Probe { .. }));
                if self.execute(actions, &done_tx).await {
                    self.finish().await;
                    let _ = finished.send(self.uid().to_owned()).await;
                    return;
                }
                if !busy || rounds >= 8 {
                    break;
                }
            }
            self.report().await;
            let now = Instant::now();
            let mut wake = now + self.shared.cfg.sync_frequency;
            if self.runtime_error.is_some() {
                wake = now + retry;
            }
            if let Some(t) = self.lc.next_wakeup() {
                wake = wake.min(t.max(now));
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = rx.recv() => match ev {
                    None => return,
                    Some(ev) => self.handle(ev, &done_tx).await,
                },
                d = done_rx.recv() => {
                    if let Some(Done::Probe { container, kind, success }) = d {
                        let actions = self.feed(Input::Probe { container, kind, success, now: Instant::now() });
                        self.execute(actions, &done_tx).await;
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        }
    }

    /// A rejected pod: say why (status and event), then wait for its deletion.
    async fn run_rejected(
        mut self,
        mut rx: mpsc::Receiver<PodEvent>,
        finished: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) {
        if let Some(r) = self.rejection.clone() {
            self.event(Subject::Pod, "Warning", &r.reason, &r.message)
                .await;
        }
        self.report().await;
        let mut deleting = self.pod.metadata.deletion_timestamp.is_some();
        while !deleting {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = rx.recv() => match ev {
                    None => return,
                    Some(PodEvent::Update(pod)) => {
                        deleting = pod.metadata.deletion_timestamp.is_some();
                        self.pod = *pod;
                    }
                    Some(PodEvent::Delete { .. }) => {
                        self.finish().await;
                        let _ = finished.send(self.uid().to_owned()).await;
                        return;
                    }
                    Some(PodEvent::Refresh(..)) => {}
                },
            }
        }
        // Nothing runs: the graceful delete completes at once.
        self.delete_upstream = true;
        self.finish().await;
        let _ = finished.send(self.uid().to_owned()).await;
    }

    async fn handle(&mut self, ev: PodEvent, done: &mpsc::Sender<Done>) {
        match ev {
            PodEvent::Update(pod) => {
                let deleting = pod.metadata.deletion_timestamp.is_some();
                let grace = self.grace_of(&pod);
                self.pod = *pod;
                if deleting {
                    self.delete_upstream = true;
                    let actions = self.feed(Input::Delete {
                        grace,
                        now: Instant::now(),
                    });
                    self.execute(actions, done).await;
                }
            }
            PodEvent::Delete { grace } => {
                self.delete_upstream = false;
                let grace = grace.unwrap_or_else(|| self.grace_of(&self.pod));
                let actions = self.feed(Input::Delete {
                    grace,
                    now: Instant::now(),
                });
                self.execute(actions, done).await;
            }
            PodEvent::Refresh(kind, name) => self.refresh(kind, &name).await,
        }
    }

    /// Rewrite the files of volumes showing `kind/name`.
    async fn refresh(&mut self, kind: &str, name: &str) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let ips = self.ips();
        for v in spec.volumes.iter().flatten() {
            if volumes::volume_source(v) == Some((kind, name)) {
                let ips = (ips.0.as_str(), ips.1.as_str());
                match volumes::prepare(
                    &self.shared.cfg.root_dir,
                    &self.pod,
                    v,
                    &self.shared.link,
                    ips,
                )
                .await
                {
                    Ok(_) => debug!(pod = %self.key, volume = %v.name, "volume updated"),
                    Err(e) => {
                        warn!(pod = %self.key, volume = %v.name, error = %e, "volume update failed")
                    }
                }
            }
        }
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    fn ips(&self) -> (String, String) {
        let host = self.shared.cfg.node_ip.clone();
        let pod = if self.host_network() {
            host.clone()
        } else {
            self.sandbox
                .as_ref()
                .and_then(|s| s.ip.clone())
                .unwrap_or_default()
        };
        (host, pod)
    }

    async fn observe(&mut self) -> Result<Observation, RuntimeError> {
        let rt = &self.shared.runtime;
        let uid = self.uid().to_owned();
        let node = self.shared.cfg.node_name.clone();
        let list = rt
            .list_containers(&[(LABEL_POD_UID, &uid), (LABEL_NODE, &node)])
            .await?;
        let plan = self.lc.plan();
        let known: Vec<String> = plan
            .init
            .iter()
            .chain(&plan.containers)
            .map(|c| c.name.clone())
            .collect();
        let mut groups: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for c in list {
            let name = c.label(LABEL_CONTAINER).unwrap_or_default().to_owned();
            if name != SANDBOX && !known.contains(&name) {
                info!(pod = %self.key, container = %name, "removing a container not in the spec");
                rt.remove_container(&c.id).await?;
                continue;
            }
            groups.entry(name).or_default().push(c);
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut containers = BTreeMap::new();
        self.infos.clear();
        self.previous.clear();
        let mut sandbox = None;
        for (name, mut group) in groups {
            let attempt = |c: &super::runtime::ContainerSummary| -> u32 {
                c.label(LABEL_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0)
            };
            group.sort_by_key(|c| std::cmp::Reverse((c.running, attempt(c), c.created)));
            let newest = group.remove(0);
            // Keep one previous instance for lastState; anything else is a duplicate.
            for (i, extra) in group.iter().enumerate() {
                if i > 0 || extra.running || name == SANDBOX {
                    info!(pod = %self.key, container = %name, id = %extra.id, "removing a duplicate container");
                    rt.remove_container(&extra.id).await?;
                } else if let Ok(info) = rt.inspect_container(&extra.id).await {
                    self.previous.insert(name.clone(), info);
                }
            }
            let info = match rt.inspect_container(&newest.id).await {
                Ok(i) => i,
                Err(RuntimeError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if name == SANDBOX {
                let running = matches!(info.state, ContainerState::Running { .. });
                sandbox = Some((info.id.clone(), running));
                self.sandbox = Some(info);
                continue;
            }
            let run = match &info.state {
                ContainerState::Running { started_at } => Run::Running {
                    since: to_instant(now, wall, *started_at),
                },
                ContainerState::Exited {
                    exit_code,
                    finished_at,
                    ..
                } => Run::Exited {
                    code: *exit_code,
                    at: finished_at.map_or(now, |t| to_instant(now, wall, t)),
                },
                ContainerState::Created | ContainerState::Other(_) => Run::Created,
            };
            containers.insert(
                name.clone(),
                Seen {
                    id: info.id.clone(),
                    attempt: attempt(&newest),
                    run,
                },
            );
            self.infos.insert(name, info);
        }
        if sandbox.is_none() {
            self.sandbox = None;
        }
        Ok(Observation {
            now,
            sandbox,
            containers,
        })
    }

    /// Perform actions; true once the pod is finished.
    async fn execute(&mut self, actions: Vec<Action>, done: &mpsc::Sender<Done>) -> bool {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if self.cancel.is_cancelled() {
                // Shutting down: leave the rest for the next start.
                return false;
            }
            match a {
                Action::StartSandbox => {
                    if let Err(message) = self.start_sandbox().await {
                        warn!(pod = %self.key, error = %message, "sandbox failed");
                        let text = format!("Failed to create pod sandbox: {message}");
                        self.event(
                            Subject::Pod,
                            "Warning",
                            events::FAILED_CREATE_POD_SANDBOX,
                            &text,
                        )
                        .await;
                        queue.extend(self.feed(Input::SandboxFailed {
                            message,
                            now: Instant::now(),
                        }));
                    }
                }
                Action::Remove { id } => {
                    if let Err(e) = self.shared.runtime.remove_container(&id).await {
                        warn!(pod = %self.key, id, error = %e, "remove failed");
                    }
                }
                Action::Start { container, attempt } => {
                    if let Err((reason, message)) = self.start_container(&container, attempt).await
                    {
                        warn!(pod = %self.key, container, reason, error = %message, "container start failed");
                        let image = spec::find_container(&self.pod, &container)
                            .and_then(|c| c.image.clone())
                            .unwrap_or_default();
                        let text = match reason.as_str() {
                            "ErrImagePull" | "ImagePullBackOff" => {
                                format!("Failed to pull image {image:?}: {message}")
                            }
                            "ErrImageNeverPull" => message.clone(),
                            _ => format!("Error: {message}"),
                        };
                        let subject = Subject::Container(&container);
                        self.event(subject, "Warning", events::FAILED, &text).await;
                        queue.extend(self.feed(Input::StartFailed {
                            container,
                            reason,
                            message,
                            now: Instant::now(),
                        }));
                    }
                }
                Action::Kill {
                    container,
                    id,
                    grace,
                } => self.spawn_kill(&container, id, grace, done.clone()),
                Action::Probe {
                    container,
                    id,
                    kind,
                } => self.spawn_probe(container, id, kind, done.clone()),
                Action::Finished => return true,
            }
        }
        false
    }

    fn spawn_kill(&self, container: &str, id: String, grace: Duration, done: mpsc::Sender<Done>) {
        let rt = self.shared.runtime.clone();
        let pre_stop = spec::find_container(&self.pod, container).and_then(|c| {
            c.lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| probes::handler_check(c, h))
        });
        let addr = self.probe_addr();
        let key = self.key.clone();
        let name = container.to_owned();
        self.shared.tracker.spawn(async move {
            let start = Instant::now();
            if let Some(check) = pre_stop {
                debug!(pod = %key, container = %name, "running preStop");
                probes::run(rt.as_ref(), &id, &addr, &check, grace).await;
            }
            let left = grace.saturating_sub(start.elapsed());
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            if let Err(e) = rt.stop_container(&id, Duration::from_secs(secs)).await {
                debug!(pod = %key, container = %name, error = %e, "stop failed");
            }
            let _ = done.send(Done::Killed).await;
        });
    }

    fn probe_addr(&self) -> String {
        if self.host_network() {
            "127.0.0.1".to_owned()
        } else {
            self.ips().1
        }
    }

    fn spawn_probe(
        &self,
        container: String,
        id: String,
        kind: ProbeKind,
        done: mpsc::Sender<Done>,
    ) {
        let Some(c) = spec::find_container(&self.pod, &container) else {
            return;
        };
        let probe = match kind {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
        };
        let Some(probe) = probe else { return };
        let check = probes::probe_check(c, probe);
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let rt = self.shared.runtime.clone();
        let addr = self.probe_addr();
        self.shared.tracker.spawn(async move {
            let success = match check {
                Some(check) => probes::run(rt.as_ref(), &id, &addr, &check, timeout).await,
                None => true,
            };
            let _ = done
                .send(Done::Probe {
                    container,
                    kind,
                    success,
                })
                .await;
        });
    }

    async fn start_sandbox(&mut self) -> Result<(), String> {
        let rt = self.shared.runtime.clone();
        let configured = self.shared.cfg.pod_sandbox_image.clone();
        let image = self
            .shared
            .sandbox_image
            .get_or_try_init(|| ensure_sandbox_image(rt.as_ref(), configured.as_deref()))
            .await
            .map_err(|e| e.to_string())?
            .clone();
        self.sandbox_attempt += 1;
        let node = &self.shared.cfg.node_name;
        let cfg = sandbox_config(&self.pod, node, image, self.sandbox_attempt)?;
        let id = rt.create_container(cfg).await.map_err(|e| e.to_string())?;
        if let Err(e) = rt.start_container(&id).await {
            let _ = rt.remove_container(&id).await;
            return Err(e.to_string());
        }
        debug!(pod = %self.key, id, "sandbox started");
        Ok(())
    }

    async fn ensure_image(
        &mut self,
        container: &str,
        image: &str,
        policy: &str,
    ) -> Result<(), (String, String)> {
        let rt = &self.shared.runtime;
        let present = rt
            .image(image)
            .await
            .map_err(|e| ("ErrImagePull".to_owned(), e.to_string()))?;
        let pull = match (policy, &present) {
            ("Never", None) => {
                return Err((
                    "ErrImageNeverPull".into(),
                    format!("container image {image:?} is not present with pull policy of Never"),
                ))
            }
            ("Never", Some(_)) | ("IfNotPresent", Some(_)) => false,
            _ => true,
        };
        if pull {
            let auth = super::pull::pull_auth(&self.shared.link, &self.pod, image).await;
            if let Err(e) = self.shared.runtime.pull_image(image, auth).await {
                if present.is_none() || e.is_unavailable() {
                    let waiting = self
                        .lc
                        .track(container)
                        .and_then(|t| t.waiting.as_ref())
                        .map(|w| w.0.clone());
                    let reason = match waiting.as_deref() {
                        Some("ErrImagePull" | "ImagePullBackOff") => "ImagePullBackOff",
                        _ => "ErrImagePull",
                    };
                    return Err((reason.into(), e.to_string()));
                }
                // Air-gapped sites: a local copy beats no container.
                warn!(pod = %self.key, image, error = %e, "pull failed; using the local image");
            }
        }
        if let Ok(Some(info)) = self.shared.runtime.image(image).await {
            let id = info.digests.first().cloned().unwrap_or(info.id);
            self.image_ids.insert(image.to_owned(), id);
        }
        Ok(())
    }

    async fn start_container(&mut self, name: &str, attempt: u32) -> Result<(), (String, String)> {
        let c = spec::find_container(&self.pod, name)
            .cloned()
            .ok_or_else(|| {
                (
                    "CreateContainerError".to_owned(),
                    "not in the spec".to_owned(),
                )
            })?;
        let image = c.image.clone().unwrap_or_default();
        let latest = !image.contains(':') || image.ends_with(":latest");
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| if latest { "Always" } else { "IfNotPresent" }.to_owned());
        if image.is_empty() {
            return Err(("InvalidImageName".into(), "no image".into()));
        }
        self.ensure_image(name, &image, &policy).await?;
        let sandbox_id = self
            .sandbox
            .as_ref()
            .map(|s| s.id.clone())
            .ok_or_else(|| ("CreateContainerError".to_owned(), "no sandbox".to_owned()))?;
        let (host_ip, pod_ip) = self.ips();
        let node = &self.shared.cfg.node_name;
        let services = self
            .shared
            .services
            .env(&self.shared.link, node, &self.pod)
            .await
            .map_err(|e| {
                let message = format!("failed to list services when setting up env vars: {e}");
                ("CreateContainerConfigError".to_owned(), message)
            })?;
        let placement = Placement {
            node: &self.shared.cfg.node_name,
            sandbox_id: &sandbox_id,
            root: &self.shared.cfg.root_dir,
            ips: (&host_ip, &pod_ip),
            attempt,
            services: &services,
        };
        let mut config = spec::container_config(&self.pod, &c, &self.shared.link, &placement)
            .await
            .map_err(|e| (e.reason().to_owned(), e.to_string()))?;
        if self.host_network() {
            config.network = NetworkMode::Host;
        }
        let rt = &self.shared.runtime;
        let id = rt
            .create_container(config)
            .await
            .map_err(|e| ("CreateContainerError".to_owned(), e.runtime_message()))?;
        if let Err(e) = rt.start_container(&id).await {
            let _ = rt.remove_container(&id).await;
            return Err(("RunContainerError".into(), e.runtime_message()));
        }
        debug!(pod = %self.key, container = name, id, attempt, "container started");
        Ok(())
    }

    async fn event(&mut self, subject: Subject<'_>, kind: &str, reason: &str, message: &str) {
        let shared = &self.shared;
        let what = (kind, reason, message);
        let node = &shared.cfg.node_name;
        (self.events)
            .record(&shared.link, node, &self.pod, subject, what)
            .await;
    }

    async fn report(&mut self) {
        let (host_ip, pod_ip) = self.ips();
        let view = status::View {
            containers: self.infos.iter().map(|(k, v)| (k.clone(), v)).collect(),
            previous: self.previous.iter().map(|(k, v)| (k.clone(), v)).collect(),
            host_ip: &host_ip,
            pod_ip: &pod_ip,
            start_time: self.sandbox.as_ref().and_then(|s| s.created),
            image_ids: &self.image_ids,
            sandbox_ready: self
                .sandbox
                .as_ref()
                .is_some_and(|s| matches!(s.state, ContainerState::Running { .. })),
            id_scheme: self.shared.runtime.id_scheme(),
        };
        let mut st = match &self.rejection {
            Some(r) => status::rejected(&self.pod, r, self.last_status.as_ref()),
            None => status::pod_status(&self.pod, &self.lc, &view, self.last_status.as_ref()),
        };
        if let (Some(e), Some(cs)) = (&self.runtime_error, st.container_statuses.as_mut()) {
            st.message = Some(format!("container runtime unavailable: {e}"));
            for c in cs.iter_mut().filter(|c| c.container_id.is_none()) {
                c.state = Some(k8s_openapi::api::core::v1::ContainerState {
                    waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: Some(e.clone()),
                    }),
                    ..Default::default()
                });
            }
        }
        let fp = status::fingerprint(&st);
        if fp == self.last_fingerprint {
            return;
        }
        match self
            .shared
            .link
            .report(status::podpatch(&self.pod, &st))
            .await
        {
            Ok(()) => self.last_fingerprint = fp,
            Err(e) => warn!(pod = %self.key, error = %e, "status report failed"),
        }
        let key = self.key.clone();
        let st2 = st.clone();
        self.shared.statuses.send_modify(|m| {
            m.insert(key, st2);
        });
        self.last_status = Some(st);
    }

    async fn finish(&mut self) {
        self.report().await;
        // Earlier instances kept for lastState go too.
        let uid = self.uid().to_owned();
        let node = self.shared.cfg.node_name.clone();
        if let Ok(list) = self
            .shared
            .runtime
            .list_containers(&[(LABEL_POD_UID, &uid), (LABEL_NODE, &node)])
            .await
        {
            for c in list {
                let _ = self.shared.runtime.remove_container(&c.id).await;
            }
        }
        let dir = volumes::pod_dir(&self.shared.cfg.root_dir, self.uid());
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
        if let Ok(Err(e)) = removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(pod = %self.key, error = %e, "pod directory not removed");
            }
        }
        if self.delete_upstream {
            let m = &self.pod.metadata;
            let opts = json!({
                "kind": "DeleteOptions", "apiVersion": "v1",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": m.uid},
            });
            let msg = edged_message(
                Operation::Delete,
                format!(
                    "{}/pod/{}",
                    m.namespace.as_deref().unwrap_or("default"),
                    m.name.as_deref().unwrap_or_default()
                ),
                Content::json(&opts).unwrap_or_default(),
            );
            if let Err(e) = self.shared.link.report(msg).await {
                warn!(pod = %self.key, error = %e, "pod delete not sent");
            }
        }
        let key = self.key.clone();
        self.shared.statuses.send_modify(|m| {
            m.remove(&key);
        });
        info!(pod = %self.key, "pod stopped and removed");
    }
}
