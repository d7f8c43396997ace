//! The mapper SDK: a [`DeviceDriver`] talks to one device; the [`Mapper`] runtime reads its
//! properties at their collect cycle, publishes reported values on the twin's MQTT topics,
//! applies desired values from twin deltas and reports the device state. [`ModbusTcp`] is the
//! first driver.

mod modbus;
mod runtime;

use std::future::Future;
use std::time::Duration;

use kubeedge_proto::api::v1beta1;
use serde_json::Value;

pub use modbus::{ModbusTcp, ModbusVisitor, Register};
pub use runtime::{Mapper, MapperConfig, MapperError};

/// A driver failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The device cannot be reached (retryable: the runtime reconnects).
    #[error("device unreachable")]
    Io(#[from] std::io::Error),
    /// The device refused the request.
    #[error("device refused the request: {0}")]
    Refused(String),
    /// The property's visitor configuration is unusable.
    #[error("invalid visitor for property {property}: {reason}")]
    Visitor {
        /// The property.
        property: String,
        /// Why.
        reason: String,
    },
    /// A desired value does not fit the property.
    #[error("value {value:?} does not fit property {property}")]
    Value {
        /// The property.
        property: String,
        /// The value.
        value: String,
    },
    /// The property cannot be written.
    #[error("property {0} is read-only")]
    ReadOnly(String),
    /// Not connected.
    #[error("not connected")]
    NotConnected,
}

impl DriverError {
    /// Whether reconnecting may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io(_) | Self::NotConnected)
    }
}

/// The device state the runtime reports (upstream's `state/update` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceHealth {
    /// Reachable.
    Online,
    /// Not reachable.
    Offline,
}

impl DeviceHealth {
    /// The wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// The value types of DeviceModel properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueType {
    /// `int`.
    Int,
    /// `float` / `double`.
    Float,
    /// `boolean`.
    Boolean,
    /// `string` (and anything else).
    String,
}

impl ValueType {
    /// From a model's type name (`INT`, `int`, `double`, …).
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "int" | "integer" => Self::Int,
            "float" | "double" => Self::Float,
            "boolean" | "bool" => Self::Boolean,
            _ => Self::String,
        }
    }

    /// The twin metadata type upstream uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::Boolean => "boolean",
            Self::String => "string",
        }
    }
}

/// One property the mapper handles.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PropertyConfig {
    /// The property (twin) name.
    pub name: String,
    /// Its type.
    pub value_type: ValueType,
    /// Whether desired values may be written.
    pub writable: bool,
    /// How often it is read.
    pub collect_cycle: Duration,
    /// Protocol-specific visitor settings (`visitors.configData`).
    pub visitor: Value,
}

impl PropertyConfig {
    /// A property.
    pub fn new(name: impl Into<String>, value_type: ValueType, visitor: Value) -> Self {
        Self {
            name: name.into(),
            value_type,
            writable: true,
            collect_cycle: Duration::from_secs(1),
            visitor,
        }
    }
}

/// One device as the mapper sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MapperDevice {
    /// The twin id (`<name>` for v1.12 clouds, `<namespace>/<name>` for v1.17+).
    pub id: String,
    /// Properties.
    pub properties: Vec<PropertyConfig>,
    /// The protocol's `configData` (address, slave id, …).
    pub protocol: Value,
}

impl MapperDevice {
    /// A device with properties.
    pub fn new(id: impl Into<String>, properties: Vec<PropertyConfig>, protocol: Value) -> Self {
        Self {
            id: id.into(),
            properties,
            protocol,
        }
    }

    /// From a v1beta1 Device and its model. `namespaced` selects the v1.17+ twin id.
    pub fn from_v1beta1(
        device: &v1beta1::Device,
        model: Option<&v1beta1::DeviceModel>,
        namespaced: bool,
    ) -> Self {
        let name = device.metadata.name.clone().unwrap_or_default();
        let ns = device
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let id = if namespaced {
            format!("{ns}/{name}")
        } else {
            name
        };
        let properties = device
            .spec
            .properties
            .iter()
            .map(|p| {
                let mp = model.and_then(|m| m.spec.properties.iter().find(|mp| mp.name == p.name));
                let declared = p
                    .desired
                    .as_ref()
                    .and_then(|d| d.metadata.get("type").cloned());
                let value_type = mp
                    .map(|m| m.value_type.clone())
                    .filter(|t| !t.is_empty())
                    .or(declared)
                    .map_or(ValueType::String, |t| ValueType::parse(&t));
                PropertyConfig {
                    name: p.name.clone(),
                    value_type,
                    writable: mp.is_none_or(|m| !m.access_mode.eq_ignore_ascii_case("ReadOnly")),
                    collect_cycle: Duration::from_millis(
                        p.collect_cycle.filter(|c| *c > 0).unwrap_or(1000) as u64,
                    ),
                    visitor: p
                        .visitors
                        .as_ref()
                        .and_then(|v| v.config_data.clone())
                        .unwrap_or(Value::Null),
                }
            })
            .collect();
        Self {
            id,
            properties,
            protocol: device
                .spec
                .protocol
                .as_ref()
                .and_then(|p| p.config_data.clone())
                .unwrap_or(Value::Null),
        }
    }
}

/// Talks to one device. The runtime calls one method at a time.
pub trait DeviceDriver: Send + 'static {
    /// (Re)connect.
    fn connect(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Read a property, as the twin's string value.
    fn read(
        &mut self,
        property: &PropertyConfig,
    ) -> impl Future<Output = Result<String, DriverError>> + Send;
    /// Write a desired value.
    fn write(
        &mut self,
        property: &PropertyConfig,
        value: &str,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Whether the device is reachable.
    fn health(&mut self) -> impl Future<Output = DeviceHealth> + Send;
}
