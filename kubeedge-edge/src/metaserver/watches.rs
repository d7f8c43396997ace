//! Watches MetaServer registers with the cloud, so that what a client watches here reaches the
//! node's store.
//!
//! The cloud pushes a node its own pods and the ConfigMaps and Secrets they use, but Services
//! and Endpoints only to a node that asked: upstream's MetaServer sends a `watch` Application
//! when a client (EdgeMesh, kube-proxy) watches them, the cloud's DynamicController pushes the
//! objects and their changes, and the node keeps them, so the client keeps working offline
//! (upstream `edge/pkg/metamanager/metaserver/agent/agent.go`). Here a watch of `services` or
//! `endpoints` registers a watch Application of that resource (all namespaces or one), sent at
//! once; on every (re)connect the whole list goes as `watchapp/sync`, which the cloud (v1.15
//! and later, and ours) uses to register what it does not hold. Registrations last as long as
//! edgecore runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kubeedge_proto::{
    Application, ApplicationKey, ApplicationStatus, ApplicationVerb, Content, Group, Message,
    Operation, Route, Source, WATCH_APP_SYNC,
};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::hub::{self, ConnectionState};

/// Core resources the cloud pushes only on a watch.
pub(crate) const WATCHED: &[&str] = &["services", "endpoints"];

/// How long the cloud may take to answer a watch sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's registered watches. Shared by the server and its sender.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    apps: Mutex<BTreeMap<String, Application>>,
    added: Notify,
    /// New Applications not sent yet.
    pending: Mutex<Vec<Application>>,
}

impl Watches {
    /// Registers a watch of core `resource` (one of [`WATCHED`]) in `namespace` (None: all)
    /// for `node`; nothing when it is registered already.
    pub(crate) fn add(&self, node: &str, resource: &str, namespace: Option<&str>) {
        let key = ApplicationKey {
            group: String::new(),
            version: "v1".into(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: None,
        };
        let mut app = Application::new(key.to_string(), ApplicationVerb::Watch, node);
        app.status = ApplicationStatus::InApplying;
        if app.set_option(&serde_json::json!({"watch": true})).is_err() {
            return;
        }
        let app = app.with_identifier();
        {
            let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
            if apps.contains_key(&app.id) {
                return;
            }
            apps.insert(app.id.clone(), app.clone());
        }
        info!(key = %app.key, "metaserver: watch registered with the cloud");
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(app);
        self.added.notify_one();
    }

    /// The `watchapp/sync` message of every watch; none while there are none.
    fn sync_message(&self) -> Option<Message> {
        let apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        if apps.is_empty() {
            return None;
        }
        let content = Content::json(&*apps).ok()?;
        Some(Message::new(
            Route::new(
                Source::MetaServer,
                Group::DynamicController,
                Operation::from("null"),
                WATCH_APP_SYNC,
            ),
            content,
        ))
    }

    fn take_pending(&self) -> Vec<Application> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Sends the watches through `hub` while it lives: new ones at once, all of them as a sync
/// at each (re)connect.
pub(crate) async fn run(hub: hub::Client, watches: Arc<Watches>) {
    let mut state = hub.state();
    loop {
        let connected = matches!(*state.borrow_and_update(), ConnectionState::Connected(_));
        if connected {
            // What was added while offline is in the sync.
            watches.take_pending();
            sync(&hub, &watches).await;
        }
        loop {
            tokio::select! {
                () = watches.added.notified() => {
                    if !connected {
                        continue;
                    }
                    for app in watches.take_pending() {
                        let Ok(content) = Content::json(&app) else { continue };
                        if let Err(e) = hub.send(Message::application(content)).await {
                            debug!(error = %e, "watch application not sent; the next sync carries it");
                        }
                    }
                }
                r = state.changed() => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

async fn sync(hub: &hub::Client, watches: &Watches) {
    let Some(msg) = watches.sync_message() else {
        return;
    };
    match hub.request(msg, SYNC_TIMEOUT).await {
        Ok(reply) => {
            let refused: BTreeMap<String, Application> = reply.content.decode().unwrap_or_default();
            for app in refused.values() {
                warn!(key = %app.key, reason = %app.reason, "the cloud refused a watch");
            }
        }
        Err(e) => debug!(error = %e, "watch sync not answered"),
    }
}
