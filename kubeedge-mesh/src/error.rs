//! The mesh's errors.

/// What can go wrong in the mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// A setting is not usable.
    #[error("mesh configuration: {0}")]
    Config(String),
    /// A socket could not be bound or used.
    #[error("mesh socket: {0}")]
    Io(#[from] std::io::Error),
    /// The node's network could not be set: nftables refused the mesh's table, or an
    /// interface could not be made (or `nft`/`ip` is not installed).
    #[error("node network: {0}")]
    Network(String),
    /// The tunnel could not carry a connection to another node: the node was not reached,
    /// refused the stream, or could not connect to the endpoint.
    #[error("tunnel {0}")]
    Tunnel(String),
}
