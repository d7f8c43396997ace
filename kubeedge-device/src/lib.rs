//! KubeEdge devices as a library.
//!
//! - [`twin`]: the edge device twin as a sans-IO state machine, `TwinState::apply(input) ->
//!   effects`, with upstream's topics and payloads (v1.12 and v1.17+ namespaced forms) and
//!   ownership rules: desired values belong to the cloud, reported values to the edge, and
//!   versions never go backwards.
//! - [`store`]: devices and twins on SQLite in upstream's `device` and `device_twin` tables.

pub mod store;
pub mod twin;
