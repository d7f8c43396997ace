//! [`ApiService`]: the Kubernetes REST protocol as a `tower::Service<http::Request<B>>`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use crate::authz::admission;
use crate::body::ResponseBody;
use crate::error::{Error, StoreError};
use crate::objects::{self, Cause};
use crate::registry::{self, Registry, ResourceDef};
use crate::selector::LabelSelector;
use crate::store::{ObjectKey, Scope, Store, Stored, WriteOp};
use crate::validation::FieldValidation;
use crate::{discovery, patch, table, time};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use config::ApiConfig;

struct Inner<S> {
    store: S,
    registry: Registry,
    config: ApiConfig,
    watches: Arc<AtomicUsize>,
    service_ips: tokio::sync::Mutex<()>,
    authz: policy::Authz,
    tokens: crate::authz::token::TokenIssuer,
}

/// The Kubernetes REST API over a [`Store`]. Cheap to clone.
///
/// `poll_ready` is always ready: each request runs in its own future, and writes wait on the
/// store's bounded queue inside that future.
pub struct ApiService<S> {
    inner: Arc<Inner<S>>,
    metrics: Option<instrument::ApiMetrics>,
}

impl<S> Clone for ApiService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S> std::fmt::Debug for ApiService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService")
            .field("watches", &self.inner.watches.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S: Store> ApiService<S> {
    /// Builds the service: creates the default namespaces if missing and serves every stored
    /// CustomResourceDefinition.
    pub async fn new(store: S, config: ApiConfig) -> Result<Self, Error> {
        let registry = match &config.resources {
            Some(only) => Registry::only(only),
            None => Registry::new(),
        };
        let default_namespaces = config.default_namespaces;
        let key = match &config.service_account_key {
            Some(k) => k.clone(),
            None => crate::authz::token::SigningKey::generate()?,
        };
        let tokens = crate::authz::token::TokenIssuer::new(&key.0)?;
        let svc = Self {
            inner: Arc::new(Inner {
                store,
                registry,
                config,
                watches: Arc::new(AtomicUsize::new(0)),
                service_ips: tokio::sync::Mutex::new(()),
                authz: policy::Authz::default(),
                tokens,
            }),
            metrics: None,
        };
        let namespaces: &[&str] = if default_namespaces {
            &["default", "kube-system", "kube-public", "kube-node-lease"]
        } else {
            &[]
        };
        for &ns in namespaces {
            let key = ObjectKey::new("core/namespaces", "", ns);
            if svc.inner.store.get(key.clone()).await?.is_none() {
                let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                    "name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": time::now()}});
                if let Some(def) = svc.inner.registry.find("", "v1", "namespaces") {
                    objects::default(&def, &mut obj);
                }
                match svc
                    .inner
                    .store
                    .write(WriteOp::Create { key, value: obj })
                    .await
                {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if svc.inner.config.authorization {
            policy::bootstrap(&svc.inner.store).await?;
            svc.inner.authz.changed(&svc.inner.store).await;
        }
        follow::spawn(&svc.inner);
        if svc.inner.config.resources.is_some() {
            return Ok(svc);
        }
        let crds = svc
            .inner
            .store
            .list(
                Scope {
                    resource: "apiextensions.k8s.io/customresourcedefinitions".into(),
                    namespace: None,
                },
                None,
                None,
            )
            .await?;
        for crd in crds.items {
            let v = crd.value()?;
            svc.inner
                .registry
                .set_custom(&crd.key.name, registry::from_crd(&v));
        }
        Ok(svc)
    }

    /// Record this service's requests in `registry` (latency and counts by verb, group,
    /// resource, subresource and code; the open watches). Clones made afterwards record too;
    /// call it before handing the service to a server.
    #[must_use]
    pub fn with_metrics(mut self, registry: &mut prometheus_client::registry::Registry) -> Self {
        self.metrics = Some(instrument::ApiMetrics::register(
            registry,
            Arc::clone(&self.inner.watches),
        ));
        self
    }

    /// The number of open watch streams (they are released when a client goes away).
    pub fn active_watches(&self) -> usize {
        self.inner.watches.load(Ordering::SeqCst)
    }

    /// The store behind the service.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The store's newest committed revision.
    pub fn store_revision(&self) -> u64 {
        self.inner.store.revision()
    }
}

impl<S, B> tower::Service<Request<B>> for ApiService<S>
where
    S: Store,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<
        Box<dyn Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let labels = self.metrics.as_ref().map(|m| {
            let uri = req.uri();
            let labels =
                instrument::request_labels(&inner.registry, req.method(), uri.path(), uri.query());
            (m.clone(), labels, std::time::Instant::now())
        });
        Box::pin(async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let resp = match handle(inner, req).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
            tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
            if let Some((metrics, labels, started)) = labels {
                metrics.observe(labels, resp.status().as_u16(), started.elapsed());
            }
            Ok(resp)
        })
    }
}

mod authorize;
mod bind;
mod config;
mod connect;
mod create;
mod decode;
mod delete;
mod follow;
mod instrument;
mod log;
mod metrics;
mod policy;
mod read;
mod response;
mod review;
mod target;
mod token;
mod update;
mod watch;

use bind::bind;
use create::create;
use decode::decode_body;
use delete::{delete, delete_collection};
use read::{get, list, scope_of, Filter};
use response::{bytes_response, store_internal};
pub(crate) use response::{json_response, ApiError};
use target::{key_of, present, resolve, target_name, Target};
use update::{load, patch_object, update};
use watch::watch;

struct Ctx {
    query: HashMap<String, String>,
    /// The authenticated user; `None` in-process, where the caller is trusted.
    user: Option<crate::serve::UserInfo>,
    /// `Warning` headers to send back (unknown fields under `fieldValidation=Warn`).
    warnings: std::sync::Mutex<Vec<String>>,
    table: bool,
    include: String,
    content_type: String,
    /// The `fieldValidation` directive (checked in `dispatch` for writes).
    field_validation: Result<FieldValidation, String>,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
}

type Res = Result<Response<ResponseBody>, ApiError>;

async fn handle<S, B>(inner: Arc<Inner<S>>, req: Request<B>) -> Res
where
    S: Store,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut authenticated = parts.extensions.get::<crate::serve::UserInfo>().cloned();
    if authenticated.is_none() {
        if let Some(crate::serve::PendingToken(t)) = parts.extensions.get() {
            authenticated = Some(token::authenticate(&inner, t).await?);
        }
    }
    let user = authorize::authorize(
        &inner,
        authenticated,
        &parts.method,
        &path,
        &query,
        &parts.headers,
    )
    .await?;
    let ctx = Ctx {
        user,
        warnings: std::sync::Mutex::new(Vec::new()),
        table: accept.contains("as=Table"),
        include: query
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into()),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
        field_validation: FieldValidation::parse(query.get("fieldValidation").map(String::as_str)),
        query,
    };
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > inner.config.max_body_bytes {
            return Err(too_large());
        }
    }
    let reg = &inner.registry;
    let target = match segs.as_slice() {
        [] => return Ok(json_response(200, &discovery::root_paths(reg))),
        ["version"] => {
            return Ok(json_response(
                200,
                &discovery::version(&inner.config.git_version),
            ))
        }
        ["healthz" | "readyz" | "livez", ..] => {
            return Ok(bytes_response(200, Bytes::from_static(b"ok"), "text/plain"))
        }
        ["openapi", "v2"] => return Ok(discovery::openapi_v2(&accept)),
        ["openapi", "v3"] => return Ok(json_response(200, &discovery::openapi_v3_root(reg))),
        ["openapi", "v3", rest @ ..] => {
            return discovery::openapi_v3_gv(reg, &rest.join("/"))
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::not_found_path)
        }
        ["api" | "apis"] if discovery::wants_aggregated(&accept) => {
            let v = discovery::aggregated(reg, segs[0] == "api");
            return Ok(bytes_response(
                200,
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                discovery::AGGREGATED_V2,
            ));
        }
        ["api"] => return Ok(json_response(200, &discovery::api_versions())),
        ["api", "v1"] => return Ok(json_response(200, &discovery::resource_list(reg, "", "v1"))),
        ["apis"] => return Ok(json_response(200, &discovery::group_list(reg))),
        ["apis", g] => {
            return discovery::group(reg, g)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::not_found_path)
        }
        ["apis", g, v] => {
            if !reg
                .group_versions()
                .iter()
                .any(|(gg, vs)| gg == g && vs.iter().any(|x| x == v))
            {
                return Err(ApiError::not_found_path());
            }
            return Ok(json_response(200, &discovery::resource_list(reg, g, v)));
        }
        ["api", "v1", rest @ ..] => resolve(reg, "", "v1", rest)?,
        ["apis", g, v, rest @ ..] => resolve(reg, g, v, rest)?,
        _ => return Err(ApiError::not_found_path()),
    };
    if matches!(
        target.sub.as_deref(),
        Some("exec" | "attach" | "portforward")
    ) {
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let raw_query = parts.uri.query().unwrap_or_default();
        return connect::connect(
            &inner,
            &target,
            &parts.method,
            raw_query,
            &parts.headers,
            on_upgrade,
        )
        .await;
    }
    let limit = inner.config.max_body_bytes;
    let read = || async move {
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Err(too_large())
                } else {
                    Err(ApiError::bad_request(format!(
                        "cannot read request body: {e}"
                    )))
                }
            }
        }
    };
    let m = parts.method;
    let res = dispatch(&inner, &target, &ctx, &m, read).await;
    if m != Method::GET && target.def.group == "rbac.authorization.k8s.io" {
        inner.authz.changed(&inner.store).await;
    }
    let warnings = ctx.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    res.map(|mut r| {
        for w in warnings {
            let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(v) = header::HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
                r.headers_mut().append(header::WARNING, v);
            }
        }
        r
    })
}

async fn dispatch<S, F, Fut>(
    inner: &Arc<Inner<S>>,
    target: &Target,
    ctx: &Ctx,
    m: &Method,
    read: F,
) -> Res
where
    S: Store,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Bytes, ApiError>>,
{
    // A namespaced resource is written only under its namespace; the all-namespaces path
    // serves list and watch.
    if target.def.namespaced && target.namespace.is_none() && m != Method::GET {
        return Err(ApiError::not_found_path());
    }
    if let Err(why) = &ctx.field_validation {
        let options = match *m {
            Method::POST => Some("CreateOptions"),
            Method::PUT => Some("UpdateOptions"),
            Method::PATCH => Some("PatchOptions"),
            _ => None,
        };
        if let Some(options) = options {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("{options}.meta.k8s.io \"\" is invalid: {why}"),
            )
            .details(json!({"group": "meta.k8s.io", "kind": options, "causes": [
                {"reason": "FieldValueNotSupported", "field": "fieldValidation",
                 "message": why.trim_start_matches("fieldValidation: ")}]})));
        }
    }
    if target.def.metrics {
        return metrics::metrics(inner, target, ctx, m).await;
    }
    if target.def.review {
        return match (m, &target.name) {
            (&Method::POST, None) => {
                let b = read().await?;
                review::review(inner, target, ctx, &b).await
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource: {m}"),
            )),
        };
    }
    match (m, &target.name, target.sub.as_deref()) {
        (&Method::POST, Some(_), Some("token")) => {
            let b = read().await?;
            token::create(inner, target, ctx, &b).await
        }
        (_, Some(_), Some("token")) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {m}"),
        )),
        (&Method::POST, Some(_), Some("binding")) => {
            let b = read().await?;
            bind(inner, target, ctx, &b).await
        }
        (_, Some(_), Some("binding")) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {m}"),
        )),
        (&Method::GET, None, _) if ctx.flag("watch") => watch(inner, target, ctx),
        (&Method::GET, None, _) => list(inner, target, ctx).await,
        (&Method::GET, Some(_), Some("log")) => log::log(inner, target, ctx).await,
        (_, Some(_), Some("log")) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {m}"),
        )),
        (&Method::GET, Some(_), sub) => get(inner, target, ctx, sub).await,
        (&Method::POST, None, _) => {
            let b = read().await?;
            create(inner, target, ctx, &b).await
        }
        (&Method::PUT, Some(_), _) => {
            let b = read().await?;
            update(inner, target, ctx, &b).await
        }
        (&Method::PATCH, Some(_), _) => {
            let b = read().await?;
            patch_object(inner, target, ctx, &b).await
        }
        (&Method::DELETE, Some(_), None) => {
            let b = read().await?;
            delete(inner, target, ctx, &b).await
        }
        (&Method::DELETE, None, None) => {
            let b = read().await?;
            delete_collection(inner, target, ctx, &b).await
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {m}"),
        )),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        "the request body is too large",
    )
}

fn render(t: &Target, ctx: &Ctx, code: u16, v: Value) -> Response<ResponseBody> {
    let v = present(t, v);
    if ctx.table {
        let rv = v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return json_response(code, &table::table(&t.def, &[v], &ctx.include, rv, None));
    }
    json_response(code, &v)
}

fn parse_body(ctx: &Ctx, b: &[u8]) -> Result<Value, ApiError> {
    if ctx.content_type.contains("protobuf") {
        // kubectl's typed clients (`kubectl create <kind>`, `expose`) send protobuf.
        return crate::protobuf::decode(b).map_err(|e| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("{e} (accepted media types include: application/json, application/yaml)"),
            )
        });
    }
    let v: Value = if ctx.content_type.contains("yaml") {
        serde_yaml::from_slice(b)
            .map_err(|e| ApiError::bad_request(format!("invalid yaml body: {e}")))?
    } else {
        serde_json::from_slice(b)
            .map_err(|e| ApiError::bad_request(format!("invalid json body: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a json object",
        ));
    }
    Ok(v)
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

fn meta_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(k))
        .and_then(Value::as_str)
}

fn set_meta(v: &mut Value, k: &str, x: Value) {
    if let Some(m) = v.as_object_mut() {
        if !m.get("metadata").is_some_and(Value::is_object) {
            m.insert("metadata".into(), json!({}));
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            if x.is_null() {
                meta.remove(k);
            } else {
                meta.insert(k.into(), x);
            }
        }
    }
}
