//! One normalised view of a Device, whichever API version it came from, and the messages and
//! status patches built from it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubeedge_proto::api::{v1alpha2, v1beta1};
use kubeedge_proto::twin::{
    Device, MembershipUpdate, MsgTwin, TwinUpdate, TwinValue, TwinVersion, TypeMetadata,
    ValueMetadata,
};
use kubeedge_proto::{now_millis, Content, Group, Message, Operation, Route, Source};
use serde_json::{json, Value};

use super::DeviceApi;

/// `<namespace>/<name>` of a Device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DeviceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A reported value as the Device status keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The value.
    pub value: String,
    /// When the edge saw it (ms).
    pub timestamp: i64,
    /// The edge's version of the twin.
    pub edge_version: i64,
    /// The twin type.
    pub value_type: String,
}

impl Reported {
    /// From a reported twin; `None` without a value.
    pub fn from_twin(t: &MsgTwin) -> Option<Self> {
        let actual = t.actual.as_ref()?;
        Some(Self {
            value: actual.value.clone()?,
            timestamp: actual.metadata.map_or(0, |m| m.timestamp),
            edge_version: t.actual_version.map_or(0, |v| v.edge),
            value_type: t
                .metadata
                .as_ref()
                .map_or_else(|| "string".to_owned(), |m| m.value_type.clone()),
        })
    }

    /// Strictly newer: a later timestamp, or the same one with a later edge version.
    pub fn newer_than(&self, other: &Self) -> bool {
        (self.timestamp, self.edge_version) > (other.timestamp, other.edge_version)
    }

    fn from_status(v: &Value) -> Option<Self> {
        let value = v.get("value")?.as_str()?.to_owned();
        let meta = v.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        Some(Self {
            value,
            timestamp: field("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0),
            edge_version: field("edgeVersion")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            value_type: field("type").unwrap_or("string").to_owned(),
        })
    }

    fn to_status(&self) -> Value {
        json!({
            "value": self.value,
            "metadata": {
                "timestamp": self.timestamp.to_string(),
                "type": self.value_type,
                "edgeVersion": self.edge_version.to_string(),
            }
        })
    }
}

/// A Device, normalised.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceView {
    /// The object.
    pub key: DeviceKey,
    /// The twin id.
    pub id: String,
    /// The node it is bound to.
    pub node: Option<String>,
    /// A description (upstream: the `description` label).
    pub description: String,
    /// Desired values: property -> (value, declared type).
    pub desired: BTreeMap<String, (String, Option<String>)>,
    /// The cloud version of the desired values (the resourceVersion).
    pub version: i64,
    /// The model name.
    pub model: Option<String>,
    /// The spec, to see spec changes.
    pub spec: Value,
    /// Reported values in the watched status.
    pub reported: BTreeMap<String, Reported>,
    /// State and last online time in the watched status.
    pub state: Option<(String, String)>,
    /// `status.twins` as watched (kept in writes).
    pub status_twins: Vec<Value>,
    /// The object as JSON, with its resourceVersion.
    pub object: Option<(Value, String)>,
}

fn key_and_id(meta: &ObjectMeta, namespaced: bool) -> (DeviceKey, String) {
    let key = DeviceKey {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    };
    let id = if namespaced {
        key.to_string()
    } else {
        key.name.clone()
    };
    (key, id)
}

fn version(meta: &ObjectMeta) -> i64 {
    meta.resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .or(meta.generation)
        .unwrap_or(0)
}

fn reported_of(twins: &[Value]) -> BTreeMap<String, Reported> {
    twins
        .iter()
        .filter_map(|t| {
            let name = t.get("propertyName")?.as_str()?.to_owned();
            Some((name, Reported::from_status(t.get("reported")?)?))
        })
        .collect()
}

/// A v1beta1 Device.
pub(super) fn from_v1beta1(d: &v1beta1::Device, namespaced: bool) -> DeviceView {
    let (key, id) = key_and_id(&d.metadata, namespaced);
    let status = serde_json::to_value(d.status.clone().unwrap_or_default()).unwrap_or_default();
    let twins: Vec<Value> = status
        .get("twins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let st = d.status.as_ref();
    DeviceView {
        id,
        node: Some(d.spec.node_name.clone()).filter(|n| !n.is_empty()),
        description: description(&d.metadata),
        desired: d
            .spec
            .properties
            .iter()
            .filter_map(|p| {
                let want = p.desired.as_ref()?;
                Some((
                    p.name.clone(),
                    (want.value.clone(), want.metadata.get("type").cloned()),
                ))
            })
            .collect(),
        version: version(&d.metadata),
        model: d.spec.device_model_ref.as_ref().map(|m| m.name.clone()),
        spec: serde_json::to_value(&d.spec).unwrap_or_default(),
        reported: reported_of(&twins),
        state: st
            .filter(|s| !s.state.is_empty())
            .map(|s| (s.state.clone(), s.last_online_time.clone())),
        status_twins: twins,
        object: object(d, &d.metadata),
        key,
    }
}

/// A v1alpha2 Device (desired values live in `status.twins[].desired`).
pub(super) fn from_v1alpha2(d: &v1alpha2::Device, namespaced: bool) -> DeviceView {
    let (key, id) = key_and_id(&d.metadata, namespaced);
    let status = d.status.clone().unwrap_or_default();
    let twins: Vec<Value> = status
        .twins
        .iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    DeviceView {
        id,
        node: d.spec.node_name().map(str::to_owned),
        description: description(&d.metadata),
        desired: status
            .twins
            .iter()
            .filter_map(|t| {
                let want = t.desired.as_ref()?;
                Some((
                    t.property_name.clone(),
                    (want.value.clone(), want.metadata.get("type").cloned()),
                ))
            })
            .collect(),
        version: version(&d.metadata),
        model: d.spec.device_model_ref.as_ref().map(|m| m.name.clone()),
        spec: serde_json::to_value(&d.spec).unwrap_or_default(),
        reported: reported_of(&twins),
        state: None,
        status_twins: twins,
        object: object(d, &d.metadata),
        key,
    }
}

fn description(meta: &ObjectMeta) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("description"))
        .cloned()
        .unwrap_or_default()
}

fn object<T: serde::Serialize>(d: &T, meta: &ObjectMeta) -> Option<(Value, String)> {
    let v = serde_json::to_value(d).ok()?;
    Some((v, meta.resource_version.clone().unwrap_or_default()))
}

/// Property types of one DeviceModel.
#[derive(Debug, Clone)]
pub(super) struct ModelTypes {
    /// `(namespace, name)`.
    pub(super) key: (String, String),
    /// Property -> twin type.
    pub(super) types: BTreeMap<String, String>,
}

fn model_key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A v1beta1 DeviceModel.
pub(super) fn model_v1beta1(m: &v1beta1::DeviceModel) -> ModelTypes {
    ModelTypes {
        key: model_key(&m.metadata),
        types: m
            .spec
            .properties
            .iter()
            .filter(|p| !p.value_type.is_empty())
            .map(|p| (p.name.clone(), p.value_type.to_ascii_lowercase()))
            .collect(),
    }
}

/// A v1alpha2 DeviceModel (`type: {int: {...}}`).
pub(super) fn model_v1alpha2(m: &v1alpha2::DeviceModel) -> ModelTypes {
    ModelTypes {
        key: model_key(&m.metadata),
        types: m
            .spec
            .properties
            .iter()
            .filter_map(|p| {
                let t = p.value_type.as_ref()?.as_object()?.keys().next()?.clone();
                Some((p.name.clone(), t))
            })
            .collect(),
    }
}

fn twins(v: &DeviceView, types: &BTreeMap<String, String>) -> BTreeMap<String, Option<MsgTwin>> {
    let now = now_millis();
    v.desired
        .iter()
        .map(|(name, (value, declared))| {
            let t = declared
                .clone()
                .or_else(|| types.get(name).cloned())
                .unwrap_or_else(|| "string".into());
            (
                name.clone(),
                Some(MsgTwin {
                    expected: Some(TwinValue {
                        value: Some(value.clone()),
                        metadata: Some(ValueMetadata { timestamp: now }),
                    }),
                    optional: Some(false),
                    metadata: Some(TypeMetadata { value_type: t }),
                    expected_version: Some(TwinVersion {
                        cloud: v.version,
                        edge: 0,
                    }),
                    ..MsgTwin::default()
                }),
            )
        })
        .collect()
}

/// The device as the edge's membership lists it.
pub(super) fn edge_device(v: &DeviceView, types: &BTreeMap<String, String>) -> Device {
    Device {
        id: v.id.clone(),
        name: v.key.name.clone(),
        description: v.description.clone(),
        twin: Some(twins(v, types)),
        ..Device::default()
    }
}

fn twin_message(op: Operation, resource: String, content: Content) -> Message {
    Message::new(
        Route::new(Source::DeviceController, Group::Twin, op, resource),
        content,
    )
}

/// `membership` with added and removed devices.
pub(super) fn membership(
    added: &[DeviceView],
    removed: &[DeviceView],
    types: &BTreeMap<String, String>,
) -> Message {
    let list = |vs: &[DeviceView], with_twins: bool| {
        (!vs.is_empty()).then(|| {
            vs.iter()
                .map(|v| {
                    if with_twins {
                        edge_device(v, types)
                    } else {
                        Device {
                            id: v.id.clone(),
                            name: v.key.name.clone(),
                            ..Device::default()
                        }
                    }
                })
                .collect()
        })
    };
    let body = MembershipUpdate {
        event_id: uuid::Uuid::new_v4().to_string(),
        timestamp: now_millis(),
        added_devices: list(added, true),
        removed_devices: list(removed, false),
    };
    twin_message(
        Operation::Update,
        "membership".into(),
        Content::json(&body).unwrap_or_default(),
    )
}

/// `device/<id>/twin/cloud_updated` with the desired twins.
pub(super) fn cloud_updated(v: &DeviceView, types: &BTreeMap<String, String>) -> Message {
    let body = TwinUpdate {
        event_id: uuid::Uuid::new_v4().to_string(),
        timestamp: now_millis(),
        twin: Some(twins(v, types)),
    };
    twin_message(
        Operation::Update,
        format!("device/{}/twin/cloud_updated", v.id),
        Content::json(&body).unwrap_or_default(),
    )
}

impl DeviceView {
    /// The object for the edge's store: `<ns>/device/<name>`.
    pub fn object_message(&self, op: &str) -> Option<Message> {
        let (obj, rv) = self.object.clone()?;
        let content = Content::json(&obj).ok()?;
        Some(
            Message::new(
                Route::new(
                    Source::DeviceController,
                    Group::Resource,
                    op,
                    format!("{}/device/{}", self.key.namespace, self.key.name),
                ),
                content,
            )
            .with_resource_version(rv),
        )
    }
}

/// The merge patch writing reported values (and state) into the status. `status.twins` is a
/// list, so the whole list is written: watched entries keep their other fields.
pub(super) fn status_patch(
    v: &DeviceView,
    reported: &BTreeMap<String, Reported>,
    state: Option<&(String, String)>,
    api: DeviceApi,
) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in &v.status_twins {
        let mut t = t.clone();
        if let Some(name) = t
            .get("propertyName")
            .and_then(Value::as_str)
            .map(str::to_owned)
        {
            if let (Some(r), Some(obj)) = (reported.get(&name), t.as_object_mut()) {
                obj.insert("reported".into(), r.to_status());
            }
            seen.insert(name);
        }
        out.push(t);
    }
    for (name, r) in reported {
        if !seen.contains(name) {
            out.push(json!({"propertyName": name, "reported": r.to_status()}));
        }
    }
    let mut status = json!({ "twins": out });
    if let (Some((s, last)), DeviceApi::V1beta1) = (state, api) {
        status["state"] = json!(s);
        if !last.is_empty() {
            status["lastOnlineTime"] = json!(last);
        }
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_reports_only() {
        let r = |ts, ev| Reported {
            value: "x".into(),
            timestamp: ts,
            edge_version: ev,
            value_type: "int".into(),
        };
        assert!(r(2, 1).newer_than(&r(1, 9)));
        assert!(r(2, 2).newer_than(&r(2, 1)));
        assert!(!r(2, 1).newer_than(&r(2, 1)), "a repeat is not newer");
        assert!(!r(1, 9).newer_than(&r(2, 1)));
        let back = Reported::from_status(&r(5, 3).to_status()).unwrap();
        assert_eq!(back, r(5, 3));
    }
}
