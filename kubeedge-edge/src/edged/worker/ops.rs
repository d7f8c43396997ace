//! A worker's runtime operations: the sandbox, image pulls, container starts, graceful stops
//! and probes (each of the last two as a task of its own that reports back as an input).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::super::dns::pod_dns;
use super::super::lifecycle::ProbeKind;
use super::super::probes;
use super::super::runtime::{ContainerRuntime, NetworkMode};
use super::super::sandbox::{ensure_sandbox_image, sandbox_config};
use super::super::spec::{self, Placement};

use super::{Done, Worker};

impl<R: ContainerRuntime> Worker<R> {
    pub(super) fn spawn_kill(
        &self,
        container: &str,
        id: String,
        grace: Duration,
        done: mpsc::Sender<Done>,
    ) {
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

    pub(super) fn probe_addr(&self) -> String {
        if self.host_network() {
            "127.0.0.1".to_owned()
        } else {
            self.ips().1
        }
    }

    pub(super) fn spawn_probe(
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

    pub(super) async fn start_sandbox(&mut self) -> Result<(), String> {
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
        let dns = pod_dns(&self.pod, &self.shared.cfg.dns);
        let cfg = sandbox_config(&self.pod, node, image, self.sandbox_attempt, dns)?;
        let id = rt.create_container(cfg).await.map_err(|e| e.to_string())?;
        if let Err(e) = rt.start_container(&id).await {
            let _ = rt.remove_container(&id).await;
            return Err(e.to_string());
        }
        debug!(pod = %self.key, id, "sandbox started");
        Ok(())
    }

    pub(super) async fn ensure_image(
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
            let auth = super::super::pull::pull_auth(&self.shared.link, &self.pod, image).await;
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

    pub(super) async fn start_container(
        &mut self,
        name: &str,
        attempt: u32,
    ) -> Result<(), (String, String)> {
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
}
