//! KubeEdge wire formats, sans-IO: no sockets, no runtime.
//!
//! Everything that crosses the link between a KubeEdge cloudcore and edgecore, as upstream
//! KubeEdge (v1.12 to the latest release) puts it on the wire:
//!
//! - [`Message`] with [`Header`], [`Route`] and [`Content`]: the beehive envelope, exact JSON.
//! - [`Group`], [`Operation`], [`Source`] and [`ResourcePath`]: typed routing.
//! - [`ack_mode`]: which downstream messages need an ack.
//! - [`HubCodec`]: websocket frames of the hub link. [`TunnelFrame`]: the logs/exec tunnel,
//!   and [`ws`]: the tunnel's WebSocket framing (text frames holding binary).
//! - [`JoinToken`] and [`Jwt`]: the `keadm gettoken` token.
//! - [`Topic`] and [`twin`]: device-twin MQTT topics and payloads.
//! - [`Application`]: the MetaServer request the dynamic controller runs, and its key.
//! - [`api`]: Device, DeviceModel, ObjectSync and ClusterObjectSync.
//!
//! ```
//! use kubeedge_proto::{FrameKind, HubCodec, Operation, ResourcePath, ResourceType};
//!
//! let frame = br#"{"header":{"msg_id":"1","timestamp":1,"resourceversion":"5"},"route":{"source":"edgecontroller","group":"resource","operation":"insert","resource":"default/pod/nginx"},"content":{"kind":"Pod"}}"#;
//! let codec = HubCodec::default();
//! let msg = codec.decode(FrameKind::Text, frame)?;
//! assert_eq!(msg.route.operation, Some(Operation::Insert));
//! let path = ResourcePath::parse(&msg.route.resource);
//! assert_eq!(path.resource_type(), Some(&ResourceType::Pod));
//! let ack = msg.ack();
//! assert_eq!(ack.content.as_str().as_deref(), Some("OK"));
//! # Ok::<(), kubeedge_proto::FrameError>(())
//! ```

#![deny(missing_docs)]

mod ack;
pub mod api;
mod application;
mod error;
mod frame;
mod gojson;
mod message;
mod names;
mod ratelimit;
pub mod report;
mod resource;
pub mod servicebus;
#[cfg(feature = "spdy")]
pub mod spdy;
mod token;
mod topic;
mod tunnel;
pub mod twin;
pub mod ws;

#[cfg(feature = "test-util")]
pub mod test_util;

pub use ack::{ack_mode, AckMode};
pub use application::{
    ApiStatus, Application, ApplicationKey, ApplicationStatus, ApplicationVerb, PatchInfo,
    StatusError, APPLICATION_RESOURCE, GO_ZERO_TIME, NULL_SEGMENT, WATCH_APP_SYNC,
};
pub use error::{
    ApplicationKeyError, ContentError, FrameError, JsonError, JsonErrorKind, ResourceError,
    TokenError, TopicError, TunnelError,
};
pub use frame::{FrameKind, HubCodec};
pub use message::{now_millis, Compat, Content, Header, Message, MessageId, Route};
pub use names::{Group, Operation, ResourceType, Source};
pub use ratelimit::TokenBucket;
pub use resource::{DeviceRef, ResourceKind, ResourcePath, TwinEvent};
pub use token::{ca_hash, Claims, JoinToken, Jwt, MAX_TOKEN_LEN};
pub use topic::{edge_subscriptions, DeviceEvent, NodeEvent, Topic};
pub use tunnel::{GoUrl, StreamConnect, TunnelFrame, TunnelMessageType, MAX_TUNNEL_FRAME};

/// The content of an ack (`response` to a pushed message).
pub const ACK_CONTENT: &str = "OK";

/// Upstream's default `edgeHub.projectID`.
pub const DEFAULT_PROJECT_ID: &str = "e632aba927ea4ac2b575ec1603d56f10";
