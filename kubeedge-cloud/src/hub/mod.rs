//! CloudHub: the TLS websocket server edge nodes connect to (:10000), the certificate
//! bootstrap server (:10002), and a durable-while-running outbox per node.
//!
//! ```text
//! controllers --Downstream::send(node, msg)--> per-node Outbox --session task--> wss --> edge
//! edge --wss--> session task --acks--> Outbox
//!                            --other messages--> Upstream { node, msg } channel --> controllers
//! ```

mod admission;
mod bootstrap;
mod collector;
mod outbox;
mod sender;
mod session;
pub(crate) mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kubeedge_proto::{Compat, Message};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, PollSemaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

pub use admission::{Admission, Admit};
pub use outbox::{Outbox, OutboxConfig, Pushed};
use sender::push_with;
pub use sender::NodeSender;

use crate::certs::Pki;
use crate::error::HubError;

/// Hub settings (cloudcore.yaml `modules.cloudHub`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// `nodeLimit`: most nodes connected at once.
    pub node_limit: usize,
    /// `keepaliveInterval`: a session without a keepalive for this long is closed.
    pub keepalive_interval: Duration,
    /// Require the client certificate CN to be `system:node:<node_id>`. Off = upstream v1.12's
    /// behaviour (any certificate from the CA, whatever node it claims).
    pub enforce_node_identity: bool,
    /// Accept upstream v1.12 CSRs and certificates (CN `kubeedge.io`).
    pub allow_legacy_certs: bool,
    /// Per-node outbox limits.
    pub outbox: OutboxConfig,
    /// Largest websocket message accepted.
    pub max_frame_size: usize,
    /// Bound on the TLS + websocket handshake.
    pub handshake_timeout: Duration,
    /// Upstream messages buffered towards the controllers.
    pub upstream_capacity: usize,
    /// Per-node upstream rate (messages a second) beyond which the hub reads that node's
    /// socket more slowly, so that one flooding node cannot crowd out the others.
    pub node_upstream_qps: u32,
    /// Burst allowed above `node_upstream_qps`.
    pub node_upstream_burst: u32,
    /// Which upstream's ACK rules and error replies to follow.
    pub compat: Compat,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            node_limit: 1000,
            keepalive_interval: Duration::from_secs(30),
            enforce_node_identity: true,
            allow_legacy_certs: false,
            outbox: OutboxConfig::default(),
            max_frame_size: kubeedge_proto::HubCodec::DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout: Duration::from_secs(30),
            upstream_capacity: 4096,
            node_upstream_qps: 1000,
            node_upstream_burst: 2000,
            compat: Compat::Latest,
        }
    }
}

/// A message from an edge node, for the controllers. The resource is the edge view; use
/// `ResourcePath::to_cloud_view(&node)` for upstream's `node/<id>/…` form.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Upstream {
    /// The node, from the connection (never from the message).
    pub node: String,
    /// The message.
    pub msg: Message,
}

/// What happened on the hub, for controllers that keep state per node (the sync ledger).
/// Delivered on a bounded broadcast: a receiver that lags misses events and should
/// reconcile from scratch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HubEvent {
    /// A session for `node` started.
    Connected {
        /// The node.
        node: String,
    },
    /// The session for `node` may write: its [`Admission`] said yes (at once without one).
    Admitted {
        /// The node.
        node: String,
    },
    /// The session for `node` ended.
    Disconnected {
        /// The node.
        node: String,
    },
    /// `node` acked an ACK-mode message (edge-view resource); it is done.
    Acked {
        /// The node.
        node: String,
        /// The message that was acked.
        msg: Arc<Message>,
    },
}

/// Events buffered per receiver before it lags.
const EVENT_CAPACITY: usize = 16 * 1024;

struct NodeState {
    outbox: Mutex<Outbox>,
    wake: Notify,
    space: Arc<Semaphore>,
    session: tokio::sync::Mutex<Option<session::Handle>>,
}

impl NodeState {
    fn new(cfg: &OutboxConfig) -> Self {
        let mut unbounded = *cfg;
        // The semaphore bounds the outbox; the outbox itself never refuses.
        unbounded.capacity = usize::MAX;
        Self {
            outbox: Mutex::new(Outbox::new(unbounded)),
            wake: Notify::new(),
            space: Arc::new(Semaphore::new(cfg.capacity)),
            session: tokio::sync::Mutex::new(None),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    pki: Arc<Pki>,
    config: HubConfig,
    nodes: Mutex<HashMap<String, Arc<NodeState>>>,
    connected: AtomicUsize,
    upstream: mpsc::Sender<Upstream>,
    events: broadcast::Sender<HubEvent>,
    tracker: TaskTracker,
    metrics: crate::metrics::HubMetrics,
    admission: std::sync::RwLock<Option<Arc<dyn Admission>>>,
}

impl Inner {
    /// The state of `node`, if it was ever sent to or connected.
    fn existing(&self, node: &str) -> Option<Arc<NodeState>> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned()
    }

    fn admission(&self) -> Option<Arc<dyn Admission>> {
        self.admission
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn node(&self, id: &str) -> Arc<NodeState> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(NodeState::new(&self.config.outbox)))
            .clone()
    }
}

/// The hub server. Cheap to clone.
#[derive(Clone)]
pub struct CloudHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CloudHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudHub")
            .field("connected", &self.inner.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Sends messages to edge nodes. Cheap to clone.
#[derive(Clone)]
pub struct Downstream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream").finish_non_exhaustive()
    }
}

impl Downstream {
    /// Queue `msg` (edge-view resource) for `node`. Waits while that node's outbox is full;
    /// other nodes are never affected. Returns what the outbox did with it.
    pub async fn send(&self, node: &str, msg: Message) -> Result<Pushed, HubError> {
        if node.is_empty() || node.contains('/') {
            return Err(HubError::InvalidNode(node.to_owned()));
        }
        let state = self.inner.node(node);
        let permit = state
            .space
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HubError::Closed)?;
        Ok(push_with(&state, msg, self.inner.config.compat, permit))
    }

    /// Queue `msg` for `node` if its outbox has room now; otherwise hand the message back
    /// (`Err(TrySend::Full(msg))`) without waiting.
    pub fn try_send(&self, node: &str, msg: Message) -> Result<Pushed, TrySend> {
        if node.is_empty() || node.contains('/') {
            return Err(TrySend::Failed(HubError::InvalidNode(node.to_owned())));
        }
        let state = self.inner.node(node);
        match state.space.clone().try_acquire_owned() {
            Ok(permit) => Ok(push_with(&state, msg, self.inner.config.compat, permit)),
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(TrySend::Full(Box::new(msg))),
            Err(tokio::sync::TryAcquireError::Closed) => Err(TrySend::Failed(HubError::Closed)),
        }
    }

    /// A [`tower::Service`] for one node whose `poll_ready` is ready exactly when that node's
    /// outbox has room.
    pub fn to_node(&self, node: &str) -> Result<NodeSender, HubError> {
        if node.is_empty() || node.contains('/') {
            return Err(HubError::InvalidNode(node.to_owned()));
        }
        let state = self.inner.node(node);
        Ok(NodeSender {
            permits: PollSemaphore::new(state.space.clone()),
            state,
            permit: None,
            compat: self.inner.config.compat,
        })
    }

    /// `node` acked version `rv` of object `uid` through another replica (`None`: its
    /// delete), as the shared ObjectSync ledger shows: what is queued here for the object and
    /// not newer is dropped. Returns how many messages were dropped.
    pub fn acked_elsewhere(&self, node: &str, uid: &str, rv: Option<&str>) -> usize {
        let Some(state) = self.inner.existing(node) else {
            return 0;
        };
        let n = state.outbox().acked_elsewhere(uid, rv);
        state.space.add_permits(n);
        n
    }

    /// Messages held for `node` (pending, in flight, NO-ACK).
    pub fn queued(&self, node: &str) -> usize {
        let nodes = self
            .inner
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        nodes.get(node).map_or(0, |n| n.outbox().len())
    }
}

/// Why [`Downstream::try_send`] did not queue a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrySend {
    /// The node's outbox is full right now; here is the message back.
    Full(Box<Message>),
    /// The message can never be sent.
    Failed(HubError),
}

/// Serve one HTTP/1.1 connection until it ends, reading each request head within
/// `header_timeout`; once `cancel` fires, the connection is told to shut down and left.
pub(crate) async fn serve_http1<I, S>(
    io: I,
    svc: S,
    header_timeout: std::time::Duration,
    cancel: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            Ok(())
        }
    }
}

/// The next connection, or `None` once `cancel` fires. Accept errors (such as running out of
/// file descriptors) are logged and retried.
pub(crate) async fn next_conn(
    listener: &TcpListener,
    cancel: &CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

impl CloudHub {
    /// A hub with its downstream handle and the stream of upstream messages.
    pub fn new(pki: Arc<Pki>, config: HubConfig) -> (Self, Downstream, mpsc::Receiver<Upstream>) {
        let (tx, rx) = mpsc::channel(config.upstream_capacity.max(1));
        let inner = Arc::new(Inner {
            pki,
            config,
            nodes: Mutex::new(HashMap::new()),
            connected: AtomicUsize::new(0),
            upstream: tx,
            events: broadcast::channel(EVENT_CAPACITY).0,
            tracker: TaskTracker::new(),
            metrics: crate::metrics::HubMetrics::default(),
            admission: std::sync::RwLock::new(None),
        });
        (
            Self {
                inner: inner.clone(),
            },
            Downstream { inner },
            rx,
        )
    }

    /// Subscribe to connection and ack events from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// True when `node` has a live session.
    pub fn is_connected(&self, node: &str) -> bool {
        let state = self.inner.existing(node);
        state.is_some_and(|s| s.session.try_lock().map_or(true, |h| h.is_some()))
    }

    /// End `node`'s session, if any (upstream closes it when the Node object is deleted). The
    /// edge may reconnect.
    pub async fn disconnect(&self, node: &str) {
        let state = self.inner.existing(node);
        if let Some(state) = state {
            if let Some(h) = state.session.lock().await.as_ref() {
                h.cancel();
            }
        }
    }

    /// Install the [`Admission`] that new sessions wait for (replacing any before).
    pub fn set_admission(&self, admission: Arc<dyn Admission>) {
        *self
            .inner
            .admission
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(admission);
    }

    /// End every session (this replica stops serving); the edges may reconnect.
    pub async fn disconnect_all(&self) {
        for node in self.connected_nodes() {
            self.disconnect(&node).await;
        }
    }

    /// The names of the nodes with a live session.
    pub fn connected_nodes(&self) -> Vec<String> {
        let nodes = self
            .inner
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .filter(|(_, s)| s.session.try_lock().map_or(true, |h| h.is_some()))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Drops what is queued for `node` when it has no session here (another replica serves
    /// it); returns how many messages were dropped.
    pub fn forget(&self, node: &str) -> usize {
        self.drop_idle(node, Outbox::clear)
    }

    /// Like [`CloudHub::forget`], for a hub whose ACK-mode messages leave through
    /// [`Downstream::acked_elsewhere`] (the ObjectSync ledger is shared): drops only the NO-ACK
    /// messages queued for `node`, and keeps what the node has not acked anywhere, to send
    /// should the node come here. Returns how many messages were dropped.
    pub fn served_elsewhere(&self, node: &str) -> usize {
        self.drop_idle(node, Outbox::clear_no_ack)
    }

    /// Applies `drop` to `node`'s outbox when it has no session here (a session being set up
    /// or running keeps its queue), and returns the capacity it freed.
    fn drop_idle(&self, node: &str, drop: fn(&mut Outbox) -> usize) -> usize {
        let Some(state) = self.inner.existing(node) else {
            return 0;
        };
        let Ok(session) = state.session.try_lock() else {
            return 0;
        };
        if session.is_some() {
            return 0;
        }
        let n = drop(&mut state.outbox());
        state.space.add_permits(n);
        n
    }

    /// Nodes with a live session.
    pub fn connected(&self) -> usize {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Register the hub's metrics in `registry`: the counters of [`crate::metrics::HubMetrics`],
    /// and the outbox figures read at each scrape (the total, and the deepest and oldest
    /// [`crate::metrics::TOP_NODES`] nodes).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
        registry.register_collector(Box::new(collector::OutboxCollector(Arc::downgrade(
            &self.inner,
        ))));
    }

    /// Serve both ports (websocket hub and certificate bootstrap) until `cancel`.
    pub async fn serve(
        &self,
        websocket: TcpListener,
        https: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), HubError> {
        let (a, b) = tokio::join!(
            self.serve_websocket(websocket, cancel.clone()),
            self.serve_https(https, cancel)
        );
        a.and(b)
    }

    /// Serve the websocket hub on `listener` until `cancel`.
    pub async fn serve_websocket(
        &self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), HubError> {
        let config = tls::server_config(&self.inner.pki, true).map_err(HubError::Cert)?;
        let acceptor = TlsAcceptor::from(config);
        info!(addr = ?listener.local_addr().ok(), "cloudhub websocket server listening");
        while let Some((tcp, peer)) = next_conn(&listener, &cancel).await {
            let _ = tcp.set_nodelay(true);
            let inner = self.inner.clone();
            let acceptor = acceptor.clone();
            let cancel = cancel.child_token();
            self.inner.tracker.spawn(
                async move {
                    if let Err(e) = session::accept(inner, acceptor, tcp, cancel).await {
                        debug!(error = %e, "connection refused");
                    }
                }
                .instrument(tracing::debug_span!("conn", %peer)),
            );
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        Ok(())
    }

    /// Serve the certificate bootstrap (`/ca.crt`, `/edge.crt`) on `listener` until `cancel`.
    pub async fn serve_https(
        &self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), HubError> {
        let config = tls::server_config(&self.inner.pki, false).map_err(HubError::Cert)?;
        let acceptor = TlsAcceptor::from(config);
        let tracker = TaskTracker::new();
        info!(addr = ?listener.local_addr().ok(), "cloudhub https server listening");
        while let Some((tcp, peer)) = next_conn(&listener, &cancel).await {
            let acceptor = acceptor.clone();
            let pki = self.inner.pki.clone();
            let legacy = self.inner.config.allow_legacy_certs;
            let timeout = self.inner.config.handshake_timeout;
            let cancel = cancel.clone();
            tracker.spawn(async move {
                let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        return debug!(%peer, error = %e, "bootstrap tls handshake failed")
                    }
                    Err(_) => return debug!(%peer, "bootstrap tls handshake timed out"),
                };
                let peer_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned());
                let svc = hyper::service::service_fn(move |req| {
                    let pki = pki.clone();
                    let peer_cert = peer_cert.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            bootstrap::handle(req, pki, peer_cert, legacy).await,
                        )
                    }
                });
                if let Err(e) = serve_http1(tls, svc, timeout, &cancel).await {
                    debug!(%peer, error = %e, "bootstrap connection error");
                }
            });
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}
