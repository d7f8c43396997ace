//! The Router (upstream `cloud/pkg/router`): REST calls on the cloud reach edge nodes by
//! `rules.kubeedge.io/v1` Rules. A call to `/{node}/{namespace}/{path…}` takes the REST-source
//! Rule of that namespace whose `sourceResource.path` the path starts with, and goes to its
//! target on `node`:
//!
//! - **servicebus**: the HTTP app on the node at `properties.service_port`, path
//!   `targetResource.path` plus the rest of the call's path and its query. The app's answer
//!   (status, headers, body) is the call's answer; none within `restTimeout` is 408.
//! - **eventbus**: an MQTT publish on the node, topic `targetResource.topic` plus the rest of the
//!   path, payload the body; answered 200 `message delivered` once queued, as upstream.
//!
//! Each call counts in its Rule's `status`: `successMessages` when the target answered (or
//! the publish was queued), `failMessages` and the reason in `errors` otherwise.
//!
//! [`Router`] is a `tower::Service` over HTTP requests; [`Router::serve`] serves it on a
//! socket, over TLS, with each call authorized by the API ([`RouterAuth`]).

mod bus;
mod callers;
mod peer;
mod rules;
mod serve;

pub use callers::{Caller, RouterTls, PEER_CN};
pub use peer::{RouterPeers, FORWARDED};
pub use serve::{RouterAuth, RouterSettings};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use kube::api::{Patch, PatchParams};
use kubeedge_proto::servicebus::{HttpRequest, HttpResponse};
use kubeedge_proto::{Content, Message, Route};
use tokio::sync::oneshot;
use tracing::debug;

use crate::hub::{CloudHub, Downstream};

/// The most a call's encoded content may take in a hub frame (the frame limit, less room for
/// the envelope).
const FRAME_ROOM: usize = kubeedge_proto::HubCodec::DEFAULT_MAX_FRAME_SIZE - 64 * 1024;

/// The Router's settings (upstream `modules.router`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterConfig {
    /// How long a call waits for the edge (`restTimeout`, 60 s).
    pub rest_timeout: Duration,
    /// Largest accepted request body (upstream's 12 MiB); larger ones get 413.
    pub max_body: usize,
    /// Who may call (default: anyone, upstream's plain mode; cloudcore checks tokens).
    pub auth: RouterAuth,
    /// Other replicas' Routers, for calls to nodes they hold (`None`: a single replica).
    pub peers: Option<RouterPeers>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            rest_timeout: Duration::from_secs(60),
            max_body: 12 << 20,
            auth: RouterAuth::None,
            peers: None,
        }
    }
}

struct Inner {
    client: kube::Client,
    hub: CloudHub,
    down: Downstream,
    config: RouterConfig,
    waiting: Mutex<HashMap<String, oneshot::Sender<Message>>>,
}

/// The Router. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The Router's response body.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = code;
    r
}

/// Removes a waiter when the call ends, answered or not.
struct Waiter<'a> {
    router: &'a Inner,
    id: String,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.router
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Router {
    /// A Router reading Rules through `client` and reaching nodes through `hub`/`down`.
    pub fn new(
        client: kube::Client,
        hub: CloudHub,
        down: Downstream,
        config: RouterConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                hub,
                down,
                config,
                waiting: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Hands an edge's answer (a `servicebus` message with a parent ID) to the call waiting
    /// for it. `false` when no call waits (it timed out, or the message is not an answer).
    pub fn deliver(&self, msg: Message) -> bool {
        let Some(parent) = msg.parent_id().map(|p| p.as_str().to_owned()) else {
            return false;
        };
        let waiter = self
            .inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&parent);
        match waiter {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        }
    }

    /// Whether `msg` answers a call that waits.
    pub fn waits_for(&self, msg: &Message) -> bool {
        msg.parent_id().is_some_and(|p| {
            self.inner
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(p.as_str())
        })
    }

    /// The number of calls waiting for an edge.
    pub fn waiting(&self) -> usize {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Answers one REST call.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let segs: Vec<&str> = parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let (node, ns) = match segs.as_slice() {
            [node, ns, ..] => ((*node).to_owned(), (*ns).to_owned()),
            _ => return text(StatusCode::NOT_FOUND, "Request error"),
        };
        let rest = format!("/{}", segs[2..].join("/"));
        let rules = match rules::load(&self.inner.client, &ns).await {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read rules: {e}"),
                )
            }
        };
        let Some((rule, mut param)) = rules::matching(&rules, &rest) else {
            return text(StatusCode::NOT_FOUND, "Request error");
        };
        if let Some(q) = parts.uri.query() {
            param = format!("{param}?{q}");
        }
        let rule = rule.clone();
        if let Err(r) = serve::authorize(
            &self.inner.config.auth,
            &self.inner.client,
            parts.extensions.get::<Caller>(),
            &parts.headers,
            &ns,
            &rule.name,
        )
        .await
        {
            let (code, why) = r.status();
            return text(code, why);
        }
        if !self.inner.hub.is_connected(&node) && !parts.headers.contains_key(peer::FORWARDED) {
            if let Some(peers) = &self.inner.config.peers {
                if let Some(addr) = peers.holder_of(&self.inner.client, &node).await {
                    return match peers.forward(addr, &parts, body).await {
                        Ok(r) => r,
                        Err(e) => {
                            let (code, why) = peer::unreachable(&node, addr, &e);
                            text(code, why)
                        }
                    };
                }
            }
        }
        if !self.inner.hub.is_connected(&node) {
            let why = format!("node {node:?} is not connected");
            self.count(&rule, Err(why.clone()));
            return text(StatusCode::SERVICE_UNAVAILABLE, why);
        }
        let result = match rule.target.as_ref().map(|t| t.kind.as_str()) {
            None => Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "rule {:?}: its target RuleEndpoint {:?} does not exist",
                    rule.name, rule.target_name
                ),
            )),
            Some("servicebus") => self.to_servicebus(&node, &rule, &param, &parts, body).await,
            Some("eventbus") => self.to_eventbus(&node, &rule, &param, body).await,
            Some(other) => Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "rule {:?}: a rest source cannot go to a {other:?} target",
                    rule.name
                ),
            )),
        };
        match result {
            Ok(r) => {
                self.count(&rule, Ok(()));
                r
            }
            Err((code, why)) => {
                self.count(&rule, Err(why.clone()));
                text(code, why)
            }
        }
    }

    async fn to_servicebus(
        &self,
        node: &str,
        rule: &rules::Resolved,
        param: &str,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Body>, (StatusCode, String)> {
        let port = rule
            .target
            .as_ref()
            .and_then(|t| t.properties.get("service_port"))
            .ok_or_else(|| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "rule {:?}: the servicebus endpoint has no service_port",
                        rule.name
                    ),
                )
            })?;
        let path = rule.target_resource.get("path").map_or("", String::as_str);
        let mut header: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (k, v) in &parts.headers {
            if let Ok(v) = v.to_str() {
                header
                    .entry(k.as_str().to_owned())
                    .or_default()
                    .push(v.to_owned());
            }
        }
        let request = HttpRequest {
            header,
            body: body.to_vec(),
            method: parts.method.as_str().to_owned(),
            url: String::new(),
        };
        let content = Content::json(&request)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        // The body travels base64-encoded in one hub frame.
        if content.raw_json().len() > FRAME_ROOM {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request is too large for the hub link ({} bytes encoded, at most {FRAME_ROOM})",
                    content.raw_json().len()
                ),
            ));
        }
        let resource = format!("{port}:{}{param}", path.trim_end_matches('/'));
        let msg = Message::new(
            Route::new("router_servicebus", "user", parts.method.as_str(), resource),
            content,
        );
        let id = msg.id().as_str().to_owned();
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let _waiter = Waiter {
            router: &self.inner,
            id,
        };
        self.inner
            .down
            .send(node, msg)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let answer = match tokio::time::timeout(self.inner.config.rest_timeout, rx).await {
            Ok(Ok(m)) => m,
            _ => {
                return Err((
                    StatusCode::REQUEST_TIMEOUT,
                    "wait to get response time out".into(),
                ))
            }
        };
        if answer.route.operation_str() == "error" {
            // The edge could not take the call (no ServiceBus there, say).
            let why = answer
                .content
                .as_str()
                .map(|s| s.into_owned())
                .unwrap_or_default();
            return Err((
                StatusCode::BAD_GATEWAY,
                format!("the edge refused the call: {why}"),
            ));
        }
        let resp: HttpResponse = answer.content.decode().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid response".to_owned(),
            )
        })?;
        let code = StatusCode::from_u16(resp.status_code).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut out = text(code, resp.body);
        for (k, vs) in &resp.header {
            for v in vs {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    out.headers_mut().append(k, v);
                }
            }
        }
        out.headers_mut().remove(http::header::CONTENT_LENGTH);
        out.headers_mut().remove(http::header::TRANSFER_ENCODING);
        Ok(out)
    }

    async fn to_eventbus(
        &self,
        node: &str,
        rule: &rules::Resolved,
        param: &str,
        body: Bytes,
    ) -> Result<Response<Body>, (StatusCode, String)> {
        let topic = rule.target_resource.get("topic").map_or("", String::as_str);
        let topic = if param.is_empty() {
            topic.to_owned()
        } else {
            format!(
                "{}/{}",
                topic.trim_end_matches('/'),
                param.trim_start_matches('/')
            )
        };
        let msg = Message::new(
            Route::new("router_eventbus", "user", "publish", topic),
            Content::string(&String::from_utf8_lossy(&body)),
        );
        self.inner
            .down
            .send(node, msg)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(text(StatusCode::OK, "message delivered"))
    }

    /// Counts a call in its Rule's status (in the background; a lost update is only a count).
    fn count(&self, rule: &rules::Resolved, result: Result<(), String>) {
        let api = rules::rules_api(&self.inner.client, &rule.namespace);
        let name = rule.name.clone();
        tokio::spawn(async move {
            let Ok(current) = api.get(&name).await else {
                return;
            };
            let n = |k: &str| {
                current
                    .data
                    .pointer(&format!("/status/{k}"))
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0)
            };
            let status = match &result {
                Ok(()) => serde_json::json!({"successMessages": n("successMessages") + 1}),
                Err(why) => {
                    serde_json::json!({"failMessages": n("failMessages") + 1, "errors": [why]})
                }
            };
            let patch = serde_json::json!({"status": status});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                debug!(rule = %name, error = %e, "rule status not updated");
            }
        });
    }
}

impl<B> tower::Service<Request<B>> for Router
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, this.inner.config.max_body)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let code = if e.is::<http_body_util::LengthLimitError>() {
                        StatusCode::PAYLOAD_TOO_LARGE
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    return Ok(text(code, format!("cannot read the request body: {e}")));
                }
            };
            Ok(this.handle(Request::from_parts(parts, body)).await)
        })
    }
}
