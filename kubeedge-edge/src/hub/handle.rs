//! The handle edge modules send to the cloud with: [`Client`], a `tower::Service<Message>`
//! whose readiness is room in the link's outbound queue, and [`Requester`], the request/reply
//! service over it (a reply is the inbound message whose parent_msg_id is the request's id).
//! [`channel`] gives a client over a transport of your own instead of the websocket.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use kubeedge_proto::{Message, MessageId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::PollSender;

use super::client::ConnectionState;
use crate::error::HubError;

pub(super) type Pending = Arc<Mutex<HashMap<MessageId, oneshot::Sender<Message>>>>;

/// Hand an inbound message to the request waiting for it: `None` when it was a reply to a
/// pending request, the message back otherwise.
pub(super) fn resolve(pending: &Pending, msg: Message) -> Option<Message> {
    if let Some(parent) = msg.parent_id() {
        let waiter = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(parent);
        if let Some(w) = waiter {
            let _ = w.send(msg);
            return None;
        }
    }
    Some(msg)
}

/// Sends messages to the cloud. Cheap to clone; each clone has its own place in the queue
/// when used as a [`tower::Service`].
///
/// As a service, `poll_ready` reserves room in the outbound queue (it is pending while the
/// queue is full, and fails with [`HubError::Closed`] once the link's driver is gone), and
/// `call` enqueues into that room, so the usual tower layers (timeout, load shedding,
/// concurrency limits) see the link's real capacity.
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Message>,
    sink: PollSender<Message>,
    pending: Pending,
    state: watch::Receiver<ConnectionState>,
}

/// Messages from the cloud that are not replies to a request. Acks are the consumer's job:
/// persist, then `client.send(msg.ack())`.
pub type Inbound = mpsc::Receiver<Message>;

impl Client {
    pub(super) fn new(
        tx: mpsc::Sender<Message>,
        pending: Pending,
        state: watch::Receiver<ConnectionState>,
    ) -> Self {
        Self {
            sink: PollSender::new(tx.clone()),
            tx,
            pending,
            state,
        }
    }

    /// Queue a message for the cloud (waits while the outbound buffer is full).
    pub async fn send(&self, msg: Message) -> Result<(), HubError> {
        self.tx.send(msg).await.map_err(|_| HubError::Closed)
    }

    /// Send `msg` and wait for the reply whose parent_msg_id is its id.
    pub async fn request(&self, msg: Message, timeout: Duration) -> Result<Message, HubError> {
        let id = msg.id().clone();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let result = async {
            self.send(msg).await?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(HubError::Closed),
                Err(_) => Err(HubError::Timeout {
                    msg_id: id.to_string(),
                    timeout,
                }),
            }
        }
        .await;
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        result
    }

    /// The link state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Wait until connected (returns the session number).
    pub async fn connected(&self) -> Result<u64, HubError> {
        let mut rx = self.state.clone();
        loop {
            if let ConnectionState::Connected(n) = *rx.borrow_and_update() {
                return Ok(n);
            }
            rx.changed().await.map_err(|_| HubError::Closed)?;
        }
    }
}

impl Client {
    /// Hand a message that arrived from the cloud to this client: a reply to one of its
    /// pending requests goes to that request (`None` is returned); anything else is returned
    /// for the inbound consumer. Transports of your own ([`channel`]) call it on every inbound
    /// message; the websocket driver does it itself.
    pub fn resolve(&self, msg: Message) -> Option<Message> {
        resolve(&self.pending, msg)
    }

    /// The request/reply service over this client, each request bounded by `timeout`.
    pub fn requester(&self, timeout: Duration) -> Requester {
        Requester {
            client: self.clone(),
            timeout,
        }
    }
}

/// A client whose messages go to the returned receiver instead of a websocket, holding at
/// most `capacity` of them: the hub transport of your own (a test, another link, a
/// simulator). It reports itself connected; feed replies back with [`Client::resolve`].
pub fn channel(capacity: usize) -> (Client, mpsc::Receiver<Message>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    // The state never changes: a receiver keeps the last value after its sender is gone.
    let (_, state) = watch::channel(ConnectionState::Connected(1));
    (Client::new(tx, Pending::default(), state), rx)
}

impl tower::Service<Message> for Client {
    type Response = ();
    type Error = HubError;
    type Future = std::future::Ready<Result<(), HubError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HubError>> {
        self.sink.poll_reserve(cx).map_err(|_| HubError::Closed)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        std::future::ready(self.sink.send_item(msg).map_err(|_| HubError::Closed))
    }
}

/// Request/reply over a [`Client`] as a `tower::Service<Message, Response = Message>`: the
/// reply is the cloud's message whose parent_msg_id is the request's id, within the timeout
/// ([`HubError::Timeout`] otherwise). Readiness is the client's.
#[derive(Clone, Debug)]
pub struct Requester {
    client: Client,
    timeout: Duration,
}

impl tower::Service<Message> for Requester {
    type Response = Message;
    type Error = HubError;
    type Future = Pin<Box<dyn Future<Output = Result<Message, HubError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HubError>> {
        tower::Service::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let id = msg.id().clone();
        let (tx, rx) = oneshot::channel();
        let pending = self.client.pending.clone();
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let sent = tower::Service::call(&mut self.client, msg);
        let timeout = self.timeout;
        Box::pin(async move {
            let result = match sent.await {
                Err(e) => Err(e),
                Ok(()) => match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(_)) => Err(HubError::Closed),
                    Err(_) => Err(HubError::Timeout {
                        msg_id: id.to_string(),
                        timeout,
                    }),
                },
            };
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            result
        })
    }
}
