//! The edge hub: certificate bootstrap and the websocket client to CloudHub, as a stack of
//! tower layers over the link (see [`connect`] for the standard stack).

mod bootstrap;
mod client;
mod dedup;
mod handle;
mod ratelimit;
mod reply;
pub(crate) mod tls;

pub use bootstrap::{bootstrap, node_common_name, renew};
pub use client::{connect, link, CertRotation, ConnectionState, Driver, HubConfig, InboundService};
pub use dedup::{Acks, Dedup, DedupLayer, NoteAcks, NoteAcksLayer};
#[cfg(feature = "meta")]
pub(crate) use handle::ChannelSink;
pub use handle::{channel, Client, Inbound, Link, Uplink};
pub use ratelimit::{RateLimit, RateLimitLayer};
pub use reply::{Replies, Requester, Resolve, ResolveLayer};
pub use tls::{CertFiles, ClientTls};
