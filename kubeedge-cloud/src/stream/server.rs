//! The tunnel server (`cloudStream.tunnelPort`, 10004): TLS with the node certificate, the
//! WebSocket upgrade of `GET /v1/kubeedge/connect`, then frames routed to sessions by
//! connect id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use kubeedge_proto::ws::{Role, WsCodec, WsMessage};
use kubeedge_proto::{TunnelFrame, TunnelMessageType, MAX_TUNNEL_FRAME};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{CloudStream, StreamError, Tunnel};
use crate::certs::{node_common_name, Pki, LEGACY_EDGE_CN};
use crate::hub::tls::{peer_identity, server_config};

static SERIALS: AtomicU64 = AtomicU64::new(1);

/// Accept TLS connections on `listener` until `cancel` (each handshake bounded by `timeout`)
/// and serve HTTP/1.1 with upgrades on each with the service `make` builds for it; returns
/// once every connection has ended.
pub(super) async fn serve_tls<M, S, B>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: std::time::Duration,
    cancel: CancellationToken,
    what: &'static str,
    make: M,
) where
    M: Fn(&tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> S
        + Clone
        + Send
        + Sync
        + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = TlsAcceptor::from(config);
    let tracker = TaskTracker::new();
    info!(addr = ?listener.local_addr().ok(), what, "listening");
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!(what, error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, make) = (acceptor.clone(), make.clone());
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(what, %peer, error = %e, "tls handshake failed"),
                Err(_) => return debug!(what, %peer, "tls handshake timed out"),
            };
            let svc = make(&tls);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                debug!(what, %peer, error = %e, "connection ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

impl CloudStream {
    /// Serve edge tunnels on `listener` until `cancel`, verifying node certificates against
    /// `pki`'s CA.
    pub async fn serve_tunnel(
        &self,
        listener: TcpListener,
        pki: Arc<Pki>,
        cancel: CancellationToken,
    ) -> Result<(), StreamError> {
        let config = server_config(&pki, true).map_err(|e| StreamError::Server(e.to_string()))?;
        let me = self.clone();
        serve_tls(
            listener,
            config,
            self.inner.config.handshake_timeout,
            cancel.clone(),
            "tunnel",
            move |tls| {
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(peer_identity)
                    .map(|(cn, _)| cn)
                    .unwrap_or_default();
                let (me, cancel) = (me.clone(), cancel.clone());
                hyper::service::service_fn(move |req| {
                    let (me, cn, cancel) = (me.clone(), cn.clone(), cancel.clone());
                    async move { Ok::<_, Infallible>(me.accept_tunnel(req, &cn, cancel)) }
                })
            },
        )
        .await;
        Ok(())
    }

    /// Answer the upgrade request; on success the tunnel runs once hyper hands over the socket.
    fn accept_tunnel(
        &self,
        mut req: Request<Incoming>,
        cn: &str,
        cancel: CancellationToken,
    ) -> Response<Full<Bytes>> {
        let refuse = |code: StatusCode, why: &str| {
            let mut r = Response::new(Full::new(Bytes::from(why.to_owned())));
            *r.status_mut() = code;
            r
        };
        if req.uri().path() != "/v1/kubeedge/connect" {
            return refuse(StatusCode::NOT_FOUND, "not found");
        }
        let h = req.headers();
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let key = text("sec-websocket-key").to_owned();
        if !text("upgrade").eq_ignore_ascii_case("websocket") || key.is_empty() {
            return refuse(StatusCode::BAD_REQUEST, "websocket upgrade expected");
        }
        let node = text("SessionHostNameOverride").to_owned();
        if node.is_empty() || node.contains('/') || node.len() > 253 {
            return refuse(
                StatusCode::BAD_REQUEST,
                "missing or invalid SessionHostNameOverride header",
            );
        }
        let cfg = &self.inner.config;
        let identity_ok = cn == node_common_name(&node)
            || !cfg.enforce_node_identity
            || (cfg.allow_legacy_certs && cn == LEGACY_EDGE_CN);
        if !identity_ok {
            warn!(node, subject = %cn, "tunnel refused: the certificate belongs to another node");
            return refuse(
                StatusCode::FORBIDDEN,
                "client certificate does not match SessionHostNameOverride",
            );
        }
        let ip = text("SessionInternalIP").to_owned();
        let me = self.clone();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => me.run(node, ip, io, cancel).await,
                Err(e) => debug!(error = %e, "tunnel upgrade failed"),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let hs = r.headers_mut();
        hs.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
        hs.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("websocket"),
        );
        if let Ok(v) = http::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            hs.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
        }
        r
    }

    /// One node's tunnel, registered under its name (replacing an older one) until it ends.
    async fn run(
        &self,
        node: String,
        ip: String,
        io: hyper::upgrade::Upgraded,
        cancel: CancellationToken,
    ) {
        let mut ws = Framed::new(
            TokioIo::new(io),
            WsCodec::new(Role::Server, MAX_TUNNEL_FRAME + 32),
        );
        let (out, mut out_rx) = mpsc::channel::<TunnelFrame>(256);
        let serial = SERIALS.fetch_add(1, Ordering::Relaxed);
        let tunnel = Arc::new(Tunnel {
            serial,
            ip,
            out,
            sessions: Mutex::new(HashMap::new()),
        });
        if let Some(old) = self.tunnels().insert(node.clone(), tunnel.clone()) {
            info!(node, "a new stream tunnel replaces the old one");
            old.sessions_mut().clear();
        }
        info!(node, "stream tunnel connected");
        let _ = self.inner.connected.send(node.clone());
        let idle = self.inner.config.idle_timeout;
        // Only what the edge sends proves the link: the deadline moves on inbound frames, and
        // a write that cannot finish before it (a full socket on a dead link) ends the tunnel too.
        let mut deadline = tokio::time::Instant::now() + idle;
        let silent = || format!("nothing from the edge for {idle:?}");
        let why = loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = ws.send(WsMessage::Close(Some(1001), Vec::new())).await;
                    break "shutting down".to_owned();
                }
                () = tokio::time::sleep_until(deadline) => break silent(),
                Some(frame) = out_rx.recv() => {
                    match tokio::time::timeout_at(deadline, ws.send(WsMessage::Text(frame.encode()))).await {
                        Err(_) => break silent(),
                        Ok(Err(e)) => break e.to_string(),
                        Ok(Ok(())) => {}
                    }
                }
                msg = ws.next() => {
                    deadline = tokio::time::Instant::now() + idle;
                    let data = match msg {
                        None => break "closed by the edge".to_owned(),
                        Some(Err(e)) => break e.to_string(),
                        Some(Ok(WsMessage::Text(d) | WsMessage::Binary(d))) => d,
                        Some(Ok(WsMessage::Ping(p))) => {
                            match tokio::time::timeout_at(deadline, ws.send(WsMessage::Pong(p))).await {
                                Err(_) => break silent(),
                                Ok(Err(e)) => break e.to_string(),
                                Ok(Ok(())) => continue,
                            }
                        }
                        Some(Ok(WsMessage::Pong(_))) => continue,
                        Some(Ok(WsMessage::Close(..))) => break "closed by the edge".to_owned(),
                    };
                    match TunnelFrame::decode(&data) {
                        Ok(f) => route(&tunnel, &node, f).await,
                        Err(e) => warn!(node, error = %e, "bad tunnel frame dropped"),
                    }
                }
            }
        };
        info!(node, reason = %why, "stream tunnel closed");
        let mut tunnels = self.tunnels();
        if tunnels.get(&node).is_some_and(|t| t.serial == serial) {
            tunnels.remove(&node);
        }
        drop(tunnels);
        // Every open session sees its end.
        tunnel.sessions_mut().clear();
    }
}

/// Hand a frame from the edge to its session; frames of unknown sessions are dropped.
async fn route(tunnel: &Tunnel, node: &str, f: TunnelFrame) {
    match f.message_type {
        TunnelMessageType::Data
        | TunnelMessageType::RemoveConnect
        | TunnelMessageType::CloseConnect => {
            let tx = tunnel.sessions_mut().get(&f.connect_id).cloned();
            match tx {
                Some(tx) => {
                    let _ = tx.send(f).await;
                }
                None if f.connect_id == 0 => {
                    warn!(node, reason = %String::from_utf8_lossy(&f.data), "the edge closed its tunnel session");
                }
                None => debug!(
                    node,
                    id = f.connect_id,
                    "frame for an unknown session dropped"
                ),
            }
        }
        other => warn!(node, kind = ?other, "the edge may not open sessions; frame dropped"),
    }
}
