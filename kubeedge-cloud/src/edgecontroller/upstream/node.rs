//! The node's own requests: query, insert, update and patch of its Node, its status, and its
//! Lease.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_proto::{Content, Message, Operation, StatusError};
use serde::Deserialize;
use tracing::warn;

use super::{
    decode, error_reply, forbidden, object_resp, patch_text, reply, rv_of, status_error, Ctx,
};

pub(super) async fn query_node(ctx: &Ctx, msg: &Message, name: &str) -> Option<Message> {
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

pub(super) async fn insert_node(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if !ctx.owns(node, name) {
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
    // NodeRestriction refuses a node that sets most `kubernetes.io` labels on itself (such as
    // `node-role.kubernetes.io/edge`). As upstream does, the node creates itself without them,
    // and cloudcore adds them as itself.
    let reserved = take_kubernetes_labels(&mut n);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let created = match api.create(&PostParams::default(), &n).await {
        Ok(created) => created,
        Err(e) => return reply(msg, object_resp::<Node>(None, Some(&status_error(&e))), ""),
    };
    let created = if reserved.is_empty() {
        created
    } else {
        let patch = serde_json::json!({"metadata": {"labels": reserved}});
        let cloud: Api<Node> = Api::all(ctx.cloud.clone());
        match cloud
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(n) => n,
            Err(e) => return reply(msg, object_resp::<Node>(None, Some(&status_error(&e))), ""),
        }
    };
    let rv = rv_of(&created.metadata);
    reply(msg, object_resp(Some(&created), None), &rv)
}

/// Removes the labels in `kubernetes.io` and its subdomains from `n` and returns them.
fn take_kubernetes_labels(n: &mut Node) -> std::collections::BTreeMap<String, String> {
    let Some(labels) = n.metadata.labels.as_mut() else {
        return Default::default();
    };
    let keys: Vec<String> = labels
        .keys()
        .filter(|k| crate::object::is_kubernetes_label(k))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| labels.remove(&k).map(|v| (k, v)))
        .collect()
}

pub(super) async fn update_node(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if !ctx.owns(node, name) {
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

pub(super) async fn patch_node(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if !ctx.owns(node, name) {
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

pub(super) async fn node_status(ctx: &Ctx, node: &str, msg: &Message, name: &str) -> Message {
    if !ctx.owns(node, name) {
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

pub(super) async fn lease(
    ctx: &Ctx,
    node: &str,
    msg: &Message,
    op: &Operation,
    ns: &str,
    name: &str,
) -> Message {
    if !ctx.owns(node, name) {
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
