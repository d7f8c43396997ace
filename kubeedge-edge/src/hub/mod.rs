//! The edge hub: certificate bootstrap and the websocket client to CloudHub.

mod bootstrap;
mod client;
mod handle;
pub(crate) mod tls;

pub use bootstrap::{bootstrap, node_common_name, renew};
pub use client::{connect, CertRotation, ConnectionState, Driver, HubConfig};
pub use handle::{channel, Client, Inbound, Requester};
pub use tls::{CertFiles, ClientTls};
