//! The websocket client to CloudHub (PROTOCOL.md §2): upstream's URL and headers over mTLS, a
//! keepalive every `heartbeat`, websocket pings to notice a dead link within two heartbeats,
//! and reconnects with exponential backoff and jitter. The rate limit, request/reply and
//! duplicate handling are layers over it, stacked by [`connect`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kubeedge_proto::{Content, FrameKind, HubCodec, Message, Operation, Route};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};
use tracing::{debug, info, warn, Instrument};

use super::dedup::Acks;
use super::handle::{Client, Inbound, Link};
use super::ratelimit::RateLimitLayer;
use super::reply::Replies;
use super::tls::{authority_of, server_name, ClientTls};
use crate::error::HubError;

/// Hub client settings (edgecore.yaml `modules.edgeHub`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// `websocket.server`: `host:port` of CloudHub.
    pub server: String,
    /// `projectID`.
    pub project_id: String,
    /// This node's name.
    pub node_name: String,
    /// `heartbeat`: keepalive period (15 s). A link silent for two periods is dead.
    pub heartbeat: Duration,
    /// `websocket.handshakeTimeout` (30 s).
    pub handshake_timeout: Duration,
    /// `websocket.writeDeadline` (15 s).
    pub write_timeout: Duration,
    /// `messageQPS` (30).
    pub message_qps: u32,
    /// `messageBurst` (60).
    pub message_burst: u32,
    /// First reconnect delay (1 s).
    pub backoff_min: Duration,
    /// Longest reconnect delay (30 s).
    pub backoff_max: Duration,
    /// A session that lived this long resets the backoff.
    pub stable_after: Duration,
    /// Largest frame accepted.
    pub max_frame_size: usize,
    /// Outbound messages buffered while the link is down.
    pub outbound_capacity: usize,
    /// Inbound messages buffered towards the consumer.
    pub inbound_capacity: usize,
    /// Renew the client certificate at 70–90 % of its life (`rotateCertificates`).
    pub rotation: Option<CertRotation>,
}

/// Where and how to renew the client certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertRotation {
    /// `httpServer`: the bootstrap server, `host:port` or `https://host:port`.
    pub https_server: String,
    /// Where the renewed certificate and key are written.
    pub files: super::tls::CertFiles,
}

impl CertRotation {
    /// Renew through `https_server`, writing to `files`.
    pub fn new(https_server: impl Into<String>, files: super::tls::CertFiles) -> Self {
        Self {
            https_server: https_server.into(),
            files,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:10000".into(),
            project_id: kubeedge_proto::DEFAULT_PROJECT_ID.into(),
            node_name: String::new(),
            heartbeat: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(15),
            message_qps: 30,
            message_burst: 60,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            max_frame_size: HubCodec::DEFAULT_MAX_FRAME_SIZE,
            outbound_capacity: 1024,
            inbound_capacity: 1024,
            rotation: None,
        }
    }
}

/// The link state, observable through [`Client::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected (yet, or any more).
    Disconnected,
    /// Connected; the number counts sessions since start (1 for the first).
    Connected(u64),
}

/// What the driver hands each message from the cloud to: the inbound stack.
pub type InboundService = BoxCloneSyncService<Message, (), BoxError>;

/// Keeps the link up; run it with [`Driver::run`].
#[derive(Debug)]
pub struct Driver {
    config: HubConfig,
    tls: ClientTls,
    rx: mpsc::Receiver<Message>,
    inbound: Option<InboundService>,
    state: watch::Sender<ConnectionState>,
}

/// The bare link and its driver, for a stack of your own: give the driver its inbound stack
/// with [`Driver::inbound`] before running it (without one, messages from the cloud are
/// dropped). [`connect`] builds the standard stacks.
pub fn link(config: HubConfig, tls: ClientTls) -> (Link, Driver) {
    let (tx, rx) = mpsc::channel(config.outbound_capacity.max(1));
    let (state_tx, state_rx) = watch::channel(ConnectionState::Disconnected);
    (
        Link::new(tx, state_rx),
        Driver {
            config,
            tls,
            rx,
            inbound: None,
            state: state_tx,
        },
    )
}

/// A client handle, the inbound stream and the driver that must be run, with the standard
/// layers: read each stack top to bottom.
pub fn connect(config: HubConfig, tls: ClientTls) -> (Client, Inbound, Driver) {
    let (qps, burst, capacity) = (
        config.message_qps,
        config.message_burst,
        config.inbound_capacity,
    );
    let (link, driver) = link(config, tls);
    let replies = Replies::default();
    let acks = Acks::default();
    // Edge to cloud: what the modules send.
    let uplink = ServiceBuilder::new()
        .layer(RateLimitLayer::new(qps, burst)) // messageQPS / messageBurst: callers wait
        .layer(acks.note_layer()) // remember which deliveries the modules acked
        .service(link.clone()); // the outbound queue of the websocket
    let client = Client::new(uplink, replies.clone(), link.state());
    // Cloud to edge: what the driver reads.
    let (tx, inbound) = mpsc::channel(capacity.max(1));
    let downlink = ServiceBuilder::new()
        .layer(replies.layer()) // a reply goes to its waiting request
        .layer(acks.dedup_layer(link)) // a resend is acked again, never delivered twice
        .service(super::handle::ChannelSink::new(tx)); // the modules' inbound queue
    (client, inbound, driver.inbound(downlink))
}

enum End {
    Cancelled,
    Closed,
    Link(&'static str),
    Rotate,
}

/// When to renew: NotBefore + a random 70–90 % of the lifetime (upstream's jitter).
fn rotation_deadline(tls: &ClientTls) -> Option<Instant> {
    let (not_before, not_after) = tls.validity()?;
    let lifetime = (not_after - not_before).max(0) as f64;
    let at = not_before as f64 + lifetime * (0.7 + 0.2 * fastrand::f64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Some(Instant::now() + Duration::from_secs_f64((at - now).max(0.0)))
}

impl Driver {
    /// Hand every message from the cloud to `stack` (each message waits for the previous one).
    pub fn inbound<S>(mut self, stack: S) -> Self
    where
        S: tower::Service<Message, Response = ()> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.inbound = Some(BoxCloneSyncService::new(stack.map_err(Into::into)));
        self
    }

    /// Connect, and reconnect until `cancel`. Returns when cancelled or when every [`Client`]
    /// is dropped.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), HubError> {
        let span = tracing::info_span!("hub", node = %self.config.node_name);
        async move {
            let mut tls = self.tls.client_config()?;
            let name = server_name(&self.config.server)?;
            let mut rotate_at = self.config.rotation.as_ref().and_then(|_| rotation_deadline(&self.tls));
            let mut rotate_retry = Duration::from_secs(2);
            let mut backoff = self.config.backoff_min;
            let mut sessions = 0u64;
            let mut held: VecDeque<Message> = VecDeque::new();
            loop {
                let started = Instant::now();
                let attempt = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = self.dial(tls.clone(), name.clone()) => r,
                };
                match attempt {
                    Ok(ws) => {
                        sessions += 1;
                        info!(session = sessions, "connected to cloudhub");
                        let _ = self.state.send(ConnectionState::Connected(sessions));
                        let end = self
                            .session(ws, &cancel, &mut held, rotate_at)
                            .await;
                        let _ = self.state.send(ConnectionState::Disconnected);
                        match end {
                            End::Cancelled => return Ok(()),
                            End::Closed => return Ok(()),
                            End::Link(why) => warn!(reason = why, "disconnected from cloudhub"),
                            End::Rotate => {
                                match self.rotate().await {
                                    Ok(new_tls) => {
                                        info!("client certificate renewed; reconnecting with it");
                                        tls = new_tls;
                                        rotate_at = rotation_deadline(&self.tls);
                                        rotate_retry = Duration::from_secs(2);
                                    }
                                    Err(e) => {
                                        warn!(error = %e, retry_in = ?rotate_retry, "certificate renewal failed");
                                        rotate_at = Some(Instant::now() + rotate_retry);
                                        rotate_retry = (rotate_retry * 2).min(Duration::from_secs(32));
                                    }
                                }
                                continue;
                            }
                        }
                        if started.elapsed() >= self.config.stable_after {
                            backoff = self.config.backoff_min;
                        }
                    }
                    Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot connect to cloudhub"),
                }
                // Full jitter between half and the whole delay.
                let delay = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = sleep(delay) => {}
                }
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
        .instrument(span)
        .await
    }

    async fn rotate(&mut self) -> Result<Arc<rustls::ClientConfig>, HubError> {
        let Some(rot) = self.config.rotation.clone() else {
            return self.tls.client_config();
        };
        let renewed = super::bootstrap::renew(
            &rot.https_server,
            &self.tls,
            &self.config.node_name,
            &rot.files,
            self.config.handshake_timeout,
        )
        .await
        .map_err(|e| HubError::Tls(e.to_string()))?;
        let cfg = renewed.client_config()?;
        self.tls = renewed;
        Ok(cfg)
    }

    async fn dial(
        &self,
        tls: Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    ) -> Result<Ws, HubError> {
        let cfg = &self.config;
        let server = authority_of(&cfg.server).to_owned();
        let fail = |reason: String| HubError::Connect {
            server: server.clone(),
            reason,
        };
        let fut = async {
            let tcp = TcpStream::connect(&server)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("tls: {e}")))?;
            let url = format!("wss://{server}/{}/{}/events", cfg.project_id, cfg.node_name);
            let mut req = url.into_client_request().map_err(|e| fail(e.to_string()))?;
            let h = req.headers_mut();
            for (k, v) in [
                ("node_id", cfg.node_name.as_str()),
                ("project_id", cfg.project_id.as_str()),
                ("ConnectionUse", "msg"),
            ] {
                let v = http::HeaderValue::from_str(v).map_err(|e| fail(e.to_string()))?;
                h.insert(k, v);
            }
            let mut ws_cfg = WebSocketConfig::default();
            ws_cfg.read_buffer_size = 8192;
            ws_cfg.write_buffer_size = 8192;
            ws_cfg.max_write_buffer_size = cfg.max_frame_size.saturating_mul(2);
            ws_cfg.max_message_size = Some(cfg.max_frame_size);
            ws_cfg.max_frame_size = Some(cfg.max_frame_size);
            let (ws, _) = tokio_tungstenite::client_async_with_config(req, tls, Some(ws_cfg))
                .await
                .map_err(|e| fail(format!("websocket: {e}")))?;
            Ok(ws)
        };
        tokio::time::timeout(cfg.handshake_timeout, fut)
            .await
            .map_err(|_| fail("handshake timed out".into()))?
    }

    async fn session(
        &mut self,
        ws: Ws,
        cancel: &CancellationToken,
        held: &mut VecDeque<Message>,
        rotate_at: Option<Instant>,
    ) -> End {
        let cfg = self.config.clone();
        let codec = HubCodec::new(cfg.max_frame_size);
        let (mut sink, mut stream) = ws.split();
        let mut heartbeat = tokio::time::interval(cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let dead_after = cfg.heartbeat * 2;

        loop {
            // Messages taken from the queue (and any left when the last link broke) go out in
            // order, in one flush.
            if !held.is_empty() {
                while let Some(m) = held.front() {
                    if let Err(why) = feed(&mut sink, &codec, m, cfg.write_timeout).await {
                        return End::Link(why);
                    }
                    held.pop_front();
                }
                match tokio::time::timeout(cfg.write_timeout, sink.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Link("write failed"),
                    Err(_) => return End::Link("write timed out"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = sink.close().await;
                    return End::Cancelled;
                }
                _ = sleep_until(rotate_at.unwrap_or_else(Instant::now)), if rotate_at.is_some() => {
                    let _ = sink.close().await;
                    return End::Rotate;
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > dead_after {
                        return End::Link("no traffic for two heartbeats");
                    }
                    let keepalive = Message::new(
                        Route::new("websocket", "resource", Operation::Keepalive, "node"),
                        Content::string("ping"),
                    );
                    if let Err(why) = write(&mut sink, &codec, &keepalive, cfg.write_timeout).await {
                        return End::Link(why);
                    }
                    if tokio::time::timeout(cfg.write_timeout, sink.send(WsMessage::Ping(Vec::new().into()))).await.is_err() {
                        return End::Link("ping timed out");
                    }
                }
                out = self.rx.recv(), if held.is_empty() => {
                    let Some(first) = out else {
                        let _ = sink.close().await;
                        return End::Closed;
                    };
                    held.push_back(first);
                    while held.len() < 64 {
                        match self.rx.try_recv() {
                            Ok(m) => held.push_back(m),
                            Err(_) => break,
                        }
                    }
                }
                frame = stream.next() => {
                    let (kind, payload) = match frame {
                        None => return End::Link("connection closed"),
                        Some(Err(e)) => {
                            debug!(error = %e, "read failed");
                            return End::Link("read failed");
                        }
                        Some(Ok(WsMessage::Text(t))) => (FrameKind::Text, bytes::Bytes::from(t)),
                        Some(Ok(WsMessage::Binary(b))) => (FrameKind::Binary, b),
                        Some(Ok(WsMessage::Close(_))) => return End::Link("closed by the cloud"),
                        Some(Ok(_)) => {
                            last_heard = Instant::now();
                            continue;
                        }
                    };
                    last_heard = Instant::now();
                    let msg = match codec.decode(kind, &payload) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "invalid frame from cloud");
                            continue;
                        }
                    };
                    let Some(inbound) = self.inbound.clone() else {
                        debug!(msg_id = %msg.id(), "no inbound stack: message dropped");
                        continue;
                    };
                    let delivered = async {
                        let mut inbound = inbound;
                        let ready = inbound.ready().await.map_err(|_| ())?;
                        if let Err(e) = tower::Service::call(ready, msg).await {
                            debug!(error = %e, "inbound stack refused a message");
                        }
                        Ok::<(), ()>(())
                    };
                    tokio::select! {
                        r = delivered => if r.is_err() { return End::Closed },
                        _ = cancel.cancelled() => return End::Cancelled,
                    }
                }
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;
type Sink = futures_util::stream::SplitSink<Ws, WsMessage>;

/// Write one message and flush, bounded by `timeout`.
async fn write(
    sink: &mut Sink,
    codec: &HubCodec,
    msg: &Message,
    timeout: Duration,
) -> Result<(), &'static str> {
    feed(sink, codec, msg, timeout).await?;
    match tokio::time::timeout(timeout, sink.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write failed"),
        Err(_) => Err("write timed out"),
    }
}

/// Queue one message in the websocket's write buffer, bounded by `timeout`. An unencodable
/// message is logged and skipped.
async fn feed(
    sink: &mut Sink,
    codec: &HubCodec,
    msg: &Message,
    timeout: Duration,
) -> Result<(), &'static str> {
    let bytes = match codec.encode(msg) {
        Ok(b) => b,
        Err(e) => {
            warn!(msg_id = %msg.id(), error = %e, "dropping unencodable message");
            return Ok(());
        }
    };
    let text = String::from_utf8(bytes).unwrap_or_default();
    match tokio::time::timeout(timeout, sink.feed(WsMessage::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write failed"),
        Err(_) => Err("write timed out"),
    }
}
