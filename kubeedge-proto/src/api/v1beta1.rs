//! `devices.kubeedge.io/v1beta1` (KubeEdge v1.15 and later).

use serde::{Deserialize, Serialize};

pub use super::NoStatus;
use super::{ModelRef, TwinProperty};
use serde_json::Value;

// Not shared with v1alpha2: v1beta1 binds the device by `nodeName`, lists `properties` (each
// with its desired value and `visitors`) and writes `protocol` as `{protocolName, configData}`;
// v1alpha2 binds by `nodeSelector`, lists `propertyVisitors` and writes one block per protocol.
/// Device spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<ModelRef>,
    /// The node the device is bound to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// Properties with desired values and visitors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<DeviceProperty>,
    /// Protocol config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolConfig>,
    /// Device methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Value>>,
    /// State reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report: Option<Value>,
}

/// `{protocolName, configData}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfig {
    /// Protocol name (`modbus`, `virtual`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol_name: String,
    /// Free-form protocol configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_data: Option<Value>,
}

/// One property of a Device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    /// Property name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<TwinProperty>,
    /// How to read the property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<ProtocolConfig>,
    /// Report cycle, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Collect cycle, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
    /// Whether reported values go to the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Push method (http, mqtt, otel, dbMethod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_method: Option<Value>,
}

// Not shared with v1alpha2: the v1beta1 twin carries `observedDesired` (the desired value now
// lives in `spec.properties`), v1alpha2's carries `desired`.
/// Observed twin of one property.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// Property name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub property_name: String,
    /// Reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<TwinProperty>,
    /// The desired value the device last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_desired: Option<TwinProperty>,
}

// Not shared with v1alpha2: `twins` holds the other version's `Twin`, and v1beta1 adds `state`,
// `lastOnlineTime`, `reportToCloud` and `reportCycle`.
/// Device status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// Twins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<Twin>,
    /// Device state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Last time online.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online_time: String,
    /// Report to cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Report cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
}

// Not shared with v1alpha2: `type` is a name (`INT`) here, an object (`{"int": {…}}`) there, and
// `accessMode`, `minimum`, `maximum`, `unit` are v1beta1 keys.
/// One property of a DeviceModel.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelProperty {
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `INT`, `FLOAT`, `DOUBLE`, `STRING`, `BOOLEAN`, `BYTES`, `STREAM`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub value_type: String,
    /// `ReadWrite` or `ReadOnly`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_mode: String,
    /// Minimum.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub minimum: String,
    /// Maximum.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub maximum: String,
    /// Unit.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

// Not shared with v1alpha2: its properties are the other version's, v1beta1 adds
// `protocolConfigData`, and v1alpha2 writes `protocol` before `properties`.
/// DeviceModel spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelSpec {
    /// Properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<ModelProperty>,
    /// Protocol name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Protocol config data (upstream HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_config_data: Option<Value>,
}

device_kinds!("v1beta1");
