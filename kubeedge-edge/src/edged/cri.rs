//! [`ContainerRuntime`] on a CRI runtime (containerd) over gRPC on its unix socket, with the
//! generated CRI v1 types of `k8s-cri`. The trait's sandbox container (label
//! [`SANDBOX`]) becomes a CRI pod sandbox (`RunPodSandbox`, which creates and starts it; CNI
//! gives it its IP); the other containers are created in the sandbox named by their
//! `share_with`. Ids are the runtime's; a sandbox id and a container id never collide, so
//! stop/remove/inspect look the id up as a container first and then as a sandbox.
//! Logs are CRI log files under `log_root` in the kubelet's layout, read back for `logs`.
//! The channel connects lazily and reconnects after a failure, so a runtime restarted under
//! edged is picked up again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::FutureExt;
use futures_util::stream::BoxStream;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::cri_logs;
use super::cri_spec::{self, btree, container_state, from_nanos, label, spec};
use super::runtime::exit_code_once_stopped;
use super::runtime::{
    ContainerConfig, ContainerInfo, ContainerRuntime, ContainerState, ContainerStats,
    ContainerSummary, ExecOutput, ImageInfo, LogOptions, PortStream, RegistryAuth, Result,
    RuntimeError, RuntimeVersion, StreamIo, StreamOptions, LABEL_CONTAINER, SANDBOX,
};

mod logs;
mod streaming;

pub use crate::config::{DEFAULT_CRI_ENDPOINT, DEFAULT_LOG_ROOT};
/// The bound of one call that is not a pull.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A lazily connecting gRPC channel to the unix socket of `endpoint` (`unix:///path` or a
/// path), each connection bounded by `connect_timeout`.
pub(crate) fn unix_channel(endpoint: &str, connect_timeout: Duration) -> Channel {
    let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
    // The URI is only a placeholder: every connection goes to the socket.
    Endpoint::from_static("http://cri.invalid")
        .connect_timeout(connect_timeout)
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
}

/// A CRI runtime (containerd).
#[derive(Debug, Clone)]
pub struct CriRuntime {
    endpoint: String,
    log_root: PathBuf,
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

fn map_status(s: tonic::Status) -> RuntimeError {
    use tonic::Code;
    match s.code() {
        Code::NotFound => RuntimeError::NotFound(s.message().to_owned()),
        Code::Unavailable | Code::Cancelled => RuntimeError::Unavailable(s.message().to_owned()),
        Code::DeadlineExceeded => RuntimeError::Timeout(CALL_TIMEOUT),
        Code::Unimplemented => RuntimeError::Unsupported(s.message().to_owned()),
        code => RuntimeError::Refused {
            status: code as u16,
            message: s.message().to_owned(),
        },
    }
}

impl CriRuntime {
    /// A runtime at `endpoint` (`unix:///path` or a socket path), writing container logs under
    /// `log_root`. Nothing is contacted until the first call; call it within a Tokio runtime
    /// (the channel's worker task is spawned here).
    pub fn new(endpoint: impl Into<String>, log_root: impl Into<PathBuf>) -> Self {
        let endpoint = endpoint.into();
        let channel = unix_channel(&endpoint, Duration::from_secs(5));
        Self {
            endpoint,
            log_root: log_root.into(),
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
        }
    }

    /// One unary call, bounded in time; transport failures name the endpoint.
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => r
                .map(tonic::Response::into_inner)
                .map_err(|s| self.map_status(s)),
            Err(_) => Err(RuntimeError::Timeout(CALL_TIMEOUT)),
        }
    }

    /// [`map_status`], with the endpoint named when the runtime cannot be reached or does not
    /// speak the CRI (a transport failure).
    fn map_status(&self, s: tonic::Status) -> RuntimeError {
        // A dropped or garbled HTTP/2 connection: a socket that is not a CRI server looks so.
        // Which one tonic reports depends on when the peer's bytes arrive: Cancelled,
        // Unknown "transport error", or Internal "h2 protocol error: …".
        let garbled = s.code() == tonic::Code::Cancelled
            || (s.code() == tonic::Code::Unknown && s.message() == "transport error")
            || (s.code() == tonic::Code::Internal && s.message().starts_with("h2 protocol error"));
        match map_status(s) {
            RuntimeError::Unavailable(m) | RuntimeError::Refused { message: m, .. } if garbled => {
                RuntimeError::Unavailable(format!("{}: {m} (is it a CRI runtime?)", self.endpoint))
            }
            RuntimeError::Unavailable(m) => {
                RuntimeError::Unavailable(format!("{}: {m}", self.endpoint))
            }
            e => e,
        }
    }

    /// The endpoint this runtime talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where container logs are written.
    pub fn log_root(&self) -> &Path {
        &self.log_root
    }

    /// Every image the runtime holds.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        let r = self
            .call(
                self.img
                    .clone()
                    .list_images(cri::ListImagesRequest::default()),
            )
            .await?;
        Ok(r.images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                digests: i.repo_digests,
            })
            .collect())
    }

    /// Remove an image (a missing one is not an error).
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let req = cri::RemoveImageRequest {
            image: Some(spec(image)),
        };
        match self.call(self.img.clone().remove_image(req)).await {
            Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One container's resource usage (`ContainerStats`).
    pub async fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        let req = cri::ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        self.call(self.rt.clone().container_stats(req))
            .await?
            .stats
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let req = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.call(self.rt.clone().container_status(req))
            .await?
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        self.call(self.rt.clone().pod_sandbox_status(req))
            .await?
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    /// The sandbox config a container of sandbox `id` is created with, rebuilt from the
    /// sandbox's status (so it also holds for a sandbox adopted after a restart).
    async fn sandbox_config(&self, id: &str) -> Result<cri::PodSandboxConfig> {
        let status = self.sandbox_status(id).await?;
        Ok(cri_spec::sandbox_config_from_status(status, &self.log_root))
    }

    async fn run_sandbox(&self, c: ContainerConfig) -> Result<String> {
        let req = cri::RunPodSandboxRequest {
            config: Some(cri_spec::sandbox_config(&c, &self.log_root)),
            runtime_handler: String::new(),
        };
        Ok(self
            .call(self.rt.clone().run_pod_sandbox(req))
            .await?
            .pod_sandbox_id)
    }

    async fn create_in_sandbox(&self, c: ContainerConfig) -> Result<String> {
        let sandbox_id = cri_spec::sandbox_id_of(&c)?;
        let sandbox_config = self.sandbox_config(&sandbox_id).await?;
        let config = cri_spec::container_config(c, &sandbox_config);
        // Create the log directory now: containerd opens the file without making its parents.
        if let Some(dir) = Path::new(&sandbox_config.log_directory)
            .join(&config.log_path)
            .parent()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id,
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self
            .call(self.rt.clone().create_container(req))
            .await?
            .container_id)
    }

    async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let status = match self.sandbox_status(id).await {
            Ok(s) => s,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call(self.rt.clone().stop_pod_sandbox(stop)).await?;
        let rm = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call(self.rt.clone().remove_pod_sandbox(rm)).await?;
        if let Some(md) = status.metadata {
            let dir = cri_logs::pod_log_dir(&self.log_root, &md.namespace, &md.name, &md.uid);
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
}

impl ContainerRuntime for CriRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        let v = self.call(self.rt.clone().version(req)).await?;
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
        })
    }

    async fn image(&self, image: &str) -> Result<Option<ImageInfo>> {
        let req = cri::ImageStatusRequest {
            image: Some(spec(image)),
            verbose: false,
        };
        Ok(self
            .call(self.img.clone().image_status(req))
            .await?
            .image
            .map(|i| ImageInfo {
                id: i.id,
                digests: i.repo_digests,
            }))
    }

    async fn pull_image(&self, image: &str, auth: Option<RegistryAuth>) -> Result<()> {
        let req = cri::PullImageRequest {
            image: Some(spec(image)),
            auth: auth.map(|a| cri::AuthConfig {
                username: a.username,
                password: a.password,
                auth: a.auth,
                server_address: a.server,
                ..Default::default()
            }),
            sandbox_config: None,
        };
        match self.img.clone().pull_image(req).await {
            Ok(_) => Ok(()),
            Err(s) => match self.map_status(s) {
                e @ RuntimeError::Unavailable(_) => Err(e),
                e => Err(RuntimeError::Pull {
                    image: image.to_owned(),
                    message: e.to_string(),
                }),
            },
        }
    }

    async fn import_image(&self, reference: &str, _tar: Vec<u8>, _c: Vec<String>) -> Result<()> {
        Err(RuntimeError::Unsupported(format!(
            "importing {reference} through the CRI (import it with `ctr -n k8s.io images import`)"
        )))
    }

    async fn create_container(&self, config: ContainerConfig) -> Result<String> {
        if label(&config, LABEL_CONTAINER) == SANDBOX {
            self.run_sandbox(config).await
        } else {
            self.create_in_sandbox(config).await
        }
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let req = cri::StartContainerRequest {
            container_id: id.to_owned(),
        };
        match self.call(self.rt.clone().start_container(req)).await {
            // RunPodSandbox already started a sandbox.
            Err(RuntimeError::NotFound(m)) => match self.sandbox_status(id).await {
                Ok(_) => Ok(()),
                Err(_) => Err(RuntimeError::NotFound(m)),
            },
            r => r.map(|_| ()),
        }
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let req = cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: grace.as_secs().try_into().unwrap_or(i64::MAX),
        };
        match self.call(self.rt.clone().stop_container(req)).await {
            Err(RuntimeError::NotFound(_)) => {
                let req = cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                };
                self.call(self.rt.clone().stop_pod_sandbox(req))
                    .await
                    .map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        match self.container_status(id).await {
            Ok(_) => {
                let req = cri::RemoveContainerRequest {
                    container_id: id.to_owned(),
                };
                match self.call(self.rt.clone().remove_container(req)).await {
                    Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(RuntimeError::NotFound(_)) => self.remove_sandbox(id).await,
            Err(e) => Err(e),
        }
    }

    async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>> {
        let selector: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let sreq = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            }),
        };
        let creq = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }),
        };
        let (mut a, mut b) = (self.rt.clone(), self.rt.clone());
        let (sandboxes, containers) = tokio::try_join!(
            self.call(a.list_pod_sandbox(sreq)),
            self.call(b.list_containers(creq))
        )?;
        let ready = cri::PodSandboxState::SandboxReady as i32;
        let running = cri::ContainerState::ContainerRunning as i32;
        let mut out: Vec<ContainerSummary> = sandboxes
            .items
            .into_iter()
            .map(|s| ContainerSummary {
                id: s.id,
                labels: btree(s.labels),
                running: s.state == ready,
                created: s.created_at / 1_000_000_000,
            })
            .collect();
        out.extend(containers.containers.into_iter().map(|c| ContainerSummary {
            id: c.id,
            labels: btree(c.labels),
            running: c.state == running,
            created: c.created_at / 1_000_000_000,
        }));
        Ok(out)
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerInfo> {
        match self.container_status(id).await {
            Ok(s) => Ok(ContainerInfo {
                id: s.id.clone(),
                state: container_state(&s),
                image_id: s.image_ref.clone(),
                created: from_nanos(s.created_at),
                labels: btree(s.labels),
                ip: None,
            }),
            Err(RuntimeError::NotFound(_)) => {
                let s = self.sandbox_status(id).await?;
                let created = from_nanos(s.created_at);
                let state = if s.state == cri::PodSandboxState::SandboxReady as i32 {
                    ContainerState::Running {
                        started_at: created.unwrap_or(SystemTime::UNIX_EPOCH),
                    }
                } else {
                    ContainerState::Exited {
                        exit_code: 0,
                        started_at: created,
                        finished_at: None,
                        oom_killed: false,
                        error: String::new(),
                    }
                };
                Ok(ContainerInfo {
                    id: s.id,
                    labels: btree(s.labels),
                    image_id: String::new(),
                    state,
                    created,
                    ip: s.network.map(|n| n.ip).filter(|ip| !ip.is_empty()),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let req = cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: command,
            timeout: timeout.as_secs().max(1).try_into().unwrap_or(i64::MAX),
        };
        let mut client = self.rt.clone();
        let r = tokio::time::timeout(timeout + Duration::from_secs(1), client.exec_sync(req))
            .await
            .map_err(|_| RuntimeError::Timeout(timeout))?
            .map_err(|s| self.map_status(s))?
            .into_inner();
        let mut output = r.stdout;
        output.extend_from_slice(&r.stderr);
        Ok(ExecOutput {
            exit_code: i64::from(r.exit_code),
            output,
        })
    }

    fn logs(&self, id: &str, options: LogOptions) -> BoxStream<'static, Result<Bytes>> {
        logs::log_stream(self.clone(), id.to_owned(), options)
    }

    fn manages_sandbox_image(&self) -> bool {
        true
    }

    fn id_scheme(&self) -> &'static str {
        "containerd"
    }

    async fn exec(&self, id: &str, options: StreamOptions) -> Result<StreamIo> {
        let req = cri::ExecRequest {
            container_id: id.to_owned(),
            cmd: options.command,
            tty: options.tty,
            stdin: options.stdin,
            stdout: true,
            // A TTY merges stderr into stdout (the runtime refuses both).
            stderr: !options.tty,
        };
        let url = self.call(self.rt.clone().exec(req)).await?.url;
        streaming::remote_command(&url, options.tty, options.separate_stderr).await
    }

    async fn attach(&self, id: &str, options: StreamOptions) -> Result<StreamIo> {
        let req = cri::AttachRequest {
            container_id: id.to_owned(),
            stdin: options.stdin,
            tty: options.tty,
            stdout: true,
            stderr: !options.tty,
        };
        let url = self.call(self.rt.clone().attach(req)).await?.url;
        let mut io = streaming::remote_command(&url, options.tty, options.separate_stderr).await?;
        // The stream server reports success when the streams end; the exit code is the
        // container's.
        let (this, id, ended) = (self.clone(), id.to_owned(), io.exit);
        io.exit = async move {
            ended.await?;
            exit_code_once_stopped(&this, &id).await
        }
        .boxed();
        Ok(io)
    }

    async fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<Box<dyn PortStream>> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            port: vec![i32::from(port)],
        };
        let url = self.call(self.rt.clone().port_forward(req)).await?.url;
        streaming::port_forward(&url).await
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let s = self.container_stats(id).await?;
        let value = |v: Option<cri::UInt64Value>| v.map(|v| v.value);
        let cpu = s.cpu.unwrap_or_default();
        let mem = s.memory.unwrap_or_default();
        Ok(ContainerStats {
            timestamp: from_nanos(cpu.timestamp.max(mem.timestamp)).unwrap_or_else(SystemTime::now),
            cpu_usage_core_nano_seconds: value(cpu.usage_core_nano_seconds).unwrap_or(0),
            cpu_usage_nano_cores: value(cpu.usage_nano_cores),
            memory_working_set_bytes: value(mem.working_set_bytes).unwrap_or(0),
            memory_usage_bytes: value(mem.usage_bytes),
        })
    }
}
