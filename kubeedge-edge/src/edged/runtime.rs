//! The container runtime edged drives: a small trait (containers by label, images, logs,
//! exec and attach as byte streams with terminal resize and exit status, port forwarding,
//! resource usage) with [`super::DockerRuntime`] and [`super::CriRuntime`] as its
//! implementations.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Label: the pod's UID (kubelet's name, so `docker ps` reads the same as on a kubelet node).
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// Label: the pod's name.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label: the container's name in the pod spec ([`SANDBOX`] for the sandbox).
pub const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
/// Label: how many times this container was restarted before this instance (restartCount).
pub const LABEL_ATTEMPT: &str = "io.kubernetes.container.restartCount";
/// Label: the node whose edged owns the container (orphans are only looked for among these).
pub const LABEL_NODE: &str = "io.kubeedge-rs.node";
/// The container name used for the pod sandbox.
pub const SANDBOX: &str = "POD";

/// Runtime failures.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime cannot be reached (retryable).
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// No such container or exec session.
    #[error("no such container: {0}")]
    NotFound(String),
    /// The image is not present and could not be pulled.
    #[error("cannot pull image {image}: {message}")]
    Pull {
        /// The image reference.
        image: String,
        /// Why.
        message: String,
    },
    /// The image is not present and the pull policy forbids pulling.
    #[error("image {0} is not present and imagePullPolicy is Never")]
    ImageNotPresent(String),
    /// The runtime refused a request (e.g. a bad command or mount).
    #[error("runtime refused the request ({status}): {message}")]
    Refused {
        /// HTTP status of the runtime API.
        status: u16,
        /// The runtime's message.
        message: String,
    },
    /// The operation did not finish in time.
    #[error("runtime operation timed out after {0:?}")]
    Timeout(Duration),
    /// This runtime does not offer the operation (yet).
    #[error("not supported by this container runtime: {0}")]
    Unsupported(String),
}

impl RuntimeError {
    /// Whether the runtime itself is down (rather than the request being bad).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The runtime's own words for a refusal (what the kubelet puts in a container's waiting
    /// message: the CRI status message, `s.Message()`), else this error's text.
    pub fn runtime_message(&self) -> String {
        match self {
            Self::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// How a container joins the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NetworkMode {
    /// The runtime's default bridge (the sandbox of a normal pod).
    #[default]
    Bridge,
    /// The host's network namespace (`hostNetwork: true`).
    Host,
    /// Another container's namespace (a pod's containers join its sandbox).
    Container(String),
}

/// Whose PID namespace a container joins (kubelet's `PidNamespaceForPod`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PidMode {
    /// Its own: its command is PID 1 (the default).
    #[default]
    Private,
    /// The host's (`hostPID: true`).
    Host,
    /// Another container's: the sandbox's, with `shareProcessNamespace: true`.
    Container(String),
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path on the host.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
    /// Read-only.
    pub read_only: bool,
}

/// A published port (on the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Port in the container.
    pub container_port: u16,
    /// Port on the host.
    pub host_port: u16,
    /// Host address to bind ("" = all).
    pub host_ip: String,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerConfig {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override (`command`).
    pub entrypoint: Option<Vec<String>>,
    /// Arguments override (`args`).
    pub args: Option<Vec<String>>,
    /// `NAME=value` pairs, in order.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
    /// Network namespace.
    pub network: NetworkMode,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Share IPC with this container (the sandbox).
    pub share_with: Option<String>,
    /// PID namespace.
    pub pid: PidMode,
    /// Hostname (sandbox only).
    pub hostname: Option<String>,
    /// Resolver settings (sandbox only; the pod's containers share them).
    pub dns: Option<super::DnsConfig>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// CPU limit in units of 1e-9 CPUs.
    pub nano_cpus: Option<i64>,
    /// CPU shares (relative weight from requests).
    pub cpu_shares: Option<i64>,
    /// `runAsUser[:runAsGroup]`.
    pub user: Option<String>,
    /// Privileged.
    pub privileged: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
}

/// The state of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running since.
    Running {
        /// Start time.
        started_at: SystemTime,
    },
    /// Exited.
    Exited {
        /// Exit code.
        exit_code: i64,
        /// Start time (if it ever started).
        started_at: Option<SystemTime>,
        /// End time.
        finished_at: Option<SystemTime>,
        /// Killed for exceeding its memory limit.
        oom_killed: bool,
        /// The runtime's error text (e.g. the command was not found).
        error: String,
    },
    /// Anything else (paused, restarting, removing, dead).
    Other(String),
}

/// One container, from a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Runtime id.
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it runs.
    pub running: bool,
    /// Creation time (Unix seconds).
    pub created: i64,
}

impl ContainerSummary {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// One container, inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Runtime id.
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// The state.
    pub state: ContainerState,
    /// Creation time.
    pub created: Option<SystemTime>,
    /// Its IP on the bridge, if it has one.
    pub ip: Option<String>,
}

/// An image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:…`.
    pub id: String,
    /// `repo@sha256:…` digests, when pulled from a registry.
    pub digests: Vec<String>,
}

/// Registry credentials (from imagePullSecrets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
    /// A ready-made auth token (base64 `user:password`).
    pub auth: String,
    /// Registry address.
    pub server: String,
}

/// Versions, for the node's nodeInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// `docker`.
    pub name: String,
    /// Engine version.
    pub version: String,
}

/// The result of a command run to completion in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i64,
    /// stdout and stderr, interleaved.
    pub output: Vec<u8>,
}

/// Log options (kubectl logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogOptions {
    /// Keep streaming.
    pub follow: bool,
    /// Only the last lines.
    pub tail: Option<u64>,
    /// Only since this Unix time (seconds).
    pub since: Option<i64>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
}

/// Exec or attach options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// The command (exec only).
    pub command: Vec<String>,
    /// Connect stdin.
    pub stdin: bool,
    /// With a TTY.
    pub tty: bool,
    /// Without a TTY, deliver stderr apart from stdout ([`StreamIo::stderr`]), as the
    /// kubelet's stream protocols carry them on their own channels.
    pub separate_stderr: bool,
}

/// A terminal size, in character cells (the kubelet's `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// An interactive session: output bytes and, with stdin, a writer.
pub struct StreamIo {
    /// stdout/stderr bytes (a TTY merges them). Ends when the command (or, for attach, the
    /// container's streams) ends.
    pub output: BoxStream<'static, Result<Bytes>>,
    /// stderr bytes on their own, when [`StreamOptions::separate_stderr`] asked for them (and
    /// there is no TTY); `output` then carries stdout only.
    pub stderr: Option<BoxStream<'static, Result<Bytes>>>,
    /// stdin. Shutting it down closes the command's stdin on Docker; a CRI stream server
    /// speaking `v4.channel.k8s.io` over WebSocket has no half-close, so there stdin stays
    /// open until the session ends (the command must end by itself).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Terminal size changes (only with a TTY; the first one sets the initial size).
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// How it ended, once the output has ended: for exec the command's exit code, for attach
    /// the container's exit code if it has exited by then (None while it runs). An error when
    /// the runtime reported a failure other than an exit code (e.g. no such executable on the
    /// CRI) or the session broke off without a status.
    pub exit: BoxFuture<'static, Result<Option<i64>>>,
}

impl std::fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIo").finish_non_exhaustive()
    }
}

/// Split a stream of `(is_stderr, bytes)` into stdout and stderr streams: a task reads the
/// source and hands each chunk to its side (both sides end when the source does).
pub(crate) fn split_output(
    src: BoxStream<'static, Result<(bool, Bytes)>>,
) -> (
    BoxStream<'static, Result<Bytes>>,
    BoxStream<'static, Result<Bytes>>,
) {
    use futures_util::StreamExt as _;
    let (out_tx, mut out_rx) = mpsc::channel::<Result<Bytes>>(16);
    let (err_tx, mut err_rx) = mpsc::channel::<Result<Bytes>>(16);
    tokio::spawn(async move {
        let mut src = src;
        loop {
            // Once nobody reads either side, drop the source (it may hold the session open).
            let item = tokio::select! {
                item = src.next() => match item {
                    Some(item) => item,
                    None => return,
                },
                () = async { out_tx.closed().await; err_tx.closed().await } => return,
            };
            // A side nobody reads any more drops its chunks; the other goes on.
            let _ = match item {
                Ok((true, b)) => err_tx.send(Ok(b)).await,
                Ok((false, b)) => out_tx.send(Ok(b)).await,
                Err(e) => out_tx.send(Err(e)).await,
            };
        }
    });
    (
        futures_util::stream::poll_fn(move |cx| out_rx.poll_recv(cx)).boxed(),
        futures_util::stream::poll_fn(move |cx| err_rx.poll_recv(cx)).boxed(),
    )
}

/// A bidirectional byte stream (a forwarded port).
pub trait PortStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> PortStream for T {}

/// One container's resource usage at one moment (what `/stats/summary` reports per
/// container: the CRI's `ContainerStats`, or Docker's stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStats {
    /// When it was sampled.
    pub timestamp: SystemTime,
    /// CPU time used since the container started, in core-nanoseconds
    /// (`usageCoreNanoSeconds`).
    pub cpu_usage_core_nano_seconds: u64,
    /// The recent CPU rate in nanocores (`usageNanoCores`), when the runtime computed one
    /// (containerd does from its previous sample; Docker's one-shot stats do not).
    pub cpu_usage_nano_cores: Option<u64>,
    /// Memory in use minus inactive file pages (`workingSetBytes`, the kubelet's eviction
    /// measure).
    pub memory_working_set_bytes: u64,
    /// All memory in use, page cache included (`usageBytes`), when known.
    pub memory_usage_bytes: Option<u64>,
}

/// What edged needs from a container runtime. Containers are found by label; ids are the
/// runtime's.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The runtime's name and version (also a health check).
    fn version(&self) -> impl Future<Output = Result<RuntimeVersion>> + Send;
    /// The image, if present locally.
    fn image(&self, image: &str) -> impl Future<Output = Result<Option<ImageInfo>>> + Send;
    /// Pull an image.
    fn pull_image(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Import a root filesystem tar as image `reference`, with Dockerfile-like `changes`
    /// (e.g. `ENTRYPOINT ["/pause"]`).
    fn import_image(
        &self,
        reference: &str,
        rootfs_tar: Vec<u8>,
        changes: Vec<String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Create a container; returns its id.
    fn create_container(
        &self,
        config: ContainerConfig,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Start a created container.
    fn start_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop_container(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Remove a container (killing it if needed). A missing container is not an error.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Containers (running or not) carrying every `labels` pair.
    fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<ContainerSummary>>> + Send;
    /// Inspect one container.
    fn inspect_container(&self, id: &str) -> impl Future<Output = Result<ContainerInfo>> + Send;
    /// Run a command to completion (probes, preStop), bounded by `timeout`.
    fn exec_sync(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// A container's logs.
    fn logs(&self, id: &str, options: LogOptions) -> BoxStream<'static, Result<Bytes>>;
    /// Start an interactive command.
    fn exec(
        &self,
        id: &str,
        options: StreamOptions,
    ) -> impl Future<Output = Result<StreamIo>> + Send;
    /// Whether the runtime chooses the pod sandbox image itself (a CRI runtime such as
    /// containerd runs its own configured `sandbox_image`; `RunPodSandbox` names none), so
    /// edged need not provide one.
    fn manages_sandbox_image(&self) -> bool {
        false
    }
    /// The scheme of this runtime's container IDs in pod statuses (`<scheme>://<id>`, as the
    /// kubelet reports them: `docker`, `containerd`, `cri-o`).
    fn id_scheme(&self) -> &'static str {
        "docker"
    }
    /// Attach to the container's main process.
    fn attach(
        &self,
        id: &str,
        options: StreamOptions,
    ) -> impl Future<Output = Result<StreamIo>> + Send;
    /// A connection to `port` (TCP) in the network namespace of the pod whose sandbox is
    /// `sandbox_id` (`kubectl port-forward`). On the CRI this is the runtime's `PortForward`,
    /// which dials `localhost:<port>` inside the namespace; on Docker it dials the sandbox's
    /// bridge IP (or 127.0.0.1 for a host-network pod), so a listener bound only to the pod's
    /// own 127.0.0.1 is not reached there. A refused connection is an error on Docker; on the
    /// CRI the stream server accepts first and dials afterwards, so there it shows as a stream
    /// that ends at once (the runtime's error text is logged).
    fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<Box<dyn PortStream>>> + Send;
    /// A running container's resource usage, sampled once.
    fn stats(&self, id: &str) -> impl Future<Output = Result<ContainerStats>> + Send;
}

/// How long a container whose attached streams have ended may still show as running before
/// its exit code is read.
const EXIT_SETTLE: Duration = Duration::from_secs(3);

/// The exit code of container `id` once it has stopped (the `exit` of an attach session),
/// waiting up to [`EXIT_SETTLE`] for the runtime to record it; None when it still runs.
pub(crate) async fn exit_code_once_stopped<R: ContainerRuntime>(
    rt: &R,
    id: &str,
) -> Result<Option<i64>> {
    let deadline = tokio::time::Instant::now() + EXIT_SETTLE;
    loop {
        match rt.inspect_container(id).await?.state {
            ContainerState::Exited { exit_code, .. } => return Ok(Some(exit_code)),
            _ if tokio::time::Instant::now() >= deadline => return Ok(None),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
