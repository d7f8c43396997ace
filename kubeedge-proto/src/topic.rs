//! Device-twin and event-bus MQTT topics (PROTOCOL.md §6), in both the v1.12 form
//! (`$hw/events/device/<id>/…`) and the v1.17+ namespaced form
//! (`$hw/events/device/<namespace>/<name>/…`).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;

use crate::error::TopicError;
use crate::resource::DeviceRef;

/// What a device topic is about: the part after the device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// `twin/update` (app → edge).
    TwinUpdate,
    /// `twin/update/result` (edge → app).
    TwinUpdateResult,
    /// `twin/update/delta` (edge → app).
    TwinUpdateDelta,
    /// `twin/update/document` (edge → app).
    TwinUpdateDocument,
    /// `twin/get` (app → edge).
    TwinGet,
    /// `twin/get/result` (edge → app).
    TwinGetResult,
    /// `twin/cloud_updated`.
    TwinCloudUpdated,
    /// `state/update` (app → edge).
    StateUpdate,
    /// `state/update/result` (edge → app).
    StateUpdateResult,
    /// `updated`: attribute changes (edge → app).
    Updated,
}

impl DeviceEvent {
    const ALL: [DeviceEvent; 10] = [
        Self::TwinUpdate,
        Self::TwinUpdateResult,
        Self::TwinUpdateDelta,
        Self::TwinUpdateDocument,
        Self::TwinGet,
        Self::TwinGetResult,
        Self::TwinCloudUpdated,
        Self::StateUpdate,
        Self::StateUpdateResult,
        Self::Updated,
    ];

    /// The topic suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::TwinUpdate => "twin/update",
            Self::TwinUpdateResult => "twin/update/result",
            Self::TwinUpdateDelta => "twin/update/delta",
            Self::TwinUpdateDocument => "twin/update/document",
            Self::TwinGet => "twin/get",
            Self::TwinGetResult => "twin/get/result",
            Self::TwinCloudUpdated => "twin/cloud_updated",
            Self::StateUpdate => "state/update",
            Self::StateUpdateResult => "state/update/result",
            Self::Updated => "updated",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.suffix() == s)
    }

    /// The reply topic event for a request event, if it has one.
    pub fn result(self) -> Option<Self> {
        match self {
            Self::TwinUpdate => Some(Self::TwinUpdateResult),
            Self::TwinGet => Some(Self::TwinGetResult),
            Self::StateUpdate => Some(Self::StateUpdateResult),
            _ => None,
        }
    }
}

/// What a node topic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeEvent {
    /// `membership/get` (app → edge).
    MembershipGet,
    /// `membership/get/result` (edge → app).
    MembershipGetResult,
    /// `membership/updated` (edge → app).
    MembershipUpdated,
}

impl NodeEvent {
    /// The topic suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::MembershipGet => "membership/get",
            Self::MembershipGetResult => "membership/get/result",
            Self::MembershipUpdated => "membership/updated",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        [
            Self::MembershipGet,
            Self::MembershipGetResult,
            Self::MembershipUpdated,
        ]
        .into_iter()
        .find(|e| e.suffix() == s)
    }
}

const HW: &str = "$hw/events/";
const HW_DEVICE: &str = "$hw/events/device/";
const HW_NODE: &str = "$hw/events/node/";
const KE_DEVICE: &str = "$ke/events/device/";
const UPLOAD_RECORDS: &str = "SYS/dis/upload_records";

/// A parsed MQTT topic name. `topic.to_string()` gives back exactly the parsed text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topic {
    /// `$hw/events/device/<id>/<event>`.
    Device {
        /// The device (legacy id or namespace/name).
        device: DeviceRef,
        /// The event.
        event: DeviceEvent,
    },
    /// `$hw/events/node/<node>/<event>`.
    Node {
        /// The node name.
        node: String,
        /// The event.
        event: NodeEvent,
    },
    /// `$hw/events/node/<node>/authInfo/get/result`.
    AuthInfoResult {
        /// The node name.
        node: String,
    },
    /// `$hw/events/connected/<client>`.
    Connected(String),
    /// `$hw/events/disconnected/<client>`.
    Disconnected(String),
    /// `$hw/events/upload/<rest>`: forwarded to the cloud.
    Upload(String),
    /// `$ke/events/device/<id>/data/update`: mapper data for third-party subscribers.
    MapperData(DeviceRef),
    /// `SYS/dis/upload_records`.
    UploadRecords,
    /// Any other topic (user topics), verbatim.
    Other(String),
}

impl Topic {
    /// Parse an MQTT topic name (not a filter: wildcards are refused).
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        validate_name(s)?;
        Ok(parse_valid(s))
    }

    /// Whether upstream's eventbus hands this topic to the device twin (rather than the cloud).
    pub fn is_for_twin(&self) -> bool {
        matches!(
            self,
            Self::Device { .. } | Self::Node { .. } | Self::AuthInfoResult { .. }
        )
    }

    /// The result topic for a request topic (`twin/update` → `twin/update/result`, …).
    pub fn result_topic(&self) -> Option<Self> {
        match self {
            Self::Device { device, event } => event.result().map(|event| Self::Device {
                device: device.clone(),
                event,
            }),
            Self::Node {
                node,
                event: NodeEvent::MembershipGet,
            } => Some(Self::Node {
                node: node.clone(),
                event: NodeEvent::MembershipGetResult,
            }),
            _ => None,
        }
    }

    /// The resource upstream's eventbus uses for a topic handed to the twin: base64url (padded)
    /// of the topic text.
    pub fn to_bus_resource(&self) -> String {
        URL_SAFE.encode(self.to_string())
    }

    /// The inverse of [`Topic::to_bus_resource`]; `None` when it is not such a resource.
    pub fn from_bus_resource(resource: &str) -> Option<Self> {
        let bytes = URL_SAFE.decode(resource).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        Self::parse(&text).ok()
    }
}

fn validate_name(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > 65_535 {
        return Err(TopicError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        return Err(TopicError::ForbiddenChar(c));
    }
    Ok(())
}

fn parse_valid(s: &str) -> Topic {
    if let Some(rest) = s.strip_prefix(HW_DEVICE) {
        if let Some((device, event)) = split_device(rest, DeviceEvent::from_suffix) {
            return Topic::Device { device, event };
        }
    } else if let Some(rest) = s.strip_prefix(HW_NODE) {
        if let Some((node, suffix)) = rest.split_once('/') {
            if !node.is_empty() {
                if let Some(event) = NodeEvent::from_suffix(suffix) {
                    return Topic::Node {
                        node: node.to_owned(),
                        event,
                    };
                }
                if suffix == "authInfo/get/result" {
                    return Topic::AuthInfoResult {
                        node: node.to_owned(),
                    };
                }
            }
        }
    } else if let Some(rest) = s.strip_prefix(KE_DEVICE) {
        let data = |suffix: &str| (suffix == "data/update").then_some(());
        if let Some((device, ())) = split_device(rest, data) {
            return Topic::MapperData(device);
        }
    } else if let Some(rest) = s.strip_prefix(HW) {
        if let Some(c) = rest.strip_prefix("connected/") {
            return Topic::Connected(c.to_owned());
        }
        if let Some(c) = rest.strip_prefix("disconnected/") {
            return Topic::Disconnected(c.to_owned());
        }
        if let Some(u) = rest.strip_prefix("upload/") {
            return Topic::Upload(u.to_owned());
        }
    } else if s == UPLOAD_RECORDS {
        return Topic::UploadRecords;
    }
    Topic::Other(s.to_owned())
}

/// Split `<id>/<suffix>` (v1.12) or `<ns>/<name>/<suffix>` (v1.17+). The two forms never
/// overlap for the known suffixes: no suffix equals a segment followed by another suffix.
fn split_device<T>(rest: &str, suffix: impl Fn(&str) -> Option<T>) -> Option<(DeviceRef, T)> {
    let (first, after_first) = rest.split_once('/')?;
    if first.is_empty() {
        return None;
    }
    if let Some(ev) = suffix(after_first) {
        return Some((DeviceRef::Legacy(first.to_owned()), ev));
    }
    let (second, after_second) = after_first.split_once('/')?;
    if second.is_empty() {
        return None;
    }
    suffix(after_second).map(|ev| {
        (
            DeviceRef::Namespaced {
                namespace: first.to_owned(),
                name: second.to_owned(),
            },
            ev,
        )
    })
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device { device, event } => write!(f, "{HW_DEVICE}{device}/{}", event.suffix()),
            Self::Node { node, event } => write!(f, "{HW_NODE}{node}/{}", event.suffix()),
            Self::AuthInfoResult { node } => write!(f, "{HW_NODE}{node}/authInfo/get/result"),
            Self::Connected(c) => write!(f, "{HW}connected/{c}"),
            Self::Disconnected(c) => write!(f, "{HW}disconnected/{c}"),
            Self::Upload(u) => write!(f, "{HW}upload/{u}"),
            Self::MapperData(d) => write!(f, "{KE_DEVICE}{d}/data/update"),
            Self::UploadRecords => f.write_str(UPLOAD_RECORDS),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// The topic filters upstream's edge eventbus subscribes to.
pub fn edge_subscriptions(namespaced: bool) -> &'static [&'static str] {
    if namespaced {
        &[
            "$hw/events/upload/#",
            "$hw/events/device/+/+/state/update",
            "$hw/events/device/+/+/twin/+",
            "$hw/events/node/+/membership/get",
            "SYS/dis/upload_records",
            "+/user/#",
        ]
    } else {
        &[
            "$hw/events/upload/#",
            "$hw/events/device/+/state/update",
            "$hw/events/device/+/twin/+",
            "$hw/events/node/+/membership/get",
            "SYS/dis/upload_records",
            "+/user/#",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> Topic {
        let t = Topic::parse(s).unwrap();
        assert_eq!(t.to_string(), s);
        t
    }

    #[test]
    fn both_forms() {
        assert_eq!(
            rt("$hw/events/device/thermometer-1/twin/update"),
            Topic::Device {
                device: DeviceRef::Legacy("thermometer-1".into()),
                event: DeviceEvent::TwinUpdate
            }
        );
        assert_eq!(
            rt("$hw/events/device/default/t1/twin/update/delta"),
            Topic::Device {
                device: DeviceRef::Namespaced {
                    namespace: "default".into(),
                    name: "t1".into()
                },
                event: DeviceEvent::TwinUpdateDelta
            }
        );
        // A device named "twin" in the legacy form, and namespace "a" / name "twin".
        assert!(matches!(
            rt("$hw/events/device/twin/twin/update"),
            Topic::Device {
                device: DeviceRef::Legacy(_),
                ..
            }
        ));
        assert!(matches!(
            rt("$hw/events/device/a/twin/twin/update"),
            Topic::Device {
                device: DeviceRef::Namespaced { .. },
                ..
            }
        ));
        assert!(matches!(
            rt("$hw/events/node/n1/membership/get"),
            Topic::Node {
                event: NodeEvent::MembershipGet,
                ..
            }
        ));
        assert!(matches!(
            rt("$ke/events/device/d/data/update"),
            Topic::MapperData(_)
        ));
        assert_eq!(rt("SYS/dis/upload_records"), Topic::UploadRecords);
        assert!(matches!(
            rt("$hw/events/device//twin/update"),
            Topic::Other(_)
        ));
        assert!(matches!(rt("a/user/b"), Topic::Other(_)));
        assert_eq!(Topic::parse("a/+/b"), Err(TopicError::ForbiddenChar('+')));
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        let t = rt("$hw/events/device/d/twin/get");
        assert_eq!(
            t.result_topic().unwrap().to_string(),
            "$hw/events/device/d/twin/get/result"
        );
        assert_eq!(Topic::from_bus_resource(&t.to_bus_resource()), Some(t));
    }
}
