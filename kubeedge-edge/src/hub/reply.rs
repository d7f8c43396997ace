//! Request/reply correlation as layers: a reply is the cloud's message whose parent_msg_id is
//! the request's id. [`Replies`] is the table of requests waiting; [`Requester`] sends through
//! an outbound service and waits in it, and [`ResolveLayer`] on the inbound side hands each
//! reply to its request instead of the modules.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use kubeedge_proto::{Message, MessageId};
use tokio::sync::oneshot;
use tower::util::Oneshot;
use tower::ServiceExt as _;

use crate::error::HubError;

/// The requests waiting for a reply. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Replies {
    waiting: Arc<Mutex<HashMap<MessageId, oneshot::Sender<Message>>>>,
}

impl Replies {
    /// Hand a message from the cloud to the request waiting for it: `None` when it was such a
    /// reply, the message back otherwise.
    pub fn resolve(&self, msg: Message) -> Option<Message> {
        if let Some(parent) = msg.parent_id() {
            let waiter = self
                .waiting
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

    /// The inbound layer that resolves replies before they reach the modules.
    pub fn layer(&self) -> ResolveLayer {
        ResolveLayer(self.clone())
    }

    /// Request/reply over `outbound`, each request bounded by `timeout`.
    pub fn requester<S>(&self, outbound: S, timeout: Duration) -> Requester<S> {
        Requester {
            outbound,
            replies: self.clone(),
            timeout,
        }
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Register `id` now (so that a reply cannot be missed), then wait for its reply once
    /// `sent` completes, for at most `timeout`.
    pub(super) fn exchange(
        &self,
        id: MessageId,
        sent: impl Future<Output = Result<(), HubError>>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, HubError>> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let waiting = self.clone();
        async move {
            let result = async {
                sent.await?;
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
            waiting
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            result
        }
    }
}

/// Request/reply as a `tower::Service<Message, Response = Message>` over an outbound service:
/// the reply is the cloud's message whose parent_msg_id is the request's id, within the
/// timeout ([`HubError::Timeout`] otherwise). Readiness is the outbound service's. The inbound
/// side must run [`Replies::layer`] of the same table.
#[derive(Debug, Clone)]
pub struct Requester<S> {
    outbound: S,
    replies: Replies,
    timeout: Duration,
}

impl<S> tower::Service<Message> for Requester<S>
where
    S: tower::Service<Message, Response = ()>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = Message;
    type Error = HubError;
    type Future = Pin<Box<dyn Future<Output = Result<Message, HubError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HubError>> {
        self.outbound
            .poll_ready(cx)
            .map_err(|e| HubError::from_stack(e.into()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let id = msg.id().clone();
        let sent = self.outbound.call(msg);
        let sent = async move { sent.await.map_err(|e| HubError::from_stack(e.into())) };
        Box::pin(self.replies.exchange(id, sent, self.timeout))
    }
}

/// Makes [`Resolve`] services over the inbound handler.
#[derive(Debug, Clone)]
pub struct ResolveLayer(Replies);

impl<S> tower::Layer<S> for ResolveLayer {
    type Service = Resolve<S>;

    fn layer(&self, inner: S) -> Resolve<S> {
        Resolve {
            replies: self.0.clone(),
            inner,
        }
    }
}

/// The inbound side of request/reply: a reply goes to its waiting request at once, even while
/// the modules behind are busy; anything else is passed on. It is always ready; a message for
/// the inner service waits for the inner service in the returned future.
#[derive(Debug, Clone)]
pub struct Resolve<S> {
    replies: Replies,
    inner: S,
}

impl<S> tower::Service<Message> for Resolve<S>
where
    S: tower::Service<Message, Response = ()> + Clone,
{
    type Response = ();
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<(), S::Error>>, Oneshot<S, Message>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        match self.replies.resolve(msg) {
            None => Either::Left(std::future::ready(Ok(()))),
            Some(msg) => Either::Right(self.inner.clone().oneshot(msg)),
        }
    }
}
