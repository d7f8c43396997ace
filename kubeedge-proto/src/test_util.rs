//! proptest strategies for the wire types, shared by every crate's property tests.

use proptest::prelude::*;

use crate::message::{Content, Header, Message, MessageId, Route};
use crate::names::{Group, Operation, ResourceType, Source};
use crate::resource::{DeviceRef, ResourceKind, ResourcePath, TwinEvent};
use crate::topic::{DeviceEvent, NodeEvent, Topic};
use crate::tunnel::{TunnelFrame, TunnelMessageType};

/// A path segment without `/` (may be empty when `allow_empty`).
pub fn segment(allow_empty: bool) -> impl Strategy<Value = String> {
    let min = usize::from(!allow_empty);
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::char::range('a', 'z'),
            2 => Just('-'),
            1 => Just('.'),
            1 => Just('_'),
            1 => proptest::char::range('0', '9'),
            1 => any::<char>().prop_filter("no separators", |c| !matches!(c, '/' | '+' | '#' | '\0')),
        ],
        min..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn name_of<T: From<String> + std::fmt::Debug>(
    known: &'static [&'static str],
) -> impl Strategy<Value = T> {
    prop_oneof![
        3 => proptest::sample::select(known).prop_map(|s| T::from(s.to_owned())),
        1 => segment(false).prop_map(T::from),
    ]
}

/// Any group.
pub fn group() -> impl Strategy<Value = Group> {
    name_of(Group::KNOWN)
}

/// Any operation.
pub fn operation() -> impl Strategy<Value = Operation> {
    name_of(Operation::KNOWN)
}

/// Any source.
pub fn source() -> impl Strategy<Value = Source> {
    name_of(Source::KNOWN)
}

/// Any resource type token.
pub fn resource_type() -> impl Strategy<Value = ResourceType> {
    name_of::<ResourceType>(ResourceType::KNOWN)
        .prop_filter("not node-prefix ambiguous", |t| !t.as_str().is_empty())
}

/// Any device reference.
pub fn device_ref() -> impl Strategy<Value = DeviceRef> {
    prop_oneof![
        segment(false).prop_map(DeviceRef::Legacy),
        (segment(false), segment(false))
            .prop_map(|(namespace, name)| DeviceRef::Namespaced { namespace, name }),
    ]
}

/// A canonical resource path (one that `ResourcePath::parse` produces).
pub fn resource_path() -> impl Strategy<Value = ResourcePath> {
    let object = (
        segment(false).prop_filter("namespace node reads as cloud view", |s| s != "node"),
        resource_type(),
        proptest::option::of(segment(false)),
    )
        .prop_map(|(namespace, resource_type, name)| ResourceKind::Object {
            namespace,
            resource_type,
            name,
        });
    let twin_event = prop_oneof![
        Just(TwinEvent::CloudUpdated),
        Just(TwinEvent::EdgeUpdated),
        segment(false)
            .prop_filter("known events", |s| s != "cloud_updated"
                && s != "edge_updated")
            .prop_map(TwinEvent::Unknown),
    ];
    let kind = prop_oneof![
        4 => object,
        1 => Just(ResourceKind::Membership),
        1 => Just(ResourceKind::MembershipDetail),
        1 => Just(ResourceKind::Twin),
        2 => (device_ref(), twin_event).prop_map(|(device, event)| ResourceKind::DeviceTwin { device, event }),
        1 => device_ref().prop_map(|device| ResourceKind::DeviceState { device }),
    ];
    (proptest::option::of(segment(false)), kind).prop_map(|(node, kind)| {
        let edge = ResourcePath::edge(kind);
        match node {
            Some(n) => edge.to_cloud_view(&n).unwrap_or(edge),
            None => edge,
        }
    })
}

/// Any resource string, including odd ones.
pub fn resource_string() -> impl Strategy<Value = String> {
    prop_oneof![
        resource_path().prop_map(|p| p.to_string()),
        proptest::collection::vec(segment(true), 0..7).prop_map(|v| v.join("/")),
        any::<String>(),
    ]
}

/// Any JSON content: null, strings (including strings holding JSON) and objects.
pub fn content() -> impl Strategy<Value = Content> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::Value::Number(n.into())),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(segment(true), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        value
            .clone()
            .prop_map(|v| Content::json(&v).unwrap_or_default()),
        value.prop_map(|v| Content::string(&v.to_string())),
        any::<String>().prop_map(|s| Content::string(&s)),
    ]
}

/// Any message.
pub fn message() -> impl Strategy<Value = Message> {
    let header = (
        any::<String>(),
        proptest::option::of("[a-f0-9-]{1,36}"),
        any::<i64>(),
        proptest::option::of("[0-9]{1,12}"),
    )
        .prop_map(|(id, parent, timestamp, rv)| Header {
            id: MessageId::from(id),
            parent_id: parent.map(MessageId::from),
            timestamp,
            resource_version: rv.unwrap_or_default(),
            ..Header::default()
        });
    let route = (
        proptest::option::of(source()),
        proptest::option::of(group()),
        proptest::option::of(operation()),
        resource_string(),
    )
        .prop_map(|(source, group, operation, resource)| Route {
            source,
            group,
            operation,
            resource,
            ..Route::default()
        });
    (header, route, content()).prop_map(|(header, route, content)| Message {
        header,
        route,
        content,
    })
}

/// Any tunnel frame.
pub fn tunnel_frame() -> impl Strategy<Value = TunnelFrame> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(id, code, data)| {
            TunnelFrame::new(id, TunnelMessageType::from_code(code % 9), data)
        })
}

/// A canonical topic.
pub fn topic() -> impl Strategy<Value = Topic> {
    let device_event = proptest::sample::select(vec![
        DeviceEvent::TwinUpdate,
        DeviceEvent::TwinUpdateResult,
        DeviceEvent::TwinUpdateDelta,
        DeviceEvent::TwinUpdateDocument,
        DeviceEvent::TwinGet,
        DeviceEvent::TwinGetResult,
        DeviceEvent::TwinCloudUpdated,
        DeviceEvent::StateUpdate,
        DeviceEvent::StateUpdateResult,
        DeviceEvent::Updated,
    ]);
    let node_event = proptest::sample::select(vec![
        NodeEvent::MembershipGet,
        NodeEvent::MembershipGetResult,
        NodeEvent::MembershipUpdated,
    ]);
    prop_oneof![
        (device_ref(), device_event).prop_map(|(device, event)| Topic::Device { device, event }),
        (segment(false), node_event).prop_map(|(node, event)| Topic::Node { node, event }),
        device_ref().prop_map(Topic::MapperData),
        segment(true).prop_map(Topic::Connected),
        segment(true).prop_map(Topic::Disconnected),
        Just(Topic::UploadRecords),
    ]
}

/// Re-write JSON text the way Go's `encoding/json` encoder writes it: no insignificant
/// whitespace, key order kept, strings escaped as Go escapes them (`<`, `>`, `&`, U+2028 and
/// U+2029 as `\u` escapes, other non-ASCII as raw UTF-8). Captures stored pretty-printed turn
/// back into the exact bytes upstream sent. Invalid JSON is returned as it came.
pub fn go_compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            let end = (i + 1).min(bytes.len());
            let literal = &json[start..end];
            match serde_json::from_str::<String>(literal) {
                Ok(s) => go_escape(&s, &mut out),
                Err(_) => return json.to_owned(),
            }
            i = end;
        } else {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                out.push(char::from(b));
            }
            i += 1;
        }
    }
    out
}

fn go_escape(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
