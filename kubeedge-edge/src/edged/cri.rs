//! [`ContainerRuntime`] on a CRI runtime (containerd) over gRPC on its unix socket, with the
//! generated CRI v1 types of `k8s-cri`. The trait's sandbox container (label
//! [`SANDBOX`]) becomes a CRI pod sandbox (`RunPodSandbox`, which creates and starts it; CNI
//! gives it its IP); the other containers are created in the sandbox named by their
//! `share_with`. Ids are the runtime's; a sandbox id and a container id never collide, so
//! stop/remove/inspect look the id up as a container first and then as a sandbox.
//! Logs are CRI log files under `log_root` in the kubelet's layout, read back for `logs`.
//! The channel connects lazily and reconnects after a failure, so a runtime restarted under
//! edged is picked up again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::cri_logs;
use super::runtime::{
    ContainerConfig, ContainerInfo, ContainerRuntime, ContainerState, ContainerSummary, ExecOutput,
    ImageInfo, LogOptions, NetworkMode, RegistryAuth, Result, RuntimeError, RuntimeVersion,
    StreamIo, StreamOptions, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID, SANDBOX,
};

/// The kubelet's pod log root.
pub const DEFAULT_LOG_ROOT: &str = "/var/log/pods";
/// Upstream's default CRI endpoint.
pub const DEFAULT_CRI_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// The bound of one call that is not a pull.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

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

async fn call<T>(
    fut: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner).map_err(map_status),
        Err(_) => Err(RuntimeError::Timeout(CALL_TIMEOUT)),
    }
}

fn from_nanos(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

fn btree(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn label<'a>(c: &'a ContainerConfig, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or_default()
}

/// The attempt of a sandbox from its trait name (`…-<attempt>`).
fn name_attempt(name: &str) -> u32 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn namespaces(host: bool) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: if host {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        } as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn user_ids(user: Option<&str>) -> (Option<cri::Int64Value>, Option<cri::Int64Value>) {
    let Some(u) = user else { return (None, None) };
    let mut it = u.splitn(2, ':');
    let id = |s: Option<&str>| {
        s.and_then(|v| v.parse().ok())
            .map(|value| cri::Int64Value { value })
    };
    (id(it.next()), id(it.next()))
}

impl CriRuntime {
    /// A runtime at `endpoint` (`unix:///path` or a socket path), writing container logs under
    /// `log_root`. Nothing is contacted until the first call.
    pub fn new(endpoint: impl Into<String>, log_root: impl Into<PathBuf>) -> Self {
        let endpoint = endpoint.into();
        let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(&endpoint));
        // The URI is only a placeholder: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Self {
            endpoint,
            log_root: log_root.into(),
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
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
        let r = call(
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
        match call(self.img.clone().remove_image(req)).await {
            Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One container's resource usage (`ContainerStats`).
    pub async fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        let req = cri::ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        call(self.rt.clone().container_stats(req))
            .await?
            .stats
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let req = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        call(self.rt.clone().container_status(req))
            .await?
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        call(self.rt.clone().pod_sandbox_status(req))
            .await?
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    /// The sandbox config a container of sandbox `id` is created with, rebuilt from the
    /// sandbox's status (so it also holds for a sandbox adopted after a restart).
    async fn sandbox_config(&self, id: &str) -> Result<cri::PodSandboxConfig> {
        let s = self.sandbox_status(id).await?;
        let md = s.metadata.unwrap_or_default();
        let host = s
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network == cri::NamespaceMode::Node as i32);
        let log_directory = cri_logs::pod_log_dir(&self.log_root, &md.namespace, &md.name, &md.uid);
        Ok(cri::PodSandboxConfig {
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: s.labels,
            annotations: s.annotations,
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(host)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            metadata: Some(md),
            ..Default::default()
        })
    }

    async fn run_sandbox(&self, c: ContainerConfig) -> Result<String> {
        let host = c.network == NetworkMode::Host;
        let (ns, name, uid) = (
            label(&c, LABEL_POD_NAMESPACE),
            label(&c, LABEL_POD_NAME),
            label(&c, LABEL_POD_UID),
        );
        let log_directory = cri_logs::pod_log_dir(&self.log_root, ns, name, uid);
        let port_mappings = c
            .ports
            .iter()
            .map(|p| cri::PortMapping {
                protocol: match p.protocol.as_str() {
                    "udp" => cri::Protocol::Udp,
                    "sctp" => cri::Protocol::Sctp,
                    _ => cri::Protocol::Tcp,
                } as i32,
                container_port: i32::from(p.container_port),
                host_port: i32::from(p.host_port),
                host_ip: p.host_ip.clone(),
            })
            .collect();
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: ns.to_owned(),
                attempt: name_attempt(&c.name),
            }),
            hostname: c.hostname.clone().unwrap_or_default(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            port_mappings,
            labels: c.labels.clone().into_iter().collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(host)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(call(self.rt.clone().run_pod_sandbox(req))
            .await?
            .pod_sandbox_id)
    }

    async fn create_in_sandbox(&self, c: ContainerConfig) -> Result<String> {
        let sandbox_id = match (&c.share_with, &c.network) {
            (Some(id), _) | (None, NetworkMode::Container(id)) => id.clone(),
            _ => {
                return Err(RuntimeError::Refused {
                    status: 400,
                    message: format!("container {} names no pod sandbox", c.name),
                })
            }
        };
        let sandbox_config = self.sandbox_config(&sandbox_id).await?;
        let name = label(&c, LABEL_CONTAINER).to_owned();
        let attempt = label(&c, LABEL_ATTEMPT).parse().unwrap_or(0);
        let (run_as_user, run_as_group) = user_ids(c.user.as_deref());
        let host = sandbox_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|o| o.network == cri::NamespaceMode::Node as i32);
        let resources = cri::LinuxContainerResources {
            cpu_period: if c.nano_cpus.is_some() { 100_000 } else { 0 },
            cpu_quota: c.nano_cpus.map(|n| n / 10_000).unwrap_or(0),
            cpu_shares: c.cpu_shares.unwrap_or(0),
            memory_limit_in_bytes: c.memory_limit.unwrap_or(0),
            ..Default::default()
        };
        // Create the log directory now: containerd opens the file without making its parents.
        let log_path = cri_logs::container_log_path(&name, attempt);
        let _ = std::fs::create_dir_all(Path::new(&sandbox_config.log_directory).join(&name));
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name, attempt }),
            image: Some(spec(&c.image)),
            command: c.entrypoint.unwrap_or_default(),
            args: c.args.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            envs: c
                .env
                .into_iter()
                .map(|(key, value)| cri::KeyValue { key, value })
                .collect(),
            mounts: c
                .mounts
                .into_iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path,
                    host_path: m.host_path,
                    readonly: m.read_only,
                    ..Default::default()
                })
                .collect(),
            labels: c.labels.into_iter().collect(),
            log_path,
            stdin: c.stdin,
            tty: c.tty,
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    privileged: c.privileged,
                    namespace_options: Some(namespaces(host)),
                    run_as_user,
                    run_as_group,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id,
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(call(self.rt.clone().create_container(req))
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
        call(self.rt.clone().stop_pod_sandbox(stop)).await?;
        let rm = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        call(self.rt.clone().remove_pod_sandbox(rm)).await?;
        if let Some(md) = status.metadata {
            let dir = cri_logs::pod_log_dir(&self.log_root, &md.namespace, &md.name, &md.uid);
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    async fn read_logs(&self, id: &str, o: &LogOptions) -> Result<(Vec<u8>, String, bool)> {
        let s = self.container_status(id).await?;
        let running = s.state == cri::ContainerState::ContainerRunning as i32;
        let data = match read_file(s.log_path.clone()).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(RuntimeError::Unavailable(format!("{}: {e}", s.log_path))),
        };
        let lines = cri_logs::parse(&data);
        Ok((
            cri_logs::render(lines, o.since, o.tail, o.timestamps),
            s.log_path,
            running,
        ))
    }
}

/// Read a file off the async threads.
async fn read_file(path: String) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(std::io::Error::other)?
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

fn container_state(s: &cri::ContainerStatus) -> ContainerState {
    use cri::ContainerState as S;
    match S::try_from(s.state) {
        Ok(S::ContainerCreated) => ContainerState::Created,
        Ok(S::ContainerRunning) => ContainerState::Running {
            started_at: from_nanos(s.started_at).unwrap_or(SystemTime::UNIX_EPOCH),
        },
        Ok(S::ContainerExited) => ContainerState::Exited {
            exit_code: i64::from(s.exit_code),
            started_at: from_nanos(s.started_at),
            finished_at: from_nanos(s.finished_at),
            oom_killed: s.reason == "OOMKilled",
            error: if s.reason == "Completed" || s.reason == "Error" {
                String::new()
            } else {
                s.message.clone()
            },
        },
        _ => ContainerState::Other("unknown".into()),
    }
}

impl ContainerRuntime for CriRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        let v = call(self.rt.clone().version(req)).await?;
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
        Ok(call(self.img.clone().image_status(req))
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
            Err(s) => match map_status(s) {
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
        match call(self.rt.clone().start_container(req)).await {
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
        match call(self.rt.clone().stop_container(req)).await {
            Err(RuntimeError::NotFound(_)) => {
                let req = cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                };
                call(self.rt.clone().stop_pod_sandbox(req))
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
                match call(self.rt.clone().remove_container(req)).await {
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
            call(a.list_pod_sandbox(sreq)),
            call(b.list_containers(creq))
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
            .map_err(map_status)?
            .into_inner();
        let mut output = r.stdout;
        output.extend_from_slice(&r.stderr);
        Ok(ExecOutput {
            exit_code: i64::from(r.exit_code),
            output,
        })
    }

    fn logs(&self, id: &str, options: LogOptions) -> BoxStream<'static, Result<Bytes>> {
        let this = self.clone();
        let id = id.to_owned();
        let first = async move {
            let (data, path, running) = this.read_logs(&id, &options).await?;
            let tail = if options.follow && running {
                follow(this, id, path, options.timestamps).boxed()
            } else {
                stream::empty().boxed()
            };
            Ok::<_, RuntimeError>(stream::once(async move { Ok(Bytes::from(data)) }).chain(tail))
        };
        stream::once(first)
            .map(|r| match r {
                Ok(s) => s.boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    fn manages_sandbox_image(&self) -> bool {
        true
    }

    async fn exec(&self, id: &str, _options: StreamOptions) -> Result<StreamIo> {
        Err(RuntimeError::Unsupported(format!(
            "interactive exec in {id} through the CRI is not supported yet"
        )))
    }

    async fn attach(&self, id: &str, _options: StreamOptions) -> Result<StreamIo> {
        Err(RuntimeError::Unsupported(format!(
            "attach to {id} through the CRI is not supported yet"
        )))
    }
}

/// Follow a log file from its current end while the container runs: the file is polled
/// (containerd appends whole records), and the stream ends once the container has stopped
/// and the rest is read.
fn follow(
    rt: CriRuntime,
    id: String,
    path: String,
    timestamps: bool,
) -> impl futures_util::Stream<Item = Result<Bytes>> + Send {
    let start = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    stream::unfold(Some(start), move |offset| {
        let (rt, id, path) = (rt.clone(), id.clone(), path.clone());
        async move {
            let mut offset = offset?;
            loop {
                let running = matches!(
                    rt.container_status(&id).await.map(|s| s.state),
                    Ok(s) if s == cri::ContainerState::ContainerRunning as i32
                );
                let data = read_file(path.clone()).await.unwrap_or_default();
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let new = &data[start..];
                // Only whole records: a half-written one waits for the next round.
                let whole = new.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                offset += whole as u64;
                let lines = cri_logs::parse(&new[..whole]);
                let out = cri_logs::render(lines, None, None, timestamps);
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), Some(offset)));
                }
                if !running {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    })
}
