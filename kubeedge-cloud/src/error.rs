//! Errors of the cloud crate.

use kubeedge_proto::TokenError;

/// Certificate authority, certificate and token failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate store could not be read or written.
    #[error("certificate store {item} failed")]
    Store {
        /// Which item.
        item: &'static str,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A stored certificate or key is not valid PEM/DER.
    #[error("stored {item} is not valid")]
    Invalid {
        /// Which item.
        item: &'static str,
        /// What was wrong.
        #[source]
        source: rcgen::Error,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    /// The CSR is not a valid, self-signed certificate request.
    #[error("invalid certificate signing request")]
    InvalidCsr(#[source] rcgen::Error),
    /// The CSR names another identity than the requesting node.
    #[error("csr subject {subject:?} is not allowed for node {node:?}")]
    IdentityMismatch {
        /// The CSR's common name.
        subject: String,
        /// The node the request is for.
        node: String,
    },
    /// A bad node name.
    #[error("invalid node name {0:?}")]
    InvalidNodeName(String),
    /// Issuing the join token failed.
    #[error("token could not be issued")]
    Token(#[source] TokenError),
    /// TLS configuration failed.
    #[error("tls configuration failed")]
    Tls(#[source] rustls::Error),
}

/// Hub server failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Binding or accepting on a listener failed.
    #[error("hub listener failed")]
    Io(#[source] std::io::Error),
    /// Certificates could not be prepared.
    #[error("hub certificates")]
    Cert(#[source] CertError),
    /// The hub has shut down; nothing more can be sent.
    #[error("hub is shut down")]
    Closed,
    /// `call` without a successful `poll_ready` first.
    #[error("service called before poll_ready")]
    NotReady,
    /// A node id that cannot be used.
    #[error("invalid node id {0:?}")]
    InvalidNode(String),
}

/// Controller failures (edge, sync and dynamic controllers, and the cloudcore assembly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// A Kubernetes API call failed. Retryable unless the API refused the request itself.
    #[error("kubernetes api: {what}")]
    Kube {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: Box<kube::Error>,
    },
    /// A watch stream ended for good.
    #[error("watch of {what} ended")]
    WatchEnded {
        /// What was watched.
        what: &'static str,
    },
    /// The hub refused a message or shut down.
    #[error("hub")]
    Hub(#[source] HubError),
    /// A message content could not be encoded or decoded.
    #[error("message content")]
    Content(#[source] kubeedge_proto::ContentError),
    /// Certificates could not be prepared.
    #[error("certificates")]
    Cert(#[source] CertError),
    /// A listener could not be bound or served.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ControllerError {
    /// A Kubernetes API failure while doing `what`.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
