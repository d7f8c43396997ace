//! [`ContainerRuntime`] on the Docker Engine API through bollard. The connection is made on
//! first use (and again after a failure), with the API version negotiated with the engine, so
//! an engine that is down at start or restarted later is picked up without restarting edged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::{ClientVersion, Docker};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::Mutex;

use super::runtime::{
    ContainerConfig, ContainerInfo, ContainerRuntime, ContainerState, ContainerStats,
    ContainerSummary, ExecOutput, ImageInfo, LogOptions, NetworkMode, PidMode, PortStream,
    RegistryAuth, Result, RuntimeError, RuntimeVersion, StreamIo, StreamOptions,
};

mod stream;

/// The Docker engine.
#[derive(Debug)]
pub struct DockerRuntime {
    endpoint: String,
    client: Mutex<Option<Docker>>,
}

/// The oldest engine API that has everything used here (Docker 20.10 speaks 1.41).
const MIN_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

fn map_err(e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        E::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Refused {
            status: status_code,
            message,
        },
        E::RequestTimeoutError => RuntimeError::Timeout(Duration::from_secs(120)),
        other => RuntimeError::Unavailable(other.to_string()),
    }
}

fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    let t: jiff::Timestamp = s?.parse().ok()?;
    // Docker reports "0001-01-01T00:00:00Z" for never.
    if t.as_second() <= 0 {
        return None;
    }
    Some(SystemTime::from(t))
}

impl DockerRuntime {
    /// An engine at `endpoint` (`unix:///var/run/docker.sock` or a socket path). Nothing is
    /// contacted until the first call.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            client: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<Docker> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let path = self.endpoint.trim_start_matches("unix://");
        let docker = Docker::connect_with_unix(path, 120, &MIN_API).map_err(map_err)?;
        let docker = docker.negotiate_version().await.map_err(map_err)?;
        *guard = Some(docker.clone());
        Ok(docker)
    }

    /// Forget the connection after a transport failure, so the next call reconnects.
    async fn check<T>(&self, r: std::result::Result<T, bollard::errors::Error>) -> Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = map_err(e);
                if e.is_unavailable() {
                    *self.client.lock().await = None;
                }
                Err(e)
            }
        }
    }
}

fn log_bytes(item: std::result::Result<LogOutput, bollard::errors::Error>) -> Result<Bytes> {
    item.map(LogOutput::into_bytes).map_err(map_err)
}

impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let d = self.client().await?;
        let v = self.check(d.version().await).await?;
        Ok(RuntimeVersion {
            name: "docker".into(),
            version: v.version.unwrap_or_default(),
        })
    }

    async fn image(&self, image: &str) -> Result<Option<ImageInfo>> {
        let d = self.client().await?;
        match self.check(d.inspect_image(image).await).await {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                digests: i.repo_digests.unwrap_or_default(),
            })),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(&self, image: &str, auth: Option<RegistryAuth>) -> Result<()> {
        let d = self.client().await?;
        let (repo, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let creds = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username).filter(|s| !s.is_empty()),
            password: Some(a.password).filter(|s| !s.is_empty()),
            auth: Some(a.auth).filter(|s| !s.is_empty()),
            serveraddress: Some(a.server).filter(|s| !s.is_empty()),
            ..Default::default()
        });
        let mut stream = d.create_image(Some(options), None, creds);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|e| e.message) {
                        return Err(RuntimeError::Pull {
                            image: image.to_owned(),
                            message: err,
                        });
                    }
                }
                Err(e) => {
                    let message = match map_err(e) {
                        RuntimeError::Unavailable(m) => {
                            *self.client.lock().await = None;
                            return Err(RuntimeError::Unavailable(m));
                        }
                        RuntimeError::NotFound(m) | RuntimeError::Refused { message: m, .. } => m,
                        other => other.to_string(),
                    };
                    return Err(RuntimeError::Pull {
                        image: image.to_owned(),
                        message,
                    });
                }
            }
        }
        Ok(())
    }

    async fn import_image(
        &self,
        reference: &str,
        rootfs_tar: Vec<u8>,
        changes: Vec<String>,
    ) -> Result<()> {
        let d = self.client().await?;
        let (repo, tag) = split_reference(reference);
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            changes,
            ..Default::default()
        };
        let body = bollard::body_full(Bytes::from(rootfs_tar));
        let mut stream = d.create_image(Some(options), Some(body), None);
        while let Some(item) = stream.next().await {
            let info = self.check(item).await?;
            if let Some(err) = info.error_detail.and_then(|e| e.message) {
                return Err(RuntimeError::Refused {
                    status: 500,
                    message: err,
                });
            }
        }
        Ok(())
    }

    async fn create_container(&self, c: ContainerConfig) -> Result<String> {
        let d = self.client().await?;
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let mut exposed = Vec::new();
        for p in &c.ports {
            let key = format!("{}/{}", p.container_port, p.protocol);
            exposed.push(key.clone());
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()).filter(|s| !s.is_empty()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let network_mode = match &c.network {
            NetworkMode::Bridge => None,
            NetworkMode::Host => Some("host".to_owned()),
            NetworkMode::Container(id) => Some(format!("container:{id}")),
        };
        let share = c.share_with.as_ref().map(|id| format!("container:{id}"));
        // A sandbox lends its IPC namespace to the pod's containers.
        let ipc_mode = share.clone().or_else(|| {
            (!matches!(c.network, NetworkMode::Container(_))).then(|| "shareable".to_owned())
        });
        let binds: Vec<String> = c
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{}:{}:{}",
                    m.host_path,
                    m.container_path,
                    if m.read_only { "ro" } else { "rw" }
                )
            })
            .collect();
        let host_config = HostConfig {
            binds: Some(binds).filter(|b| !b.is_empty()),
            network_mode,
            port_bindings: Some(port_bindings).filter(|p| !p.is_empty()),
            ipc_mode,
            pid_mode: match &c.pid {
                PidMode::Private => None,
                PidMode::Host => Some("host".to_owned()),
                PidMode::Container(id) => Some(format!("container:{id}")),
            },
            memory: c.memory_limit,
            nano_cpus: c.nano_cpus,
            cpu_shares: c.cpu_shares,
            privileged: Some(c.privileged).filter(|p| *p),
            // The sandbox's resolv.conf; containers joined to its network share it.
            dns: c.dns.as_ref().map(|d| d.servers.clone()),
            dns_search: c.dns.as_ref().map(|d| d.searches.clone()),
            dns_options: c.dns.as_ref().map(|d| d.options.clone()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(c.image.clone()),
            entrypoint: c.entrypoint.clone(),
            cmd: c.args.clone(),
            env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            labels: Some(c.labels.clone().into_iter().collect()),
            exposed_ports: Some(exposed).filter(|e| !e.is_empty()),
            hostname: c.hostname.clone(),
            user: c.user.clone(),
            tty: Some(c.tty),
            open_stdin: Some(c.stdin),
            attach_stdin: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(c.name.clone()),
            ..Default::default()
        };
        let r = self
            .check(d.create_container(Some(options), body).await)
            .await?;
        Ok(r.id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let d = self.client().await?;
        self.check(d.start_container(id, None).await).await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let d = self.client().await?;
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.check(d.stop_container(id, Some(options)).await).await {
            // 304: already stopped.
            Err(RuntimeError::Refused { status: 304, .. }) => Ok(()),
            other => other,
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let d = self.client().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self
            .check(d.remove_container(id, Some(options)).await)
            .await
        {
            Err(RuntimeError::NotFound(_)) => Ok(()),
            // 409: removal already in progress.
            Err(RuntimeError::Refused { status: 409, .. }) => Ok(()),
            other => other,
        }
    }

    async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>> {
        let d = self.client().await?;
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self.check(d.list_containers(Some(options)).await).await?;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                created: c.created.unwrap_or(0),
            })
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerInfo> {
        let d = self.client().await?;
        let c = self.check(d.inspect_container(id, None).await).await?;
        let s = c.state.unwrap_or_default();
        let status = s.status.map(|s| s.to_string()).unwrap_or_default();
        let started_at = parse_time(s.started_at.as_deref());
        let state = match status.as_str() {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running {
                started_at: started_at.unwrap_or(SystemTime::UNIX_EPOCH),
            },
            "exited" | "dead" => ContainerState::Exited {
                exit_code: s.exit_code.unwrap_or(-1),
                started_at,
                finished_at: parse_time(s.finished_at.as_deref()),
                oom_killed: s.oom_killed.unwrap_or(false),
                error: s.error.unwrap_or_default(),
            },
            other => ContainerState::Other(other.to_owned()),
        };
        let ip = c.network_settings.and_then(|n| n.networks).and_then(|n| {
            n.values()
                .filter_map(|e| e.ip_address.clone())
                .find(|ip| !ip.is_empty())
        });
        let labels: BTreeMap<String, String> = c
            .config
            .and_then(|cfg| cfg.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            labels,
            image_id: c.image.unwrap_or_default(),
            state,
            created: parse_time(c.created.as_deref()),
            ip,
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let d = self.client().await?;
        let run = async {
            let exec = self
                .check(
                    d.create_exec(
                        id,
                        CreateExecOptions {
                            cmd: Some(command),
                            attach_stdout: Some(true),
                            attach_stderr: Some(true),
                            ..Default::default()
                        },
                    )
                    .await,
                )
                .await?;
            let mut output = Vec::new();
            if let StartExecResults::Attached {
                output: mut out, ..
            } = self.check(d.start_exec(&exec.id, None).await).await?
            {
                while let Some(chunk) = out.next().await {
                    output.extend_from_slice(&log_bytes(chunk)?);
                }
            }
            let inspect = self.check(d.inspect_exec(&exec.id).await).await?;
            Ok(ExecOutput {
                exit_code: inspect.exit_code.unwrap_or(-1),
                output,
            })
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| RuntimeError::Timeout(timeout))?
    }

    fn logs(&self, id: &str, options: LogOptions) -> BoxStream<'static, Result<Bytes>> {
        self.log_stream(id, options)
    }

    async fn exec(&self, id: &str, options: StreamOptions) -> Result<StreamIo> {
        self.exec_stream(id, options).await
    }

    async fn attach(&self, id: &str, options: StreamOptions) -> Result<StreamIo> {
        self.attach_stream(id, options).await
    }

    async fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<Box<dyn PortStream>> {
        self.dial_port(sandbox_id, port).await
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        self.one_shot_stats(id).await
    }
}

/// `repo[:tag]` (a digest reference keeps its `@sha256:` in the repo part; tag defaults to
/// `latest`).
fn split_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
    }
}
