//! Device-twin payloads on MQTT and on the hub link (PROTOCOL.md §6.2–§6.3), with upstream's
//! JSON keys and omitempty rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{"timestamp": <ms>}` metadata of a twin value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// A desired (`expected`) or reported (`actual`) value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinValue {
    /// The value text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

/// `{"type": "..."}`: the twin's value type (`deleted` marks a removed twin).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TypeMetadata {
    /// The type name.
    #[serde(rename = "type", default)]
    pub value_type: String,
}

/// `{"cloud": N, "edge": M}`: versions of a desired or reported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinVersion {
    /// Cloud-side version.
    #[serde(default)]
    pub cloud: i64,
    /// Edge-side version.
    #[serde(default)]
    pub edge: i64,
}

/// Upstream `MsgTwin`: one property's twin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MsgTwin {
    /// Desired value (owned by the cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValue>,
    /// Reported value (owned by the edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValue>,
    /// Whether the twin is optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Type metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    /// Version of the desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<TwinVersion>,
    /// Version of the reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<TwinVersion>,
}

/// Property twins by name; a `null` entry is kept (upstream maps hold pointers).
pub type TwinMap = BTreeMap<String, Option<MsgTwin>>;

/// Twin update / get result / cloud_updated / edge_updated payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinUpdate {
    /// Event id (always emitted).
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The twins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<TwinMap>,
}

/// `twin/update/delta` payload: properties whose desired value differs from the reported one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinDelta {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The twins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<TwinMap>,
    /// Property → desired value.
    #[serde(default)]
    pub delta: BTreeMap<String, String>,
}

/// One entry of a `twin/update/document`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinDocumentEntry {
    /// Before the change (`null` when new).
    #[serde(default)]
    pub last: Option<MsgTwin>,
    /// After the change.
    #[serde(default)]
    pub current: Option<MsgTwin>,
}

/// `twin/update/document` payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinDocument {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// Property → change.
    #[serde(default)]
    pub twin: BTreeMap<String, TwinDocumentEntry>,
}

/// A bare event (`twin/get`, `membership/get`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BaseMessage {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// An error result (`{"event_id","timestamp","code","reason"}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorResult {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// HTTP-like status code (400, 404, 500).
    #[serde(default)]
    pub code: i32,
    /// What went wrong.
    #[serde(default)]
    pub reason: String,
}

/// `state/update` payload from a mapper.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceStateUpdate {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// `online`, `offline`, `ok`, `unknown` or `disconnected`.
    #[serde(default)]
    pub state: String,
}

/// The device part of a state result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceStateInfo {
    /// Device name.
    #[serde(default)]
    pub name: String,
    /// State.
    #[serde(default)]
    pub state: String,
    /// `YYYY-MM-DD HH:MM:SS`.
    #[serde(default)]
    pub last_online: String,
}

/// `state/update/result` payload, and the content of the edge's `device/<id>/state/update`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceStateResult {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The device.
    #[serde(default)]
    pub device: DeviceStateInfo,
}

/// A device attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MsgAttr {
    /// Value text.
    #[serde(default)]
    pub value: String,
    /// Optional flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Type metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
}

/// `updated` payload: attribute changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceAttrUpdate {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// Attribute → value.
    #[serde(default)]
    pub attributes: BTreeMap<String, Option<MsgAttr>>,
}

/// A device in membership messages.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Device {
    /// Device id (`<id>` or, from v1.17, `<namespace>/<name>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Device name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// State.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Last time online.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online: String,
    /// Attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, Option<MsgAttr>>>,
    /// Twins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<TwinMap>,
}

/// `membership` push (cloud → edge) and `membership/updated` (edge → app).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MembershipUpdate {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// Devices bound to the node (`null` when none).
    #[serde(default)]
    pub added_devices: Option<Vec<Device>>,
    /// Devices unbound from the node (`null` when none).
    #[serde(default)]
    pub removed_devices: Option<Vec<Device>>,
}

/// `membership/get/result` payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MembershipGetResult {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The node's devices.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// The edge's `membership/detail` request content (sent as a JSON string).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MembershipDetailRequest {
    /// `group_membership_event`.
    #[serde(default)]
    pub event_type: String,
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// The node name.
    #[serde(default)]
    pub group_id: String,
    /// `detail`.
    #[serde(default)]
    pub operation: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// `$hw/events/connected|disconnected/<x>` payload and cloudhub's internal connect event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionEvent {
    /// `connected` or `disconnected`.
    #[serde(default)]
    pub event_type: String,
    /// Seconds (cloudhub) or milliseconds (MQTT lifecycle) since the epoch.
    #[serde(default)]
    pub timestamp: i64,
    /// The client id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
}

/// The largest twin key upstream accepts, in bytes (exclusive).
pub const MAX_TWIN_KEY_LEN: usize = 128;
/// The largest twin value upstream accepts, in bytes (exclusive).
pub const MAX_TWIN_VALUE_LEN: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_matches_capture_shape() {
        let json = r#"{"event_id":"e","timestamp":1,"added_devices":[{"id":"t1","name":"t1","twin":{"switch":{"expected":{"value":"ON","metadata":{"timestamp":1}},"optional":false,"metadata":{"type":"string"},"expected_version":{"cloud":251,"edge":0}}}}],"removed_devices":null}"#;
        let m: MembershipUpdate = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), json);
    }
}
