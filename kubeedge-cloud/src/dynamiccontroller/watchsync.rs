//! `watchapp/sync`: an edge's list of its live watch Applications (upstream v1.15 and later
//! send it on connect and whenever a watch ends).
//!
//! The request is a message from `metaserver`, group `dynamiccontroller`, resource
//! `watchapp/sync`, operation `null`, whose content is a map from Application ID to the watch
//! Application (upstream `edge/pkg/metamanager/metaserver/agent/agent.go`,
//! `syncWatchApplications`). The cloud stops every watch of that node the map does not hold,
//! registers those it holds and the cloud does not, and answers with a map of the ones it
//! could not register, each `Rejected` with its error (`{}` when all went well): source
//! `dynamiccontroller`, group `resource`, the request's resource, operation
//! `applicationResponse`, parent the request (upstream
//! `cloud/pkg/dynamiccontroller/application/application.go`, `ProcessWatchSync`).

use std::collections::BTreeMap;

use kubeedge_proto::{Application, Content, Group, Message, Operation, Route, Source};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::DynamicController;

pub use kubeedge_proto::WATCH_APP_SYNC;

/// True for a watch sync message (upstream matches the resource's suffix).
pub(crate) fn is_watch_sync(msg: &Message) -> bool {
    msg.route.resource.ends_with(WATCH_APP_SYNC)
}

impl DynamicController {
    /// Bring `node`'s watches in line with the list in `msg`; the reply to send back.
    pub(crate) fn watch_sync(
        &self,
        node: &str,
        msg: &Message,
        cancel: &CancellationToken,
    ) -> Option<Message> {
        let listed: BTreeMap<String, Application> = match msg.content.decode() {
            Ok(m) => m,
            Err(e) => {
                warn!(%node, error = %e, "invalid watch application list");
                return Some(msg.error_reply(
                    &format!("invalid watch application list: {e}"),
                    kubeedge_proto::Compat::Latest,
                ));
            }
        };
        let stopped = self.stop_watches_except(node, |id| listed.contains_key(id));
        let known = self.watch_ids(node);
        let mut failed = BTreeMap::new();
        for (id, app) in listed {
            if known.contains(&id) {
                continue;
            }
            let mut app = app;
            app.id.clone_from(&id);
            if let Err(err) = self.register_watch(node, &app, cancel) {
                failed.insert(id, app.rejected(*err));
            }
        }
        info!(%node, stopped, failed = failed.len(), "watch applications synced");
        let content = match Content::json(&failed) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "watch sync response not encoded");
                return None;
            }
        };
        Some(
            Message::new(
                Route::new(
                    Source::DynamicController,
                    Group::Resource,
                    Operation::ApplicationResponse,
                    msg.route.resource.clone(),
                ),
                content,
            )
            .with_parent(msg.id().clone()),
        )
    }
}
