//! The device twin, sans-IO (PROTOCOL.md §6): the driver feeds cloud pushes and MQTT
//! publishes in as [`Input`]s and performs the returned [`Effect`]s (publish on MQTT, send to
//! the cloud, persist a device).
//!
//! Rules:
//! - Desired (`expected`) values belong to the cloud. A cloud update applies only when its
//!   `expected_version.cloud` is newer than the stored one; the edge never changes them.
//! - Reported (`actual`) values belong to the edge. Each change bumps `actual_version.edge`;
//!   the cloud never overwrites them. Repeating the same value changes nothing.
//! - Every refused input gets an error result where upstream sends one, and changes nothing.

use std::collections::BTreeMap;

use kubeedge_proto::twin::{
    Device, ErrorResult, MembershipUpdate, MsgTwin, TwinDelta, TwinUpdate, TwinValue, TwinVersion,
};
use kubeedge_proto::{DeviceEvent, DeviceRef, Message, Topic};
use tracing::debug;

mod edge;
mod membership;

/// One device as the twin keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceTwin {
    /// Device id (`<id>` or `<namespace>/<name>`).
    pub id: String,
    /// Device name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Last reported state.
    pub state: String,
    /// Last time reported online.
    pub last_online: String,
    /// Property twins.
    pub twins: BTreeMap<String, MsgTwin>,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The cloud's `membership` push: devices bound to and unbound from this node.
    Membership(MembershipUpdate),
    /// The cloud's desired twins for one device (`device/<id>/twin/cloud_updated`).
    CloudUpdated {
        /// Device id.
        device: String,
        /// The update.
        update: TwinUpdate,
    },
    /// A publish on `$hw/events/device/<id>/twin/update` (raw payload).
    EdgeUpdate {
        /// Device id.
        device: String,
        /// The MQTT payload.
        payload: Vec<u8>,
        /// Now, ms since the epoch.
        now_ms: i64,
    },
    /// A publish on `$hw/events/device/<id>/twin/get`.
    Get {
        /// Device id.
        device: String,
        /// The MQTT payload.
        payload: Vec<u8>,
        /// Now, ms.
        now_ms: i64,
    },
    /// The cloud's answer to `membership/detail`: every device bound to this node. Devices
    /// not in it are removed.
    MembershipDetail(Vec<Device>),
    /// A publish on `$hw/events/node/<node>/membership/get`.
    MembershipGet {
        /// The node name.
        node: String,
        /// The MQTT payload.
        payload: Vec<u8>,
        /// Now, ms.
        now_ms: i64,
    },
    /// A publish on `$hw/events/device/<id>/state/update`.
    StateUpdate {
        /// Device id.
        device: String,
        /// The MQTT payload.
        payload: Vec<u8>,
        /// Now, ms.
        now_ms: i64,
        /// Now as `YYYY-MM-DD HH:MM:SS` (upstream's `last_online`).
        now_text: String,
    },
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Publish on MQTT.
    Publish {
        /// Topic.
        topic: Topic,
        /// Payload (JSON).
        payload: Vec<u8>,
    },
    /// Send to the cloud (through the hub; durable upstream outbox for reports).
    ToCloud(Message),
    /// The device's stored row changed.
    Persist(String),
    /// The device was removed.
    Remove(String),
}

/// The twins of every device bound to this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwinState {
    devices: BTreeMap<String, DeviceTwin>,
}

/// The largest MQTT payload the twin parses; bigger ones get an error result.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const STATES: [&str; 5] = ["online", "offline", "ok", "unknown", "disconnected"];

fn topic(device: &str, event: DeviceEvent) -> Topic {
    Topic::Device {
        device: DeviceRef::from_id(device),
        event,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn error_result(
    device: &str,
    event: DeviceEvent,
    event_id: String,
    now_ms: i64,
    code: i32,
    reason: String,
) -> Effect {
    Effect::Publish {
        topic: topic(device, event),
        payload: json(&ErrorResult {
            event_id,
            timestamp: now_ms,
            code,
            reason,
        }),
    }
}

/// A request payload over [`MAX_PAYLOAD`]: refused with upstream's 400 result.
fn too_large(input: &Input) -> Option<Vec<Effect>> {
    let (device, event, len, now_ms) = match input {
        Input::EdgeUpdate {
            device,
            payload,
            now_ms,
        } => (
            device,
            DeviceEvent::TwinUpdateResult,
            payload.len(),
            *now_ms,
        ),
        Input::Get {
            device,
            payload,
            now_ms,
        } => (device, DeviceEvent::TwinGetResult, payload.len(), *now_ms),
        Input::StateUpdate {
            device,
            payload,
            now_ms,
            ..
        } => (
            device,
            DeviceEvent::StateUpdateResult,
            payload.len(),
            *now_ms,
        ),
        _ => return None,
    };
    (len > MAX_PAYLOAD).then(|| {
        vec![error_result(
            device,
            event,
            String::new(),
            now_ms,
            400,
            format!("payload of {len} bytes is over the limit of {MAX_PAYLOAD}"),
        )]
    })
}

/// The 404 result upstream publishes for a device this node does not have.
fn not_found(device: &str, event: DeviceEvent, event_id: String, now_ms: i64) -> Vec<Effect> {
    vec![error_result(
        device,
        event,
        event_id,
        now_ms,
        404,
        format!("unknown device {device}"),
    )]
}

/// Decode a request payload; on failure, the 400 error result upstream publishes.
fn parse<T: serde::de::DeserializeOwned>(
    device: &str,
    event: DeviceEvent,
    payload: &[u8],
    now_ms: i64,
) -> Result<T, Vec<Effect>> {
    serde_json::from_slice(payload).map_err(|e| {
        vec![error_result(
            device,
            event,
            String::new(),
            now_ms,
            400,
            format!("invalid payload: {e}"),
        )]
    })
}

/// Does `value` fit the twin's declared type?
fn value_fits(value: &str, value_type: Option<&str>) -> bool {
    match value_type.map(str::to_ascii_lowercase).as_deref() {
        Some("int" | "integer") => value.parse::<i64>().is_ok(),
        Some("float" | "double") => value.parse::<f64>().is_ok(),
        Some("boolean" | "bool") => matches!(value, "true" | "false"),
        _ => true,
    }
}

fn value_of(v: &Option<TwinValue>) -> Option<&str> {
    v.as_ref().and_then(|t| t.value.as_deref())
}

impl TwinState {
    /// An empty twin.
    pub fn new() -> Self {
        Self::default()
    }

    /// From stored devices.
    pub fn from_devices(devices: impl IntoIterator<Item = DeviceTwin>) -> Self {
        Self {
            devices: devices.into_iter().map(|d| (d.id.clone(), d)).collect(),
        }
    }

    /// A device.
    pub fn device(&self, id: &str) -> Option<&DeviceTwin> {
        self.devices.get(id)
    }

    /// Every device.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceTwin> {
        self.devices.values()
    }

    /// Apply one input; returns what to do.
    pub fn apply(&mut self, input: Input) -> Vec<Effect> {
        if let Some(fx) = too_large(&input) {
            return fx;
        }
        match input {
            Input::MembershipDetail(devices) => self.membership_detail(devices),
            Input::MembershipGet {
                node,
                payload,
                now_ms,
            } => self.membership_get(&node, &payload, now_ms),
            Input::Membership(m) => self.membership(m),
            Input::CloudUpdated { device, update } => {
                let mut out = Vec::new();
                self.cloud_twins(
                    &device,
                    update.twin.unwrap_or_default(),
                    update.timestamp,
                    &mut out,
                );
                out
            }
            Input::EdgeUpdate {
                device,
                payload,
                now_ms,
            } => self.edge_update(&device, &payload, now_ms),
            Input::Get {
                device,
                payload,
                now_ms,
            } => self.get(&device, &payload, now_ms),
            Input::StateUpdate {
                device,
                payload,
                now_ms,
                now_text,
            } => self.state_update(&device, &payload, now_ms, now_text),
        }
    }

    /// Desired values from the cloud: applied only when newer; reported values untouched.
    fn cloud_twins(
        &mut self,
        device: &str,
        twins: BTreeMap<String, Option<MsgTwin>>,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(dev) = self.devices.get_mut(device) else {
            debug!(device, "desired twins for an unknown device");
            return;
        };
        let mut delta = BTreeMap::new();
        let mut changed = false;
        for (name, incoming) in twins {
            let Some(incoming) = incoming else { continue };
            if incoming
                .metadata
                .as_ref()
                .is_some_and(|m| m.value_type == "deleted")
            {
                if dev.twins.remove(&name).is_some() {
                    changed = true;
                }
                continue;
            }
            let Some(expected) = incoming.expected.clone() else {
                continue;
            };
            let stored = dev.twins.entry(name.clone()).or_default();
            let new_cloud = incoming.expected_version.map(|v| v.cloud);
            let old_cloud = stored.expected_version.map(|v| v.cloud);
            let newer = match (new_cloud, old_cloud) {
                (Some(n), Some(o)) => n > o,
                (Some(_), None) => true,
                // No version to compare: apply only a different value.
                (None, _) => value_of(&stored.expected) != expected.value.as_deref(),
            };
            if !newer {
                continue;
            }
            let edge = stored.expected_version.map_or(0, |v| v.edge);
            stored.expected = Some(expected);
            stored.expected_version = Some(TwinVersion {
                cloud: new_cloud.or(old_cloud).unwrap_or(0),
                edge,
            });
            if incoming.metadata.is_some() {
                stored.metadata = incoming.metadata.clone();
            }
            if stored.optional.is_none() {
                stored.optional = incoming.optional;
            }
            changed = true;
            if let Some(want) = value_of(&stored.expected) {
                if value_of(&stored.actual) != Some(want) {
                    delta.insert(name.clone(), want.to_owned());
                }
            }
        }
        if !changed {
            return;
        }
        out.push(Effect::Persist(device.to_owned()));
        if !delta.is_empty() {
            let msg = TwinDelta {
                event_id: uuid::Uuid::new_v4().to_string(),
                timestamp: now_ms,
                twin: Some(
                    dev.twins
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect(),
                ),
                delta,
            };
            out.push(Effect::Publish {
                topic: topic(device, DeviceEvent::TwinUpdateDelta),
                payload: json(&msg),
            });
        }
    }
}
