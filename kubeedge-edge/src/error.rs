//! Errors of the edge crate.

use kubeedge_proto::TokenError;

/// Certificate bootstrap failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The token is malformed, or the CA fetched does not match it.
    #[error("join token rejected")]
    Token(#[source] TokenError),
    /// Connecting to the bootstrap server failed.
    #[error("cannot reach the bootstrap server {server}")]
    Connect {
        /// host:port.
        server: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("bootstrap request failed")]
    Http(#[source] hyper::Error),
    /// The cloud refused the request.
    #[error("cloud refused {path} with status {status}: {message}")]
    Refused {
        /// The path.
        path: &'static str,
        /// HTTP status.
        status: u16,
        /// The body text the cloud sent.
        message: String,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("certificate handling failed: {0}")]
    Cert(String),
    /// The signed certificate is not for this node.
    #[error("cloud signed a certificate for {got:?}, expected {expected:?}")]
    WrongIdentity {
        /// CN received.
        got: String,
        /// CN expected.
        expected: String,
    },
    /// Writing the files failed.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Timed out.
    #[error("bootstrap timed out")]
    Timeout,
}

/// Hub client failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The driver has stopped; the client can no longer send.
    #[error("hub client is closed")]
    Closed,
    /// No reply arrived in time.
    #[error("no reply to {msg_id} within {timeout:?}")]
    Timeout {
        /// The request id.
        msg_id: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// TLS material is unusable.
    #[error("invalid tls material: {0}")]
    Tls(String),
    /// Connecting failed (retried by the driver; returned by one-shot connects).
    #[error("connect to {server} failed: {reason}")]
    Connect {
        /// host:port.
        server: String,
        /// Why.
        reason: String,
    },
    /// A layer of the client's stack failed (a layer of your own, or a transport of your own).
    #[error("hub client stack: {0}")]
    Stack(#[source] tower::BoxError),
}

impl HubError {
    /// A stack error as a hub error: the hub error itself when it is one.
    pub fn from_stack(e: tower::BoxError) -> Self {
        match e.downcast::<HubError>() {
            Ok(e) => *e,
            Err(e) => Self::Stack(e),
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Connect { .. })
    }
}
