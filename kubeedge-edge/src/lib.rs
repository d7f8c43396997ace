//! EdgeCore as a library.
//!
//! - [`hub`]: the edge hub client. [`hub::bootstrap`] turns a join token into a CA and a client
//!   certificate; [`hub::connect`] gives a [`hub::Client`] handle, the inbound message stream and
//!   a [`hub::Driver`] that keeps the mTLS websocket to CloudHub up (keepalive, dead-link
//!   detection, reconnect with backoff and jitter, rate limit, request/reply).

mod error;
pub mod hub;

pub use error::{BootstrapError, HubError};
