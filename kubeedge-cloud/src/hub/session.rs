//! One edge node's connection: TLS, the websocket upgrade with identity checks, then the
//! session loop (keepalive deadline, acks, upstream dispatch, outbox transmission).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use kubeedge_proto::{Content, FrameKind, HubCodec, Message, Operation};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{HubEvent, Inner, NodeState, Upstream};
use crate::certs::{node_common_name, LEGACY_EDGE_CN};
use crate::hub::tls::peer_identity;

/// A running session, so that a new connection of the same node can replace it.
pub(super) struct Handle {
    id: u64,
    cancel: CancellationToken,
    done: oneshot::Receiver<()>,
}

impl Handle {
    /// Ask the session to end.
    pub(super) fn cancel(&self) {
        self.cancel.cancel();
    }
}

static SESSION_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug, thiserror::Error)]
pub(super) enum AcceptError {
    #[error("tls handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("handshake timed out")]
    Timeout,
    #[error("websocket upgrade refused")]
    Upgrade(#[source] tokio_tungstenite::tungstenite::Error),
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    // http's HeaderMap lookups are case-insensitive: `node_id`, `Node_id`, `NODE_ID` all match.
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

pub(super) async fn accept(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    cancel: CancellationToken,
) -> Result<(), AcceptError> {
    let cfg = &inner.config;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
        .await
        .map_err(|_| AcceptError::Timeout)?
        .map_err(AcceptError::Tls)?;
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(peer_identity)
        .map(|(cn, _)| cn)
        .unwrap_or_default();

    let mut node_id = String::new();
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let h = req.headers();
        let Some(node) = header(h, "node_id") else {
            warn!("websocket upgrade without node_id header");
            return Err(refuse(StatusCode::BAD_REQUEST, "missing node_id header"));
        };
        if node.contains('/') || node.len() > 253 {
            return Err(refuse(StatusCode::BAD_REQUEST, "invalid node_id header"));
        }
        if let Some(use_type) = header(h, "ConnectionUse") {
            if use_type != "msg" {
                return Err(refuse(StatusCode::BAD_REQUEST, "unsupported ConnectionUse"));
            }
        }
        let identity_ok = cn == node_common_name(node)
            || !cfg.enforce_node_identity
            || (cfg.allow_legacy_certs && cn == LEGACY_EDGE_CN);
        if !identity_ok {
            warn!(node, subject = %cn, "refused: client certificate belongs to another node");
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "client certificate does not match node_id",
            ));
        }
        let already = {
            let nodes = inner
                .nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            nodes
                .get(node)
                .is_some_and(|n| n.session.try_lock().map_or(true, |s| s.is_some()))
        };
        if !already && inner.connected.load(Ordering::Relaxed) >= cfg.node_limit {
            warn!(node, limit = cfg.node_limit, "refused: node limit reached");
            return Err(refuse(StatusCode::FORBIDDEN, "node limit reached"));
        }
        node_id = node.to_owned();
        Ok(resp)
    };
    let ws_cfg = ws_config(cfg.max_frame_size);
    let ws = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_hdr_async_with_config(tls, callback, Some(ws_cfg)),
    )
    .await
    .map_err(|_| AcceptError::Timeout)?
    .map_err(AcceptError::Upgrade)?;

    let state = inner.node(&node_id);
    let (done_tx, done_rx) = oneshot::channel();
    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let old = state.session.lock().await.replace(Handle {
        id,
        cancel: cancel.clone(),
        done: done_rx,
    });
    if let Some(old) = old {
        info!(node = %node_id, "new connection replaces the current session");
        old.cancel.cancel();
        let _ = old.done.await;
    }
    let now_connected = inner.connected.fetch_add(1, Ordering::Relaxed) + 1;
    inner.metrics.session_started(now_connected);
    info!(node = %node_id, "edge node connected");
    let _ = inner.events.send(HubEvent::Connected {
        node: node_id.clone(),
    });
    let span = tracing::info_span!("hub", node = %node_id);
    let result = run(&inner, &state, &node_id, ws, cancel.clone())
        .instrument(span)
        .await;
    let now_connected = inner
        .connected
        .fetch_sub(1, Ordering::Relaxed)
        .saturating_sub(1);
    inner.metrics.set_connected(now_connected);
    {
        // Clear our handle unless a newer session already took the slot.
        let mut slot = state.session.lock().await;
        if slot.as_ref().is_some_and(|h| h.id == id) {
            *slot = None;
        }
    }
    let _ = done_tx.send(());
    info!(node = %node_id, reason = result, "edge node disconnected");
    let _ = inner.events.send(HubEvent::Disconnected { node: node_id });
    Ok(())
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Small buffers: an idle node must cost little (tungstenite defaults to 128 KiB each way).
fn ws_config(max_frame: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = 2048;
    // Batches a burst into few TLS records and syscalls, for a few KiB per node.
    c.write_buffer_size = 4096;
    c.max_write_buffer_size = max_frame.saturating_mul(2);
    c.max_message_size = Some(max_frame);
    c.max_frame_size = Some(max_frame);
    c
}

async fn run(
    inner: &Inner,
    state: &NodeState,
    node: &str,
    ws: Ws,
    cancel: CancellationToken,
) -> &'static str {
    let cfg = &inner.config;
    let codec = HubCodec::new(cfg.max_frame_size);
    let (mut sink, mut stream) = ws.split();
    state.outbox().reset_inflight();
    let mut keepalive = Instant::now() + cfg.keepalive_interval;
    let mut fair = kubeedge_proto::TokenBucket::new(cfg.node_upstream_qps, cfg.node_upstream_burst);
    let mut out = Vec::new();
    let far = || Instant::now() + std::time::Duration::from_secs(3600);
    // Nothing is written until the admission says this replica serves the node.
    let mut admit = inner.admission().map(|a| a.admit(node));
    if admit.is_none() {
        let _ = inner.events.send(HubEvent::Admitted {
            node: node.to_owned(),
        });
    }
    let reason = loop {
        // Write whatever is due (once admitted; until then, only read).
        if admit.is_none() {
            if let Err(why) = transmit(inner, state, &codec, &mut sink, &mut out).await {
                break why;
            }
        }
        let next = match admit {
            Some(_) => far(),
            None => state.outbox().next_deadline().unwrap_or_else(far),
        };
        let admission = async {
            match admit.as_mut() {
                Some(a) => a.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            answer = admission => match answer {
                Ok(()) => {
                    admit = None;
                    let _ = inner.events.send(HubEvent::Admitted { node: node.to_owned() });
                }
                Err(why) => {
                    info!(reason = %why, "session not admitted");
                    let _ = sink.close().await;
                    break "not admitted";
                }
            },
            _ = cancel.cancelled() => {
                let _ = sink.close().await;
                break "closed by the hub";
            }
            _ = sleep_until(keepalive) => {
                warn!(timeout = ?cfg.keepalive_interval, "no keepalive: closing the session");
                let _ = sink.close().await;
                break "keepalive timeout";
            }
            _ = state.wake.notified() => {}
            _ = sleep_until(next) => {}
            frame = stream.next() => {
                let payload = match frame {
                    None => break "connection closed",
                    Some(Err(e)) => {
                        debug!(error = %e, "read failed");
                        break "read failed";
                    }
                    Some(Ok(WsMessage::Text(t))) => (FrameKind::Text, t.as_bytes().to_vec()),
                    Some(Ok(WsMessage::Binary(b))) => (FrameKind::Binary, b.to_vec()),
                    Some(Ok(WsMessage::Close(_))) => break "closed by the edge",
                    Some(Ok(_)) => continue,
                };
                let msg = match codec.decode(payload.0, &payload.1) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "invalid frame from edge");
                        let reply = Message::new(
                            kubeedge_proto::Route { operation: Some(Operation::Error), ..Default::default() },
                            Content::string(&format!("invalid frame: {e}")),
                        );
                        if let Ok(b) = codec.encode(&reply) {
                            let _ = sink.send(WsMessage::text(String::from_utf8(b).unwrap_or_default())).await;
                        }
                        continue;
                    }
                };
                inner.metrics.received(msg.route.operation_str());
                match msg.route.operation.as_ref() {
                    Some(Operation::Keepalive) => {
                        keepalive = Instant::now() + cfg.keepalive_interval;
                    }
                    Some(op) if op.is_viaduct_control() => {
                        let ack = msg.reply(Content::string("ack"));
                        if let Ok(b) = codec.encode(&ack) {
                            let _ = sink.send(WsMessage::text(String::from_utf8(b).unwrap_or_default())).await;
                        }
                    }
                    Some(Operation::Response) if msg.parent_id().is_some() => {
                        let acked = msg.parent_id().and_then(|p| {
                            let mut outbox = state.outbox();
                            let sent = outbox.sent_at(p);
                            outbox.take_acked(p).map(|m| (m, sent))
                        });
                        if let Some((acked, sent)) = acked {
                            if let Some(sent) = sent {
                                inner.metrics.acked_after(sent.elapsed());
                            }
                            state.space.add_permits(1);
                            // Nobody listening is fine: the events are hints for the ledger.
                            let _ = inner.events.send(HubEvent::Acked { node: node.to_owned(), msg: Arc::new(acked) });
                        } else {
                            debug!(parent_id = ?msg.parent_id(), "ack for an unknown message");
                        }
                    }
                    Some(Operation::Error) if msg.parent_id().is_some_and(|p| state.outbox().ack(p)) => {
                        // The edge refused a pushed message: resending the same version would
                        // only be refused again, so it leaves the outbox (a newer version is
                        // still delivered). The refusal goes on to the controllers.
                        state.space.add_permits(1);
                        warn!(parent_id = ?msg.parent_id(), reason = %msg.content.as_str().unwrap_or_default(), "edge refused a message");
                        let up = Upstream { node: node.to_owned(), msg };
                        tokio::select! {
                            r = inner.upstream.send(up) => if r.is_err() { break "hub shut down" },
                            _ = cancel.cancelled() => break "closed by the hub",
                        }
                    }
                    _ => {
                        debug!(msg_id = %msg.id(), group = msg.route.group_str(), op = msg.route.operation_str(), resource = %msg.route.resource, "upstream");
                        if let Some(at) = fair.take(Instant::now().into_std()) {
                            // Over its share: read this node more slowly (TCP pushes back on it).
                            tokio::select! {
                                _ = sleep_until(Instant::from_std(at)) => {}
                                _ = cancel.cancelled() => break "closed by the hub",
                            }
                        }
                        let up = Upstream { node: node.to_owned(), msg };
                        tokio::select! {
                            r = inner.upstream.send(up) => if r.is_err() { break "hub shut down" },
                            _ = cancel.cancelled() => break "closed by the hub",
                        }
                    }
                }
            }
        }
    };
    reason
}

/// Writes what `state`'s outbox has due: resends, NO-ACK messages, then new ACK-mode messages
/// up to the window.
async fn transmit(
    inner: &Inner,
    state: &NodeState,
    codec: &HubCodec,
    sink: &mut futures_util::stream::SplitSink<Ws, WsMessage>,
    out: &mut Vec<Message>,
) -> Result<(), &'static str> {
    out.clear();
    let (released, resent) = {
        let mut outbox = state.outbox();
        let released = outbox.poll_transmit(Instant::now(), out);
        (released, outbox.take_resends())
    };
    inner.metrics.resent(resent);
    if released > 0 {
        state.space.add_permits(released);
    }
    if out.is_empty() {
        return Ok(());
    }
    for m in out.iter() {
        inner.metrics.sent(m.route.operation_str());
        let text = match codec.encode(m) {
            Ok(b) => String::from_utf8(b).unwrap_or_default(),
            Err(e) => {
                warn!(msg_id = %m.id(), error = %e, "dropping unencodable message");
                continue;
            }
        };
        if sink.feed(WsMessage::text(text)).await.is_err() {
            return Err("write failed");
        }
    }
    sink.flush().await.map_err(|_| "write failed")?;
    debug!(count = out.len(), "sent");
    Ok(())
}
