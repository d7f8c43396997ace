//! What an edge node sends the cloud about itself, as upstream's edged sends it to the
//! MetaManager and on to the cloud's EdgeController (PROTOCOL.md §4.2; upstream
//! `edge/pkg/edged/edged.go` and `pkg/metaclient/node.go`, `pod.go`): source `edged`, group
//! `meta`, and a resource of `<namespace>/<kind>/<name>`. Send each as a request: the cloud
//! answers with the object, or with an error whose content names the API's refusal.

use crate::{Content, Group, Message, Operation, Route, Source};

/// A message from edged to the meta group: `op` on `resource`.
pub fn edged(op: Operation, resource: impl Into<String>, content: Content) -> Message {
    Message::new(
        Route::new(Source::Edged, Group::Meta, op, resource),
        content,
    )
}

/// Register node `name`: `node` is the whole Node object as JSON (name, labels, status), and
/// `namespace` edged's `registerNamespace` (`default`). An existing node is answered
/// `AlreadyExists`, which a re-registering node treats as success.
pub fn node_insert(
    namespace: &str,
    name: &str,
    node: &serde_json::Value,
) -> Result<Message, crate::ContentError> {
    Ok(edged(
        Operation::Insert,
        format!("{namespace}/node/{name}"),
        Content::json(node)?,
    ))
}

/// Patch node `name` with a strategic-merge `patch` such as `{"status": {...}}` (the node's
/// conditions, addresses, capacity).
pub fn node_patch(namespace: &str, name: &str, patch: &serde_json::Value) -> Message {
    edged(
        Operation::Patch,
        format!("{namespace}/nodepatch/{name}"),
        Content::string(&patch.to_string()),
    )
}

/// Patch the status of pod `namespace/name` whose uid is `uid` (the cloud refuses a patch for
/// another incarnation of the pod). `status` is a `PodStatus` as JSON.
pub fn pod_patch(namespace: &str, name: &str, uid: &str, status: &serde_json::Value) -> Message {
    let patch = serde_json::json!({"metadata": {"uid": uid}, "status": status});
    edged(
        Operation::Patch,
        format!("{namespace}/podpatch/{name}"),
        Content::string(&patch.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_upstreams() {
        let m = pod_patch(
            "default",
            "web",
            "u1",
            &serde_json::json!({"phase": "Running"}),
        );
        assert_eq!(m.route.resource, "default/podpatch/web");
        assert_eq!(m.route.source_str(), "edged");
        assert_eq!(m.route.group_str(), "meta");
        assert_eq!(m.route.operation_str(), "patch");
        let n =
            node_insert("default", "edge-1", &serde_json::json!({"kind": "Node"})).expect("json");
        assert_eq!(n.route.resource, "default/node/edge-1");
        assert_eq!(n.route.operation_str(), "insert");
        assert_eq!(
            node_patch("default", "edge-1", &serde_json::json!({}))
                .route
                .resource,
            "default/nodepatch/edge-1"
        );
    }
}
