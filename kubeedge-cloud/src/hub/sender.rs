//! Queueing a message for one node: the shared push, and [`NodeSender`], the per-node
//! `tower::Service` whose readiness is room in that node's outbox.

use std::sync::Arc;

use kubeedge_proto::{ack_mode, Compat, Message};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::PollSemaphore;

use super::{NodeState, Pushed};
use crate::error::HubError;

pub(super) fn push_with(
    state: &NodeState,
    msg: Message,
    compat: Compat,
    permit: OwnedSemaphorePermit,
) -> Pushed {
    let mode = ack_mode(&msg, compat);
    let pushed = state.outbox().push(msg, mode);
    match pushed {
        Pushed::Queued => {
            // The permit now belongs to the entry; the session returns it when the entry goes.
            permit.forget();
            state.wake.notify_one();
        }
        Pushed::Replaced => state.wake.notify_one(),
        Pushed::Stale | Pushed::Full => {}
    }
    pushed
}

/// Sends to one node as a `tower::Service<Message>`; see
/// [`Downstream::to_node`](super::Downstream::to_node).
pub struct NodeSender {
    pub(super) state: Arc<NodeState>,
    pub(super) permits: PollSemaphore,
    pub(super) permit: Option<OwnedSemaphorePermit>,
    pub(super) compat: Compat,
}

impl std::fmt::Debug for NodeSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSender")
            .field("reserved", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl tower::Service<Message> for NodeSender {
    type Response = Pushed;
    type Error = HubError;
    type Future = std::future::Ready<Result<Pushed, HubError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), HubError>> {
        if self.permit.is_none() {
            match self.permits.poll_acquire(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(None) => {
                    return std::task::Poll::Ready(Err(HubError::Closed))
                }
                std::task::Poll::Ready(Some(p)) => self.permit = Some(p),
            }
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let Some(permit) = self.permit.take() else {
            return std::future::ready(Err(HubError::NotReady));
        };
        std::future::ready(Ok(push_with(&self.state, msg, self.compat, permit)))
    }
}
