//! EdgeStream: the edge end of the stream tunnel (`kubectl logs` and, next, exec, attach,
//! port-forward and metrics), wire-compatible with upstream's edgestream (PROTOCOL.md §7).
//!
//! The edge dials the cloud's tunnel port (`wss://<server>/v1/kubeedge/connect`) with its node
//! certificate, sends a WebSocket ping every [`EdgeStreamConfig::ping_interval`] and redials
//! every [`EdgeStreamConfig::redial`] while the link is down. The cloud opens a session with a
//! `*_CONNECT` frame naming the kubelet URL it wants; the edge answers from edged's pods and the
//! container runtime ([`Kubelet`]) in `DATA` frames and ends with `REMOVE_CONNECT`. A session
//! the edge cannot serve is refused with `CLOSE_CONNECT` carrying the API `Status` (ours reads
//! it; upstream's cloud ignores it), then the kubelet's words as `DATA` (what upstream's cloud
//! shows), then `REMOVE_CONNECT`; every other session goes on.

mod exec;
mod kubelet;
mod portforward;
mod session;
mod spdy;
mod stats;
mod tunnel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_proto::ws::WsMessage;
use kubeedge_proto::{TunnelFrame, TunnelMessageType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use kubelet::{Kubelet, KubeletError, LogQuery};
pub use tunnel::TunnelError;

use crate::edged::ContainerRuntime;

/// Where and how the edge keeps its tunnel.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EdgeStreamConfig {
    /// The cloud's tunnel address, `host:port` (`modules.edgeStream.server`).
    pub server: String,
    /// This node's name (the `SessionHostNameOverride` header; the cloud checks it against
    /// the certificate).
    pub node_name: String,
    /// This node's internal IP (`SessionInternalIP`).
    pub node_ip: String,
    /// WebSocket ping period (upstream: 5 s).
    pub ping_interval: Duration,
    /// Redial period while the tunnel is down (upstream: 2 s).
    pub redial: Duration,
    /// Bound on dialling and the upgrade handshake.
    pub handshake_timeout: Duration,
    /// Sessions served at once; a connect beyond it is refused.
    pub max_sessions: usize,
}

impl EdgeStreamConfig {
    /// Upstream's timings for `node_name` reaching the tunnel at `server`.
    pub fn new(
        server: impl Into<String>,
        node_name: impl Into<String>,
        node_ip: impl Into<String>,
    ) -> Self {
        Self {
            server: server.into(),
            node_name: node_name.into(),
            node_ip: node_ip.into(),
            ping_interval: Duration::from_secs(5),
            redial: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            max_sessions: 256,
        }
    }
}

/// Run EdgeStream on the runtime edged `started` on, once `tls` holds the node's client
/// config (edgecore starts it so: the certificate may come from a bootstrap later).
pub async fn run_when_ready(
    cfg: EdgeStreamConfig,
    mut tls: tokio::sync::watch::Receiver<Option<Arc<rustls::ClientConfig>>>,
    started: crate::edged::Started,
    cancel: CancellationToken,
) {
    let tls = tokio::select! {
        () = cancel.cancelled() => return,
        r = tls.wait_for(Option::is_some) => match r.ok().and_then(|t| t.clone()) {
            Some(t) => t,
            None => return,
        },
    };
    match started {
        crate::edged::Started::Docker(rt, pods) => {
            EdgeStream::new(cfg, tls, Kubelet::new(rt, pods))
                .run(cancel)
                .await;
        }
        crate::edged::Started::Cri(rt, pods) => {
            EdgeStream::new(cfg, tls, Kubelet::new(rt, pods))
                .run(cancel)
                .await;
        }
    }
}

/// The edge end of the tunnel: build with [`EdgeStream::new`], run with [`EdgeStream::run`].
#[derive(Debug)]
pub struct EdgeStream<R> {
    cfg: EdgeStreamConfig,
    tls: Arc<rustls::ClientConfig>,
    kubelet: Kubelet<R>,
}

impl<R: ContainerRuntime> EdgeStream<R> {
    /// Serve `kubelet` through a tunnel to `cfg.server`, presenting the node certificate in
    /// `tls` (the hub's client config).
    pub fn new(cfg: EdgeStreamConfig, tls: Arc<rustls::ClientConfig>, kubelet: Kubelet<R>) -> Self {
        let kubelet = kubelet.for_node(&cfg.node_name);
        Self { cfg, tls, kubelet }
    }

    /// Keep the tunnel up until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            match tunnel::dial(&self.cfg, self.tls.clone()).await {
                Ok(ws) => {
                    info!(server = %self.cfg.server, "stream tunnel connected");
                    let why = self.serve(ws, &cancel).await;
                    info!(reason = %why, "stream tunnel closed");
                }
                Err(e) => {
                    debug!(server = %self.cfg.server, error = %e, "stream tunnel dial failed")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.cfg.redial) => {}
            }
        }
    }

    /// One connected tunnel: dispatch frames to sessions until the link or `cancel` ends it.
    async fn serve(&self, mut ws: tunnel::Ws, cancel: &CancellationToken) -> String {
        let link = cancel.child_token();
        let _stop_sessions = link.clone().drop_guard();
        let tracker = TaskTracker::new();
        let (out_tx, mut out_rx) = mpsc::channel::<TunnelFrame>(64);
        let mut sessions: HashMap<u64, mpsc::Sender<TunnelFrame>> = HashMap::new();
        let mut ping = tokio::time::interval(self.cfg.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The cloud answers each ping; silence over three periods means the link is gone.
        let silence = self.cfg.ping_interval * 3;
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = ws.send(WsMessage::Close(Some(1000), Vec::new())).await;
                    return "shutting down".into();
                }
                _ = ping.tick() => {
                    if heard.elapsed() > silence {
                        return format!("nothing from the cloud for {silence:?}");
                    }
                    if let Err(e) = ws.send(WsMessage::Ping(b"ping you".to_vec())).await {
                        return e.to_string();
                    }
                }
                Some(frame) = out_rx.recv() => {
                    // Whatever else is queued goes out with it, in one flush.
                    let mut batch = vec![frame];
                    while batch.len() < 64 {
                        match out_rx.try_recv() {
                            Ok(f) => batch.push(f),
                            Err(_) => break,
                        }
                    }
                    for f in &batch {
                        if f.message_type == TunnelMessageType::RemoveConnect {
                            sessions.remove(&f.connect_id);
                        }
                    }
                    let send = async {
                        for f in batch {
                            ws.feed(WsMessage::Text(f.encode())).await?;
                        }
                        ws.flush().await
                    };
                    // A write that cannot finish while the link is believed alive means it
                    // is not.
                    match tokio::time::timeout_at(heard + silence, send).await {
                        Err(_) => return format!("nothing from the cloud for {silence:?}"),
                        Ok(Err(e)) => return e.to_string(),
                        Ok(Ok(())) => {}
                    }
                }
                msg = ws.next() => {
                    heard = tokio::time::Instant::now();
                    let data = match msg {
                        None => return "closed by the cloud".into(),
                        Some(Err(e)) => return e.to_string(),
                        Some(Ok(WsMessage::Text(d) | WsMessage::Binary(d))) => d,
                        Some(Ok(WsMessage::Ping(p))) => {
                            if let Err(e) = ws.send(WsMessage::Pong(p)).await {
                                return e.to_string();
                            }
                            continue;
                        }
                        Some(Ok(WsMessage::Pong(_))) => continue,
                        Some(Ok(WsMessage::Close(..))) => return "closed by the cloud".into(),
                    };
                    let frame = match TunnelFrame::decode(&data) {
                        Ok(f) => f,
                        Err(e) => {
                            warn!(error = %e, "bad tunnel frame dropped");
                            continue;
                        }
                    };
                    self.dispatch(frame, &mut sessions, &out_tx, &tracker, &link).await;
                }
            }
        }
    }

    async fn dispatch(
        &self,
        frame: TunnelFrame,
        sessions: &mut HashMap<u64, mpsc::Sender<TunnelFrame>>,
        out: &mpsc::Sender<TunnelFrame>,
        tracker: &TaskTracker,
        link: &CancellationToken,
    ) {
        let id = frame.connect_id;
        match frame.message_type {
            TunnelMessageType::Data | TunnelMessageType::RemoveConnect => {
                let remove = frame.message_type == TunnelMessageType::RemoveConnect;
                if let Some(tx) = sessions.get(&id) {
                    // A session that has ended drops its receiver; nothing more to deliver.
                    let _ = tx.send(frame).await;
                }
                if remove {
                    sessions.remove(&id);
                }
            }
            TunnelMessageType::CloseConnect => {
                warn!(reason = %String::from_utf8_lossy(&frame.data), "the cloud closed the tunnel session");
            }
            TunnelMessageType::Unknown(code) => {
                debug!(id, code, "unknown tunnel frame type dropped")
            }
            kind => {
                if sessions.contains_key(&id) {
                    warn!(id, "a second connect for an open session id refused");
                    return;
                }
                if sessions.len() >= self.cfg.max_sessions {
                    let e = KubeletError {
                        code: 503,
                        message: format!(
                            "edge node serves at most {} stream sessions at once",
                            self.cfg.max_sessions
                        ),
                    };
                    session::refuse(id, &e, out).await;
                    return;
                }
                let (tx, rx) = mpsc::channel(32);
                sessions.insert(id, tx);
                let s = session::Session {
                    id,
                    out: out.clone(),
                    inbound: rx,
                    cancel: link.child_token(),
                };
                tracker.spawn(session::serve(self.kubelet.clone(), kind, frame.data, s));
            }
        }
    }
}
