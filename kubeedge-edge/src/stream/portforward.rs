//! `port-forward` as the kubelet serves it: SPDY/3.1 with `portforward.k8s.io` (kubectl
//! before 1.31, kube-apiserver), or the same SPDY carried inside WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+). Each forwarded connection is a pair of
//! streams sharing a `requestid`: `error` and `data`, with the `port` header; the data stream
//! is spliced to a connection to that port in the pod's network namespace, and a dial failure
//! is reported on the error stream in the kubelet's words. Upstream KubeEdge has no
//! port-forward; through our tunnel it travels as an exec connect naming `/portForward`.

use std::collections::HashMap;

use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_proto::spdy::Frame;
use kubeedge_proto::ws::{Role, WsCodec, WsMessage};
use kubeedge_proto::StreamConnect;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::codec::Framed;
use tracing::debug;

use super::kubelet::{Kubelet, KubeletError};
use super::spdy::{connection, header};
use crate::edged::runtime::{LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, SANDBOX};
use crate::edged::ContainerRuntime;

/// The SPDY stream protocol.
const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it (kubectl 1.31+).
const WS_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// A checked port-forward request.
#[derive(Debug)]
pub(super) struct Prepared {
    pod: String,
    sandbox: String,
    /// `Sec-WebSocket-Accept` when tunnelled in WebSocket.
    websocket: Option<String>,
}

/// Check the connect as the kubelet does: the pod must have a running sandbox, and the
/// client must speak one of the two transports.
pub(super) async fn prepare<R: ContainerRuntime>(
    kubelet: &Kubelet<R>,
    c: &StreamConnect,
) -> Result<Prepared, KubeletError> {
    let bad = |code: u16, message: String| KubeletError { code, message };
    let parts: Vec<&str> = c.url.path.trim_start_matches('/').split('/').collect();
    let (ns, pod) = match parts[..] {
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => (ns, pod),
        _ => return Err(bad(404, format!("404 page not found: {}", c.url.path))),
    };
    let values = |k: &str| super::exec::header_values(c, k);
    let upgrade = values("Upgrade");
    let websocket = if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        if !values("Sec-WebSocket-Protocol")
            .iter()
            .any(|p| p == WS_TUNNEL)
        {
            return Err(bad(
                400,
                format!("port-forward over WebSocket needs the subprotocol {WS_TUNNEL}"),
            ));
        }
        let key = values("Sec-WebSocket-Key")
            .into_iter()
            .next()
            .ok_or_else(|| bad(400, "missing Sec-WebSocket-Key".into()))?;
        Some(derive_accept_key(key.as_bytes()))
    } else if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = values("X-Stream-Protocol-Version");
        if !offered.iter().any(|o| o == PROTOCOL) {
            return Err(bad(
                403,
                format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PROTOCOL}\"]"),
            ));
        }
        None
    } else {
        return Err(bad(400, "Upgrade request required".into()));
    };
    let sandboxes = kubelet
        .runtime()
        .list_containers(&[
            (LABEL_POD_NAMESPACE, ns),
            (LABEL_POD_NAME, pod),
            (LABEL_CONTAINER, SANDBOX),
        ])
        .await
        .map_err(|e| bad(500, format!("Internal error occurred: {e}")))?;
    let sandbox = sandboxes
        .into_iter()
        .filter(|s| s.running)
        .max_by_key(|s| s.created)
        .ok_or_else(|| bad(404, format!("pod {pod:?} has no running sandbox")))?;
    Ok(Prepared {
        pod: pod.to_owned(),
        sandbox: sandbox.id,
        websocket,
    })
}

/// Answer the upgrade on `io` and forward until the client goes.
pub(super) async fn run<R: ContainerRuntime>(
    kubelet: Kubelet<R>,
    p: Prepared,
    mut io: DuplexStream,
) {
    let head = match &p.websocket {
        Some(accept) => format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {WS_TUNNEL}\r\n\r\n"
        ),
        None => format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {PROTOCOL}\r\n\r\n"
        ),
    };
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if p.websocket.is_some() {
        // SPDY rides in the WebSocket's binary messages: unwrap them into a byte pipe.
        let (inner, outer) = tokio::io::duplex(64 * 1024);
        let bridge = tokio::spawn(unwrap_websocket(io, outer));
        serve(kubelet, &p, inner).await;
        bridge.abort();
    } else {
        serve(kubelet, &p, io).await;
    }
}

/// The WebSocket side of a tunnelled session: binary payloads to and from `bytes`.
async fn unwrap_websocket(io: DuplexStream, bytes: DuplexStream) {
    let (mut sink, mut stream) = Framed::new(io, WsCodec::new(Role::Server, 1 << 20)).split();
    let (mut rd, mut wr) = tokio::io::split(bytes);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Vec<u8>>(4);
    let inbound = async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                WsMessage::Binary(d) | WsMessage::Text(d) => {
                    if wr.write_all(&d).await.is_err() {
                        return;
                    }
                }
                WsMessage::Ping(d) => {
                    let _ = pong_tx.send(d).await;
                }
                WsMessage::Pong(_) => {}
                WsMessage::Close(..) => return,
            }
        }
    };
    let outbound = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                n = rd.read(&mut buf) => match n {
                    Ok(0) | Err(_) => {
                        let _ = sink.send(WsMessage::Close(Some(1000), Vec::new())).await;
                        return;
                    }
                    Ok(n) => {
                        if sink.send(WsMessage::Binary(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                },
                Some(p) = pong_rx.recv() => {
                    let _ = sink.send(WsMessage::Pong(p)).await;
                }
            }
        }
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

/// One forwarded connection's pair of streams.
#[derive(Debug, Default)]
struct Pair {
    port: Option<u16>,
    error: Option<u32>,
    data: Option<u32>,
    started: bool,
}

/// The SPDY side: accept stream pairs and splice each to its port.
async fn serve<R: ContainerRuntime>(kubelet: Kubelet<R>, p: &Prepared, io: DuplexStream) {
    let (mut reader, tx, writer) = connection(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let mut forwards = JoinSet::new();
    while let Some(frame) = reader.next().await {
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let (Some(kind), Some(req)) = (
                    header(&headers, "streamtype"),
                    header(&headers, "requestid"),
                ) else {
                    let _ = tx
                        .send(Frame::RstStream {
                            stream_id,
                            status: 1,
                        })
                        .await;
                    continue;
                };
                let _ = tx
                    .send(Frame::SynReply {
                        stream_id,
                        fin: false,
                        headers: Vec::new(),
                    })
                    .await;
                let pair = pairs.entry(req.to_owned()).or_default();
                pair.port = pair
                    .port
                    .or(header(&headers, "port").and_then(|v| v.parse().ok()));
                match kind {
                    "error" => pair.error = Some(stream_id),
                    "data" => pair.data = Some(stream_id),
                    _ => {}
                }
                if let (Some(error), Some(data), false) = (pair.error, pair.data, pair.started) {
                    pair.started = true;
                    let (in_tx, in_rx) = mpsc::channel(64);
                    to_pod.insert(data, in_tx);
                    let port = pair.port.unwrap_or(0);
                    forwards.spawn(forward(
                        kubelet.clone(),
                        p.sandbox.clone(),
                        p.pod.clone(),
                        port,
                        (error, data),
                        tx.clone(),
                        in_rx,
                    ));
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(t) = to_pod.get(&stream_id) {
                    if !data.is_empty() {
                        let _ = t.send(Some(data)).await;
                    }
                    if fin {
                        let _ = t.send(None).await;
                        to_pod.remove(&stream_id);
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                to_pod.remove(&stream_id);
            }
            Frame::Ping(id) => {
                let _ = tx.send(Frame::Ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
    forwards.abort_all();
    drop(tx);
    let _ = writer.await;
}

/// Splice one data stream to `port` in the pod; a dial failure goes to the error stream.
async fn forward<R: ContainerRuntime>(
    kubelet: Kubelet<R>,
    sandbox: String,
    pod: String,
    port: u16,
    (error, data): (u32, u32),
    tx: mpsc::Sender<Frame>,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
) {
    let fin = |stream_id: u32, data: Vec<u8>| Frame::Data {
        stream_id,
        fin: true,
        data,
    };
    let conn = match kubelet.runtime().port_forward(&sandbox, port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            debug!(%msg, "port-forward dial failed");
            let _ = tx.send(fin(error, msg.into_bytes())).await;
            let _ = tx.send(fin(data, Vec::new())).await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let to_pod = async move {
        while let Some(Some(b)) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        // Keep going until the pod's side ends too.
        std::future::pending::<()>().await;
    };
    let to_client = async {
        let mut buf = BytesMut::with_capacity(32 * 1024);
        loop {
            buf.clear();
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let f = Frame::Data {
                        stream_id: data,
                        fin: false,
                        data: buf.to_vec(),
                    };
                    if tx.send(f).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = to_pod => {}
        () = to_client => {}
    }
    let _ = tx.send(fin(data, Vec::new())).await;
    let _ = tx.send(fin(error, Vec::new())).await;
}
