//! A node's tunnel as a tower [`Service`]: each call opens one stream session, and
//! `poll_ready` is the tunnel's capacity to take another frame. A custom gateway can stack its
//! own layers (timeouts, concurrency limits, tracing) on it, and [`CloudStream::open`] is a
//! `oneshot` on it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kubeedge_proto::{StreamConnect, TunnelFrame, TunnelMessageType};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use tower::Service;

use super::{kubelet_url, CloudStream, Opened, StreamError, Tunnel};

/// What a stream session asks the edge's kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRequest {
    /// The connect frame's type (`LOGS_CONNECT`, `EXEC_CONNECT`, ...).
    pub kind: TunnelMessageType,
    /// The HTTP method (exec and attach carry one).
    pub method: Option<String>,
    /// The kubelet path and query (`/containerLogs/ns/pod/c?follow=true`).
    pub path_and_query: String,
    /// Request headers (Go's canonical names).
    pub headers: BTreeMap<String, Vec<String>>,
}

impl StreamRequest {
    /// A request of `kind` for `path_and_query`, without a method or headers.
    pub fn new(kind: TunnelMessageType, path_and_query: impl Into<String>) -> Self {
        Self {
            kind,
            method: None,
            path_and_query: path_and_query.into(),
            headers: BTreeMap::new(),
        }
    }

    /// With `method`.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// With `headers`.
    pub fn headers(mut self, headers: BTreeMap<String, Vec<String>>) -> Self {
        self.headers = headers;
        self
    }
}

/// One node's tunnel, bound to the connection that was live when it was made.
#[derive(Debug)]
pub struct TunnelService {
    stream: CloudStream,
    node: String,
    tunnel: Arc<Tunnel>,
    out: PollSender<TunnelFrame>,
    window: Duration,
}

impl Clone for TunnelService {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            node: self.node.clone(),
            tunnel: self.tunnel.clone(),
            out: self.out.clone(),
            window: self.window,
        }
    }
}

impl CloudStream {
    /// `node`'s tunnel as a [`Service`]; an error when it has none.
    pub fn service(&self, node: &str) -> Result<TunnelService, StreamError> {
        let tunnel = self
            .tunnels()
            .get(node)
            .cloned()
            .ok_or_else(|| StreamError::NoTunnel(node.to_owned()))?;
        Ok(TunnelService {
            stream: self.clone(),
            node: node.to_owned(),
            out: PollSender::new(tunnel.out.clone()),
            tunnel,
            window: self.inner.config.refusal_window,
        })
    }
}

impl Service<StreamRequest> for TunnelService {
    type Response = Opened;
    type Error = StreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Opened, StreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        self.out
            .poll_reserve(cx)
            .map_err(|_| StreamError::TunnelClosed(self.node.clone()))
    }

    fn call(&mut self, req: StreamRequest) -> Self::Future {
        let id = self.stream.next_id();
        let (path, query) = req
            .path_and_query
            .split_once('?')
            .unwrap_or((req.path_and_query.as_str(), ""));
        let mut connect = StreamConnect::default();
        connect.mess_id = id;
        connect.url = kubelet_url(path, query);
        connect.header = req.headers;
        connect.method = req.method;
        let (tx, rx) = mpsc::channel(64);
        self.tunnel.sessions_mut().insert(id, tx);
        let opened = Opened::new(id, &self.node, self.tunnel.clone(), rx);
        let sent = self
            .out
            .send_item(TunnelFrame::new(id, req.kind, connect.encode()));
        let (node, window) = (self.node.clone(), self.window);
        Box::pin(async move {
            sent.map_err(|_| StreamError::TunnelClosed(node))?;
            opened.await_refusal(window).await
        })
    }
}
