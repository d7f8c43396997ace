//! CloudStream: the cloud end of the stream tunnel (PROTOCOL.md §7), wire-compatible with
//! upstream's cloudstream and edgestream.
//!
//! Each edge node keeps one tunnel (`wss://<cloud>:10004/v1/kubeedge/connect`, the node
//! certificate naming the node). [`CloudStream::open`] starts a session on a node's tunnel: a
//! `*_CONNECT` frame carrying the kubelet URL, then `DATA` frames both ways until either end
//! sends `REMOVE_CONNECT`. [`CloudStream::logs`] is `GET /containerLogs/...` on top of it, what
//! the API server's `pods/log` asks a kubelet for.

mod endpoint;
mod forward;
pub mod iptables;
mod kubelet_api;
mod server;
mod service;
mod session;
mod upgrade;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use kubeedge_proto::{GoUrl, TunnelFrame, TunnelMessageType};
use tokio::sync::mpsc;
use tower::ServiceExt as _;

pub use endpoint::{
    negotiate_tunnel_port, set_kubelet_port, TunnelPortRecord, TUNNEL_PORT_ANNOTATION,
};
pub use forward::{Forwarded, Forwarder};
pub use kubelet_api::kubelet_api_tls;
pub use service::{StreamRequest, TunnelService};
pub use session::{Opened, SessionSender};
pub use upgrade::Upgraded;

/// The tunnel settings (`modules.cloudStream`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Refuse a tunnel whose certificate names another node (as the hub does).
    pub enforce_node_identity: bool,
    /// Accept upstream's shared `kubeedge.io` edge certificate (as the hub can).
    pub allow_legacy_certs: bool,
    /// A tunnel silent for this long is dropped: two of the edge's 5 s pings missed, so that a
    /// cut link ends kubectl's streams within two heartbeats.
    pub idle_timeout: Duration,
    /// How long a new session waits for the edge to refuse it before the answer starts.
    pub refusal_window: Duration,
    /// Bound on the TLS and upgrade handshake.
    pub handshake_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            enforce_node_identity: true,
            allow_legacy_certs: false,
            idle_timeout: Duration::from_secs(10),
            refusal_window: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a stream could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The node has no tunnel connected.
    #[error("node {0:?} has no stream tunnel connected (is edgeStream enabled on it?)")]
    NoTunnel(String),
    /// The tunnel went away.
    #[error("the stream tunnel of node {0:?} closed")]
    TunnelClosed(String),
    /// The edge refused the session, as a kubelet would: its HTTP status and message.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        code: u16,
        /// The kubelet's reason (`BadRequest`, `NotFound`, ...).
        reason: String,
        /// The message.
        message: String,
    },
    /// The tunnel server could not start.
    #[error("stream tunnel server: {0}")]
    Server(String),
}

/// One node's live tunnel.
#[derive(Debug)]
struct Tunnel {
    /// Distinguishes a replaced tunnel of the same node.
    serial: u64,
    /// The node's internal IP (`SessionInternalIP`), how a kube-apiserver names the kubelet.
    ip: String,
    out: mpsc::Sender<TunnelFrame>,
    sessions: Mutex<HashMap<u64, mpsc::Sender<TunnelFrame>>>,
}

#[derive(Debug)]
struct Inner {
    config: StreamConfig,
    tunnels: Mutex<HashMap<String, Arc<Tunnel>>>,
    next_id: AtomicU64,
    /// The name of each node whose tunnel connects.
    connected: tokio::sync::broadcast::Sender<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            config: StreamConfig::default(),
            tunnels: Mutex::default(),
            next_id: AtomicU64::new(0),
            connected: tokio::sync::broadcast::channel(64).0,
        }
    }
}

/// The cloud end of the stream tunnel (a cheap clone).
#[derive(Debug, Clone, Default)]
pub struct CloudStream {
    inner: Arc<Inner>,
}

impl CloudStream {
    /// A tunnel registry with `config`; serve tunnels with [`CloudStream::serve_tunnel`].
    pub fn new(config: StreamConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                ..Inner::default()
            }),
        }
    }

    /// Whether `node` has a tunnel.
    pub fn is_connected(&self, node: &str) -> bool {
        self.tunnels().contains_key(node)
    }

    /// The name of each node whose tunnel connects, from now on.
    pub fn connections(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.connected.subscribe()
    }

    /// Nodes with a tunnel.
    pub fn connected(&self) -> usize {
        self.tunnels().len()
    }

    /// The node whose tunnel announced internal IP `ip`.
    pub fn node_by_ip(&self, ip: &str) -> Option<String> {
        self.tunnels()
            .iter()
            .find(|(_, t)| t.ip == ip)
            .map(|(n, _)| n.clone())
    }

    /// Open sessions on `node`'s tunnel.
    pub fn sessions(&self, node: &str) -> usize {
        self.tunnels().get(node).map_or(0, |t| t.sessions())
    }

    fn tunnels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Tunnel>>> {
        self.inner
            .tunnels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Start a session on `node`: send `kind` with the kubelet request `method path?query`
    /// and `headers`. The edge's refusal within [`StreamConfig::refusal_window`] is an error;
    /// after it, the session is open. (A `oneshot` on [`CloudStream::service`].)
    pub async fn open(
        &self,
        node: &str,
        kind: TunnelMessageType,
        method: Option<&str>,
        path_and_query: &str,
        headers: std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<Opened, StreamError> {
        let mut req = StreamRequest::new(kind, path_and_query).headers(headers);
        req.method = method.map(str::to_owned);
        self.service(node)?.oneshot(req).await
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The kubelet's `GET /containerLogs/{namespace}/{pod}/{container}?{query}` on `node`:
    /// the log bytes as they come.
    pub async fn logs(
        &self,
        node: &str,
        path_and_query: &str,
    ) -> Result<BoxStream<'static, Bytes>, StreamError> {
        self.get(node, TunnelMessageType::LogsConnect, path_and_query)
            .await
    }

    /// The kubelet's `GET /stats/summary` or `/metrics/resource` (a `METRIC_CONNECT`) on
    /// `node`: the body.
    pub async fn metrics(
        &self,
        node: &str,
        path_and_query: &str,
    ) -> Result<BoxStream<'static, Bytes>, StreamError> {
        self.get(node, TunnelMessageType::MetricConnect, path_and_query)
            .await
    }

    async fn get(
        &self,
        node: &str,
        kind: TunnelMessageType,
        path_and_query: &str,
    ) -> Result<BoxStream<'static, Bytes>, StreamError> {
        let opened = self
            .open(node, kind, None, path_and_query, Default::default())
            .await?;
        Ok(opened.into_stream().boxed())
    }
}

impl Tunnel {
    fn sessions_mut(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<TunnelFrame>>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sessions(&self) -> usize {
        self.sessions_mut().len()
    }
}

/// The URL upstream's cloud puts in a connect: the edge's local kubelet port, the API
/// server's path and query.
fn kubelet_url(path: &str, query: &str) -> GoUrl {
    let mut url = GoUrl::default();
    url.scheme = "http".into();
    url.host = "127.0.0.1:10350".into();
    url.path = path.to_owned();
    url.raw_query = query.to_owned();
    url
}
