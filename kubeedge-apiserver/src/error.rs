//! Errors of the store and of serving.

use std::path::PathBuf;

use crate::store::ObjectKey;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of a [`Store`](crate::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key is already taken (not retryable).
    #[error("object {0:?} already exists")]
    AlreadyExists(ObjectKey),
    /// No object under the key (not retryable).
    #[error("object {0:?} not found")]
    NotFound(ObjectKey),
    /// A compare-and-swap precondition failed (retry after a fresh read).
    #[error("object {key:?} is at revision {actual}, not {expected}")]
    Conflict {
        /// Where.
        key: ObjectKey,
        /// The revision the caller expected.
        expected: u64,
        /// The stored revision.
        actual: u64,
    },
    /// The requested revision is older than the watch history window (re-list, then watch).
    #[error("revision {requested} is compacted, the oldest resumable is {oldest}")]
    Gone {
        /// The requested revision.
        requested: u64,
        /// The oldest revision a watch can resume from.
        oldest: u64,
    },
    /// The database could not be opened.
    #[error("cannot open database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A SQLite statement failed.
    #[error("sqlite statement failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A batch of writes failed to commit; none of them was applied (retryable).
    #[error("commit failed: {0}")]
    Commit(String),
    /// A stored value is not valid JSON.
    #[error("stored object {key} is not valid json")]
    Corrupt {
        /// Where.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An object could not be encoded.
    #[error("cannot encode object")]
    Encode(#[source] serde_json::Error),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread")]
    Thread(#[source] std::io::Error),
    /// The store has shut down.
    #[error("store is closed")]
    Closed,
    /// A lock was poisoned by a panic elsewhere.
    #[error("store lock poisoned")]
    Poisoned,
    /// An etcd request failed.
    #[cfg(feature = "etcd")]
    #[error("etcd request failed")]
    Etcd(#[source] Box<etcd_client::Error>),
    /// The store cannot serve this now (for example, a write that must reach a cloud that is
    /// unreachable); answered with 503 (retryable).
    #[error("{0}")]
    Unavailable(String),
}

/// Failures of serving: certificates, sockets, kubeconfig.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error("store failed")]
    Store(#[from] StoreError),
    /// Certificate generation failed.
    #[error("cannot generate certificate")]
    Cert(#[from] rcgen::Error),
    /// The TLS configuration was rejected.
    #[error("invalid tls configuration")]
    Tls(#[from] tokio_rustls::rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("invalid client ca")]
    ClientCa(#[from] tokio_rustls::rustls::server::VerifierBuilderError),
    /// A socket or file operation failed.
    #[error("i/o failed: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be encoded.
    #[error("cannot encode kubeconfig")]
    Kubeconfig(#[source] serde_yaml::Error),
    /// The ServiceAccount signing key is unusable.
    #[error("service account key")]
    Token(#[from] crate::authz::token::TokenError),
}
