//! Whether a new session may serve its node yet.
//!
//! With several cloudcores, a node's websocket can reach a replica while another still holds
//! the node (the edge moved, and the old replica has not let go, or cannot be reached). The
//! new session then waits for its [`Admission`]: until the answer comes it reads (keepalives,
//! acks, the edge's own messages) but writes nothing, so that no node is ever served by two
//! replicas. [`crate::ownership::NodeOwnership`] is the admission cloudcore installs.

use std::future::Future;
use std::pin::Pin;

/// The answer of an [`Admission`]: `Ok` once the session may write, `Err` with the reason
/// when it must close.
pub type Admit = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Decides when a new session may serve its node. Installed with
/// [`super::CloudHub::set_admission`]; without one, every session serves at once.
pub trait Admission: Send + Sync + 'static {
    /// The answer for a session of `node` that just started. Dropped unfinished when the
    /// session ends first.
    fn admit(&self, node: &str) -> Admit;
}
