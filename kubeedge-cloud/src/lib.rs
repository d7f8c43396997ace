//! CloudCore as a library.
//!
//! - [`certs`]: the KubeEdge CA, the cloudcore server certificate, edge certificates and the
//!   join token, behind a [`certs::CertStore`]; [`secrets`] keeps them in the `kubeedge`
//!   namespace secrets as upstream does.
//! - [`devicecontroller`]: Device/DeviceModel watches to membership and desired-twin pushes,
//!   edge reports to the Device status.
//! - [`hub`]: CloudHub, the TLS websocket server with a per-node outbox (ACK/NO-ACK delivery,
//!   coalescing, resend across reconnects) and the certificate bootstrap server.
//! - [`edgecontroller`]: nodes, pods and the configmaps/secrets they use, down to the edge
//!   nodes that need them; node, lease and pod status from the edges up to the API.
//! - [`synccontroller`]: the ObjectSync ledger per node and object, resend after reconnect.
//! - [`dynamiccontroller`]: the MetaServer Application protocol.
//! - [`run_controllers`]: all of them behind one hub; [`config`]: `cloudcore.yaml`.
//!
//! Every controller talks to Kubernetes through a `kube::Client`: a real cluster, or the
//! embedded kubeedge-apiserver. No controller installs a tracing subscriber or reads
//! signals; binaries do.
//!
//! # Example
//!
//! A CloudHub on loopback, an edge (kubeedge-edge's hub client) that joins it with a token,
//! and a message from the cloud to that node:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use kubeedge_cloud::certs::{unix_now, FsCertStore, Pki, PkiConfig};
//! use kubeedge_cloud::hub::{CloudHub, HubConfig};
//! use kubeedge_edge::hub::{self as edge_hub, CertFiles};
//! use kubeedge_proto::{Content, Group, Message, Route, Source};
//! use tokio::net::TcpListener;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // The cloud: a CA and server certificate, the websocket hub and the bootstrap server.
//! let store = FsCertStore::in_dir(dir.path().join("cloud"));
//! let pki = Arc::new(Pki::load_or_create(&store, PkiConfig::default())?);
//! let (hub, down, _up) = CloudHub::new(pki.clone(), HubConfig::default());
//! let (ws, https) = (TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?);
//! let (ws_addr, https_addr) = (ws.local_addr()?, https.local_addr()?);
//! let cancel = CancellationToken::new();
//! let serving = hub.clone();
//! let stop = cancel.clone();
//! tokio::spawn(async move { serving.serve(ws, https, stop).await });
//!
//! // An edge joins with a token (`keadm gettoken`), then keeps its websocket up.
//! let token = pki.issue_token(unix_now())?;
//! let files = CertFiles::in_dir(&dir.path().join("edge"));
//! let timeout = Duration::from_secs(10);
//! let tls = edge_hub::bootstrap(&https_addr.to_string(), &token, "edge-1", &files, timeout).await?;
//! let mut config = edge_hub::HubConfig::default();
//! config.server = ws_addr.to_string();
//! config.node_name = "edge-1".into();
//! let (_client, mut inbound, driver) = edge_hub::connect(config, tls);
//! tokio::spawn(driver.run(cancel.clone()));
//!
//! // The cloud sends to the node; the edge receives it.
//! let route = Route::new(Source::from("example"), Group::User, "hello", "greetings");
//! down.send("edge-1", Message::new(route, Content::string("hi"))).await?;
//! let got = tokio::time::timeout(timeout, inbound.recv()).await?.expect("link open");
//! assert_eq!(got.route.resource, "greetings");
//! cancel.cancel();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod certs;
pub mod config;
mod controllers;
pub mod devicecontroller;
pub mod dynamiccontroller;
pub mod edgecontroller;
mod error;
pub mod hub;
mod impersonate;
pub mod leader;
pub mod metrics;
pub mod monitor;
mod object;
pub mod ownership;
pub mod router;
pub mod secrets;
pub mod stream;
pub mod synccontroller;

pub use controllers::{run_controllers, ControllersConfig};
pub use error::{CertError, ControllerError, HubError};
