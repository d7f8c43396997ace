//! One open session on a node's tunnel, from the cloud's side.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use kubeedge_proto::{TunnelFrame, TunnelMessageType};
use tokio::sync::mpsc;

use super::{StreamError, Tunnel};

/// An open session: the edge's `DATA` in order; dropping it sends `REMOVE_CONNECT`.
#[derive(Debug)]
pub struct Opened {
    id: u64,
    node: String,
    tunnel: Arc<Tunnel>,
    rx: mpsc::Receiver<TunnelFrame>,
    /// Data that arrived while waiting for a refusal.
    first: Option<Bytes>,
    /// The edge ended the session.
    ended: bool,
}

impl Opened {
    pub(super) fn new(
        id: u64,
        node: &str,
        tunnel: Arc<Tunnel>,
        rx: mpsc::Receiver<TunnelFrame>,
    ) -> Self {
        Self {
            id,
            node: node.to_owned(),
            tunnel,
            rx,
            first: None,
            ended: false,
        }
    }

    /// The session's connect id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Wait up to `window` for the edge to refuse the session (`CLOSE_CONNECT` with a
    /// `Status`); data or silence means it is being served.
    pub(super) async fn await_refusal(mut self, window: Duration) -> Result<Self, StreamError> {
        let Ok(frame) = tokio::time::timeout(window, self.rx.recv()).await else {
            return Ok(self);
        };
        let Some(frame) = frame else {
            return Err(StreamError::TunnelClosed(self.node.clone()));
        };
        match frame.message_type {
            TunnelMessageType::CloseConnect => {
                self.ended = true;
                Err(refusal(&frame.data))
            }
            TunnelMessageType::RemoveConnect => {
                self.ended = true;
                Ok(self)
            }
            TunnelMessageType::Data => {
                self.first = Some(Bytes::from(frame.data));
                Ok(self)
            }
            _ => Ok(self),
        }
    }

    /// The next `DATA` payload; `None` once the edge removed the session or the tunnel went.
    pub async fn recv(&mut self) -> Option<Bytes> {
        if let Some(b) = self.first.take() {
            return Some(b);
        }
        while !self.ended {
            match self.rx.recv().await {
                None => self.ended = true,
                Some(f) => match f.message_type {
                    TunnelMessageType::Data => return Some(Bytes::from(f.data)),
                    TunnelMessageType::RemoveConnect | TunnelMessageType::CloseConnect => {
                        self.ended = true;
                    }
                    _ => {}
                },
            }
        }
        None
    }

    /// Send bytes to the edge's end of the session.
    pub async fn send(&self, data: Vec<u8>) -> Result<(), StreamError> {
        self.sender().send(data).await
    }

    /// A handle that sends to the edge while [`Opened::recv`] reads.
    pub fn sender(&self) -> SessionSender {
        SessionSender {
            id: self.id,
            node: self.node.clone(),
            out: self.tunnel.out.clone(),
        }
    }

    /// The session's data as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Bytes> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move {
            let b = s.recv().await?;
            Some((b, s))
        })
    }
}

/// Sends `DATA` on one session (from [`Opened::sender`]).
#[derive(Debug, Clone)]
pub struct SessionSender {
    id: u64,
    node: String,
    out: mpsc::Sender<TunnelFrame>,
}

impl SessionSender {
    /// Send bytes to the edge's end of the session.
    pub async fn send(&self, data: Vec<u8>) -> Result<(), StreamError> {
        self.out
            .send(TunnelFrame::new(self.id, TunnelMessageType::Data, data))
            .await
            .map_err(|_| StreamError::TunnelClosed(self.node.clone()))
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.tunnel.sessions_mut().remove(&self.id);
        if !self.ended {
            let f = TunnelFrame::new(self.id, TunnelMessageType::RemoveConnect, Vec::new());
            if let Err(mpsc::error::TrySendError::Full(f)) = self.tunnel.out.try_send(f) {
                let out = self.tunnel.out.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = out.send(f).await;
                    });
                }
            }
        }
    }
}

/// The edge's refusal: a `Status` (kubeedge-rs edges), else the text as a 500.
fn refusal(data: &[u8]) -> StreamError {
    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let code = v
        .get("code")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(500);
    let text = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    StreamError::Refused {
        code,
        reason: text("reason").unwrap_or_default(),
        message: text("message").unwrap_or_else(|| String::from_utf8_lossy(data).into_owned()),
    }
}
