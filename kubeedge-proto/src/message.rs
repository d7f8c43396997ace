//! The beehive message envelope exactly as upstream KubeEdge puts it on the hub link
//! (PROTOCOL.md §1.1–§1.3).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::JsonError;
use crate::names::{Group, Operation, Source};

mod content;

use crate::gojson::{empty_as_none, is_false, null_as_default, object_only, object_or_null};
pub use content::Content;

/// Which upstream release's semantics a helper follows where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compat {
    /// KubeEdge v1.12 .. v1.17.
    V1_12,
    /// The latest upstream behaviour (v1.18 and later, up to HEAD).
    #[default]
    Latest,
}

/// A message id (`header.msg_id`): UUIDv4 text for messages we create; any text from peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh random (v4) id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the empty id (Go's zero value).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `header`: members in Go's order, with Go's omitempty rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    /// `msg_id` (always emitted).
    #[serde(rename = "msg_id", default, deserialize_with = "null_as_default")]
    pub id: MessageId,
    /// `parent_msg_id`: set on replies; omitted when empty.
    #[serde(
        rename = "parent_msg_id",
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_id: Option<MessageId>,
    /// `timestamp`: milliseconds since the Unix epoch, a JSON integer (always emitted).
    #[serde(default, deserialize_with = "null_as_default")]
    pub timestamp: i64,
    /// `resourceversion`: the Kubernetes resourceVersion of the object in the content.
    #[serde(
        rename = "resourceversion",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    /// `sync`: always false on the websocket link.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub sync: bool,
    /// `type`: beehive context type, never set on cloud/edge traffic.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub message_type: String,
}

impl Header {
    /// A header with a fresh id, the given parent and the current time.
    pub fn new(parent: Option<MessageId>) -> Self {
        Self {
            id: MessageId::random(),
            parent_id: parent,
            timestamp: now_millis(),
            ..Self::default()
        }
    }
}

/// `route` (Go field `Router`): every member is omitted when empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Route {
    /// `source`: the sending module.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<Source>,
    /// `destination`: unused on the hub link.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination: String,
    /// `group`: the module group on the receiving side.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub group: Option<Group>,
    /// `operation`.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub operation: Option<Operation>,
    /// `resource`: the raw resource string; parse it with [`crate::ResourcePath`].
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource: String,
}

impl Route {
    /// A route with source, group, operation and resource set.
    pub fn new(
        source: impl Into<Source>,
        group: impl Into<Group>,
        operation: impl Into<Operation>,
        resource: impl Into<String>,
    ) -> Self {
        Self {
            source: Some(source.into()),
            destination: String::new(),
            group: Some(group.into()),
            operation: Some(operation.into()),
            resource: resource.into(),
        }
    }

    /// The source name, or "" when unset.
    pub fn source_str(&self) -> &str {
        self.source.as_ref().map_or("", Source::as_str)
    }

    /// The group name, or "" when unset.
    pub fn group_str(&self) -> &str {
        self.group.as_ref().map_or("", Group::as_str)
    }

    /// The operation name, or "" when unset.
    pub fn operation_str(&self) -> &str {
        self.operation.as_ref().map_or("", Operation::as_str)
    }

    /// True when the operation is `op`.
    pub fn is_operation(&self, op: &Operation) -> bool {
        self.operation.as_ref() == Some(op)
    }
}

/// Milliseconds since the Unix epoch, as upstream's `timestamp`.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One beehive message: `{"header":…,"route":…,"content":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Message {
    /// `header`.
    #[serde(default, deserialize_with = "object_or_null")]
    pub header: Header,
    /// `route` (not `router`).
    #[serde(default, deserialize_with = "object_or_null")]
    pub route: Route,
    /// `content`: always emitted, `null` when empty.
    #[serde(default)]
    pub content: Content,
}

impl Message {
    /// Upstream `NewMessage("")` + `BuildRouter` + `FillBody`: a fresh id and timestamp.
    pub fn new(route: Route, content: Content) -> Self {
        Self {
            header: Header::new(None),
            route,
            content,
        }
    }

    /// Set `header.resourceversion`.
    #[must_use]
    pub fn with_resource_version(mut self, rv: impl Into<String>) -> Self {
        self.header.resource_version = rv.into();
        self
    }

    /// Set `header.parent_msg_id`.
    #[must_use]
    pub fn with_parent(mut self, parent: MessageId) -> Self {
        self.header.parent_id = Some(parent);
        self
    }

    /// The message id.
    pub fn id(&self) -> &MessageId {
        &self.header.id
    }

    /// The parent id, when this message answers another one.
    pub fn parent_id(&self) -> Option<&MessageId> {
        self.header.parent_id.as_ref()
    }

    /// True when this message is a reply (non-empty `parent_msg_id`); the edge hands such
    /// messages to the waiting requester (PROTOCOL.md §1.3).
    pub fn is_reply(&self) -> bool {
        self.header.parent_id.is_some()
    }

    /// Upstream `NewRespByMessage(req, content)`: a new id, parent = `self.msg_id`, source,
    /// group, resource and type copied, operation `response`.
    pub fn reply(&self, content: Content) -> Message {
        Message {
            header: Header {
                message_type: self.header.message_type.clone(),
                ..Header::new(Some(self.header.id.clone()))
            },
            route: Route {
                source: self.route.source.clone(),
                destination: String::new(),
                group: self.route.group.clone(),
                operation: Some(Operation::Response),
                resource: self.route.resource.clone(),
            },
            content,
        }
    }

    /// Upstream `NewErrorMessage(req, text)`: operation `error`, resource copied, content the
    /// error text. The parent is `self.msg_id` since v1.18, and `self.parent_msg_id` in v1.12.
    pub fn error_reply(&self, text: &str, compat: Compat) -> Message {
        let parent = match compat {
            Compat::V1_12 => self.header.parent_id.clone(),
            Compat::Latest => Some(self.header.id.clone()),
        };
        Message {
            header: Header::new(parent),
            route: Route {
                operation: Some(Operation::Error),
                resource: self.route.resource.clone(),
                ..Route::default()
            },
            content: Content::string(text),
        }
    }

    /// The edge's ack for a pushed message once it is persisted (PROTOCOL.md §2.5):
    /// `NewRespByMessage(msg, "OK")`. Device-controller inserts and deletes are rerouted
    /// inside upstream's edge before the ack is built, so their ack carries source `meta`
    /// and group `twin`.
    pub fn ack(&self) -> Message {
        let mut ack = self.reply(Content::string(crate::ACK_CONTENT));
        let device_reroute = self.route.source == Some(Source::DeviceController)
            && matches!(
                self.route.operation,
                Some(Operation::Insert) | Some(Operation::Delete)
            );
        if device_reroute {
            ack.route.source = Some(Source::Meta);
            ack.route.group = Some(Group::Twin);
        }
        ack
    }

    /// True for the ack content `"OK"` on a `response`.
    pub fn is_ok_response(&self) -> bool {
        self.route.is_operation(&Operation::Response)
            && self.content.as_str().as_deref() == Some(crate::ACK_CONTENT)
    }

    /// Decode a message from JSON bytes (no size limit: use [`crate::HubCodec`] for frames).
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let msg = object_only(&mut de)?;
        de.end()?;
        Ok(msg)
    }

    /// Encode as compact JSON, keys in upstream's order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.content.raw_json().len());
        self.write_json(&mut out);
        out
    }

    /// Append the compact JSON encoding to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing plain data (strings, integers, raw JSON) into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
    }
}

#[cfg(test)]
mod tests;
