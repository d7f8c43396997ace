//! `route.resource` strings (PROTOCOL.md §1.5). [`ResourcePath`] is the only parser of them in
//! the workspace: everything else works on the typed form.

use std::fmt;
use std::str::FromStr;

use crate::error::ResourceError;
use crate::names::ResourceType;

/// A device identity: a bare id (v1.12–v1.16) or `<namespace>/<name>` (v1.17+).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceRef {
    /// `<id>` as v1.12 used it.
    Legacy(String),
    /// `<namespace>/<name>` as v1.17 and later use it.
    Namespaced {
        /// The Device's namespace.
        namespace: String,
        /// The Device's name.
        name: String,
    },
}

impl DeviceRef {
    /// The device id as it appears in payloads (`<id>` or `<namespace>/<name>`).
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// The device name (the last segment).
    pub fn name(&self) -> &str {
        match self {
            Self::Legacy(id) => id,
            Self::Namespaced { name, .. } => name,
        }
    }

    /// The id from a payload: `ns/name` is namespaced, anything else a legacy id.
    pub fn from_id(id: &str) -> Self {
        match id.split_once('/') {
            Some((ns, name)) if !name.contains('/') => Self::Namespaced {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            },
            _ => Self::Legacy(id.to_owned()),
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Legacy(id) => f.write_str(id),
            Self::Namespaced { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}

/// The last segment of `device/<id>/twin/<event>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TwinEvent {
    /// `cloud_updated`: desired values pushed by the cloud.
    CloudUpdated,
    /// `edge_updated`: reported values sent by the edge.
    EdgeUpdated,
    /// Anything else, verbatim.
    Unknown(String),
}

impl TwinEvent {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::CloudUpdated => "cloud_updated",
            Self::EdgeUpdated => "edge_updated",
            Self::Unknown(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "cloud_updated" => Self::CloudUpdated,
            "edge_updated" => Self::EdgeUpdated,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

/// What a resource string names, once a `node/<id>/` prefix is taken off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// `<namespace>/<type>/<name>` or `<namespace>/<type>` (upstream's 3- and 2-token forms).
    Object {
        /// The namespace token (`default`, `null` for cluster-scoped dynamic objects, …).
        namespace: String,
        /// The type token.
        resource_type: ResourceType,
        /// The name token, absent in the 2-token form.
        name: Option<String>,
    },
    /// `membership`: device membership pushes.
    Membership,
    /// `membership/detail`: the edge's membership request.
    MembershipDetail,
    /// `twin`: the device controller's reply resource.
    Twin,
    /// `device/<id>/twin/<event>`.
    DeviceTwin {
        /// The device.
        device: DeviceRef,
        /// The event.
        event: TwinEvent,
    },
    /// `device/<id>/state/update`.
    DeviceState {
        /// The device.
        device: DeviceRef,
    },
    /// Nothing after `node/<id>` (cloud-internal connection events use this).
    Empty,
    /// Any other string, verbatim (keepalive `node`, `null`, topics, URLs, upgrade paths…).
    Other(String),
}

/// A parsed resource string, in edge view (`node` is `None`) or cloud view
/// (`node/<id>/…`, as cloudhub hands edge messages to controllers).
///
/// `path.to_string()` gives back exactly the parsed text, for every input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    node: Option<String>,
    kind: ResourceKind,
}

const NODE: &str = "node";

impl ResourcePath {
    /// Parse a resource string. Like upstream's `TrimMessage`, a string whose first token is
    /// `node` with at least a node id after it is the cloud view.
    pub fn parse(s: &str) -> Self {
        if let Some(rest) = s.strip_prefix("node/") {
            return match rest.split_once('/') {
                Some((node, body)) => Self {
                    node: Some(node.to_owned()),
                    kind: parse_body(body, true),
                },
                None => Self {
                    node: Some(rest.to_owned()),
                    kind: ResourceKind::Empty,
                },
            };
        }
        Self {
            node: None,
            kind: parse_body(s, false),
        }
    }

    /// An edge-view path.
    pub fn edge(kind: ResourceKind) -> Self {
        Self { node: None, kind }
    }

    /// An edge-view namespaced object `<namespace>/<type>/<name>`.
    pub fn object(
        namespace: impl Into<String>,
        resource_type: ResourceType,
        name: impl Into<String>,
    ) -> Self {
        Self::edge(ResourceKind::Object {
            namespace: namespace.into(),
            resource_type,
            name: Some(name.into()),
        })
    }

    /// The node id of a cloud-view path.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// What the path names.
    pub fn kind(&self) -> &ResourceKind {
        &self.kind
    }

    /// Take the typed kind.
    pub fn into_kind(self) -> ResourceKind {
        self.kind
    }

    /// The resource type of an object path.
    pub fn resource_type(&self) -> Option<&ResourceType> {
        match &self.kind {
            ResourceKind::Object { resource_type, .. } => Some(resource_type),
            _ => None,
        }
    }

    /// The namespace token of an object path.
    pub fn namespace(&self) -> Option<&str> {
        match &self.kind {
            ResourceKind::Object { namespace, .. } => Some(namespace),
            _ => None,
        }
    }

    /// The name of an object path.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            ResourceKind::Object { name, .. } => name.as_deref(),
            _ => None,
        }
    }

    /// The device of a twin or state path.
    pub fn device(&self) -> Option<&DeviceRef> {
        match &self.kind {
            ResourceKind::DeviceTwin { device, .. } | ResourceKind::DeviceState { device } => {
                Some(device)
            }
            _ => None,
        }
    }

    /// The cloud view: what cloudhub hands to controllers for a message from `node`
    /// (`node/<node>/` + the edge-view text, PROTOCOL.md §1.5).
    pub fn to_cloud_view(&self, node: &str) -> Result<Self, ResourceError> {
        if node.is_empty() || node.contains('/') {
            return Err(ResourceError::InvalidNodeId(node.to_owned()));
        }
        let edge_text = self.to_string();
        Ok(Self::parse(&format!("node/{node}/{edge_text}")))
    }

    /// The edge view: upstream's `TrimMessage` drops the first two tokens of a cloud-view path
    /// that has at least three. `node/<id>` alone stays as it is.
    pub fn to_edge_view(&self) -> Self {
        match (&self.node, &self.kind) {
            (Some(_), ResourceKind::Empty) | (None, _) => self.clone(),
            (Some(_), kind) => Self {
                node: None,
                kind: kind.clone(),
            },
        }
    }

    /// The node a cloud-side message is for: upstream's `GetNodeID`, the token after the first
    /// `node` token that is followed by a non-empty one (`node/<id>/…`, `upgrade/<job>/node/<id>`).
    pub fn target_node(&self) -> Option<String> {
        if let Some(n) = self.node.as_deref().filter(|n| !n.is_empty()) {
            return Some(n.to_owned());
        }
        let text = self.to_string();
        let tokens: Vec<&str> = text.split('/').collect();
        tokens
            .windows(2)
            .find(|w| w[0] == NODE && !w[1].is_empty())
            .map(|w| w[1].to_owned())
    }
}

fn parse_body(s: &str, cloud_view: bool) -> ResourceKind {
    match s {
        "membership" => return ResourceKind::Membership,
        "membership/detail" => return ResourceKind::MembershipDetail,
        "twin" => return ResourceKind::Twin,
        _ => {}
    }
    let tokens: Vec<&str> = s.split('/').collect();
    if tokens.first() == Some(&"device") {
        if let Some(kind) = parse_device(&tokens) {
            return kind;
        }
    }
    match tokens.as_slice() {
        // A 2-token string starting with `node` would read back as a cloud view.
        [ns, ty] if cloud_view || *ns != NODE => ResourceKind::Object {
            namespace: (*ns).to_owned(),
            resource_type: ResourceType::from(*ty),
            name: None,
        },
        [ns, ty, name] if cloud_view || *ns != NODE => ResourceKind::Object {
            namespace: (*ns).to_owned(),
            resource_type: ResourceType::from(*ty),
            name: Some((*name).to_owned()),
        },
        _ => ResourceKind::Other(s.to_owned()),
    }
}

fn parse_device(tokens: &[&str]) -> Option<ResourceKind> {
    // device/<id>/twin/<event>, device/<id>/state/update (4 tokens, v1.12)
    // device/<ns>/<name>/twin/<event>, device/<ns>/<name>/state/update (5 tokens, v1.17+)
    let (device, suffix) = match tokens {
        [_, id, a, b] => (DeviceRef::Legacy((*id).to_owned()), [*a, *b]),
        [_, ns, name, a, b] => (
            DeviceRef::Namespaced {
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            },
            [*a, *b],
        ),
        _ => return None,
    };
    match suffix {
        ["twin", event] => Some(ResourceKind::DeviceTwin {
            device,
            event: TwinEvent::parse(event),
        }),
        ["state", "update"] => Some(ResourceKind::DeviceState { device }),
        _ => None,
    }
}

impl FromStr for ResourcePath {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Object {
                namespace,
                resource_type,
                name: Some(name),
            } => write!(f, "{namespace}/{resource_type}/{name}"),
            Self::Object {
                namespace,
                resource_type,
                name: None,
            } => write!(f, "{namespace}/{resource_type}"),
            Self::Membership => f.write_str("membership"),
            Self::MembershipDetail => f.write_str("membership/detail"),
            Self::Twin => f.write_str("twin"),
            Self::DeviceTwin { device, event } => {
                write!(f, "device/{device}/twin/{}", event.as_str())
            }
            Self::DeviceState { device } => write!(f, "device/{device}/state/update"),
            Self::Empty => Ok(()),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.node, &self.kind) {
            (Some(node), ResourceKind::Empty) => write!(f, "node/{node}"),
            (Some(node), kind) => write!(f, "node/{node}/{kind}"),
            (None, kind) => kind.fmt(f),
        }
    }
}

impl DeviceRef {
    /// Whether this id could be misread when embedded in a path (it contains `/` in a
    /// legacy id, which upstream never produces).
    pub fn is_path_safe(&self) -> bool {
        match self {
            Self::Legacy(id) => !id.contains('/'),
            Self::Namespaced { namespace, name } => !namespace.contains('/') && !name.contains('/'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> ResourcePath {
        let p = ResourcePath::parse(s);
        assert_eq!(p.to_string(), s, "format(parse({s:?}))");
        p
    }

    #[test]
    fn edge_and_cloud_views() {
        let p = rt("default/pod/nginx");
        assert_eq!(p.node(), None);
        assert_eq!(p.resource_type(), Some(&ResourceType::Pod));
        assert_eq!(p.name(), Some("nginx"));
        let c = p.to_cloud_view("edge-1").unwrap();
        assert_eq!(c.to_string(), "node/edge-1/default/pod/nginx");
        assert_eq!(c.node(), Some("edge-1"));
        assert_eq!(c.resource_type(), Some(&ResourceType::Pod));
        assert_eq!(c.to_edge_view(), p);
        assert!(p.to_cloud_view("a/b").is_err());

        let ns = rt("default/podlist");
        assert_eq!(ns.resource_type(), Some(&ResourceType::PodList));
        assert_eq!(ns.name(), None);
    }

    #[test]
    fn device_forms() {
        let p = rt("device/thermometer-1/twin/cloud_updated");
        assert_eq!(p.device(), Some(&DeviceRef::Legacy("thermometer-1".into())));
        let p = rt("node/n1/device/default/t1/twin/edge_updated");
        assert_eq!(p.node(), Some("n1"));
        assert!(matches!(
            p.kind(),
            ResourceKind::DeviceTwin {
                device: DeviceRef::Namespaced { .. },
                event: TwinEvent::EdgeUpdated
            }
        ));
        assert!(matches!(
            rt("device/x/state/update").kind(),
            ResourceKind::DeviceState { .. }
        ));
        assert_eq!(rt("membership").kind(), &ResourceKind::Membership);
        assert_eq!(rt("node/n1/membership").kind(), &ResourceKind::Membership);
        assert_eq!(
            rt("membership/detail").kind(),
            &ResourceKind::MembershipDetail
        );
        assert_eq!(rt("twin").kind(), &ResourceKind::Twin);
    }

    #[test]
    fn odd_strings_round_trip() {
        for s in [
            "",
            "node",
            "null",
            "node/",
            "node/x",
            "node/x/",
            "/",
            "//",
            "a/b/c/d",
            "node/a/node",
            "upgrade/job1/node/edge-1",
            "ignore/Application/ignore",
            "80:/path",
            "device//twin/",
            "device/a/b/c",
            "node//",
            "node/n/node/m",
        ] {
            rt(s);
        }
        assert_eq!(
            rt("upgrade/job1/node/edge-1").target_node().as_deref(),
            Some("edge-1")
        );
        assert_eq!(rt("node/x").kind(), &ResourceKind::Empty);
        assert_eq!(rt("node/x").to_edge_view().to_string(), "node/x");
        assert_eq!(
            rt("node/n1/namespace/node/n1").resource_type(),
            Some(&ResourceType::Node)
        );
    }
}
