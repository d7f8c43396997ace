//! What mappers publish: reported twin values (`twin/update`), twin reads (`twin/get`) and device
//! state (`state/update`).

use std::collections::BTreeMap;

use kubeedge_proto::twin::{
    BaseMessage, DeviceStateInfo, DeviceStateResult, DeviceStateUpdate, MsgTwin, TwinUpdate,
    TwinValue, TwinVersion, TypeMetadata, ValueMetadata, MAX_TWIN_KEY_LEN, MAX_TWIN_VALUE_LEN,
};
use kubeedge_proto::{Content, DeviceEvent, Message, Route};
use tracing::debug;

use super::{
    error_result, json, not_found, parse, topic, value_fits, value_of, Effect, TwinState, STATES,
};

impl TwinState {
    pub(super) fn edge_update(&mut self, device: &str, payload: &[u8], now_ms: i64) -> Vec<Effect> {
        let result = DeviceEvent::TwinUpdateResult;
        let update: TwinUpdate = match parse(device, result, payload, now_ms) {
            Ok(v) => v,
            Err(fx) => return fx,
        };
        let Some(dev) = self.devices.get_mut(device) else {
            return not_found(device, result, update.event_id, now_ms);
        };
        let twins = update.twin.clone().unwrap_or_default();
        // Validate everything first: a refused update changes nothing.
        for (name, t) in &twins {
            if name.len() >= MAX_TWIN_KEY_LEN || name.is_empty() {
                return vec![error_result(
                    device,
                    result,
                    update.event_id,
                    now_ms,
                    400,
                    format!("invalid twin name {name:?}"),
                )];
            }
            let Some(t) = t else { continue };
            if let Some(v) = value_of(&t.actual) {
                let declared = dev
                    .twins
                    .get(name)
                    .and_then(|s| s.metadata.as_ref())
                    .map(|m| m.value_type.as_str());
                let declared = declared.or(t.metadata.as_ref().map(|m| m.value_type.as_str()));
                if v.len() >= MAX_TWIN_VALUE_LEN || !value_fits(v, declared) {
                    return vec![error_result(
                        device,
                        result,
                        update.event_id,
                        now_ms,
                        400,
                        format!("invalid value for {name}: {v:?}"),
                    )];
                }
            }
        }
        let mut changed = false;
        for (name, t) in twins {
            let Some(t) = t else { continue };
            if t.expected.is_some() {
                debug!(device, twin = %name, "desired values belong to the cloud; ignored from the edge");
            }
            let Some(actual) = t.actual else { continue };
            let stored = dev.twins.entry(name.clone()).or_default();
            if value_of(&stored.actual) == actual.value.as_deref() {
                continue; // a repeated report is a no-op
            }
            let version = stored.actual_version.unwrap_or_default();
            stored.actual = Some(TwinValue {
                value: actual.value.clone(),
                metadata: Some(ValueMetadata {
                    timestamp: actual.metadata.map_or(now_ms, |m| m.timestamp),
                }),
            });
            stored.actual_version = Some(TwinVersion {
                cloud: version.cloud,
                edge: version.edge + 1,
            });
            if stored.metadata.is_none() {
                stored.metadata = t.metadata.clone().or(Some(TypeMetadata {
                    value_type: "string".into(),
                }));
            }
            if stored.optional.is_none() {
                stored.optional = Some(false);
            }
            changed = true;
        }
        let mut out = vec![Effect::Publish {
            topic: topic(device, result),
            payload: payload.to_vec(),
        }];
        if !changed {
            return out;
        }
        // Every reported value of the device, not only the changed ones: the upstream outbox
        // coalesces by resource while offline, and a full snapshot loses nothing when it does.
        let reported: BTreeMap<String, Option<MsgTwin>> = dev
            .twins
            .iter()
            .filter(|(_, t)| t.actual.is_some())
            .map(|(name, t)| {
                (
                    name.clone(),
                    Some(MsgTwin {
                        actual: t.actual.clone(),
                        optional: t.optional,
                        metadata: t.metadata.clone(),
                        actual_version: t.actual_version,
                        ..MsgTwin::default()
                    }),
                )
            })
            .collect();
        out.push(Effect::Persist(device.to_owned()));
        let content = TwinUpdate {
            event_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_ms,
            twin: Some(reported),
        };
        let msg = Message::new(
            Route::new(
                "twin",
                "resource",
                "update",
                format!("device/{device}/twin/edge_updated"),
            ),
            Content::json(&content).unwrap_or_default(),
        );
        out.push(Effect::ToCloud(msg));
        out
    }

    pub(super) fn get(&self, device: &str, payload: &[u8], now_ms: i64) -> Vec<Effect> {
        let result = DeviceEvent::TwinGetResult;
        let req: BaseMessage = match parse(device, result, payload, now_ms) {
            Ok(v) => v,
            Err(fx) => return fx,
        };
        let Some(dev) = self.devices.get(device) else {
            return not_found(device, result, req.event_id, now_ms);
        };
        let msg = TwinUpdate {
            event_id: req.event_id,
            timestamp: now_ms,
            twin: Some(
                dev.twins
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            ),
        };
        vec![Effect::Publish {
            topic: topic(device, result),
            payload: json(&msg),
        }]
    }

    pub(super) fn state_update(
        &mut self,
        device: &str,
        payload: &[u8],
        now_ms: i64,
        now_text: String,
    ) -> Vec<Effect> {
        let result = DeviceEvent::StateUpdateResult;
        let req: DeviceStateUpdate = match parse(device, result, payload, now_ms) {
            Ok(v) => v,
            Err(fx) => return fx,
        };
        if !STATES.contains(&req.state.as_str()) {
            debug!(device, state = %req.state, "ignored device state");
            return Vec::new();
        }
        let Some(dev) = self.devices.get_mut(device) else {
            return not_found(device, result, req.event_id, now_ms);
        };
        dev.state = req.state.clone();
        dev.last_online = now_text;
        let body = DeviceStateResult {
            event_id: req.event_id,
            timestamp: now_ms,
            device: DeviceStateInfo {
                name: dev.name.clone(),
                state: dev.state.clone(),
                last_online: dev.last_online.clone(),
            },
        };
        let text = String::from_utf8(json(&body)).unwrap_or_default();
        // Upstream sends the state as a JSON string.
        let msg = Message::new(
            Route::new(
                "twin",
                "resource",
                "update",
                format!("device/{device}/state/update"),
            ),
            Content::string(&text),
        );
        vec![
            Effect::Persist(device.to_owned()),
            Effect::Publish {
                topic: topic(device, result),
                payload: text.into_bytes(),
            },
            Effect::ToCloud(msg),
        ]
    }
}
