//! EdgeCore as a library.
//!
//! - [`hub`]: the edge hub client. [`hub::bootstrap`] turns a join token into a CA and a client
//!   certificate; [`hub::connect`] gives a [`hub::Client`] handle, the inbound message stream and
//!   a [`hub::Driver`] that keeps the mTLS websocket to CloudHub up (keepalive, dead-link
//!   detection, reconnect with backoff and jitter, rate limit, request/reply).
//! - [`meta`]: MetaManager, persisting pushes on SQLite (group commit) and acking after commit.
//! - [`metaserver`]: the node's local Kubernetes API (reads from the store, writes through the
//!   cloud).
//! - [`eventbus`]: MQTT (an embedded rumqttd broker by default, or an external one) bridged to
//!   the device twin and the cloud.
//! - [`router`]: routes inbound messages to the modules as upstream's edgehub does.
//! - [`edged`]: the kubelet of the edge: pods on Docker, pod and node status, reconciliation.

pub mod config;
mod core;
pub mod edged;
mod error;
pub mod eventbus;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod meta;
pub mod metaserver;
pub mod router;

pub use core::{start, start_with, EdgeCoreError, Plugins, Running};
pub use error::{BootstrapError, HubError};
