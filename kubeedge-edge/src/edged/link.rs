//! Edged's way to the cloud and to the store: through MetaManager once the hub is set up,
//! straight to the store before that (an edge that starts offline still runs its pods, and
//! what it reports waits in the durable outbox).

use std::time::Duration;

use kubeedge_proto::{Message, ResourcePath};
use tokio::sync::watch;

use crate::error::HubError;
use crate::hub;
use crate::meta::{MetaDb, MetaManager, MetaOp, StoreError};

/// The cloud side, available once the hub client exists.
#[derive(Debug, Clone)]
pub struct Cloud {
    /// MetaManager (queries with fallback, durable reports).
    pub meta: MetaManager,
    /// The hub (request/reply for node and lease).
    pub hub: hub::Client,
}

/// Store and cloud access for edged.
#[derive(Debug, Clone)]
pub struct Link {
    db: MetaDb,
    cloud: watch::Receiver<Option<Cloud>>,
}

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The store failed.
    #[error("meta store")]
    Store(#[from] StoreError),
    /// MetaManager refused.
    #[error("meta manager")]
    Meta(#[from] crate::meta::MetaError),
    /// The hub failed or is not set up yet.
    #[error("hub")]
    Hub(#[from] HubError),
    /// The cloud is not reachable.
    #[error("cloud not connected")]
    Offline,
}

impl Link {
    /// A link over `db`; `cloud` becomes `Some` when the hub client is up.
    pub fn new(db: MetaDb, cloud: watch::Receiver<Option<Cloud>>) -> Self {
        Self { db, cloud }
    }

    /// The store.
    pub fn db(&self) -> &MetaDb {
        &self.db
    }

    fn cloud(&self) -> Option<Cloud> {
        self.cloud.borrow().clone()
    }

    /// Whether the websocket is up.
    pub fn online(&self) -> bool {
        self.cloud()
            .is_some_and(|c| matches!(*c.hub.state().borrow(), hub::ConnectionState::Connected(_)))
    }

    /// Wait until the link is up, returning the cloud handles.
    pub async fn connected(&self) -> Cloud {
        let mut rx = self.cloud.clone();
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(c) = current {
                if c.hub.connected().await.is_ok() {
                    return c;
                }
            }
            if rx.changed().await.is_err() {
                // Never set up: wait forever (the caller selects on cancellation).
                std::future::pending::<()>().await;
            }
        }
    }

    /// An object by edge-view resource (`ns/configmap/name`): from the cloud when MetaManager
    /// says so, else from the store. Returns the JSON text.
    pub async fn query(&self, resource: &str) -> Result<Option<String>, LinkError> {
        if let Some(c) = self.cloud() {
            return Ok(c.meta.query(resource).await?.map(|r| r.value));
        }
        let key = ResourcePath::parse(resource).to_edge_view().to_string();
        Ok(self.db.get(&key).await?.map(|r| r.value))
    }

    /// A report through the durable, coalesced outbox.
    pub async fn report(&self, msg: Message) -> Result<(), LinkError> {
        if let Some(c) = self.cloud() {
            return Ok(c.meta.report(msg).await?);
        }
        let key = msg.route.resource.clone();
        let json = String::from_utf8_lossy(&msg.to_json()).into_owned();
        self.db
            .apply(vec![MetaOp::OutboxPut { key, message: json }])
            .await?;
        Ok(())
    }

    /// A request to the cloud, now (node and lease updates: stale ones are not worth keeping).
    pub async fn request(&self, msg: Message, timeout: Duration) -> Result<Message, LinkError> {
        if !self.online() {
            return Err(LinkError::Offline);
        }
        let c = self.cloud().ok_or(LinkError::Offline)?;
        Ok(c.hub.request(msg, timeout).await?)
    }
}

/// A message from edged to the meta group, as upstream's edged sends them (§4.2).
pub(crate) use kubeedge_proto::report::edged as edged_message;
