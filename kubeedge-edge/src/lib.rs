//! EdgeCore as a library.
//!
//! - [`hub`]: the edge hub client. [`hub::bootstrap`] turns a join token into a CA and a client
//!   certificate; [`hub::connect`] gives a [`hub::Client`] handle, the inbound message stream and
//!   a [`hub::Driver`] that keeps the mTLS websocket to CloudHub up (keepalive, dead-link
//!   detection, reconnect with backoff and jitter, rate limit, request/reply).
//! - [`meta`]: MetaManager, persisting pushes on SQLite (group commit) and acking after commit.
//! - [`metaserver`]: the node's local Kubernetes API (reads from the store, writes through the
//!   cloud).
//! - [`eventbus`]: MQTT (the embedded broker of [`eventbus::broker`] by default, or an external
//!   one) bridged to the device twin and the cloud.
//! - [`router`]: routes inbound messages to the modules as upstream's edgehub does.
//! - [`edged`]: the kubelet of the edge: pods on Docker or a CRI runtime (containerd), pod and
//!   node status, reconciliation.
//! - [`start`]: all of them wired together from an `edgecore.yaml`, as the edgecore binary runs
//!   them.
//!
//! # Features
//!
//! Each module is a cargo feature, and the default set is the whole of edgecore:
//!
//! | feature | modules | pulls in |
//! |---|---|---|
//! | `hub` | [`hub`] | tokio-tungstenite, rustls, rcgen |
//! | `meta` | [`meta`], [`router`] (and `hub`) | rusqlite |
//! | `metaserver` | [`metaserver`] (and `meta`) | kubeedge-apiserver |
//! | `edged` | [`edged`] (and `meta`) | bollard, tonic and the CRI types |
//! | `eventbus` | [`eventbus`] (and `meta`) | rumqttc |
//!
//! [`start`] needs `edged`, `eventbus` and `metaserver` (the default). A gateway of its own
//! that only talks to the cloud and caches what it is sent builds with
//! `default-features = false, features = ["meta"]`: no container runtime client, no API server.

pub mod config;
#[cfg(all(feature = "edged", feature = "eventbus", feature = "metaserver"))]
mod core;
#[cfg(feature = "edged")]
pub mod edged;
#[cfg(feature = "hub")]
mod error;
#[cfg(feature = "eventbus")]
pub mod eventbus;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "hub")]
pub mod hub;
#[cfg(feature = "meta")]
pub mod meta;
#[cfg(feature = "metaserver")]
pub mod metaserver;
#[cfg(feature = "meta")]
pub mod router;

#[cfg(all(feature = "edged", feature = "eventbus", feature = "metaserver"))]
pub use core::{start, start_with, EdgeCoreError, Plugins, Running};
#[cfg(feature = "hub")]
pub use error::{BootstrapError, HubError};
