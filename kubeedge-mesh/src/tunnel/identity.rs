//! Who a node is on the tunnel, and the network's key.
//!
//! As upstream, a node's peer ID follows from its node name, so that a node reaches another
//! by the `nodeName` of an endpoint without looking anything up. Upstream seeds the key with
//! the name alone, so anyone who knows a name can take the node's identity; here the seed is
//! the name and the network's pre-shared key, so only members of the network can. (The IDs
//! therefore differ from upstream's, and this tunnel does not join an upstream agent's.)
//!
//! The pre-shared key is read as upstream reads its `edgemesh-agent-psk` file: the first 32
//! bytes of the base64 decoding of the hex SHA-256 of the file, so that one ConfigMap keys
//! both.

use std::path::Path;

use base64::Engine as _;
use libp2p::identity::Keypair;
use libp2p::PeerId;
use sha2::{Digest, Sha256};

use crate::error::MeshError;

/// A private network's pre-shared key (libp2p `pnet`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Psk([u8; 32]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself stays out of logs.
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// The key of the file's contents `data`, as upstream derives it.
    pub fn from_file_contents(data: &[u8]) -> Self {
        let digest = Sha256::digest(data);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut key = [0u8; 32];
        // 64 hex digits are 64 valid base64 characters: 48 bytes, of which the first 32.
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(hex.as_bytes()) {
            key.copy_from_slice(&decoded[..32]);
        }
        Self(key)
    }

    /// Reads the key file at `path`.
    pub fn read(path: &Path) -> Result<Self, MeshError> {
        let data = std::fs::read(path).map_err(|e| {
            MeshError::Config(format!(
                "modules.edgeTunnel.psk.path {}: {e}",
                path.display()
            ))
        })?;
        Ok(Self::from_file_contents(&data))
    }

    pub(crate) fn to_pnet(self) -> libp2p::pnet::PreSharedKey {
        libp2p::pnet::PreSharedKey::new(self.0)
    }
}

/// The key pair of the node `node_name` in the network keyed by `psk`.
pub fn keypair(node_name: &str, psk: Option<&Psk>) -> Keypair {
    let mut h = Sha256::new();
    h.update(b"kubeedge-mesh tunnel peer\0");
    if let Some(psk) = psk {
        h.update(psk.0);
    }
    h.update(node_name.as_bytes());
    let mut seed: [u8; 32] = h.finalize().into();
    // An ed25519 secret is any 32 bytes: this cannot fail.
    Keypair::ed25519_from_bytes(&mut seed).unwrap_or_else(|_| Keypair::generate_ed25519())
}

/// The peer ID of the node `node_name` in the network keyed by `psk`.
pub fn peer_id(node_name: &str, psk: Option<&Psk>) -> PeerId {
    keypair(node_name, psk).public().to_peer_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_name_gives_the_same_peer_everywhere_and_the_key_separates_networks() {
        let a = Psk::from_file_contents(b"secret one\n");
        let b = Psk::from_file_contents(b"secret two\n");
        assert_eq!(peer_id("edge-1", Some(&a)), peer_id("edge-1", Some(&a)));
        assert_ne!(peer_id("edge-1", Some(&a)), peer_id("edge-2", Some(&a)));
        assert_ne!(peer_id("edge-1", Some(&a)), peer_id("edge-1", Some(&b)));
        assert_ne!(peer_id("edge-1", Some(&a)), peer_id("edge-1", None));
    }

    #[test]
    fn the_key_is_derived_as_upstream_derives_it() {
        // sha256("") = e3b0c442...; its hex read as base64 gives these first bytes.
        let k = Psk::from_file_contents(b"");
        let expected = base64::engine::general_purpose::STANDARD
            .decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .expect("hex is base64");
        assert_eq!(k.0[..], expected[..32]);
        assert_eq!(format!("{k:?}"), "Psk(..)");
    }
}
