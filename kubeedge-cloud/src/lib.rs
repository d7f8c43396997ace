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

pub mod certs;
pub mod config;
mod controllers;
pub mod devicecontroller;
pub mod dynamiccontroller;
pub mod edgecontroller;
mod error;
pub mod hub;
mod object;
pub mod secrets;
pub mod synccontroller;

pub use controllers::{run_controllers, ControllersConfig};
pub use error::{CertError, ControllerError, HubError};
