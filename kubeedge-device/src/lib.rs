//! KubeEdge devices as a library.
//!
//! - [`twin`]: the edge device twin as a sans-IO state machine, `TwinState::apply(input) ->
//!   effects`, with upstream's topics and payloads (v1.12 and v1.17+ namespaced forms) and
//!   ownership rules: desired values belong to the cloud, reported values to the edge, and
//!   versions never go backwards.
//! - [`store`]: devices and twins on SQLite in upstream's `device` and `device_twin` tables.
//! - [`service`]: the twin service around the state machine: fed beehive messages from the edge
//!   router and the event bus, it persists, publishes on MQTT and reports to the cloud.
//! - [`mapper`]: the mapper SDK (`DeviceDriver` trait and runtime) and a Modbus TCP driver.
//!
//! This crate does not depend on the edge crate: both speak `Message` channels, and the edgecore
//! binary plugs the twin into the edge router and event bus.

pub mod mapper;
pub mod service;
pub mod store;
pub mod twin;

pub use service::{twin_service, TwinConfig, TwinDriver, TwinError, TwinOutputs, TwinService};
