//! The edge's half of ack and resend, as two layers over one table. The cloud resends a
//! message (same msg_id) when our ack was lost. [`Acks::dedup_layer`] on the inbound side
//! delivers each message once and acks a resend again if the modules acked the first copy;
//! [`Acks::note_layer`] on the outbound side records those acks as the modules send them.
//!
//! A message is also a copy when it carries the same object version as one delivered before:
//! same object UID and resourceVersion (and both deletes, or neither) under another msg_id.
//! That is what a second cloudcore sends when the edge moves to it before the ack it gave the
//! first one reached the shared ledger.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use kubeedge_proto::{Message, MessageId, Operation};
use tower::{BoxError, ServiceExt as _};
use tracing::debug;

/// Recently delivered message ids and whether each was acked. The cloud keeps at most a
/// window of messages in flight, so a few thousand ids are plenty.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(MessageId, Option<u64>)>,
    acked: HashMap<MessageId, bool>,
    /// Object versions delivered: the version's key to the msg_id it came with.
    versions: HashMap<u64, MessageId>,
}

/// The object version `msg` carries, as a key: a 64-bit hash of its object's UID and
/// resourceVersion, and whether it deletes (an insert and an update of one version are the
/// same object). Replies and messages without a version or an object UID have none. Two
/// versions within the window share a hash with a chance of about 1 in 10^13.
fn version_key(msg: &Message) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Head {
        metadata: Meta,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        uid: String,
    }
    let rv = &msg.header.resource_version;
    if rv.is_empty() || msg.parent_id().is_some() || msg.route.is_operation(&Operation::Response) {
        return None;
    }
    let uid = msg.content.decode::<Head>().ok()?.metadata.uid;
    if uid.is_empty() {
        return None;
    }
    let mut h = std::hash::DefaultHasher::new();
    (msg.route.is_operation(&Operation::Delete), uid, rv).hash(&mut h);
    Some(h.finish())
}

impl Seen {
    const CAP: usize = 2048;

    /// Record a delivery: `None` for a new message, else whether the first copy was acked.
    fn deliver(&mut self, id: &MessageId, version: Option<u64>) -> Option<bool> {
        if let Some(acked) = self.acked.get(id) {
            return Some(*acked);
        }
        if let Some(first) = version.as_ref().and_then(|v| self.versions.get(v)) {
            return Some(self.acked.get(first).copied().unwrap_or(false));
        }
        self.acked.insert(id.clone(), false);
        if let Some(v) = version {
            self.versions.insert(v, id.clone());
        }
        self.order.push_back((id.clone(), version));
        if self.order.len() > Self::CAP {
            if let Some((old, v)) = self.order.pop_front() {
                self.acked.remove(&old);
                if let Some(v) = v {
                    self.versions.remove(&v);
                }
            }
        }
        None
    }
}

/// The table both layers share. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Acks(Arc<Mutex<Seen>>);

impl Acks {
    /// The outbound layer that records acks (responses to a delivered message).
    pub fn note_layer(&self) -> NoteAcksLayer {
        NoteAcksLayer(self.clone())
    }

    /// The inbound layer that delivers each message once; a resend of an acked message is
    /// acked again through `link` (put the link itself here, under any rate limit).
    pub fn dedup_layer<L>(&self, link: L) -> DedupLayer<L> {
        DedupLayer {
            acks: self.clone(),
            link,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes [`NoteAcks`] services.
#[derive(Debug, Clone)]
pub struct NoteAcksLayer(Acks);

impl<S> tower::Layer<S> for NoteAcksLayer {
    type Service = NoteAcks<S>;

    fn layer(&self, inner: S) -> NoteAcks<S> {
        NoteAcks {
            acks: self.0.clone(),
            inner,
        }
    }
}

/// Passes outbound messages on, recording each ack of a delivered message.
#[derive(Debug, Clone)]
pub struct NoteAcks<S> {
    acks: Acks,
    inner: S,
}

impl<S: tower::Service<Message>> tower::Service<Message> for NoteAcks<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> S::Future {
        if msg.route.is_operation(&Operation::Response) {
            if let Some(parent) = msg.parent_id() {
                if let Some(acked) = self.acks.lock().acked.get_mut(parent) {
                    *acked = true;
                }
            }
        }
        self.inner.call(msg)
    }
}

/// Makes [`Dedup`] services.
#[derive(Debug, Clone)]
pub struct DedupLayer<L> {
    acks: Acks,
    link: L,
}

impl<S, L: Clone> tower::Layer<S> for DedupLayer<L> {
    type Service = Dedup<S, L>;

    fn layer(&self, inner: S) -> Dedup<S, L> {
        Dedup {
            acks: self.acks.clone(),
            link: self.link.clone(),
            inner,
        }
    }
}

/// Delivers each inbound message once. A resend of a message the modules acked is acked
/// again; a resend of one not acked (yet) is dropped, as the modules are still on it.
/// Messages without an id are always delivered. Always ready; the returned future waits for
/// the inner service (or the link).
#[derive(Debug, Clone)]
pub struct Dedup<S, L> {
    acks: Acks,
    link: L,
    inner: S,
}

impl<S, L> tower::Service<Message> for Dedup<S, L>
where
    S: tower::Service<Message, Response = ()> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    L: tower::Service<Message, Response = ()> + Clone + Send + 'static,
    L::Error: Into<BoxError>,
    L::Future: Send,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let seen = match msg.header.id.is_empty() {
            true => None,
            false => self.acks.lock().deliver(&msg.header.id, version_key(&msg)),
        };
        match seen {
            None => {
                let inner = self.inner.clone();
                Box::pin(async move { inner.oneshot(msg).await.map_err(Into::into) })
            }
            Some(acked) => {
                debug!(msg_id = %msg.id(), acked, "duplicate from cloud");
                let link = self.link.clone();
                Box::pin(async move {
                    if acked {
                        link.oneshot(msg.ack()).await.map_err(Into::into)?;
                    }
                    Ok(())
                })
            }
        }
    }
}
