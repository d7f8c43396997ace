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
}

/// A shared [`NodeProxy`] for [`ApiConfig::node_proxy`](crate::ApiConfig::node_proxy).
#[derive(Clone)]
pub struct NodeProxyHandle(pub Arc<dyn NodeProxy>);

impl std::fmt::Debug for NodeProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeProxyHandle")
    }
}
