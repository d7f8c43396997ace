//! [`Tunnel`]: endpoints on other nodes reached through a libp2p connection between the
//! agents, upstream edgemesh's `edgeTunnel`.
//!
//! Edge pods' addresses mean nothing off their node (each Docker node has its own
//! `172.17.0.0/16`), so the proxy sends a connection for an endpoint on another node to that
//! node's agent, which connects to the endpoint there. The agents speak libp2p: TCP (behind a
//! private network's pre-shared key) or QUIC, noise, yamux. Nodes on one LAN find each other
//! by mDNS and connect straight; the others meet through the configured relay nodes (circuit
//! relay v2), and DCUtR turns a relayed connection into a direct one where the NATs allow.
//!
//! Each proxied connection (or UDP flow) is one stream, opened with a header ([`wire`]) that
//! names the endpoint; the far agent answers `SUCCESS` once it is connected, or `FAILED` and
//! why. A UDP flow's datagrams follow, each behind its two-byte length.

pub mod identity;
mod node;
mod serve;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use libp2p::multiaddr::Protocol as Ma;
use libp2p::StreamProtocol;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};
use tokio_util::sync::CancellationToken;

pub use identity::Psk;
pub use libp2p::{Multiaddr, PeerId};

use crate::error::MeshError;
use node::{Command, Node};
use wire::{Proto, Request, Response};

/// The stream protocol of a proxied connection.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/kubeedge-mesh/tunnel-proxy/1.0.0");

/// The transport between agents (upstream's `modules.edgeTunnel.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP with noise and yamux (upstream's default); the only one that carries a PSK.
    #[default]
    Tcp,
    /// QUIC (v1).
    Quic,
}

/// A relay node: its node name and where it is reached (`advertiseAddress`: IPs, which take
/// the tunnel's port, or whole multiaddrs).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayNode {
    /// The relay's node name.
    pub node_name: String,
    /// Its addresses.
    pub advertise_address: Vec<String>,
}

impl RelayNode {
    /// A relay node.
    pub fn new(node_name: impl Into<String>, advertise_address: Vec<String>) -> Self {
        Self {
            node_name: node_name.into(),
            advertise_address,
        }
    }

    fn addrs(&self, port: u16, transport: Transport) -> Result<Vec<Multiaddr>, MeshError> {
        self.advertise_address
            .iter()
            .map(|a| {
                if a.starts_with('/') {
                    return a.parse::<Multiaddr>().map_err(|e| {
                        MeshError::Config(format!("relay {} address {a:?}: {e}", self.node_name))
                    });
                }
                let ip: std::net::IpAddr = a.parse().map_err(|e| {
                    MeshError::Config(format!("relay {} address {a:?}: {e}", self.node_name))
                })?;
                Ok(match transport {
                    Transport::Tcp => Multiaddr::from(ip).with(Ma::Tcp(port)),
                    Transport::Quic => Multiaddr::from(ip).with(Ma::Udp(port)).with(Ma::QuicV1),
                })
            })
            .collect()
    }
}

/// The tunnel's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TunnelConfig {
    /// This node's name: its peer ID follows from it.
    pub node_name: String,
    /// The port the agent listens on (20006; 0 takes a free one).
    pub listen_port: u16,
    /// TCP or QUIC.
    pub transport: Transport,
    /// The relay nodes; a node that finds its own name here serves as a relay.
    pub relays: Vec<RelayNode>,
    /// The network's key: peers without it are refused.
    pub psk: Option<Psk>,
    /// Find peers on the LAN by mDNS.
    pub mdns: bool,
    /// How often mDNS asks the LAN.
    pub mdns_interval: Duration,
    /// How often a lost relay reservation is asked for again.
    pub heartbeat: Duration,
    /// How often a connection is pinged (a dead peer is dropped after two of these).
    pub keepalive: Duration,
    /// How long the far agent may take to connect to the endpoint.
    pub connect_timeout: Duration,
}

impl TunnelConfig {
    /// Upstream's defaults for the node `node_name`: TCP on 20006, mDNS on, no relays, no key.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            listen_port: 20006,
            transport: Transport::Tcp,
            relays: Vec::new(),
            psk: None,
            mdns: true,
            mdns_interval: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// How this node is connected to a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight (on the LAN, or hole-punched).
    Direct,
    /// Only through a relay.
    Relayed,
}

/// A proxied connection through the tunnel, connected to its endpoint on the far node.
pub type TunnelStream = Compat<libp2p::Stream>;

/// A running tunnel; clones share it.
#[derive(Clone)]
pub struct Tunnel {
    node_name: String,
    psk: Option<Psk>,
    local: PeerId,
    /// Peer IDs of node names already asked for: deriving one (SHA-256 and an ed25519 key)
    /// is not work for every proxied connection.
    known: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, PeerId>>>,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    peers: watch::Receiver<BTreeMap<PeerId, Path>>,
    addrs: watch::Receiver<Vec<Multiaddr>>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("node_name", &self.node_name)
            .field("peer_id", &self.local)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Starts the tunnel (listening, mDNS, reservations on the relays) and serves the streams
    /// other agents open, until `cancel`.
    pub fn start(config: TunnelConfig, cancel: CancellationToken) -> Result<Self, MeshError> {
        let (peers_tx, peers) = watch::channel(BTreeMap::new());
        let (addrs_tx, addrs) = watch::channel(Vec::new());
        let node = Node::new(&config, peers_tx, addrs_tx)?;
        let mut control = node.control();
        let local = node.local_peer_id();
        let incoming = control
            .accept(PROTOCOL)
            .map_err(|e| MeshError::Config(format!("tunnel: {e}")))?;
        let (commands, rx) = mpsc::channel(64);
        tokio::spawn(node.run(rx, cancel.clone()));
        tokio::spawn(serve::run(
            incoming,
            config.node_name.clone(),
            config.connect_timeout,
            cancel,
        ));
        Ok(Self {
            local,
            known: Default::default(),
            node_name: config.node_name,
            psk: config.psk,
            commands,
            control,
            peers,
            addrs,
        })
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// This node's peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The peer ID of the node `node_name` in this tunnel's network.
    pub fn peer_of(&self, node_name: &str) -> PeerId {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = known.get(node_name) {
            return *p;
        }
        let p = identity::peer_id(node_name, self.psk.as_ref());
        known.insert(node_name.to_owned(), p);
        p
    }

    /// The addresses the tunnel listens on (filled in once the listener is up).
    pub fn listen_addrs(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.addrs.clone()
    }

    /// A handle to open and accept streams of other protocols over the tunnel's connections
    /// (libp2p-stream): an embedder's own protocol between the agents.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// The peers connected now, and how.
    pub fn peers(&self) -> watch::Receiver<BTreeMap<PeerId, Path>> {
        self.peers.clone()
    }

    /// A connection to `target` on the node `node_name`, made by that node's agent.
    pub async fn connect(
        &self,
        node_name: &str,
        target: SocketAddr,
    ) -> Result<TunnelStream, MeshError> {
        self.open(node_name, target, Proto::Tcp).await
    }

    /// A UDP flow to `target` on the node `node_name`: datagrams written with
    /// [`wire::write_datagram`] are sent from that node's agent, and the endpoint's answers
    /// come back the same way ([`wire::read_datagram`]).
    pub async fn connect_udp(
        &self,
        node_name: &str,
        target: SocketAddr,
    ) -> Result<TunnelStream, MeshError> {
        self.open(node_name, target, Proto::Udp).await
    }

    async fn open(
        &self,
        node_name: &str,
        target: SocketAddr,
        protocol: Proto,
    ) -> Result<TunnelStream, MeshError> {
        let peer = self.peer_of(node_name);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Connect { peer, reply })
            .await
            .map_err(|_| tunnel_err(node_name, "the tunnel stopped"))?;
        answer
            .await
            .map_err(|_| tunnel_err(node_name, "the tunnel stopped"))?
            .map_err(|e| tunnel_err(node_name, &e))?;
        let stream = self
            .control
            .clone()
            .open_stream(peer, PROTOCOL)
            .await
            .map_err(|e| tunnel_err(node_name, &e.to_string()))?;
        let mut stream = stream.compat();
        let request = Request {
            protocol,
            node_name: node_name.to_owned(),
            ip: target.ip(),
            port: target.port(),
        };
        wire::write(&mut stream, &request).await?;
        match wire::read::<_, Response>(&mut stream).await {
            Ok(Response::Success) => Ok(stream),
            Ok(Response::Failed { message }) => Err(tunnel_err(node_name, &message)),
            Err(e) => Err(tunnel_err(node_name, &e.to_string())),
        }
    }
}

fn tunnel_err(node: &str, why: &str) -> MeshError {
    MeshError::Tunnel(format!("to node {node}: {why}"))
}
