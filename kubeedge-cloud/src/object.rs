//! What the controllers need to know about a Kubernetes object inside a message, and how they
//! put objects into messages.

use kubeedge_proto::{Content, ContentError, Message, Operation, ResourcePath, ResourceType};
use serde::{Deserialize, Serialize};

/// The identity and version of the object in a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub(crate) struct ObjectHead {
    #[serde(default, rename = "apiVersion")]
    pub(crate) api_version: String,
    #[serde(default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) metadata: HeadMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub(crate) struct HeadMeta {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) uid: String,
    #[serde(default, rename = "resourceVersion")]
    pub(crate) resource_version: String,
    #[serde(default, rename = "deletionTimestamp")]
    pub(crate) deletion_timestamp: Option<serde_json::Value>,
}

impl ObjectHead {
    /// The head of `msg`'s content; empty when it is not an object.
    pub(crate) fn of(msg: &Message) -> Self {
        if msg.content.is_null() || msg.content.is_string() {
            return Self::default();
        }
        msg.content.decode().unwrap_or_default()
    }
}

/// Upstream `isDeleteMessage`: operation delete, or an object being deleted.
pub(crate) fn is_delete(msg: &Message, head: &ObjectHead) -> bool {
    msg.route.is_operation(&Operation::Delete) || head.metadata.deletion_timestamp.is_some()
}

/// Compare resourceVersions: numerically when both are numbers (Kubernetes' are), otherwise
/// "different means newer". Never panics, whatever the text.
pub(crate) fn newer(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => a != b,
    }
}

/// A push of `obj` (which serializes with apiVersion and kind) for the edge: source
/// `edgecontroller`, group `resource`, edge-view resource `<ns>/<type>/<name>`, header
/// resourceversion from the object.
pub(crate) fn push<T: Serialize>(
    op: Operation,
    namespace: &str,
    rtype: ResourceType,
    name: &str,
    resource_version: &str,
    obj: &T,
) -> Result<Message, ContentError> {
    push_as(
        kubeedge_proto::Source::EdgeController,
        op,
        namespace,
        rtype,
        name,
        resource_version,
        obj,
    )
}

/// [`push`] with another source (`dynamiccontroller`).
pub(crate) fn push_as<T: Serialize>(
    source: kubeedge_proto::Source,
    op: Operation,
    namespace: &str,
    rtype: ResourceType,
    name: &str,
    resource_version: &str,
    obj: &T,
) -> Result<Message, ContentError> {
    let resource = ResourcePath::object(namespace, rtype, name).to_string();
    let route = kubeedge_proto::Route::new(source, kubeedge_proto::Group::Resource, op, resource);
    Ok(Message::new(route, Content::json(obj)?).with_resource_version(resource_version))
}

/// Whether a label key is in `kubernetes.io` or one of its subdomains: the labels
/// NodeRestriction keeps a node from setting on itself (most of them), which upstream's
/// cloudcore adds as itself after the node registered (`createNode`).
pub(crate) fn is_kubernetes_label(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(ns, _)| ns == "kubernetes.io" || ns.ends_with(".kubernetes.io"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_compare_without_panicking() {
        assert!(newer("10", "9"));
        assert!(!newer("9", "10"));
        assert!(!newer("5", "5"));
        assert!(newer("abc", "5"));
        assert!(!newer("abc", "abc"));
        assert!(newer("", "1"));
        assert!(newer("18446744073709551616", "1"));
    }

    #[test]
    fn heads_of_odd_content() {
        let m = Message::new(kubeedge_proto::Route::default(), Content::string("OK"));
        assert_eq!(ObjectHead::of(&m), ObjectHead::default());
        let m = Message::new(
            kubeedge_proto::Route::default(),
            Content::from_json_text(r#"{"metadata":{"uid":7}}"#.into()).expect("json"),
        );
        assert_eq!(ObjectHead::of(&m), ObjectHead::default());
    }
}
