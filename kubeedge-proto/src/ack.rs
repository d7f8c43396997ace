//! Which cloud-to-edge messages need an ack (PROTOCOL.md §2.4).

use crate::message::{Compat, Message};
use crate::names::{Group, Operation, ResourceType, Source};
use crate::resource::ResourcePath;

/// How cloudhub delivers a downstream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// Resent until the edge answers with a `response` whose parent is the message id.
    Ack,
    /// Written once and forgotten.
    NoAck,
}

/// Classify a cloud-to-edge message (cloud or edge view) as upstream cloudhub's
/// `noAckRequired` does.
///
/// `Compat::Latest` follows upstream HEAD. The v1.12 differences: no `k8s/ca.crt`,
/// `taskmanager`, `certificatesigningrequest` or pod-`response` rules, and a node `update`
/// from the edge controller is NO-ACK (HEAD acks it). Upstream HEAD also skips the ack for
/// responses carrying a Go `error` value; that value never survives JSON, so it has no wire
/// form to classify.
pub fn ack_mode(msg: &Message, compat: Compat) -> AckMode {
    if no_ack_required(msg, compat) {
        AckMode::NoAck
    } else {
        AckMode::Ack
    }
}

fn no_ack_required(msg: &Message, compat: Compat) -> bool {
    let latest = compat == Compat::Latest;
    let route = &msg.route;
    // Upstream matches these as substrings of the raw resource string.
    let resource = route.resource.as_str();
    let substring_rule = [
        "podlist",
        "membership",
        "twin/cloud_updated",
        "serviceaccounttoken",
    ]
    .iter()
    .any(|needle| resource.contains(needle));
    if substring_rule || (latest && resource.contains("k8s/ca.crt")) {
        return true;
    }
    let op = route.operation.as_ref();
    if op.is_some_and(Operation::is_volume)
        || op == Some(&Operation::ApplicationResponse)
        || route.group == Some(Group::User)
        || route.source == Some(Source::NodeUpgradeJobController)
        || (latest && route.source == Some(Source::TaskManager))
    {
        return true;
    }
    if op == Some(&Operation::Response)
        && msg.content.as_str().as_deref() == Some(crate::ACK_CONTENT)
    {
        return true;
    }
    if route.source != Some(Source::EdgeController) {
        return false;
    }
    let path = ResourcePath::parse(resource);
    match path.resource_type() {
        Some(ResourceType::Node) => !(latest && op == Some(&Operation::Update)),
        Some(
            ResourceType::Lease
            | ResourceType::NodePatch
            | ResourceType::PodPatch
            | ResourceType::PodStatus,
        ) => true,
        Some(ResourceType::CertificateSigningRequest) => latest,
        Some(ResourceType::Pod) => latest && op == Some(&Operation::Response),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Content, Route};

    fn msg(source: &str, group: &str, op: &str, resource: &str, content: Content) -> Message {
        Message::new(Route::new(source, group, op, resource), content)
    }

    #[test]
    fn classification() {
        let n = Content::null();
        let ok = Content::string("OK");
        let cases = [
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "insert",
                    "node/e/default/pod/p",
                    n.clone(),
                ),
                AckMode::Ack,
                AckMode::Ack,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "update",
                    "default/configmap/c",
                    n.clone(),
                ),
                AckMode::Ack,
                AckMode::Ack,
            ),
            (
                msg(
                    "devicecontroller",
                    "twin",
                    "update",
                    "node/e/membership",
                    n.clone(),
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
            (
                msg(
                    "devicecontroller",
                    "twin",
                    "update",
                    "device/d/twin/cloud_updated",
                    n.clone(),
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
            (
                msg(
                    "devicecontroller",
                    "resource",
                    "insert",
                    "default/device/d",
                    n.clone(),
                ),
                AckMode::Ack,
                AckMode::Ack,
            ),
            (
                msg(
                    "dynamiccontroller",
                    "resource",
                    "applicationResponse",
                    "ignore/Application/ignore",
                    n.clone(),
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "response",
                    "default/nodepatch/e",
                    n.clone(),
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "response",
                    "default/configmap/c",
                    n.clone(),
                ),
                AckMode::Ack,
                AckMode::Ack,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "response",
                    "default/node/e",
                    ok.clone(),
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "update",
                    "default/node/e",
                    n.clone(),
                ),
                AckMode::NoAck,
                AckMode::Ack,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "response",
                    "default/pod/p",
                    n.clone(),
                ),
                AckMode::Ack,
                AckMode::NoAck,
            ),
            (
                msg(
                    "router_eventbus",
                    "user",
                    "publish",
                    "default/topic",
                    n.clone(),
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
            (
                msg("cloudhub", "resource", "response", "k8s/ca.crt", n.clone()),
                AckMode::Ack,
                AckMode::NoAck,
            ),
            (
                msg(
                    "edgecontroller",
                    "resource",
                    "createvolume",
                    "default/volume/v",
                    n,
                ),
                AckMode::NoAck,
                AckMode::NoAck,
            ),
        ];
        for (m, v12, latest) in cases {
            assert_eq!(ack_mode(&m, Compat::V1_12), v12, "v1.12 {:?}", m.route);
            assert_eq!(ack_mode(&m, Compat::Latest), latest, "latest {:?}", m.route);
        }
    }
}
