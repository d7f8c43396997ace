//! Routes messages from the cloud to the edge modules as upstream's edgehub does
//! (PROTOCOL.md §1.6): `resource`/`func` to meta, `twin` to the device twin, `user` to the
//! event bus or service bus by source. Replies to requests never get here: the hub client
//! hands them to the waiting requester. Anything else gets an error reply.

use kubeedge_proto::{Compat, Group, Message, Source};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt as _};
use tracing::{debug, warn};

use crate::hub;
use crate::meta::MetaManager;

/// An edge module as the router sees it: a service taking the messages routed to it. Make
/// one from any `tower::Service<Message>` with [`handler`], or from a module's inbound
/// channel with [`channel_handler`].
pub type Handler = BoxCloneSyncService<Message, (), BoxError>;

/// A [`Handler`] from a service of your own (the twin's `TwinService`, a layer stack, a
/// `tower::service_fn`).
pub fn handler<S>(service: S) -> Handler
where
    S: tower::Service<Message, Response = ()> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

/// A [`Handler`] that puts each message on a module's inbound channel; it is ready while the
/// channel has room.
pub fn channel_handler(tx: mpsc::Sender<Message>) -> Handler {
    handler(hub::ChannelSink::new(tx))
}

/// Where routed messages go; `None` = module disabled (messages get an error reply).
#[derive(Clone, Default)]
pub struct Routes {
    /// Group `resource` and `func`.
    pub meta: Option<MetaManager>,
    /// Group `twin`.
    pub twin: Option<Handler>,
    /// Group `user` from `router_eventbus`.
    pub eventbus: Option<Handler>,
    /// Group `user` from `router_servicebus`.
    pub servicebus: Option<Handler>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("meta", &self.meta.is_some())
            .field("twin", &self.twin.is_some())
            .field("eventbus", &self.eventbus.is_some())
            .field("servicebus", &self.servicebus.is_some())
            .finish()
    }
}

/// Route every inbound message until `cancel` or the hub closes.
pub async fn run(
    mut inbound: hub::Inbound,
    client: hub::Client,
    routes: Routes,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = inbound.recv() => match m { Some(m) => m, None => return },
        };
        route(&client, &routes, msg).await;
    }
}

/// Route one message.
pub async fn route(client: &hub::Client, routes: &Routes, msg: Message) {
    let target = match (&msg.route.group, &msg.route.source) {
        (Some(Group::Resource | Group::Func), _) => {
            if let Some(meta) = &routes.meta {
                // Refusals are answered to the cloud inside `handle`.
                let _ = meta.handle(msg).await;
                return;
            }
            None
        }
        (Some(Group::Twin), _) => routes.twin.as_ref(),
        (Some(Group::User), Some(Source::RouterEventBus)) => routes.eventbus.as_ref(),
        (Some(Group::User), Some(Source::RouterServiceBus)) => routes.servicebus.as_ref(),
        _ => None,
    };
    match target {
        Some(module) => {
            if let Err(e) = module.clone().oneshot(msg).await {
                debug!(error = %e, "module refused the message");
            }
        }
        None => {
            warn!(msg_id = %msg.id(), group = msg.route.group_str(), source = msg.route.source_str(), "no module for message");
            let reply = msg.error_reply(
                &format!(
                    "no edge module handles group {:?} from {:?}",
                    msg.route.group_str(),
                    msg.route.source_str()
                ),
                Compat::Latest,
            );
            let _ = client.send(reply).await;
        }
    }
}
