//! MetaManager: persists what the cloud pushes (PROTOCOL.md §4.4), acks **after** the commit,
//! then hands the object on (pods, configmaps and secrets to edged; devices to the twin).

mod store;

use std::sync::Arc;
use std::time::Duration;

use kubeedge_proto::{Compat, Message, Operation, ResourcePath, ResourceType, Source};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

pub use store::{
    Applied, MetaChange, MetaDb, MetaOp, MetaRecord, MetaStore, OutboxEntry, SqliteStore,
    StoreError,
};

use crate::hub;

/// Largest object accepted from the cloud (etcd's limit is 1.5 MiB).
pub const MAX_OBJECT: usize = 4 * 1024 * 1024;

/// Why a push was refused (sent back to the cloud as an `error` message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The resource string names no resource type.
    #[error("resource {0:?} has no resource type")]
    UnknownResource(String),
    /// The content is not what the operation needs.
    #[error("content of {resource} must be a json object")]
    WrongContent {
        /// The resource.
        resource: String,
    },
    /// The object is too large.
    #[error("object {resource} is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The resource.
        resource: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An operation meta does not handle.
    #[error("operation {0:?} is not handled by meta")]
    UnsupportedOperation(String),
    /// The store failed.
    #[error("meta store failed")]
    Store(#[from] StoreError),
    /// The hub is gone.
    #[error("hub closed")]
    Hub(#[from] crate::error::HubError),
}

#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Deserialize, Default)]
struct HeadMeta {
    #[serde(default)]
    uid: String,
}

/// Where MetaManager hands objects after persisting them.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Pods, configmaps, secrets and the rest: edged.
    pub edged: Option<mpsc::Sender<Message>>,
    /// Devices and device models: the device twin.
    pub twin: Option<mpsc::Sender<Message>>,
}

/// The meta manager.
#[derive(Debug, Clone)]
pub struct MetaManager {
    db: MetaDb,
    hub: hub::Client,
    out: Outputs,
    remote_timeout: Duration,
    flush: Arc<Notify>,
}

/// Types a query may fetch from the cloud (upstream's remote-capable list).
fn remote_capable(t: &ResourceType) -> bool {
    matches!(
        t,
        ResourceType::ConfigMap
            | ResourceType::Secret
            | ResourceType::PersistentVolume
            | ResourceType::PersistentVolumeClaim
            | ResourceType::VolumeAttachment
            | ResourceType::Node
            | ResourceType::ServiceAccountToken
            | ResourceType::Lease
    )
}

/// Types always fetched from the cloud when it is reachable.
fn always_remote(t: &ResourceType) -> bool {
    matches!(
        t,
        ResourceType::Node | ResourceType::VolumeAttachment | ResourceType::Lease
    )
}

impl MetaManager {
    /// A meta manager writing to `db`, acking through `hub`.
    pub fn new(db: MetaDb, hub: hub::Client, out: Outputs) -> Self {
        Self {
            db,
            hub,
            out,
            remote_timeout: Duration::from_secs(60),
            flush: Arc::new(Notify::new()),
        }
    }

    /// Set `remoteQueryTimeout`.
    #[must_use]
    pub fn with_remote_timeout(mut self, timeout: Duration) -> Self {
        self.remote_timeout = timeout;
        self
    }

    /// The hub session now up, if any.
    fn session(&self) -> Option<u64> {
        match *self.hub.state().borrow() {
            hub::ConnectionState::Connected(n) => Some(n),
            hub::ConnectionState::Disconnected => None,
        }
    }

    fn online(&self) -> bool {
        matches!(
            *self.hub.state().borrow(),
            hub::ConnectionState::Connected(_)
        )
    }

    /// A module's query (upstream edged → metamanager): from the cloud when it is reachable
    /// and the type is remote-capable (and missing locally, or always-remote), within
    /// `remoteQueryTimeout`; the answer is stored and acked. Otherwise, or when the cloud
    /// does not answer, from the store.
    pub async fn query(&self, resource: &str) -> Result<Option<MetaRecord>, MetaError> {
        let path = ResourcePath::parse(resource).to_edge_view();
        let Some(rtype) = path.resource_type().cloned() else {
            return Err(MetaError::UnknownResource(resource.to_owned()));
        };
        let key = path.to_string();
        let local = self.db.get(&key).await?;
        let go_remote =
            self.online() && remote_capable(&rtype) && (local.is_none() || always_remote(&rtype));
        if !go_remote {
            return Ok(local);
        }
        let req = Message::new(
            kubeedge_proto::Route::new(
                Source::Edged,
                kubeedge_proto::Group::Meta,
                Operation::Query,
                key.clone(),
            ),
            kubeedge_proto::Content::null(),
        );
        match self.hub.request(req, self.remote_timeout).await {
            Ok(reply) if reply.content.raw_json().starts_with('{') => {
                let record = MetaRecord {
                    key,
                    resource_type: rtype.to_string(),
                    value: String::from_utf8_lossy(&reply.content.bytes()).into_owned(),
                };
                self.db.apply(vec![MetaOp::Upsert(record.clone())]).await?;
                // Upstream acks every query response it consumed.
                self.hub.send(reply.ack()).await?;
                Ok(Some(record))
            }
            Ok(_) | Err(_) => {
                debug!(resource = %key, "remote query failed; answering from the store");
                Ok(local)
            }
        }
    }

    /// Report status upstream through the durable outbox: one entry per resource (the latest
    /// wins), delivered in order once the cloud answers, kept across restarts and link loss.
    pub async fn report(&self, msg: Message) -> Result<(), MetaError> {
        let key = msg.route.resource.clone();
        let json = String::from_utf8_lossy(&msg.to_json()).into_owned();
        self.db
            .apply(vec![MetaOp::OutboxPut { key, message: json }])
            .await?;
        self.flush.notify_one();
        Ok(())
    }

    /// Deliver the upstream outbox whenever the link is up, until `cancel`.
    pub async fn run_outbox(self, cancel: tokio_util::sync::CancellationToken) {
        let mut state = self.hub.state();
        loop {
            if self.online() {
                match self.flush_once().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "upstream outbox flush failed"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.flush.notified() => {}
                r = state.changed() => if r.is_err() { return },
            }
        }
    }

    /// Send the oldest entries; true when all of them were answered (more may follow).
    async fn flush_once(&self) -> Result<bool, MetaError> {
        let entries = self.db.outbox(64).await?;
        if entries.is_empty() {
            return Ok(false);
        }
        for e in entries {
            let Ok(mut msg) = Message::from_json(e.message.as_bytes()) else {
                self.db
                    .apply(vec![MetaOp::OutboxDone {
                        key: e.key,
                        seq: e.seq,
                    }])
                    .await?;
                continue;
            };
            // A fresh id per attempt, as upstream's sync requests do.
            msg.header.id = kubeedge_proto::MessageId::random();
            let resource = msg.route.resource.clone();
            let session = self.session();
            match self.hub.request(msg, self.remote_timeout).await {
                Ok(reply) => {
                    // A refusal is final (resending the same report gets the same answer),
                    // but never silent.
                    if let Some((reason, message)) = refusal(&reply) {
                        warn!(resource, reason, message, report = %e.message, "report refused by the cloud");
                    }
                    self.db
                        .apply(vec![MetaOp::OutboxDone {
                            key: e.key,
                            seq: e.seq,
                        }])
                        .await?;
                }
                // The same session was up the whole time: the cloud has the report and does
                // not answer this kind (upstream's cloud answers no `event`, for one). Waiting
                // for an answer that never comes would hold back every report behind it.
                Err(crate::HubError::Timeout { .. })
                    if session.is_some() && self.session() == session =>
                {
                    debug!(resource, "report delivered but not answered; going on");
                    self.db
                        .apply(vec![MetaOp::OutboxDone {
                            key: e.key,
                            seq: e.seq,
                        }])
                        .await?;
                }
                Err(err) => {
                    debug!(error = %err, "outbox entry not answered; retrying later");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The store.
    pub fn db(&self) -> &MetaDb {
        &self.db
    }

    /// Handle one push from the cloud (groups `resource` and `func`). Errors are also answered
    /// to the cloud as `error` messages, and the store is left untouched.
    pub async fn handle(&self, msg: Message) -> Result<(), MetaError> {
        match self.persist(&msg).await {
            Ok(ack) => {
                if ack {
                    self.hub.send(msg.ack()).await?;
                }
                self.forward(msg).await;
                Ok(())
            }
            Err(e) => {
                warn!(msg_id = %msg.id(), resource = %msg.route.resource, error = %e, "push refused");
                let reply = msg.error_reply(&e.to_string(), Compat::Latest);
                self.hub.send(reply).await?;
                Err(e)
            }
        }
    }

    /// Persist; returns whether upstream's edge would ack this message.
    async fn persist(&self, msg: &Message) -> Result<bool, MetaError> {
        let resource = msg.route.resource.clone();
        let path = ResourcePath::parse(&resource).to_edge_view();
        let Some(rtype) = path.resource_type().cloned() else {
            return Err(MetaError::UnknownResource(resource));
        };
        let op = msg
            .route
            .operation
            .clone()
            .unwrap_or(Operation::Unknown(String::new()));
        let value = msg.content.bytes();
        if value.len() > MAX_OBJECT {
            return Err(MetaError::TooLarge {
                resource,
                size: value.len(),
                max: MAX_OBJECT,
            });
        }
        let key = path.to_string();
        let record = || -> Result<MetaRecord, MetaError> {
            if !msg.content.raw_json().starts_with('{') {
                return Err(MetaError::WrongContent {
                    resource: resource.clone(),
                });
            }
            Ok(MetaRecord {
                key: key.clone(),
                resource_type: rtype.to_string(),
                value: String::from_utf8_lossy(&value).into_owned(),
            })
        };
        let meta_op = match &op {
            Operation::Insert => MetaOp::Insert(record()?),
            Operation::Update => MetaOp::Upsert(record()?),
            Operation::Response if !msg.is_reply() => MetaOp::Upsert(record()?),
            Operation::Delete if rtype == ResourceType::Pod => {
                let uid = msg
                    .content
                    .decode::<Head>()
                    .unwrap_or_default()
                    .metadata
                    .uid;
                MetaOp::DeletePod { key, uid }
            }
            Operation::Delete => MetaOp::Delete { key },
            other => return Err(MetaError::UnsupportedOperation(other.to_string())),
        };
        self.db.apply(vec![meta_op]).await?;
        debug!(msg_id = %msg.id(), resource = %msg.route.resource, op = %op, "persisted");
        let acked_source = matches!(
            msg.route.source,
            Some(Source::EdgeController | Source::DynamicController | Source::DeviceController)
        );
        Ok(acked_source
            && matches!(
                op,
                Operation::Insert | Operation::Update | Operation::Delete
            ))
    }

    async fn forward(&self, msg: Message) {
        let to_twin = msg.route.source == Some(Source::DeviceController);
        let out = if to_twin {
            &self.out.twin
        } else {
            &self.out.edged
        };
        if let Some(tx) = out {
            if tx.send(msg).await.is_err() {
                debug!("consumer gone; object kept in the store");
            }
        }
    }
}

/// The error of an edge controller reply, as `(reason, message)`: the `Err` of an
/// `ObjectResp{Object, Err}` (a Go `StatusError`, PROTOCOL.md §4.2), or the text of an
/// `error` operation. None on success.
pub(crate) fn refusal(reply: &Message) -> Option<(String, String)> {
    if reply.route.operation == Some(Operation::Error) {
        let text = reply
            .content
            .decode::<String>()
            .unwrap_or_else(|_| String::from_utf8_lossy(&reply.content.bytes()).into_owned());
        return Some(("Error".into(), text));
    }
    let v: serde_json::Value = reply.content.decode().ok()?;
    let err = v.get("Err")?;
    if err.is_null() {
        return None;
    }
    let status = err.get("ErrStatus").unwrap_or(err);
    let field = |k: &str| {
        status
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (reason, message) = (field("reason"), field("message"));
    if reason.is_empty() && message.is_empty() {
        return None;
    }
    Some((reason, message))
}
/// The meta cache as a layer over a hub transport ([`hub::Client`]: the websocket of
/// [`hub::connect`], or a transport of your own through [`hub::channel`]): the
/// [`MetaManager`] it makes answers queries from the store (or the cloud, through the
/// transport), persists pushes and acks them after commit.
#[derive(Debug, Clone)]
pub struct MetaLayer {
    db: MetaDb,
    out: Outputs,
    remote_timeout: Duration,
}

impl MetaLayer {
    /// A cache on `db` handing stored objects to `out`.
    pub fn new(db: MetaDb, out: Outputs) -> Self {
        Self {
            db,
            out,
            remote_timeout: Duration::from_secs(60),
        }
    }

    /// Set `remoteQueryTimeout`.
    #[must_use]
    pub fn with_remote_timeout(mut self, timeout: Duration) -> Self {
        self.remote_timeout = timeout;
        self
    }
}

impl tower::Layer<hub::Client> for MetaLayer {
    type Service = MetaManager;

    fn layer(&self, transport: hub::Client) -> MetaManager {
        MetaManager::new(self.db.clone(), transport, self.out.clone())
            .with_remote_timeout(self.remote_timeout)
    }
}

/// The meta cache as the handler of the link's inbound pushes (groups `resource` and
/// `func`): each call is [`MetaManager::handle`], which commits the push to the store, then
/// acks it through the hub transport the cache was built over and hands it to the module
/// behind (edged or the twin). It is always ready: the store's writer queue and the
/// transport's room make `call` wait instead, so a layer that needs to shed load goes in
/// front of it.
impl tower::Service<Message> for MetaManager {
    type Response = ();
    type Error = MetaError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), MetaError>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), MetaError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let meta = self.clone();
        Box::pin(async move { meta.handle(msg).await })
    }
}
