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
//!
//! # Example
//!
//! The twin is a state machine with no I/O: feed it what happened, perform what it returns.
//! A device joins with a desired value, and its mapper reports the value it read:
//!
//! ```
//! use kubeedge_device::twin::{Effect, Input, TwinState};
//! use kubeedge_proto::twin::MembershipUpdate;
//!
//! let mut twin = TwinState::new();
//! // The cloud binds a device to this node, with `switch` desired ON (upstream's payload).
//! let membership: MembershipUpdate = serde_json::from_value(serde_json::json!({
//!     "event_id": "e0", "timestamp": 1,
//!     "added_devices": [{"id": "thermometer-1", "name": "thermometer-1", "twin": {"switch": {
//!         "expected": {"value": "ON", "metadata": {"timestamp": 1}},
//!         "optional": false, "metadata": {"type": "string"},
//!         "expected_version": {"cloud": 1, "edge": 0}}}}]
//! }))?;
//! let effects = twin.apply(Input::Membership(membership));
//! // Stored, and the delta goes to the mapper on MQTT.
//! assert!(effects.contains(&Effect::Persist("thermometer-1".into())));
//! assert!(effects.iter().any(|e| matches!(e, Effect::Publish { topic, .. }
//!     if topic.to_string() == "$hw/events/device/thermometer-1/twin/update/delta")));
//!
//! // The mapper publishes what it read on `$hw/events/device/thermometer-1/twin/update`.
//! let report = br#"{"event_id":"e1","timestamp":2,"twin":{"switch":{"actual":{"value":"ON"},"metadata":{"type":"string"}}}}"#;
//! let effects = twin.apply(Input::EdgeUpdate {
//!     device: "thermometer-1".into(),
//!     payload: report.to_vec(),
//!     now_ms: 2,
//! });
//! // The reported value goes to the cloud (through the hub's durable outbox).
//! assert!(effects.iter().any(|e| matches!(e, Effect::ToCloud(_))));
//! # Ok::<(), serde_json::Error>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod mapper;
pub mod service;
pub mod store;
pub mod twin;

pub use service::{twin_service, TwinConfig, TwinDriver, TwinError, TwinOutputs, TwinService};
