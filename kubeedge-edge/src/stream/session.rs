//! One tunnel session: the connect frame's kubelet URL served, its bytes sent as `DATA`
//! frames, and `REMOVE_CONNECT` at the end (or when the cloud sends it first).

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use kubeedge_proto::{StreamConnect, TunnelFrame, TunnelMessageType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::kubelet::{Kubelet, KubeletError, LogQuery};
use super::{exec, portforward};
use crate::edged::ContainerRuntime;

/// The largest `DATA` payload the edge sends (upstream's cloud reads up to 1 MiB a frame).
const DATA_CHUNK: usize = 64 * 1024;
/// Buffer of the in-process pipe between the tunnel and an upgraded session's server.
const PIPE: usize = 256 * 1024;

/// What a session task holds.
pub(super) struct Session {
    /// The cloud's connect id.
    pub(super) id: u64,
    /// Frames to the cloud.
    pub(super) out: mpsc::Sender<TunnelFrame>,
    /// `DATA` and `REMOVE_CONNECT` frames from the cloud.
    pub(super) inbound: mpsc::Receiver<TunnelFrame>,
    /// Cancelled when the tunnel goes.
    pub(super) cancel: CancellationToken,
}

/// Serve one session to its end.
pub(super) async fn serve<R: ContainerRuntime>(
    kubelet: Kubelet<R>,
    kind: TunnelMessageType,
    connect: Vec<u8>,
    mut s: Session,
) {
    let plan = match StreamConnect::decode(&connect) {
        Err(e) => Err(KubeletError {
            code: 400,
            message: format!("bad connect payload: {e}"),
        }),
        Ok(c) => match kind {
            TunnelMessageType::LogsConnect => logs(&kubelet, &c).map(Plan::Logs),
            TunnelMessageType::MetricConnect => kubelet.metrics(&c.url.path).await.map(|body| {
                Plan::Logs(futures_util::stream::once(async move { Ok(Bytes::from(body)) }).boxed())
            }),
            TunnelMessageType::ExecConnect if c.url.path.starts_with("/portForward/") => {
                portforward::prepare(&kubelet, &c)
                    .await
                    .map(Plan::PortForward)
            }
            TunnelMessageType::ExecConnect | TunnelMessageType::AttachConnect => {
                exec::prepare(&kubelet, kind, &c).map(Plan::Upgrade)
            }
            other => Err(KubeletError {
                code: 501,
                message: format!(
                    "this edge node does not serve {other:?} through the stream tunnel yet"
                ),
            }),
        },
    };
    match plan {
        Err(e) => {
            debug!(id = s.id, error = %e, "stream session refused");
            return refuse(s.id, &e, &s.out).await;
        }
        Ok(Plan::Logs(body)) => pump(body, &mut s).await,
        Ok(Plan::Upgrade(p)) => {
            let (near, far) = tokio::io::duplex(PIPE);
            tokio::spawn(exec::run(kubelet, p, far));
            pipe(near, &mut s).await;
        }
        Ok(Plan::PortForward(p)) => {
            let (near, far) = tokio::io::duplex(PIPE);
            tokio::spawn(portforward::run(kubelet, p, far));
            pipe(near, &mut s).await;
        }
    }
    let _ = s
        .out
        .send(TunnelFrame::new(
            s.id,
            TunnelMessageType::RemoveConnect,
            Vec::new(),
        ))
        .await;
}

/// What a session serves.
enum Plan {
    /// A log body.
    Logs(BoxStream<'static, std::io::Result<Bytes>>),
    /// An upgraded exec or attach.
    Upgrade(exec::Prepared),
    /// An upgraded port-forward.
    PortForward(portforward::Prepared),
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
fn logs<R: ContainerRuntime>(
    kubelet: &Kubelet<R>,
    c: &StreamConnect,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>, KubeletError> {
    let parts: Vec<&str> = c.url.path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts[..] else {
        return Err(KubeletError {
            code: 404,
            message: format!("404 page not found: {}", c.url.path),
        });
    };
    let q = LogQuery::parse(&c.url.raw_query)?;
    kubelet.logs(ns, pod, container, &q)
}

/// Send `body` as `DATA` frames until it ends, the cloud removes the session or the tunnel
/// goes.
async fn pump(mut body: BoxStream<'static, std::io::Result<Bytes>>, s: &mut Session) {
    loop {
        tokio::select! {
            () = s.cancel.cancelled() => return,
            f = s.inbound.recv() => match f {
                None => return,
                Some(f) if f.message_type == TunnelMessageType::RemoveConnect => return,
                Some(_) => {}
            },
            chunk = body.next() => match chunk {
                None => return,
                Some(Err(e)) => {
                    debug!(id = s.id, error = %e, "stream body failed");
                    return;
                }
                Some(Ok(b)) => {
                    for part in b.chunks(DATA_CHUNK) {
                        let f = TunnelFrame::new(s.id, TunnelMessageType::Data, part.to_vec());
                        if s.out.send(f).await.is_err() {
                            return;
                        }
                    }
                }
            },
        }
    }
}

/// Refuse a session: the API `Status` in `CLOSE_CONNECT` (read by kubeedge-rs clouds), the
/// kubelet's words as `DATA` (what upstream's cloud relays), then `REMOVE_CONNECT`.
pub(super) async fn refuse(id: u64, e: &KubeletError, out: &mpsc::Sender<TunnelFrame>) {
    let status = serde_json::to_vec(&e.status_json()).unwrap_or_default();
    for f in [
        TunnelFrame::new(id, TunnelMessageType::CloseConnect, status),
        TunnelFrame::new(id, TunnelMessageType::Data, e.message.clone().into_bytes()),
        TunnelFrame::new(id, TunnelMessageType::RemoveConnect, Vec::new()),
    ] {
        if out.send(f).await.is_err() {
            return;
        }
    }
}

/// Carry an upgraded session: the cloud's `DATA` into `near`, what the server writes to its
/// end back as `DATA`, until the server closes, the cloud removes the session or the tunnel
/// goes. The two directions are separate loops, so neither waits on the other.
async fn pipe(near: DuplexStream, s: &mut Session) {
    let (mut rd, mut wr) = tokio::io::split(near);
    let (inbound, out, id) = (&mut s.inbound, &s.out, s.id);
    let to_server = async move {
        while let Some(f) = inbound.recv().await {
            if f.message_type == TunnelMessageType::RemoveConnect
                || wr.write_all(&f.data).await.is_err()
            {
                break;
            }
        }
    };
    let to_cloud = async move {
        // Small while idle, doubled while reads fill it (up to DATA_CHUNK).
        let mut buf = vec![0u8; 4 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let f = TunnelFrame::new(id, TunnelMessageType::Data, buf[..n].to_vec());
                    if out.send(f).await.is_err() {
                        return;
                    }
                    if n == buf.len() && buf.len() < DATA_CHUNK {
                        buf.resize(buf.len() * 2, 0);
                    }
                }
            }
        }
    };
    tokio::select! {
        () = s.cancel.cancelled() => {}
        () = to_server => {}
        () = to_cloud => {}
    }
}
