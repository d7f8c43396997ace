//! `devices.kubeedge.io/v1alpha2` as KubeEdge v1.12 uses it.
//!
//! [`NoStatus`] (and the `ModelRef` and `TwinProperty` fields) are shared with
//! [`v1beta1`](super::v1beta1); the other types differ on the wire, and why is noted on each
//! in `v1beta1`.

use serde::{Deserialize, Serialize};

pub use super::NoStatus;
use super::{ModelRef, TwinProperty};
use k8s_openapi::api::core::v1::NodeSelector;
use serde_json::Value;
use std::collections::BTreeMap;

/// Device spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<ModelRef>,
    /// Protocol (`opcua`, `modbus`, `bluetooth`, `common`, `customizedProtocol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Value>,
    /// How to read each property.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub property_visitors: Vec<PropertyVisitor>,
    /// Data section (always emitted by upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Where the device is bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
}

impl DeviceSpec {
    /// Upstream's target node rule:
    /// `nodeSelectorTerms[0].matchExpressions[0].values[0]`.
    pub fn node_name(&self) -> Option<&str> {
        self.node_selector
            .as_ref()?
            .node_selector_terms
            .first()?
            .match_expressions
            .as_ref()?
            .first()?
            .values
            .as_ref()?
            .first()
            .map(String::as_str)
    }
}

/// One property visitor; the protocol-specific block stays as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyVisitor {
    /// The property.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub property_name: String,
    /// Report cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Collect cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
    /// Custom values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customized_values: Option<Value>,
    /// `opcua`, `modbus`, `bluetooth` or `customizedProtocol` blocks.
    #[serde(flatten)]
    pub protocol: BTreeMap<String, Value>,
}

/// Twin of one property.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// Property name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub property_name: String,
    /// Desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<TwinProperty>,
    /// Reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<TwinProperty>,
}

/// Device status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// Twins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<Twin>,
}

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
    /// `{"int": {...}}`, `{"string": {...}}`, …
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<Value>,
}

/// DeviceModel spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelSpec {
    /// Protocol name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<ModelProperty>,
}

device_kinds!("v1alpha2");
