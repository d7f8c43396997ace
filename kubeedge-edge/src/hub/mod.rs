//! The edge hub: certificate bootstrap and the websocket client to CloudHub.

mod bootstrap;
mod client;
mod tls;

pub use bootstrap::{bootstrap, node_common_name, renew};
pub use client::{connect, CertRotation, Client, ConnectionState, Driver, HubConfig, Inbound};
pub use tls::{CertFiles, ClientTls};
