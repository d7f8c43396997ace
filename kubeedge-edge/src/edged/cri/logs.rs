//! Reading back a container's CRI log file, and following it while the container runs.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_cri::v1 as cri;

use super::CriRuntime;
use crate::edged::cri_logs;
use crate::edged::runtime::{LogOptions, Result, RuntimeError};

/// A container's logs: what the file holds, then (following a running container) what is
/// appended.
pub(super) fn log_stream(
    this: CriRuntime,
    id: String,
    options: LogOptions,
) -> BoxStream<'static, Result<Bytes>> {
    let first = async move {
        let (data, read, path, running) = this.read_logs(&id, &options).await?;
        let tail = if options.follow && running {
            follow(this, id, path, read, options.timestamps).boxed()
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

impl CriRuntime {
    /// The rendered log text, how far into the file it goes, the log file's path, and whether
    /// the container runs. When following a running container, only whole records are rendered
    /// (a half-written one is the follower's), so that the follower starts exactly where this
    /// read ended and no record written in between is lost.
    async fn read_logs(&self, id: &str, o: &LogOptions) -> Result<(Vec<u8>, u64, String, bool)> {
        let s = self.container_status(id).await?;
        let running = s.state == cri::ContainerState::ContainerRunning as i32;
        let data = match read_file(s.log_path.clone()).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(RuntimeError::Unavailable(format!("{}: {e}", s.log_path))),
        };
        let read = if o.follow && running {
            whole_records(&data)
        } else {
            data.len()
        };
        let lines = cri_logs::parse(&data[..read]);
        Ok((
            cri_logs::render(lines, o.since, o.tail, o.timestamps),
            read as u64,
            s.log_path,
            running,
        ))
    }
}

/// How many bytes of `data` are whole log records (up to and with its last newline).
fn whole_records(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1)
}

/// Read a file off the async threads.
pub(super) async fn read_file(path: String) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(std::io::Error::other)?
}

/// Follow a log file from byte `start` while the container runs: the file is polled
/// (containerd appends whole records), and the stream ends once the container has stopped
/// and the rest is read.
pub(super) fn follow(
    rt: CriRuntime,
    id: String,
    path: String,
    start: u64,
    timestamps: bool,
) -> impl futures_util::Stream<Item = Result<Bytes>> + Send {
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
                let whole = whole_records(new);
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
