//! CloudCore as a library.
//!
//! - [`certs`]: the KubeEdge CA, the cloudcore server certificate, edge certificates and the
//!   join token, behind a [`certs::CertStore`].
//! - [`hub`]: CloudHub, the TLS websocket server with a per-node outbox (ACK/NO-ACK delivery,
//!   coalescing, resend across reconnects) and the certificate bootstrap server.
//! - [`controlplane`]: the embedded control plane (scheduler, workload, endpoints, namespace,
//!   garbage-collection and node-lifecycle controllers) for a single-machine cluster.

pub mod certs;
pub mod controlplane;
mod error;
pub mod hub;

pub use error::{CertError, HubError};
