//! What edges send the edge controller (PROTOCOL.md §4.2), with upstream's replies: node
//! register/update/status, leases, pod status (never lowering a container's restartCount,
//! upstream #4627), pod deletion, and configmap/secret/node/lease/serviceaccount-token/volume
//! queries, and events.

mod events;

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus, Secret,
    ServiceAccount,
};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kubeedge_proto::{
    Compat, Content, Group, Message, Operation, ResourcePath, ResourceType, Route, Source,
    StatusError,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, warn};

use super::state::State;
use crate::object::push;
use crate::synccontroller::SyncHandle;

/// What the handlers use.
pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) sync: SyncHandle,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) compat: Compat,
}

impl Ctx {
    fn cached_pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pod(ns, name)
    }
}

/// Upstream's `ObjectResp{Object, Err}` (no JSON tags: capitalised keys).
fn object_resp<T: Serialize>(obj: Option<&T>, err: Option<&StatusError>) -> Content {
    let obj = obj
        .and_then(|o| serde_json::to_string(o).ok())
        .unwrap_or_else(|| "null".to_owned());
    let err = err
        .and_then(|e| serde_json::to_string(e).ok())
        .unwrap_or_else(|| "null".to_owned());
    Content::from_json_text(format!(r#"{{"Object":{obj},"Err":{err}}}"#))
        .unwrap_or_else(|_| Content::null())
}

/// A reply as upstream's edge controller builds it: parent = request, source
/// `edgecontroller`, group `resource`, operation `response`, the request's resource.
fn reply(req: &Message, content: Content, rv: &str) -> Message {
    Message::new(
        Route::new(
            Source::EdgeController,
            Group::Resource,
            Operation::Response,
            req.route.resource.clone(),
        ),
        content,
    )
    .with_parent(req.id().clone())
    .with_resource_version(rv)
}

fn rv_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
}

/// A Kubernetes error as the `StatusError` Go's client returns.
pub(crate) fn status_error(e: &kube::Error) -> StatusError {
    match e {
        kube::Error::Api(s) => {
            let mut err =
                StatusError::failure(i32::from(s.code), s.reason.clone(), s.message.clone());
            err.err_status.details = s
                .details
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok());
            err
        }
        other => StatusError::failure(500, "InternalError", other.to_string()),
    }
}

fn not_found(what: &str, name: &str) -> StatusError {
    StatusError::failure(404, "NotFound", format!("{what} \"{name}\" not found"))
}

fn forbidden(node: &str, what: &str) -> StatusError {
    StatusError::failure(
        403,
        "Forbidden",
        format!("node {node:?} may not change {what}"),
    )
}

fn decode<T: DeserializeOwned>(msg: &Message) -> Result<T, String> {
    msg.content.decode().map_err(|e| e.to_string())
}

fn error_reply(ctx: &Ctx, req: &Message, text: &str) -> Message {
    req.error_reply(text, ctx.compat)
}

/// Handle one message from `node`; the reply (if any) goes back to it.
pub(crate) async fn handle(ctx: &Ctx, node: &str, msg: &Message) -> Option<Message> {
    let path = ResourcePath::parse(&msg.route.resource);
    let ns = path.namespace().unwrap_or_default().to_owned();
    let name = path.name().unwrap_or_default().to_owned();
    let Some(rtype) = path.resource_type() else {
        debug!(%node, resource = %msg.route.resource, "not an object message");
        return None;
    };
    let op = msg
        .route
        .operation
        .clone()
        .unwrap_or(Operation::Unknown(String::new()));
    match (rtype, &op) {
        (ResourceType::Node, Operation::Query) => query_node(ctx, msg, &name).await,
        (ResourceType::Node, Operation::Insert) => Some(insert_node(ctx, node, msg, &name).await),
        (ResourceType::Node, Operation::Update) => Some(update_node(ctx, node, msg, &name).await),
        (ResourceType::NodePatch, Operation::Patch) => {
            Some(patch_node(ctx, node, msg, &name).await)
        }
        (ResourceType::NodeStatus, Operation::Update | Operation::Insert) => {
            Some(node_status(ctx, node, msg, &name).await)
        }
        (ResourceType::Lease, Operation::Query | Operation::Insert | Operation::Update) => {
            Some(lease(ctx, node, msg, &op, &ns, &name).await)
        }
        (ResourceType::PodPatch, Operation::Patch) => {
            Some(patch_pod(ctx, node, msg, &ns, &name).await)
        }
        (ResourceType::PodStatus, Operation::Update | Operation::Insert) => {
            Some(pod_status(ctx, node, msg, &ns, &name).await)
        }
        (ResourceType::Pod, Operation::Delete) => {
            Some(delete_pod(ctx, node, msg, &ns, &name).await)
        }
        (ResourceType::Event, Operation::Insert | Operation::Update) => {
            Some(events::event(ctx, node, msg, &ns, &name).await)
        }
        (ResourceType::ConfigMap, Operation::Query) => {
            query_object(
                msg,
                Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
                &name,
            )
            .await
        }
        (ResourceType::Secret, Operation::Query) => {
            query_object(
                msg,
                Api::<Secret>::namespaced(ctx.client.clone(), &ns),
                &name,
            )
            .await
        }
        (ResourceType::PersistentVolume, Operation::Query) => {
            query_object(msg, Api::<PersistentVolume>::all(ctx.client.clone()), &name).await
        }
        (ResourceType::PersistentVolumeClaim, Operation::Query) => {
            query_object(
                msg,
                Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns),
                &name,
            )
            .await
        }
        (ResourceType::VolumeAttachment, Operation::Query) => {
            query_object(msg, Api::<VolumeAttachment>::all(ctx.client.clone()), &name).await
        }
        (ResourceType::ServiceAccountToken, Operation::Query) => {
            Some(sa_token(ctx, msg, &ns, &name).await)
        }
        (_, Operation::Response | Operation::Error) => {
            debug!(%node, resource = %msg.route.resource, content = ?msg.content, "edge reply with no waiter");
            None
        }
        _ => {
            debug!(%node, op = %op, resource = %msg.route.resource, "unhandled edge message");
            None
        }
    }
}

async fn query_node(ctx: &Ctx, msg: &Message, name: &str) -> Option<Message> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api.get_opt(name).await {
        // Upstream: the bare object; nothing at all when it does not exist.
        Ok(Some(n)) => Content::json(&n)
            .ok()
            .map(|c| reply(msg, c, &rv_of(&n.metadata))),
        Ok(None) => None,
        Err(e) => {
            warn!(node = name, error = %e, "node query failed");
            None
        }
    }
}

async fn insert_node(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if name != node {
        return reply(
            msg,
            object_resp::<Node>(None, Some(&forbidden(node, name))),
            "",
        );
    }
    let mut n: Node = match decode(msg) {
        Ok(n) => n,
        Err(e) => return error_reply(ctx, msg, &format!("invalid node: {e}")),
    };
    n.metadata.resource_version = None;
    n.metadata.name = Some(name.to_owned());
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &n).await {
        Ok(created) => {
            let rv = rv_of(&created.metadata);
            reply(msg, object_resp(Some(&created), None), &rv)
        }
        Err(e) => reply(msg, object_resp::<Node>(None, Some(&status_error(&e))), ""),
    }
}

async fn update_node(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if name != node {
        return error_reply(ctx, msg, &forbidden(node, name).err_status.message);
    }
    let n: Node = match decode(msg) {
        Ok(n) => n,
        Err(e) => return error_reply(ctx, msg, &format!("invalid node: {e}")),
    };
    // Upstream merges only labels and annotations from the edge.
    let patch = serde_json::json!({"metadata": {
        "labels": n.metadata.labels.unwrap_or_default(),
        "annotations": n.metadata.annotations.unwrap_or_default(),
    }});
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(updated) => reply(msg, Content::string("OK"), &rv_of(&updated.metadata)),
        Err(e) => error_reply(ctx, msg, &e.to_string()),
    }
}

/// The patch text of a `nodepatch`/`podpatch` message: a JSON string holding JSON (an object
/// is accepted too).
fn patch_text(msg: &Message) -> Result<Value, String> {
    if let Some(s) = msg.content.as_str() {
        return serde_json::from_str(&s).map_err(|e| format!("invalid patch: {e}"));
    }
    serde_json::from_str(msg.content.raw_json()).map_err(|e| format!("invalid patch: {e}"))
}

async fn patch_node(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if name != node {
        return reply(
            msg,
            object_resp::<Node>(None, Some(&forbidden(node, name))),
            "",
        );
    }
    let patch = match patch_text(msg) {
        Ok(p) => p,
        Err(e) => {
            let err = StatusError::failure(400, "BadRequest", e);
            return reply(msg, object_resp::<Node>(None, Some(&err)), "");
        }
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(n) => {
            let rv = rv_of(&n.metadata);
            reply(msg, object_resp(Some(&n), None), &rv)
        }
        Err(e) => reply(msg, object_resp::<Node>(None, Some(&status_error(&e))), ""),
    }
}

/// Upstream `NodeStatusRequest` (no JSON tags).
#[derive(Deserialize)]
struct NodeStatusRequest {
    #[serde(rename = "Status", default)]
    status: Option<k8s_openapi::api::core::v1::NodeStatus>,
}

async fn node_status(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if name != node {
        return error_reply(ctx, msg, &forbidden(node, name).err_status.message);
    }
    let req: NodeStatusRequest = match decode(msg) {
        Ok(r) => r,
        Err(e) => return error_reply(ctx, msg, &format!("invalid node status: {e}")),
    };
    let patch = serde_json::json!({"status": req.status.unwrap_or_default()});
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(n) => reply(msg, Content::string("OK"), &rv_of(&n.metadata)),
        Err(e) => error_reply(ctx, msg, &e.to_string()),
    }
}

async fn lease(
    ctx: &Ctx,
    node: &str,
    msg: &Message,
    op: &Operation,
    ns: &str,
    name: &str,
) -> Message {
    if name != node {
        return reply(
            msg,
            object_resp::<Lease>(None, Some(&forbidden(node, name))),
            "",
        );
    }
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let result = match op {
        Operation::Query => api.get_opt(name).await.and_then(|l| {
            l.ok_or_else(|| kube::Error::Api(Box::new(api_not_found("leases", name))))
        }),
        Operation::Insert | Operation::Update => {
            let mut l: Lease = match decode(msg) {
                Ok(l) => l,
                Err(e) => return error_reply(ctx, msg, &format!("invalid lease: {e}")),
            };
            l.metadata.name = Some(name.to_owned());
            l.metadata.namespace = Some(ns.to_owned());
            if *op == Operation::Insert {
                l.metadata.resource_version = None;
                api.create(&PostParams::default(), &l).await
            } else {
                api.replace(name, &PostParams::default(), &l).await
            }
        }
        _ => return error_reply(ctx, msg, "unsupported lease operation"),
    };
    match result {
        Ok(l) => {
            let rv = rv_of(&l.metadata);
            reply(msg, object_resp(Some(&l), None), &rv)
        }
        Err(e) => reply(msg, object_resp::<Lease>(None, Some(&status_error(&e))), ""),
    }
}

fn api_not_found(what: &str, name: &str) -> kube::core::Status {
    kube::core::Status::failure(&format!("{what} \"{name}\" not found"), "NotFound").with_code(404)
}

/// The pod `node` may write: bound to it. `Err` carries the reply-worthy status. `fresh`
/// reads the API rather than the watch cache (status writes compare against it).
async fn bound_pod(
    ctx: &Ctx,
    node: &str,
    ns: &str,
    name: &str,
    fresh: bool,
) -> Result<Pod, StatusError> {
    let cached = if fresh {
        None
    } else {
        ctx.cached_pod(ns, name)
    };
    let pod = match cached {
        Some(p) => (*p).clone(),
        None => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            match api.get_opt(name).await {
                Ok(Some(p)) => p,
                Ok(None) => return Err(not_found("pods", name)),
                Err(e) => return Err(status_error(&e)),
            }
        }
    };
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if bound != Some(node) {
        return Err(forbidden(node, &format!("pod {ns}/{name}")));
    }
    Ok(pod)
}

/// Raise every `restartCount` in `statuses` (a JSON array of container statuses) that is
/// lower than what `current` already records for that container: counts never go back, so
/// an edge that lost its counters (restart, upstream #4627) cannot reset them.
fn keep_restart_counts(
    statuses: Option<&mut Value>,
    current: &[k8s_openapi::api::core::v1::ContainerStatus],
) {
    let Some(Value::Array(items)) = statuses else {
        return;
    };
    for item in items {
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(known) = current
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.restart_count)
        else {
            continue;
        };
        let sent = obj.get("restartCount").and_then(Value::as_i64);
        if sent.is_some_and(|n| n < i64::from(known)) {
            obj.insert("restartCount".into(), Value::from(known));
        }
    }
}

fn guard_restart_counts(patch: &mut Value, current: Option<&PodStatus>) {
    let Some(current) = current else { return };
    let Some(status) = patch.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    keep_restart_counts(
        status.get_mut("containerStatuses"),
        current.container_statuses.as_deref().unwrap_or_default(),
    );
    keep_restart_counts(
        status.get_mut("initContainerStatuses"),
        current
            .init_container_statuses
            .as_deref()
            .unwrap_or_default(),
    );
    keep_restart_counts(
        status.get_mut("ephemeralContainerStatuses"),
        current
            .ephemeral_container_statuses
            .as_deref()
            .unwrap_or_default(),
    );
}

/// The cloud pod is gone or is another object: tell the edge to delete its copy.
async fn delete_on_edge(ctx: &Ctx, node: &str, ns: &str, name: &str, uid: &str) {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
    });
    match push(Operation::Delete, ns, ResourceType::Pod, name, "", &pod) {
        Ok(m) => {
            if let Err(e) = ctx.sync.send(node, m).await {
                debug!(%node, error = %e, "stale pod delete not sent");
            }
        }
        Err(e) => debug!(error = %e, "stale pod delete not encoded"),
    }
}

fn uid_in(v: &Value) -> Option<String> {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

async fn patch_pod(ctx: &Ctx, node: &str, msg: &Message, ns: &str, name: &str) -> Message {
    let mut patch = match patch_text(msg) {
        Ok(p) => p,
        Err(e) => {
            let err = StatusError::failure(400, "BadRequest", e);
            return reply(msg, object_resp::<Pod>(None, Some(&err)), "");
        }
    };
    let sent_uid = uid_in(&patch);
    let pod = match bound_pod(ctx, node, ns, name, true).await {
        Ok(p) => p,
        Err(err) => {
            if err.err_status.code == 404 {
                if let Some(uid) = &sent_uid {
                    delete_on_edge(ctx, node, ns, name, uid).await;
                }
            }
            return reply(msg, object_resp::<Pod>(None, Some(&err)), "");
        }
    };
    if let (Some(sent), Some(live)) = (&sent_uid, &pod.metadata.uid) {
        if sent != live {
            delete_on_edge(ctx, node, ns, name, sent).await;
            let err = not_found("pods", name);
            return reply(msg, object_resp::<Pod>(None, Some(&err)), "");
        }
    }
    guard_restart_counts(&mut patch, pod.status.as_ref());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(p) => {
            let rv = rv_of(&p.metadata);
            reply(msg, object_resp(Some(&p), None), &rv)
        }
        Err(e) => reply(msg, object_resp::<Pod>(None, Some(&status_error(&e))), ""),
    }
}

/// Upstream `PodStatusRequest` (no JSON tags).
#[derive(Deserialize)]
struct PodStatusRequest {
    #[serde(rename = "UID", default)]
    uid: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Status", default)]
    status: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PodStatusRequests {
    One(PodStatusRequest),
    Many(Vec<PodStatusRequest>),
}

async fn pod_status(ctx: &Ctx, node: &str, msg: &Message, ns: &str, name: &str) -> Message {
    let reqs = match decode::<PodStatusRequests>(msg) {
        Ok(PodStatusRequests::One(r)) => vec![r],
        Ok(PodStatusRequests::Many(v)) => v,
        Err(e) => return error_reply(ctx, msg, &format!("invalid pod status: {e}")),
    };
    for r in reqs {
        let pod_name = if r.name.is_empty() { name } else { &r.name };
        let pod = match bound_pod(ctx, node, ns, pod_name, true).await {
            Ok(p) => p,
            Err(err) => {
                if err.err_status.code == 404 && !r.uid.is_empty() {
                    delete_on_edge(ctx, node, ns, pod_name, &r.uid).await;
                }
                continue;
            }
        };
        if !r.uid.is_empty() && pod.metadata.uid.as_deref() != Some(r.uid.as_str()) {
            delete_on_edge(ctx, node, ns, pod_name, &r.uid).await;
            continue;
        }
        let mut patch = serde_json::json!({"status": r.status});
        guard_restart_counts(&mut patch, pod.status.as_ref());
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        if let Err(e) = api
            .patch_status(pod_name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            return error_reply(ctx, msg, &e.to_string());
        }
    }
    reply(msg, Content::string("OK"), "")
}

async fn delete_pod(ctx: &Ctx, node: &str, msg: &Message, ns: &str, name: &str) -> Message {
    // A bare UID string: delete now, only that object. Otherwise DeleteOptions.
    let mut dp = DeleteParams::default();
    if let Some(uid) = msg.content.as_str() {
        dp.grace_period_seconds = Some(0);
        dp.preconditions = Some(Preconditions {
            uid: Some(uid.into_owned()),
            resource_version: None,
        });
    } else if !msg.content.is_null() {
        let opts: Value = match decode(msg) {
            Ok(v) => v,
            Err(e) => return error_reply(ctx, msg, &format!("invalid delete options: {e}")),
        };
        dp.grace_period_seconds = opts
            .get("gracePeriodSeconds")
            .and_then(Value::as_u64)
            .map(|g| u32::try_from(g).unwrap_or(u32::MAX));
        if let Some(p) = opts.get("preconditions") {
            dp.preconditions = Some(Preconditions {
                uid: p.get("uid").and_then(Value::as_str).map(str::to_owned),
                resource_version: p
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
    }
    match bound_pod(ctx, node, ns, name, false).await {
        Ok(_) => {}
        Err(e) if e.err_status.code == 404 => return reply(msg, Content::string("OK"), ""),
        Err(e) => return error_reply(ctx, msg, &e.err_status.message),
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &dp).await {
        Ok(_) => reply(msg, Content::string("OK"), ""),
        Err(kube::Error::Api(s)) if s.code == 404 => reply(msg, Content::string("OK"), ""),
        Err(e) => error_reply(ctx, msg, &e.to_string()),
    }
}

async fn query_object<K>(msg: &Message, api: Api<K>, name: &str) -> Option<Message>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.get_opt(name).await {
        // Upstream answers with the object (ACK-mode) and stays silent when it is missing:
        // anything else would be stored as the object by an upstream edge.
        Ok(Some(obj)) => {
            let rv = obj.meta().resource_version.clone().unwrap_or_default();
            Content::json(&obj).ok().map(|c| reply(msg, c, &rv))
        }
        Ok(None) => None,
        Err(e) => {
            warn!(object = name, error = %e, "query failed");
            None
        }
    }
}

async fn sa_token(ctx: &Ctx, msg: &Message, ns: &str, sa: &str) -> Message {
    let req: TokenRequest = match decode(msg) {
        Ok(r) => r,
        Err(e) => return error_reply(ctx, msg, &format!("invalid token request: {e}")),
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .create_token_request(sa, &PostParams::default(), &req)
        .await
    {
        Ok(tr) => match Content::json(&tr) {
            Ok(c) => reply(msg, c, ""),
            Err(e) => error_reply(ctx, msg, &e.to_string()),
        },
        Err(e) => error_reply(ctx, msg, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_counts_never_go_back() {
        let current: PodStatus = serde_json::from_value(serde_json::json!({
            "containerStatuses": [
                {"name": "a", "restartCount": 5, "image": "", "imageID": "", "ready": true},
                {"name": "b", "restartCount": 1, "image": "", "imageID": "", "ready": true}
            ]
        }))
        .expect("status");
        let mut patch = serde_json::json!({"status": {"containerStatuses": [
            {"name": "a", "restartCount": 0},
            {"name": "b", "restartCount": 3},
            {"name": "new", "restartCount": 0},
            {"name": "a"},
            "junk"
        ]}});
        guard_restart_counts(&mut patch, Some(&current));
        let s = &patch["status"]["containerStatuses"];
        assert_eq!(s[0]["restartCount"], 5);
        assert_eq!(s[1]["restartCount"], 3);
        assert_eq!(s[2]["restartCount"], 0);
        assert!(s[3].get("restartCount").is_none(), "absent stays absent");
    }

    #[test]
    fn object_resp_shape() {
        let c = object_resp::<Value>(None, None);
        assert_eq!(c.raw_json(), r#"{"Object":null,"Err":null}"#);
        let err = StatusError::failure(409, "AlreadyExists", "x");
        let c = object_resp(Some(&serde_json::json!({"kind": "Node"})), Some(&err));
        assert_eq!(
            c.raw_json(),
            r#"{"Object":{"kind":"Node"},"Err":{"ErrStatus":{"metadata":{},"status":"Failure","message":"x","reason":"AlreadyExists","code":409}}}"#
        );
    }
}
