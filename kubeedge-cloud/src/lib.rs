//! CloudCore as a library.
//!
//! - [`certs`]: the KubeEdge CA, the cloudcore server certificate, edge certificates and the
//!   join token, behind a [`certs::CertStore`].
//! - [`devicecontroller`]: Device/DeviceModel watches to membership and desired-twin pushes,
//!   edge reports to the Device status.
//! - [`hub`]: CloudHub, the TLS websocket server with a per-node outbox (ACK/NO-ACK delivery,
//!   coalescing, resend across reconnects) and the certificate bootstrap server.

pub mod certs;
pub mod devicecontroller;
mod error;
pub mod hub;

pub use error::{CertError, HubError};
