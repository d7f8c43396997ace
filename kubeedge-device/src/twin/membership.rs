//! Membership: the devices bound to this node, from the cloud's detail and updates, and the
//! answer to a mapper's `membership/get`.

use kubeedge_proto::twin::{BaseMessage, Device, ErrorResult, MembershipUpdate};
use kubeedge_proto::Topic;

use super::{json, DeviceTwin, Effect, TwinState};

impl TwinState {
    pub(super) fn membership_detail(&mut self, devices: Vec<Device>) -> Vec<Effect> {
        let keep: std::collections::BTreeSet<String> = devices
            .iter()
            .map(|d| {
                if d.id.is_empty() {
                    d.name.clone()
                } else {
                    d.id.clone()
                }
            })
            .collect();
        let removed: Vec<Device> = self
            .devices
            .keys()
            .filter(|id| !keep.contains(*id))
            .map(|id| Device {
                id: id.clone(),
                ..Device::default()
            })
            .collect();
        self.membership(MembershipUpdate {
            added_devices: Some(devices),
            removed_devices: Some(removed),
            ..MembershipUpdate::default()
        })
    }

    pub(super) fn membership_get(&self, node: &str, payload: &[u8], now_ms: i64) -> Vec<Effect> {
        let result = Topic::Node {
            node: node.to_owned(),
            event: kubeedge_proto::NodeEvent::MembershipGetResult,
        };
        let req: BaseMessage = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                return vec![Effect::Publish {
                    topic: result,
                    payload: json(&ErrorResult {
                        event_id: String::new(),
                        timestamp: now_ms,
                        code: 400,
                        reason: format!("invalid payload: {e}"),
                    }),
                }]
            }
        };
        let body = kubeedge_proto::twin::MembershipGetResult {
            event_id: req.event_id,
            timestamp: now_ms,
            devices: self.membership_devices(),
        };
        vec![Effect::Publish {
            topic: result,
            payload: json(&body),
        }]
    }

    pub(super) fn membership(&mut self, m: MembershipUpdate) -> Vec<Effect> {
        let mut out = Vec::new();
        for d in m.added_devices.unwrap_or_default() {
            let id = if d.id.is_empty() {
                d.name.clone()
            } else {
                d.id.clone()
            };
            if id.is_empty() {
                continue;
            }
            let entry = self
                .devices
                .entry(id.clone())
                .or_insert_with(|| DeviceTwin {
                    id: id.clone(),
                    ..DeviceTwin::default()
                });
            let before = entry.clone();
            entry.name = if d.name.is_empty() {
                id.clone()
            } else {
                d.name.clone()
            };
            entry.description = d.description.clone();
            if *entry != before {
                out.push(Effect::Persist(id.clone()));
            }
            self.cloud_twins(&id, d.twin.unwrap_or_default(), m.timestamp, &mut out);
        }
        for d in m.removed_devices.unwrap_or_default() {
            let id = if d.id.is_empty() { d.name } else { d.id };
            if self.devices.remove(&id).is_some() {
                out.push(Effect::Remove(id));
            }
        }
        out
    }

    /// The membership as upstream reports it on `membership/get/result`.
    pub fn membership_devices(&self) -> Vec<Device> {
        self.devices
            .values()
            .map(|d| Device {
                id: d.id.clone(),
                name: d.name.clone(),
                description: d.description.clone(),
                state: d.state.clone(),
                last_online: d.last_online.clone(),
                attributes: None,
                twin: Some(
                    d.twins
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect(),
                ),
            })
            .collect()
    }
}
