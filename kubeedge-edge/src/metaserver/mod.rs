//! MetaServer: the node's local Kubernetes API on `metaServer.server` (127.0.0.1:10550).
//!
//! Reads (discovery, get, list, watch) are answered by a [`kubeedge_apiserver::ApiService`]
//! over [`MetaView`]: what this node holds in its meta store (pods, configmaps, secrets,
//! services, endpoints, its node and its lease), online or not. `kubectl --server
//! http://127.0.0.1:10550 get pods -A` and `get pods -w` work; other resources get 404.
//!
//! Writes (create, update, patch, delete) go to the cloud as an Application (PROTOCOL.md
//! §4.6) over the hub, and the cloud's answer is the HTTP answer; the object then reaches the
//! view when the cloud pushes it. With no link to the cloud a write gets a 503 Status at once.
//!
//! Not served: writes with protobuf bodies (415), deletecollection (405), resources outside
//! the list above, and objects this node does not hold.

mod view;
mod watches;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper_util::rt::TokioIo;
use kubeedge_apiserver::{ApiConfig, ApiService, ResponseBody};
use kubeedge_proto::{
    Application, ApplicationKey, ApplicationStatus, ApplicationVerb, Content, Message, PatchInfo,
};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tracing::{debug, warn};

pub use view::{MetaView, Served, SERVED};

use crate::hub::{self, ConnectionState};

/// Why MetaServer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaServerError {
    /// The meta store could not be read.
    #[error("meta store")]
    Store(#[from] crate::meta::StoreError),
    /// The API layer could not be built.
    #[error("api service")]
    Api(#[from] kubeedge_apiserver::Error),
}

/// How long a write waits for the cloud (upstream's 10 s).
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted write body.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The MetaServer service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetaServer {
    api: ApiService<MetaView>,
    view: MetaView,
    node: Arc<str>,
    hub: Arc<OnceLock<hub::Client>>,
    watches: Arc<watches::Watches>,
    timeout: Duration,
    metrics: Option<Arc<prometheus_client::registry::Registry>>,
}

impl MetaServer {
    /// A MetaServer for `node` over `view`. Writes need a hub client: pass it now, or later
    /// with [`MetaServer::set_hub`] once the link is set up.
    pub async fn new(view: MetaView, node: &str) -> Result<Self, MetaServerError> {
        let mut config = ApiConfig::default();
        config.resources = Some(SERVED.iter().map(|s| s.resource.to_owned()).collect());
        config.default_namespaces = false;
        // Edge pods reach MetaServer on loopback, as the kubelet's API; the cloud authorizes
        // what reaches it through the hub.
        config.authorization = false;
        config.git_version = crate::config::KUBELET_VERSION.to_owned();
        let api = ApiService::new(view.clone(), config).await?;
        Ok(Self {
            api,
            view,
            node: node.into(),
            hub: Arc::new(OnceLock::new()),
            watches: Arc::default(),
            timeout: REMOTE_TIMEOUT,
            metrics: None,
        })
    }

    /// Serve `registry` at `GET /metrics`, with the hub link's figures added (connected, and
    /// the reconnects), and record the API's own requests in it.
    #[must_use]
    pub fn with_metrics(mut self, mut registry: prometheus_client::registry::Registry) -> Self {
        registry.register_collector(Box::new(crate::metrics::HubCollector {
            hub: Arc::clone(&self.hub),
            sessions: Default::default(),
        }));
        self.api = self.api.with_metrics(&mut registry);
        self.metrics = Some(Arc::new(registry));
        self
    }

    /// Route writes through `client` from now on (the first call wins), and register the
    /// watches of Services and Endpoints through it (see `watches`).
    pub fn set_hub(&self, client: hub::Client) {
        if self.hub.set(client.clone()).is_ok() {
            tokio::spawn(watches::run(client, Arc::clone(&self.watches)));
        }
    }

    /// How long writes wait for the cloud.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The view behind the server.
    pub fn view(&self) -> &MetaView {
        &self.view
    }

    /// Answer one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let (Some(registry), &Method::GET, "/metrics") =
            (&self.metrics, req.method(), req.uri().path())
        {
            return crate::metrics::render(registry);
        }
        let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if *req.method() == Method::GET {
            self.register_watch(req.uri());
        }
        let target = if read {
            None
        } else {
            ResourceRequest::parse(req.uri().path())
                .filter(|r| SERVED.iter().any(|s| s.resource == r.store_resource()))
        };
        match target {
            // Unserved resources and reads: the API layer answers (404 for the former).
            None => match self.api.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
            Some(target) => self.forward(target, req).await,
        }
    }

    /// Ask the cloud to push core `resource` (`services` or `endpoints`) of `namespace` (None:
    /// all) to this node and keep it current, as a client's watch here does; false for a
    /// resource the cloud already pushes, or one MetaServer does not serve.
    pub fn watch_from_cloud(&self, resource: &str, namespace: Option<&str>) -> bool {
        if !watches::WATCHED.contains(&resource) {
            return false;
        }
        self.watches.add(&self.node, resource, namespace);
        true
    }

    /// A watch of Services or Endpoints registers the same watch with the cloud.
    fn register_watch(&self, uri: &http::Uri) {
        let watching = uri.query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        });
        if !watching {
            return;
        }
        let Some(r) = ResourceRequest::parse(uri.path()) else {
            return;
        };
        if r.group.is_empty() && r.name.is_none() && watches::WATCHED.contains(&r.resource.as_str())
        {
            self.watches
                .add(&self.node, &r.resource, r.namespace.as_deref());
        }
    }

    async fn forward<B>(&self, target: ResourceRequest, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(hub) = self
            .hub
            .get()
            .filter(|h| matches!(*h.state().borrow(), ConnectionState::Connected(_)))
        else {
            return status(503, "ServiceUnavailable", "the cloud is unreachable: metaserver serves reads from the local store, writes need the cloud");
        };
        let (parts, body) = req.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return status(
                    413,
                    "RequestEntityTooLarge",
                    "request body too large or unreadable",
                )
            }
        };
        let query = parts.uri.query().unwrap_or_default();
        let app = match build_application(
            &target,
            &parts.method,
            query,
            &content_type,
            &body,
            &self.node,
            &token,
        ) {
            Ok(a) => a,
            Err(refusal) => return refusal.into_response(),
        };
        let verb = app.verb.clone();
        let content = match Content::json(&app) {
            Ok(c) => c,
            Err(e) => {
                return status(
                    500,
                    "InternalError",
                    &format!("cannot encode the application: {e}"),
                )
            }
        };
        let msg = Message::application(content);
        debug!(key = %app.key, verb = %verb.as_str(), "metaserver write to the cloud");
        let reply = match hub.request(msg, self.timeout).await {
            Ok(r) => r,
            Err(e) => {
                return status(
                    503,
                    "ServiceUnavailable",
                    &format!("the cloud did not answer: {e}"),
                )
            }
        };
        let answer: Application = match reply.content.decode() {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "the cloud's application reply is not an application");
                return status(
                    502,
                    "InternalError",
                    "the cloud's reply is not an application",
                );
            }
        };
        respond(&verb, answer)
    }
}

/// A resource URL: `/api/v1/[namespaces/<ns>/]<resource>[/<name>[/<sub>]]` or the same under
/// `/apis/<group>/<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceRequest {
    group: String,
    version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: String,
}

impl ResourceRequest {
    fn parse(path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => (String::new(), (*v).to_owned(), rest),
            ["apis", g, v, rest @ ..] => ((*g).to_owned(), (*v).to_owned(), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, r, more @ ..] => (Some((*ns).to_owned()), {
                let mut v = vec![*r];
                v.extend_from_slice(more);
                v
            }),
            other => (None, other.to_vec()),
        };
        let (resource, name, subresource) = match rest.as_slice() {
            [r] => (*r, None, ""),
            [r, n] => (*r, Some((*n).to_owned()), ""),
            [r, n, s] => (*r, Some((*n).to_owned()), *s),
            _ => return None,
        };
        if resource.is_empty() || name.as_deref() == Some("") {
            return None;
        }
        Some(Self {
            group,
            version,
            resource: resource.to_owned(),
            namespace,
            name,
            subresource: subresource.to_owned(),
        })
    }

    fn store_resource(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{g}/{}", self.resource)
    }

    fn key(&self) -> String {
        ApplicationKey {
            group: self.group.clone(),
            version: self.version.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
        .to_string()
    }
}

/// Options from the query string, as the JSON of `metav1.{Create,Update,Patch,Delete}Options`.
fn options(query: &str) -> Map<String, Value> {
    let mut o = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "dryRun" => {
                let e = o
                    .entry("dryRun")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = e {
                    a.push(Value::String(v.into_owned()));
                }
            }
            "fieldManager" | "fieldValidation" | "propagationPolicy" => {
                o.insert(k.into_owned(), Value::String(v.into_owned()));
            }
            "force" => {
                o.insert("force".into(), Value::Bool(v == "true"));
            }
            "gracePeriodSeconds" => {
                if let Ok(n) = v.parse::<i64>() {
                    o.insert("gracePeriodSeconds".into(), json!(n));
                }
            }
            _ => {}
        }
    }
    o
}

/// A request MetaServer refuses before it reaches the cloud.
#[derive(Debug)]
struct Refusal {
    code: u16,
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<ResponseBody> {
        status(self.code, self.reason, &self.message)
    }
}

fn build_application(
    target: &ResourceRequest,
    method: &Method,
    query: &str,
    content_type: &str,
    body: &Bytes,
    node: &str,
    token: &str,
) -> Result<Application, Refusal> {
    let json_body = content_type.contains("json");
    let opts = Value::Object(options(query));
    let (verb, option, req_body): (ApplicationVerb, Value, Option<Vec<u8>>) = match *method {
        Method::POST => (ApplicationVerb::Create, opts, Some(body.to_vec())),
        Method::PUT if target.subresource == "status" => {
            (ApplicationVerb::UpdateStatus, opts, Some(body.to_vec()))
        }
        Method::PUT => (ApplicationVerb::Update, opts, Some(body.to_vec())),
        Method::PATCH => {
            let Some(name) = target.name.clone() else {
                return Err(Refusal::new(
                    405,
                    "MethodNotAllowed",
                    "patch needs an object name",
                ));
            };
            let info = PatchInfo {
                name,
                patch_type: content_type
                    .split(';')
                    .next()
                    .unwrap_or(content_type)
                    .trim()
                    .to_owned(),
                data: Some(body.to_vec()),
                options: opts,
                subresources: (!target.subresource.is_empty())
                    .then(|| vec![target.subresource.clone()]),
            };
            let v = serde_json::to_value(&info)
                .map_err(|e| Refusal::new(500, "InternalError", e.to_string()))?;
            (ApplicationVerb::Patch, v, None)
        }
        Method::DELETE if target.name.is_none() => {
            return Err(Refusal::new(
                405,
                "MethodNotAllowed",
                "deletecollection is not served by metaserver",
            ))
        }
        Method::DELETE => {
            let option = if body.is_empty() {
                opts
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| Refusal::new(400, "BadRequest", format!("delete options: {e}")))?
            };
            (ApplicationVerb::Delete, option, None)
        }
        _ => return Err(Refusal::new(405, "MethodNotAllowed", "method not allowed")),
    };
    if req_body.is_some() && !json_body {
        return Err(Refusal::new(
            415,
            "UnsupportedMediaType",
            format!("metaserver forwards JSON bodies only, not {content_type}"),
        ));
    }
    let mut app = Application::new(target.key(), verb, node);
    app.subresource = if matches!(app.verb, ApplicationVerb::Patch) {
        String::new()
    } else {
        target.subresource.clone()
    };
    app.status = ApplicationStatus::InApplying;
    app.token = token.to_owned();
    app.set_option(&option)
        .map_err(|e| Refusal::new(500, "InternalError", e.to_string()))?;
    app.req_body = req_body;
    Ok(app.with_identifier())
}

fn respond(verb: &ApplicationVerb, answer: Application) -> Response<ResponseBody> {
    match answer.status {
        ApplicationStatus::Approved => {
            let code = if matches!(verb, ApplicationVerb::Create) {
                201
            } else {
                200
            };
            let body = match answer.resp_body {
                Some(b) if !b.is_empty() && b != b"null" => Bytes::from(b),
                _ => Bytes::from(
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
                        .to_string(),
                ),
            };
            json_response(code, body)
        }
        ApplicationStatus::Rejected => {
            let mut s = answer.error.err_status;
            let code = u16::try_from(s.code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            if s.message.is_empty() {
                s.message = answer.reason;
            }
            s.kind = "Status".into();
            s.api_version = "v1".into();
            s.status = "Failure".into();
            s.code = i32::from(code);
            let body = serde_json::to_vec(&s).unwrap_or_default();
            json_response(code, Bytes::from(body))
        }
        other => status(
            500,
            "InternalError",
            &format!("the cloud answered {}: {}", other.as_str(), answer.reason),
        ),
    }
}

fn json_response(code: u16, body: Bytes) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn status(code: u16, reason: &str, message: &str) -> Response<ResponseBody> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    json_response(code, Bytes::from(body.to_string()))
}

/// Serve `server` over plain HTTP on `listener` until `shutdown` resolves. Bind it to loopback
/// only: it has no authentication, like upstream's default.
pub async fn serve(
    listener: TcpListener,
    server: MetaServer,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "metaserver accept failed");
                    continue;
                }
            },
        };
        let server = server.clone();
        conns.spawn(async move {
            let _ = stream.set_nodelay(true);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%peer, error = %e, "metaserver connection closed with an error");
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_urls() {
        let r =
            ResourceRequest::parse("/api/v1/namespaces/default/pods/nginx/status").expect("parse");
        assert_eq!(r.store_resource(), "core/pods");
        assert_eq!(r.key(), "/core/v1/pods/default/nginx");
        assert_eq!(r.subresource, "status");
        let r = ResourceRequest::parse(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        )
        .expect("parse");
        assert_eq!(
            r.key(),
            "/coordination.k8s.io/v1/leases/kube-node-lease/null"
        );
        let r = ResourceRequest::parse("/api/v1/nodes/edge-1").expect("parse");
        assert_eq!(r.key(), "/core/v1/nodes/null/edge-1");
        assert!(ResourceRequest::parse("/version").is_none());
        assert!(ResourceRequest::parse("/api/v1/namespaces/a/pods/b/c/d").is_none());
    }

    #[test]
    fn patch_application_carries_patch_info() {
        let t = ResourceRequest::parse("/api/v1/namespaces/default/configmaps/c").expect("parse");
        let app = build_application(
            &t,
            &Method::PATCH,
            "fieldManager=kubectl-patch",
            "application/merge-patch+json",
            &Bytes::from_static(br#"{"data":{"a":"1"}}"#),
            "edge-1",
            "",
        )
        .expect("application");
        assert!(matches!(app.verb, ApplicationVerb::Patch));
        let info: PatchInfo = app.option_json().expect("json").expect("option");
        assert_eq!(info.name, "c");
        assert_eq!(info.patch_type, "application/merge-patch+json");
        assert_eq!(info.options["fieldManager"], "kubectl-patch");
        let protobuf = build_application(
            &t,
            &Method::PUT,
            "",
            "application/vnd.kubernetes.protobuf",
            &Bytes::new(),
            "n",
            "",
        );
        assert_eq!(protobuf.err().map(|r| r.code), Some(415));
    }
}
