//! The beehive message envelope exactly as upstream KubeEdge puts it on the hub link
//! (PROTOCOL.md §1.1–§1.3).

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{ContentError, JsonError};
use crate::names::{Group, Operation, Source};

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

/// Go decodes JSON `null` into a field as "leave the zero value": accept it the same way.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A JSON object (or `null`, read as the zero value): Go refuses arrays where a struct is
/// expected, while serde's derive would read them as tuples.
fn object_or_null<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    d.deserialize_any(ObjectVisitor::<T>(std::marker::PhantomData, true))
}

/// A JSON object only.
fn object_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    d.deserialize_any(ObjectVisitor::<T>(std::marker::PhantomData, false))
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>, bool);

impl<'de, T: Deserialize<'de> + Default> serde::de::Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.1 {
            "a json object or null"
        } else {
            "a json object"
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<T, E> {
        if self.1 {
            Ok(T::default())
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Unit, &self))
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// An empty string is Go's "not set" for route names: decode it as `None`.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(T::from))
}

fn is_false(b: &bool) -> bool {
    !*b
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

/// `content`: any JSON value, kept as the exact JSON text that was received so that
/// re-encoding preserves key order, number text and string-versus-object typing.
#[derive(Clone)]
pub struct Content(Box<RawValue>);

/// Contents are equal when their JSON text is identical.
impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Content {}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.0.get();
        if raw.len() > 256 {
            let cut = (0..=256)
                .rev()
                .find(|i| raw.is_char_boundary(*i))
                .unwrap_or(0);
            write!(f, "Content({}… {} bytes)", &raw[..cut], raw.len())
        } else {
            write!(f, "Content({raw})")
        }
    }
}

impl Default for Content {
    fn default() -> Self {
        Self::null()
    }
}

impl Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self)
    }
}

impl Content {
    /// JSON `null` (Go's nil content).
    pub fn null() -> Self {
        Self(raw_from_trusted("null".to_owned()))
    }

    /// A JSON string, such as `"OK"` or a patch that upstream sends as a string holding JSON.
    pub fn string(text: &str) -> Self {
        // Serialising a &str cannot fail.
        let json = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
        Self(raw_from_trusted(json))
    }

    /// The JSON serialisation of `value` (an object for Kubernetes objects and typed payloads).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, ContentError> {
        serde_json::value::to_raw_value(value)
            .map(Self)
            .map_err(|e| ContentError::Encode(JsonError::from(e)))
    }

    /// Content from JSON text, validated.
    pub fn from_json_text(text: String) -> Result<Self, ContentError> {
        RawValue::from_string(text)
            .map(Self)
            .map_err(|e| ContentError::Decode(JsonError::from(e)))
    }

    /// The JSON text exactly as it travels.
    pub fn raw_json(&self) -> &str {
        self.0.get()
    }

    /// True for JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }

    /// True when the content is a JSON string.
    pub fn is_string(&self) -> bool {
        self.0.get().starts_with('"')
    }

    /// The string value when the content is a JSON string.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        if !self.is_string() {
            return None;
        }
        let raw = self.0.get();
        let inner = &raw[1..raw.len() - 1];
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    }

    /// Upstream's `GetContentData`: a JSON string yields its text (not re-quoted); any other
    /// value yields its compact JSON serialisation.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        if let Some(s) = self.as_str() {
            return match s {
                Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            };
        }
        let raw = self.0.get();
        if is_compact(raw) {
            return Cow::Borrowed(raw.as_bytes());
        }
        match serde_json::from_str::<serde_json::Value>(raw).and_then(|v| serde_json::to_vec(&v)) {
            Ok(v) => Cow::Owned(v),
            Err(_) => Cow::Borrowed(raw.as_bytes()),
        }
    }

    /// Decode the content into `T` the way upstream consumers do: from [`Content::bytes`], so
    /// that both an embedded object and a string holding JSON decode.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ContentError> {
        serde_json::from_slice(&self.bytes()).map_err(|e| ContentError::Decode(JsonError::from(e)))
    }
}

/// Build a RawValue from JSON text produced by serde_json itself.
fn raw_from_trusted(json: String) -> Box<RawValue> {
    match RawValue::from_string(json) {
        Ok(raw) => raw,
        // Unreachable for serde_json output; fall back to null rather than panic.
        Err(_) => serde_json::value::to_raw_value(&()).unwrap_or_else(|_| null_raw()),
    }
}

fn null_raw() -> Box<RawValue> {
    // `RawValue::NULL` is a &'static RawValue; Box it by going through its text.
    RawValue::NULL.to_owned()
}

/// True when `raw` has no insignificant whitespace (outside strings).
fn is_compact(raw: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for b in raw.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            return false;
        }
    }
    true
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
mod tests {
    use super::*;

    #[test]
    fn keepalive_json_is_exact() {
        let text = r#"{"header":{"msg_id":"8f5bd05b-7bac-4b42-a5d5-f690d43f44cf","timestamp":1795617216869},"route":{"source":"websocket","group":"resource","operation":"keepalive","resource":"node"},"content":"ping"}"#;
        let msg = Message::from_json(text.as_bytes()).unwrap();
        assert_eq!(msg.route.operation, Some(Operation::Keepalive));
        assert_eq!(msg.content.as_str().as_deref(), Some("ping"));
        assert_eq!(String::from_utf8(msg.to_json()).unwrap(), text);
    }

    #[test]
    fn missing_content_is_null_and_emitted() {
        let msg =
            Message::from_json(br#"{"header":{"msg_id":"","timestamp":0},"route":{}}"#).unwrap();
        assert!(msg.content.is_null());
        assert_eq!(
            String::from_utf8(msg.to_json()).unwrap(),
            r#"{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}"#
        );
    }

    #[test]
    fn content_bytes_follow_get_content_data() {
        let s = Content::string("{\"a\":1}");
        assert_eq!(&*s.bytes(), b"{\"a\":1}");
        let o = Content::from_json_text("{ \"a\" : [1, 2] }".into()).unwrap();
        assert_eq!(&*o.bytes(), b"{\"a\":[1,2]}");
        assert_eq!(o.raw_json(), "{ \"a\" : [1, 2] }");
        let escaped = Content::string("line\n\"q\"");
        assert_eq!(&*escaped.bytes(), b"line\n\"q\"");
        #[derive(Deserialize)]
        struct A {
            a: i32,
        }
        assert_eq!(s.decode::<A>().unwrap().a, 1);
    }

    #[test]
    fn reply_and_error_reply_follow_upstream() {
        let req = Message::new(
            Route::new("edgecontroller", "resource", "insert", "default/pod/nginx"),
            Content::null(),
        )
        .with_parent("p0".into());
        let ack = req.ack();
        assert_eq!(ack.parent_id(), Some(req.id()));
        assert_eq!(ack.route.source, Some(Source::EdgeController));
        assert_eq!(ack.route.group, Some(Group::Resource));
        assert_eq!(ack.route.operation, Some(Operation::Response));
        assert_eq!(ack.route.resource, "default/pod/nginx");
        assert!(ack.is_ok_response());
        assert_ne!(ack.id(), req.id());

        let e12 = req.error_reply("boom", Compat::V1_12);
        assert_eq!(e12.parent_id().map(MessageId::as_str), Some("p0"));
        let e = req.error_reply("boom", Compat::Latest);
        assert_eq!(e.parent_id(), Some(req.id()));
        assert_eq!(e.route.operation, Some(Operation::Error));
        assert_eq!(e.content.as_str().as_deref(), Some("boom"));

        let dev = Message::new(
            Route::new("devicecontroller", "resource", "insert", "default/device/d"),
            Content::null(),
        );
        let dack = dev.ack();
        assert_eq!(dack.route.source, Some(Source::Meta));
        assert_eq!(dack.route.group, Some(Group::Twin));
    }

    #[test]
    fn nulls_decode_as_zero_values() {
        let m = Message::from_json(
            br#"{"header":{"msg_id":null,"timestamp":null,"parent_msg_id":""},"route":null,"content":null,"extra":1}"#,
        )
        .unwrap();
        assert!(m.header.id.is_empty());
        assert!(m.header.parent_id.is_none());
    }
}
