//! Requests about the node's pods: status and patches (restart counts never go back) and
//! deletes, only for pods bound to the node.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kubeedge_proto::{Content, Message, Operation, ResourceType, StatusError};
use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

use super::{
    decode, error_reply, forbidden, not_found, object_resp, patch_text, reply, rv_of, status_error,
    Ctx,
};
use crate::object::push;

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

pub(super) async fn patch_pod(
    ctx: &Ctx,
    node: &str,
    msg: &Message,
    ns: &str,
    name: &str,
) -> Message {
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

pub(super) async fn pod_status(
    ctx: &Ctx,
    node: &str,
    msg: &Message,
    ns: &str,
    name: &str,
) -> Message {
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

pub(super) async fn delete_pod(
    ctx: &Ctx,
    node: &str,
    msg: &Message,
    ns: &str,
    name: &str,
) -> Message {
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
}
