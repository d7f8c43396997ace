//! What edges send the edge controller (PROTOCOL.md §4.2), with upstream's replies: node
//! register/update/status, leases, pod status (never lowering a container's restartCount,
//! upstream #4627), pod deletion, and configmap/secret/node/lease/serviceaccount-token/volume
//! queries, and events.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, PostParams};
use kubeedge_proto::{
    Compat, Content, Group, Message, Operation, ResourcePath, ResourceType, Route, Source,
    StatusError,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, warn};

use super::state::State;
use crate::synccontroller::SyncHandle;

mod events;
mod node;
mod pod;

use node::{insert_node, lease, node_status, patch_node, query_node, update_node};
use pod::{delete_pod, patch_pod, pod_status};

/// What the handlers use.
pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    /// cloudcore's own client, never acting as a node (for what upstream does as itself).
    pub(crate) cloud: kube::Client,
    pub(crate) sync: SyncHandle,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) compat: Compat,
    /// Run each node's requests as that node.
    pub(crate) impersonate: bool,
}

impl Ctx {
    /// This context with a client acting as `node` (when impersonating).
    fn for_node(&self, node: &str) -> Self {
        Self {
            client: if self.impersonate {
                crate::impersonate::as_node(&self.client, node)
            } else {
                self.client.clone()
            },
            cloud: self.cloud.clone(),
            sync: self.sync.clone(),
            state: Arc::clone(&self.state),
            compat: self.compat,
            impersonate: self.impersonate,
        }
    }

    /// Whether `node` may change the object `name` of its own kind here, checked before the
    /// API is asked. With impersonation the API server decides (with Kubernetes' message).
    fn owns(&self, node: &str, name: &str) -> bool {
        self.impersonate || name == node
    }

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
    let node_ctx = ctx.for_node(node);
    let ctx = &node_ctx;
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

/// The patch text of a `nodepatch`/`podpatch` message: a JSON string holding JSON (an object
/// is accepted too).
fn patch_text(msg: &Message) -> Result<Value, String> {
    if let Some(s) = msg.content.as_str() {
        return serde_json::from_str(&s).map_err(|e| format!("invalid patch: {e}"));
    }
    serde_json::from_str(msg.content.raw_json()).map_err(|e| format!("invalid patch: {e}"))
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
