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

use super::lifecycle::{Action, Input, PodLifecycle, PodPlan, ProbeKind};
use super::link::{edged_message, Link};
use super::runtime::{ContainerInfo, ContainerRuntime, ContainerState, LABEL_NODE, LABEL_POD_UID};
use super::spec::{self};
use super::status;
use super::volumes;
use super::EdgedConfig;

mod observe;
mod ops;

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
