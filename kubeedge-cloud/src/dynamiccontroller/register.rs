//! A node registering itself through an Application (`create` of `/core/v1/nodes`, as an
//! upstream v1.22 edged does). Run as the node, NodeRestriction refuses most `kubernetes.io`
//! labels (`node-role.kubernetes.io/edge` among them), so, as upstream's edgecontroller does
//! for its `insert` (`createNode`), the node creates itself without them and cloudcore adds
//! them as itself.

use kubeedge_proto::{Application, ApplicationKey, ApplicationVerb};
use serde_json::{Map, Value};

use super::request::Call;

/// For a node's create of its Node: takes the `kubernetes.io` labels out of `call`'s body and
/// returns them with the Node's name. `None` for any other call, or when there are none.
pub(super) fn split_labels(
    app: &Application,
    key: &ApplicationKey,
    call: &mut Call,
) -> Option<(String, Map<String, Value>)> {
    if app.verb != ApplicationVerb::Create
        || !app.subresource.is_empty()
        || !key.is_core()
        || key.resource != "nodes"
    {
        return None;
    }
    let mut node: Value = serde_json::from_slice(&call.body).ok()?;
    let name = node.pointer("/metadata/name")?.as_str()?.to_owned();
    let labels = node
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)?;
    let reserved: Vec<String> = labels
        .keys()
        .filter(|k| crate::object::is_kubernetes_label(k))
        .cloned()
        .collect();
    if reserved.is_empty() {
        return None;
    }
    let taken: Map<String, Value> = reserved
        .into_iter()
        .filter_map(|k| labels.remove(&k).map(|v| (k, v)))
        .collect();
    call.body = serde_json::to_vec(&node).ok()?;
    Some((name, taken))
}

/// The merge patch that adds `labels` back.
pub(super) fn labels_patch(name: &str, labels: Map<String, Value>) -> Call {
    Call {
        method: http::Method::PATCH,
        uri: format!(
            "/api/v1/nodes/{}",
            form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
        ),
        content_type: Some("application/merge-patch+json".to_owned()),
        body: serde_json::json!({"metadata": {"labels": labels}})
            .to_string()
            .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_node_create_with_reserved_labels_is_split() {
        let node = serde_json::json!({"metadata": {"name": "n", "labels": {
            "node-role.kubernetes.io/edge": "", "kubernetes.io/hostname": "n", "team": "a"}}});
        let mut app = Application::new("/core/v1/nodes/null/null", ApplicationVerb::Create, "n");
        app.set_req_body(&node).expect("body");
        let key = app.parsed_key().expect("key");
        let mut call = super::super::request::call(&app, &key).expect("call");
        let (name, taken) = split_labels(&app, &key, &mut call).expect("split");
        assert_eq!(name, "n");
        assert_eq!(taken.len(), 2);
        let left: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(left["metadata"]["labels"], serde_json::json!({"team": "a"}));
        let patch = labels_patch(&name, taken);
        assert_eq!(patch.uri, "/api/v1/nodes/n");

        let cm = Application::new(
            "/core/v1/configmaps/default/null",
            ApplicationVerb::Create,
            "n",
        );
        let key = cm.parsed_key().expect("key");
        let mut call = super::super::request::call(&cm, &key).expect("call");
        assert!(split_labels(&cm, &key, &mut call).is_none());
    }
}
