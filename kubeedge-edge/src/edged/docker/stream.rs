//! The Docker runtime's streams: logs, exec and attach (with terminal resize and exit
//! status), port forwarding to the sandbox's address, and one-shot stats.

use std::time::{Duration, SystemTime};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptions, LogsOptions, ResizeContainerTTYOptions, StatsOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::future::FutureExt;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use super::{log_bytes, map_err, DockerRuntime};
use crate::edged::runtime::{
    exit_code_once_stopped, ContainerRuntime, ContainerStats, LogOptions, PortStream, Result,
    RuntimeError, StreamIo, StreamOptions, TerminalSize,
};

/// How long an ended exec may still show as running before its exit code is read.
const EXIT_SETTLE: Duration = Duration::from_secs(10);

/// A resize sender whose requests `apply` carries out, one at a time, until it is dropped.
fn resizer<F, Fut>(tty: bool, apply: F) -> Option<mpsc::Sender<TerminalSize>>
where
    F: Fn(TerminalSize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), bollard::errors::Error>> + Send,
{
    if !tty {
        return None;
    }
    let (tx, mut rx) = mpsc::channel::<TerminalSize>(4);
    tokio::spawn(async move {
        while let Some(size) = rx.recv().await {
            if let Err(e) = apply(size).await {
                tracing::debug!(error = %e, "terminal resize refused");
            }
        }
    });
    Some(tx)
}

/// The exit code of exec `exec_id`, once the engine no longer shows it running.
async fn exec_exit(d: Docker, exec_id: String) -> Result<Option<i64>> {
    let deadline = tokio::time::Instant::now() + EXIT_SETTLE;
    loop {
        let i = d.inspect_exec(&exec_id).await.map_err(map_err)?;
        if i.running != Some(true) || tokio::time::Instant::now() >= deadline {
            return Ok(i.exit_code);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl DockerRuntime {
    pub(super) fn log_stream(
        &self,
        id: &str,
        options: LogOptions,
    ) -> BoxStream<'static, Result<Bytes>> {
        let id = id.to_owned();
        let endpoint = self.endpoint.clone();
        // The stream owns its own client handle, so it outlives `&self`.
        let stream = async move {
            let rt = DockerRuntime::new(endpoint);
            let d = match rt.client().await {
                Ok(d) => d,
                Err(e) => return futures_util::stream::once(async move { Err(e) }).boxed(),
            };
            let opts = LogsOptions {
                follow: options.follow,
                stdout: true,
                stderr: true,
                since: options
                    .since
                    .map(|s| i32::try_from(s).unwrap_or(i32::MAX))
                    .unwrap_or(0),
                until: 0,
                timestamps: options.timestamps,
                tail: options
                    .tail
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "all".into()),
            };
            d.logs(&id, Some(opts)).map(log_bytes).boxed()
        };
        futures_util::stream::once(stream).flatten().boxed()
    }
}

/// Docker's multiplexed output as StreamIo's streams: one, or stdout and stderr apart.
#[allow(clippy::type_complexity)]
fn outputs(
    src: BoxStream<'static, std::result::Result<LogOutput, bollard::errors::Error>>,
    options: &StreamOptions,
) -> (
    BoxStream<'static, Result<Bytes>>,
    Option<BoxStream<'static, Result<Bytes>>>,
) {
    if !options.separate_stderr || options.tty {
        return (src.map(log_bytes).boxed(), None);
    }
    let tagged = src
        .map(|item| {
            item.map(|o| (matches!(o, LogOutput::StdErr { .. }), o.into_bytes()))
                .map_err(map_err)
        })
        .boxed();
    let (out, err) = crate::edged::runtime::split_output(tagged);
    (out, Some(err))
}

impl DockerRuntime {
    pub(super) async fn exec_stream(&self, id: &str, options: StreamOptions) -> Result<StreamIo> {
        let d = self.client().await?;
        let create = CreateExecOptions {
            cmd: Some(options.command.clone()),
            attach_stdin: Some(options.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(options.tty),
            ..Default::default()
        };
        let exec = self.check(d.create_exec(id, create).await).await?;
        let start = StartExecOptions {
            detach: false,
            tty: options.tty,
            output_capacity: None,
        };
        match self
            .check(d.start_exec(&exec.id, Some(start)).await)
            .await?
        {
            StartExecResults::Attached { output, input } => {
                let (rd, exec_id) = (d.clone(), exec.id.clone());
                let resize = resizer(options.tty, move |s| {
                    let (d, exec_id) = (rd.clone(), exec_id.clone());
                    async move {
                        let size = ResizeExecOptions {
                            height: s.height,
                            width: s.width,
                        };
                        d.resize_exec(&exec_id, size).await
                    }
                });
                let (output, stderr) = outputs(output.boxed(), &options);
                Ok(StreamIo {
                    output,
                    stderr,
                    input,
                    resize,
                    exit: exec_exit(d, exec.id).boxed(),
                })
            }
            StartExecResults::Detached => Err(RuntimeError::Refused {
                status: 500,
                message: "exec started detached".into(),
            }),
        }
    }

    pub(super) async fn attach_stream(&self, id: &str, options: StreamOptions) -> Result<StreamIo> {
        let d = self.client().await?;
        let opts = AttachContainerOptions {
            stdin: options.stdin,
            stdout: true,
            stderr: true,
            stream: true,
            logs: false,
            detach_keys: None,
        };
        let r = self.check(d.attach_container(id, Some(opts)).await).await?;
        let (rd, cid) = (d.clone(), id.to_owned());
        let resize = resizer(options.tty, move |s| {
            let (d, cid) = (rd.clone(), cid.clone());
            async move {
                let size = ResizeContainerTTYOptions {
                    h: i32::from(s.height),
                    w: i32::from(s.width),
                };
                d.resize_container_tty(&cid, size).await
            }
        });
        let rt = DockerRuntime {
            endpoint: self.endpoint.clone(),
            client: tokio::sync::Mutex::new(Some(d)),
        };
        let id = id.to_owned();
        let exit = async move { exit_code_once_stopped(&rt, &id).await };
        let (output, stderr) = outputs(r.output, &options);
        Ok(StreamIo {
            output,
            stderr,
            input: r.input,
            resize,
            exit: exit.boxed(),
        })
    }

    pub(super) async fn dial_port(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<Box<dyn PortStream>> {
        let info = self.inspect_container(sandbox_id).await?;
        // A host-network sandbox has no address of its own: the pod's ports are the node's.
        let ip = info.ip.unwrap_or_else(|| "127.0.0.1".into());
        let addr = format!("{ip}:{port}");
        let connect = tokio::net::TcpStream::connect(addr.as_str());
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(e)) => Err(RuntimeError::Refused {
                status: 500,
                message: format!("cannot connect to {addr} in pod sandbox {sandbox_id}: {e}"),
            }),
            Err(_) => Err(RuntimeError::Timeout(Duration::from_secs(10))),
        }
    }

    pub(super) async fn one_shot_stats(&self, id: &str) -> Result<ContainerStats> {
        let d = self.client().await?;
        let opts = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let s = match d.stats(id, Some(opts)).next().await {
            Some(r) => self.check(r).await?,
            None => return Err(RuntimeError::NotFound(id.to_owned())),
        };
        let cpu = s
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let mem = s.memory_stats.unwrap_or_default();
        let usage = mem.usage.unwrap_or(0);
        // cadvisor's working set: usage less the inactive file pages (cgroup v2 names them
        // `inactive_file`, v1 `total_inactive_file`).
        let inactive = mem
            .stats
            .as_ref()
            .and_then(|m| {
                m.get("inactive_file")
                    .or_else(|| m.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        let timestamp = s
            .read
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or_else(SystemTime::now, SystemTime::from);
        Ok(ContainerStats {
            timestamp,
            cpu_usage_core_nano_seconds: cpu,
            cpu_usage_nano_cores: None,
            memory_working_set_bytes: usage.saturating_sub(inactive),
            memory_usage_bytes: mem.usage,
        })
    }
}
