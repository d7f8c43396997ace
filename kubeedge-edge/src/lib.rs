//! EdgeCore as a library.
//!
//! - [`hub`]: the edge hub client. [`hub::bootstrap`] turns a join token into a CA and a client
//!   certificate; [`hub::connect`] gives a [`hub::Client`] handle, the inbound message stream and
//!   a [`hub::Driver`] that keeps the mTLS websocket to CloudHub up (keepalive, dead-link
//!   detection, reconnect with backoff and jitter). The rate limit, request/reply and the
//!   handling of resends are tower layers ([`hub::RateLimitLayer`], [`hub::Replies`],
//!   [`hub::Acks`]) that [`hub::connect`] stacks over the bare [`hub::Link`].
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
//!
//! # Example
//!
//! A gateway of its own (features `hub` and `meta` are enough): join a cloudcore with a
//! token, keep the link up, and cache what the cloud pushes in SQLite, acked after commit.
//!
//! ```
//! use std::time::Duration;
//!
//! use kubeedge_edge::hub::{self, CertFiles};
//! use kubeedge_edge::meta::{MetaDb, MetaLayer, Outputs, SqliteStore};
//! use kubeedge_edge::router::{self, Routes};
//! use kubeedge_proto::{Content, JoinToken, Message, Route};
//! use tokio_util::sync::CancellationToken;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let cloud = kubeedge_bench::TestCloud::start(Default::default()).await?;
//! # let dir = tempfile::tempdir()?;
//! # let (cloudcore_https, cloudcore_ws) = (cloud.https.to_string(), cloud.ws.to_string());
//! # let token_text = cloud.pki.issue_token(kubeedge_cloud_now())?.to_string();
//! # fn kubeedge_cloud_now() -> i64 { std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0) }
//! // The token is `keadm gettoken`'s output; the addresses are cloudcore's ports 10002/10000.
//! let token: JoinToken = token_text.parse()?;
//! let files = CertFiles::in_dir(&dir.path().join("certs"));
//! let tls = hub::bootstrap(&cloudcore_https, &token, "gateway-1", &files, Duration::from_secs(10)).await?;
//!
//! let mut config = hub::HubConfig::default();
//! config.server = cloudcore_ws;
//! config.node_name = "gateway-1".into();
//! let (client, inbound, driver) = hub::connect(config, tls);
//! let (store, _recovered) = SqliteStore::open(&dir.path().join("edge.db"))?;
//! let db = MetaDb::spawn(store);
//! // The meta cache is a layer over the hub transport (add layers of your own around it).
//! let meta = ServiceBuilder::new()
//!     .layer(MetaLayer::new(db.clone(), Outputs::default()))
//!     .service(client.clone());
//!
//! let cancel = CancellationToken::new();
//! tokio::spawn(driver.run(cancel.clone()));
//! let routes = Routes { meta: Some(meta), ..Routes::default() };
//! tokio::spawn(router::run(inbound, client, routes, cancel.clone()));
//!
//! // What the cloud's EdgeController sends for a ConfigMap the node's pods use:
//! # let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
//! #     "metadata": {"name": "settings", "namespace": "default", "resourceVersion": "1"}});
//! # let route = Route::new("edgecontroller", "resource", "insert", "default/configmap/settings");
//! # cloud.down.send("gateway-1", Message::new(route, Content::json(&cm)?)).await?;
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
//! while db.get("default/configmap/settings").await?.is_none() {
//!     assert!(tokio::time::Instant::now() < deadline, "not cached");
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//! }
//! cancel.cancel();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
#[cfg(all(
    feature = "edged",
    feature = "eventbus",
    feature = "metaserver",
    feature = "stream"
))]
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
#[cfg(feature = "metaserver")]
pub mod metrics;
#[cfg(feature = "meta")]
pub mod router;
#[cfg(feature = "meta")]
pub mod servicebus;
#[cfg(feature = "stream")]
pub mod stream;

#[cfg(all(
    feature = "edged",
    feature = "eventbus",
    feature = "metaserver",
    feature = "stream"
))]
pub use core::{start, start_with, EdgeCoreError, Plugins, Running};
#[cfg(feature = "hub")]
pub use error::{BootstrapError, HubError};
