//! How the API server reaches a node's kubelet for pod subresources, as kube-apiserver does
//! through its kubelet client: [`NodeProxy`] answers a kubelet request on a named node. The
//! embedded cloudcore implements it over the CloudStream tunnel, so no port of the edge node
//! needs to be reachable.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// A kubelet's refusal (or a failure to reach it): the HTTP status and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NodeProxyError {
    /// The HTTP status: the kubelet's, or 500 when it could not be reached.
    pub code: u16,
    /// The message kubectl shows.
    pub message: String,
}

/// A node's kubelet, for `pods/log` (and next exec, attach and port-forward).
pub trait NodeProxy: Send + Sync + 'static {
    /// `GET {path_and_query}` (`/containerLogs/{namespace}/{pod}/{container}?...`) on `node`:
    /// the response body as it comes.
    fn get_stream(
        &self,
        node: &str,
        path_and_query: &str,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Bytes>, NodeProxyError>>;

    /// Send the upgrade request `method path?query` with `headers` (`Upgrade`,
    /// `Sec-WebSocket-*`, `X-Stream-Protocol-Version`) to `node`'s kubelet: its response head
    /// and, once upgraded, the connection.
    fn upgrade(
        &self,
        node: &str,
        kind: UpgradeKind,
        method: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<UpgradeResponse, NodeProxyError>>;
}

/// Bytes both ways after an upgrade.
pub trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// A kubelet's answer to an upgrade request: its status (101 when upgraded), headers, and the
/// connection after the response head.
pub struct UpgradeResponse {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(String, String)>,
    /// The bytes after the head, both ways.
    pub io: Box<dyn UpgradedIo>,
}

impl std::fmt::Debug for UpgradeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// The kind of an upgraded kubelet request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeKind {
    /// `/exec/...`.
    Exec,
    /// `/attach/...`.
    Attach,
    /// `/portForward/...`.
    PortForward,
}

/// A shared [`NodeProxy`] for [`ApiConfig::node_proxy`](crate::ApiConfig::node_proxy).
#[derive(Clone)]
pub struct NodeProxyHandle(pub Arc<dyn NodeProxy>);

impl std::fmt::Debug for NodeProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeProxyHandle")
    }
}
