//! DynamicController: the MetaServer Application protocol (PROTOCOL.md §4.6).
//!
//! An edge's MetaServer sends an [`Application`] (source `metaserver`, group
//! `dynamiccontroller`); the controller runs it against the Kubernetes API (as the node, with
//! impersonation headers, when `impersonate_nodes` is on) and answers with the same
//! Application, `Approved` with `RespBody` or `Rejected` with `Reason` and `Error`, operation
//! `applicationResponse`, resource `ignore/Application/ignore`, NO-ACK.
//!
//! A `get` of a discovery or health path (key `/version`, `/api/v1`, `/openapi/v2`, ...) is
//! relayed to the API server as it is and answered with its body unchanged (see
//! `passthrough`).
//!
//! A `watch` Application registers a watch (replaced when the same Application comes again,
//! stopped when the edge's `watchapp/sync` list no longer holds it, see `watchsync`); its
//! objects and every later change are pushed to the node as `<namespace|null>/<kind>/<name>`
//! insert/update/delete messages from `dynamiccontroller`, through the sync ledger, each
//! deletion once per node (see `pushes`).

mod passthrough;
mod pushes;
mod register;
mod request;
mod watchsync;

use request::Refusal;
pub use watchsync::WATCH_APP_SYNC;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::BodyExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::watcher;
use kubeedge_proto::{
    Application, ApplicationKey, ApplicationStatus, ApplicationVerb, Content, Group, Message,
    Operation, Route, Source, StatusError, APPLICATION_RESOURCE,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::error::ControllerError;
use crate::hub::Upstream;
use crate::synccontroller::SyncHandle;

/// DynamicController settings (cloudcore.yaml `modules.dynamicController`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DynamicConfig {
    /// Run requests as the node (`Impersonate-User: system:node:<name>`, group
    /// `system:nodes`). Needs the `impersonate` permission on a real cluster; upstream runs
    /// them as cloudcore.
    pub impersonate_nodes: bool,
    /// Applications handled at once.
    pub concurrency: usize,
    /// Watches per node, at most (the oldest goes first).
    pub max_watches_per_node: usize,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        Self {
            impersonate_nodes: false,
            concurrency: 64,
            max_watches_per_node: 64,
        }
    }
}

struct Watch {
    node: String,
    seq: u64,
    cancel: CancellationToken,
}

struct Inner {
    client: kube::Client,
    sync: SyncHandle,
    config: DynamicConfig,
    watches: Mutex<HashMap<String, Watch>>,
    seq: std::sync::atomic::AtomicU64,
    /// Deletions already pushed, per node (shared by the node's watches).
    deleted: Arc<pushes::Tombstones>,
    tracker: TaskTracker,
}

/// The controller. Cheap to clone.
#[derive(Clone)]
pub struct DynamicController {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DynamicController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicController")
            .field("watches", &self.watches())
            .finish_non_exhaustive()
    }
}

/// The reply message for `app` answering request `req`.
pub fn application_response(req: &Message, app: &Application) -> Result<Message, ControllerError> {
    let content = Content::json(app).map_err(ControllerError::Content)?;
    Ok(Message::new(
        Route::new(
            Source::DynamicController,
            Group::Resource,
            Operation::ApplicationResponse,
            APPLICATION_RESOURCE,
        ),
        content,
    )
    .with_parent(req.id().clone()))
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Box::new(StatusError::failure(500, "InternalError", e.to_string()))
}

/// `Accept` of a pass-through request: upstream's client accepts anything; JSON is asked
/// first because the edge serves the body as `application/json`.
const PASS_THROUGH_ACCEPT: &str = "application/json, */*";

/// Refuse an Application that names another node.
fn own_node(node: &str, app: &Application) -> Result<(), Refusal> {
    if app.nodename != node && !app.nodename.is_empty() {
        return Err(Box::new(StatusError::failure(
            403,
            "Forbidden",
            format!("node {node:?} may not act as {:?}", app.nodename),
        )));
    }
    Ok(())
}

fn parsed_key(app: &Application) -> Result<ApplicationKey, Refusal> {
    app.parsed_key()
        .map_err(|e| Box::new(StatusError::failure(400, "BadRequest", e.to_string())))
}

/// Go's unstructured JSON: keys sorted (what upstream puts in `RespBody`).
fn canonical(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    }
}

impl DynamicController {
    /// A controller calling the API through `client` and pushing watch events through `sync`.
    pub fn new(client: kube::Client, sync: SyncHandle, config: DynamicConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                sync,
                config,
                watches: Mutex::new(HashMap::new()),
                seq: std::sync::atomic::AtomicU64::new(0),
                deleted: Arc::new(pushes::Tombstones::default()),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Watches registered.
    pub fn watches(&self) -> usize {
        self.inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Handle Applications from `upstream` until `cancel`.
    pub async fn run(
        self,
        mut upstream: mpsc::Receiver<Upstream>,
        cancel: CancellationToken,
    ) -> Result<(), ControllerError> {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.inner.config.concurrency.max(1),
        ));
        loop {
            let up = tokio::select! {
                _ = cancel.cancelled() => break,
                up = upstream.recv() => match up { Some(u) => u, None => break },
            };
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let this = self.clone();
            let cancel = cancel.clone();
            let span = tracing::debug_span!("application", node = %up.node, msg_id = %up.msg.id());
            self.inner.tracker.spawn(
                async move {
                    if let Some(reply) = this.handle(&up.node, &up.msg, cancel).await {
                        if let Err(e) = this.inner.sync.send(&up.node, reply).await {
                            warn!(node = %up.node, error = %e, "application response not sent");
                        }
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        let watches: Vec<Watch> = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in watches {
            w.cancel.cancel();
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        Ok(())
    }

    /// Run one Application message (or a `watchapp/sync` list) from `node`; the reply to
    /// send back.
    pub async fn handle(
        &self,
        node: &str,
        msg: &Message,
        cancel: CancellationToken,
    ) -> Option<Message> {
        if watchsync::is_watch_sync(msg) {
            return self.watch_sync(node, msg, &cancel);
        }
        let app: Application = match msg.content.decode() {
            Ok(a) => a,
            Err(e) => {
                warn!(%node, error = %e, "invalid application");
                return Some(msg.error_reply(
                    &format!("invalid application: {e}"),
                    kubeedge_proto::Compat::Latest,
                ));
            }
        };
        let answer = match self.run_application(node, &app, &cancel).await {
            Ok(body) => app.approved(body),
            Err(err) => {
                debug!(%node, key = %app.key, verb = %app.verb, reason = %err.err_status.message, "application rejected");
                app.rejected(*err)
            }
        };
        match application_response(msg, &answer) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(error = %e, "application response not encoded");
                None
            }
        }
    }

    /// The result of one Application: the response body, or why not.
    async fn run_application(
        &self,
        node: &str,
        app: &Application,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        own_node(node, app)?;
        if let Some(path) = passthrough::path(&app.key, &app.verb) {
            // Upstream relays the body as the API server wrote it.
            return self
                .send(Some(node), request::Call::get(path), PASS_THROUGH_ACCEPT)
                .await
                .map(Some);
        }
        let key = parsed_key(app)?;
        if app.status == ApplicationStatus::Completed {
            self.stop_watch(&app.id);
            Ok(None)
        } else if app.verb == ApplicationVerb::Watch {
            self.start_watch(node, app, key, cancel.clone())
                .map(|()| None)
        } else {
            let mut call = request::call(app, &key)?;
            let reserved = if self.inner.config.impersonate_nodes {
                register::split_labels(app, &key, &mut call)
            } else {
                None
            };
            let mut body = self.send(Some(node), call, "application/json").await?;
            if let Some((name, labels)) = reserved {
                let patch = register::labels_patch(&name, labels);
                body = self.send(None, patch, "application/json").await?;
            }
            Ok(Some(canonical(&body)))
        }
    }

    /// Register the watch `app` of `node` (from a `watchapp/sync` list).
    fn register_watch(
        &self,
        node: &str,
        app: &Application,
        cancel: &CancellationToken,
    ) -> Result<(), Refusal> {
        own_node(node, app)?;
        let key = parsed_key(app)?;
        self.start_watch(node, app, key, cancel.clone())
    }

    fn impersonate(&self, node: &str, req: &mut http::request::Builder) {
        if !self.inner.config.impersonate_nodes {
            return;
        }
        if let Some(h) = req.headers_mut() {
            if let Ok(v) = http::HeaderValue::from_str(&crate::certs::node_common_name(node)) {
                h.insert("Impersonate-User", v);
                h.append(
                    "Impersonate-Group",
                    http::HeaderValue::from_static("system:nodes"),
                );
            }
        }
    }

    /// Make `call` as `node` (when impersonating; `None`: as cloudcore), asking for `accept`;
    /// the body of a success, the API's Status as a refusal otherwise.
    async fn send(
        &self,
        node: Option<&str>,
        call: request::Call,
        accept: &'static str,
    ) -> Result<Vec<u8>, Refusal> {
        let mut b = http::Request::builder()
            .method(call.method.clone())
            .uri(call.uri.as_str())
            .header(http::header::ACCEPT, accept);
        if let Some(ct) = &call.content_type {
            b = b.header(http::header::CONTENT_TYPE, ct.as_str());
        }
        if let Some(node) = node {
            self.impersonate(node, &mut b);
        }
        let req = b
            .body(kube::client::Body::from(call.body))
            .map_err(internal)?;
        let resp = self
            .inner
            .client
            .send(req)
            .await
            .map_err(|e| crate::edgecontroller::status_error(&e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(internal)?
            .to_bytes();
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let err = match serde_json::from_slice::<kube::core::Status>(&body) {
            Ok(s) => {
                let mut e = StatusError::failure(
                    i32::from(if s.code == 0 { status.as_u16() } else { s.code }),
                    s.reason.clone(),
                    s.message.clone(),
                );
                e.err_status.details = s
                    .details
                    .as_ref()
                    .and_then(|d| serde_json::to_value(d).ok());
                e
            }
            Err(_) => StatusError::failure(
                i32::from(status.as_u16()),
                status.canonical_reason().unwrap_or("Unknown").to_owned(),
                String::from_utf8_lossy(&body).into_owned(),
            ),
        };
        Err(Box::new(err))
    }

    /// Stop every watch of `node` whose ID `keep` refuses; how many stopped.
    fn stop_watches_except(&self, node: &str, keep: impl Fn(&str) -> bool) -> usize {
        let mut watches = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = watches
            .iter()
            .filter(|(id, w)| w.node == node && !keep(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(w) = watches.remove(id) {
                info!(%node, %id, "watch stopped: not in the edge's list");
                w.cancel.cancel();
            }
        }
        if !watches.values().any(|w| w.node == node) {
            self.inner.deleted.forget(node);
        }
        gone.len()
    }

    /// IDs of `node`'s watches.
    fn watch_ids(&self, node: &str) -> std::collections::HashSet<String> {
        self.inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, w)| w.node == node)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn stop_watch(&self, id: &str) {
        if let Some(w) = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
        {
            w.cancel.cancel();
        }
    }

    fn start_watch(
        &self,
        node: &str,
        app: &Application,
        key: ApplicationKey,
        cancel: CancellationToken,
    ) -> Result<(), Refusal> {
        let seq = self
            .inner
            .seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = cancel.child_token();
        {
            let mut watches = self
                .inner
                .watches
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = watches.insert(
                app.id.clone(),
                Watch {
                    node: node.to_owned(),
                    seq,
                    cancel: token.clone(),
                },
            ) {
                old.cancel.cancel();
            }
            let mut mine: Vec<(u64, String)> = watches
                .iter()
                .filter(|(_, w)| w.node == node)
                .map(|(id, w)| (w.seq, id.clone()))
                .collect();
            mine.sort();
            while mine.len() > self.inner.config.max_watches_per_node.max(1) {
                let (_, id) = mine.remove(0);
                if let Some(w) = watches.remove(&id) {
                    w.cancel.cancel();
                }
            }
        }
        let (labels, fields) = request::selectors(app);
        let ar = ApiResource {
            group: key.group.clone(),
            version: key.version.clone(),
            api_version: key.api_version(),
            kind: String::new(),
            plural: key.resource.clone(),
        };
        let api: Api<DynamicObject> = match &key.namespace {
            Some(ns) => Api::namespaced_with(self.inner.client.clone(), ns, &ar),
            None => Api::all_with(self.inner.client.clone(), &ar),
        };
        let mut cfg = watcher::Config::default();
        if let Some(l) = &labels {
            cfg = cfg.labels(l);
        }
        if let Some(f) = &fields {
            cfg = cfg.fields(f);
        }
        if let Some(name) = &key.name {
            cfg = cfg.fields(&format!("metadata.name={name}"));
        }
        info!(%node, key = %key, "watch registered");
        let task = pushes::WatchTask {
            api,
            config: cfg,
            sync: self.inner.sync.clone(),
            node: node.to_owned(),
            key,
            deleted: Arc::clone(&self.inner.deleted),
            token,
        };
        self.inner.tracker.spawn(task.run());
        Ok(())
    }
}
