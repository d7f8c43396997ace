//! The handles edge modules send to the cloud with. [`Link`] is the bare transport: a
//! `tower::Service<Message>` whose readiness is room in the outbound queue. [`Client`] is the
//! handle modules hold: the layer stack built over a link ([`super::connect`] builds the
//! standard one), with request/reply and the link state. [`channel`] gives a client over a
//! transport of your own instead of the websocket.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use kubeedge_proto::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::PollSender;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt as _;

use super::client::ConnectionState;
use super::reply::{Replies, Requester};
use crate::error::HubError;

/// The bare outbound transport: `poll_ready` reserves room in the link's queue (pending while
/// it is full, [`HubError::Closed`] once the driver is gone) and `call` enqueues into it.
/// Cheap to clone; each clone has its own place in line.
#[derive(Clone, Debug)]
pub struct Link {
    sink: PollSender<Message>,
    state: watch::Receiver<ConnectionState>,
}

impl Link {
    pub(super) fn new(tx: mpsc::Sender<Message>, state: watch::Receiver<ConnectionState>) -> Self {
        Self {
            sink: PollSender::new(tx),
            state,
        }
    }

    /// The link state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }
}

impl tower::Service<Message> for Link {
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

/// The outbound stack a [`Client`] sends through.
pub type Uplink = BoxCloneSyncService<Message, (), HubError>;

/// Messages from the cloud that are not replies to a request. Acks are the consumer's job:
/// persist, then `client.send(msg.ack())`.
pub type Inbound = mpsc::Receiver<Message>;

/// Sends messages to the cloud through a layer stack. Cheap to clone; each clone has its own
/// place in line when used as a [`tower::Service`], whose readiness is the stack's (room in
/// the queue, and the rate limit of the standard stack), so the usual tower layers (timeout,
/// load shedding, concurrency limits) see the link's real capacity.
#[derive(Clone)]
pub struct Client {
    uplink: Uplink,
    replies: Replies,
    state: watch::Receiver<ConnectionState>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &*self.state.borrow())
            .field("waiting", &self.replies.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client sending through `uplink` (a stack over a [`Link`]), matching replies in
    /// `replies` (which the inbound side must resolve, with [`Replies::layer`]), reporting
    /// `state`.
    pub fn new<S>(uplink: S, replies: Replies, state: watch::Receiver<ConnectionState>) -> Self
    where
        S: tower::Service<Message, Response = (), Error = HubError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self {
            uplink: BoxCloneSyncService::new(uplink),
            replies,
            state,
        }
    }

    /// Queue a message for the cloud (waits while the stack is not ready).
    pub async fn send(&self, msg: Message) -> Result<(), HubError> {
        self.uplink.clone().oneshot(msg).await
    }

    /// Send `msg` and wait for the reply whose parent_msg_id is its id.
    pub async fn request(&self, msg: Message, timeout: Duration) -> Result<Message, HubError> {
        let id = msg.id().clone();
        self.replies.exchange(id, self.send(msg), timeout).await
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

    /// Hand a message that arrived from the cloud to this client: a reply to one of its
    /// pending requests goes to that request (`None` is returned); anything else is returned
    /// for the inbound consumer. Transports of your own ([`channel`]) call it on every inbound
    /// message; [`super::connect`]'s inbound stack does it itself.
    pub fn resolve(&self, msg: Message) -> Option<Message> {
        self.replies.resolve(msg)
    }

    /// The request/reply service over this client, each request bounded by `timeout`.
    pub fn requester(&self, timeout: Duration) -> Requester<Client> {
        self.replies.requester(self.clone(), timeout)
    }
}

/// A client whose messages go to the returned receiver instead of a websocket, holding at
/// most `capacity` of them: the hub transport of your own (a test, another link, a
/// simulator). It reports itself connected; feed replies back with [`Client::resolve`].
pub fn channel(capacity: usize) -> (Client, mpsc::Receiver<Message>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    // The state never changes: a receiver keeps the last value after its sender is gone.
    let (_, state) = watch::channel(ConnectionState::Connected(1));
    let link = Link::new(tx, state.clone());
    (Client::new(link, Replies::default(), state), rx)
}

impl tower::Service<Message> for Client {
    type Response = ();
    type Error = HubError;
    type Future = <Uplink as tower::Service<Message>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HubError>> {
        self.uplink.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        self.uplink.call(msg)
    }
}

/// A service that puts each message on a channel; it is ready while the channel has room, and
/// fails once the receiver is gone.
#[derive(Clone, Debug)]
pub(crate) struct ChannelSink(PollSender<Message>);

impl ChannelSink {
    pub(crate) fn new(tx: mpsc::Sender<Message>) -> Self {
        Self(PollSender::new(tx))
    }
}

impl tower::Service<Message> for ChannelSink {
    type Response = ();
    type Error = tower::BoxError;
    type Future = std::future::Ready<Result<(), tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.0.poll_reserve(cx).map_err(|_| "receiver gone".into())
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        std::future::ready(self.0.send_item(msg).map_err(|_| "receiver gone".into()))
    }
}
