//! The libp2p node behind a [`super::Tunnel`]: its transport, its behaviours and the loop that
//! drives them.
//!
//! The loop keeps a reservation on every configured relay (re-made each heartbeat while it is
//! missing, so a relay that restarts is taken again), remembers the LAN addresses mDNS finds,
//! and connects to a peer on request: straight to its LAN addresses first, and through each
//! relay (`/p2p-circuit`) when there are none or none answers. DCUtR then tries to turn a
//! relayed connection into a direct one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::transport::ListenerId;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as Ma;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    dcutr, identify, mdns, noise, ping, relay, tcp, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder,
    Transport as _,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Path, Transport, TunnelConfig};
use crate::error::MeshError;

/// How long an unused connection to a peer stays open.
const IDLE: Duration = Duration::from_secs(60);

/// What the handle asks of the loop.
pub(super) enum Command {
    /// Be connected to `peer`; the reply says when, or why not.
    Connect {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) stream: libp2p_stream::Behaviour,
}

/// A configured relay: its peer, where it is, and this node's reservation on it.
struct Relay {
    id: PeerId,
    addrs: Vec<Multiaddr>,
    circuit: Option<ListenerId>,
}

/// A connection being made: who waits for it, and the relayed addresses still to try.
#[derive(Default)]
struct Pending {
    replies: Vec<oneshot::Sender<Result<(), String>>>,
    then: Vec<Multiaddr>,
}

pub(super) struct Node {
    swarm: Swarm<Behaviour>,
    relays: Vec<Relay>,
    lan: HashMap<PeerId, Vec<Multiaddr>>,
    pending: HashMap<PeerId, Pending>,
    conns: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    peers: watch::Sender<BTreeMap<PeerId, Path>>,
    addrs: watch::Sender<Vec<Multiaddr>>,
    heartbeat: Duration,
    /// A relay with no `advertiseAddress`: its listen addresses are what reservations carry.
    advertise_listen_addrs: bool,
}

/// The node's transport: TCP (behind the PSK when there is one) or QUIC, each with noise and
/// yamux (QUIC brings its own).
fn transport(
    key: &Keypair,
    config: &TunnelConfig,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, MeshError> {
    let noise = |key: &Keypair| {
        noise::Config::new(key).map_err(|e| MeshError::Config(format!("tunnel noise key: {e}")))
    };
    let tcp = || tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    // A peer with another key reads noise as the handshake and may wait for more: it is
    // dropped after this.
    let timeout = Duration::from_secs(10);
    Ok(match (config.transport, config.psk) {
        (Transport::Tcp, Some(psk)) => tcp()
            .and_then(move |socket, _| {
                libp2p::pnet::PnetConfig::new(psk.to_pnet()).handshake(socket)
            })
            .upgrade(Version::V1Lazy)
            .authenticate(noise(key)?)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
            .boxed(),
        (Transport::Tcp, None) => tcp()
            .upgrade(Version::V1Lazy)
            .authenticate(noise(key)?)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
            .boxed(),
        (Transport::Quic, Some(_)) => {
            return Err(MeshError::Config(
                "modules.edgeTunnel: QUIC cannot carry the pre-shared key (libp2p's private \
                 networks protect TCP streams); use transport tcp or turn psk off"
                    .into(),
            ))
        }
        #[cfg(feature = "quic")]
        (Transport::Quic, None) => {
            libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
                .map(|(p, c), _| (p, StreamMuxerBox::new(c)))
                .boxed()
        }
        #[cfg(not(feature = "quic"))]
        (Transport::Quic, None) => {
            return Err(MeshError::Config(
                "modules.edgeTunnel.transport quic: this build has no QUIC (kubeedge-mesh \
                 feature `quic`)"
                    .into(),
            ))
        }
    })
}

/// The relay server's limits: none on a circuit's bytes or count per peer that the tunnel
/// would meet (upstream runs its relay with no limit either).
fn relay_config() -> relay::Config {
    relay::Config {
        max_circuits: 4096,
        max_circuits_per_peer: 256,
        max_circuit_bytes: 0,
        max_circuit_duration: Duration::from_secs(365 * 24 * 3600),
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        ..relay::Config::default()
    }
}

impl Node {
    pub(super) fn new(
        config: &TunnelConfig,
        peers: watch::Sender<BTreeMap<PeerId, Path>>,
        addrs: watch::Sender<Vec<Multiaddr>>,
    ) -> Result<Self, MeshError> {
        let key = super::identity::keypair(&config.node_name, config.psk.as_ref());
        let local = key.public().to_peer_id();
        let transport = transport(&key, config)?;
        let is_relay = config
            .relays
            .iter()
            .any(|r| r.node_name == config.node_name);
        let mdns_config = mdns::Config {
            query_interval: config.mdns_interval,
            ..mdns::Config::default()
        };
        let mdns_on = config.mdns;
        let ping_every = config.keepalive;
        let build_err = |e: &dyn std::fmt::Display| MeshError::Config(format!("tunnel: {e}"));
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(|e| build_err(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| build_err(&e))?
            .with_behaviour(|key, relay_client| {
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(mdns_config, local)?)
                } else {
                    None
                };
                Ok(Behaviour {
                    relay_client,
                    relay: is_relay
                        .then(|| relay::Behaviour::new(local, relay_config()))
                        .into(),
                    dcutr: dcutr::Behaviour::new(local),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/kubeedge-mesh/1.0.0".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(
                        ping::Config::new()
                            .with_interval(ping_every)
                            .with_timeout(ping_every * 2),
                    ),
                    mdns: mdns.into(),
                    stream: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| build_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE))
            .build();
        if let Some(relay) = swarm.behaviour_mut().relay.as_mut() {
            relay.set_status(Some(relay::Status::Enable));
        }
        let mut relays = Vec::new();
        let mut advertise_listen_addrs = false;
        for r in &config.relays {
            let addrs = r.addrs(config.listen_port, config.transport)?;
            if r.node_name == config.node_name {
                // Reservations on this relay carry the addresses it is reached at.
                advertise_listen_addrs = addrs.is_empty();
                for a in addrs {
                    swarm.add_external_address(a);
                }
                continue;
            }
            relays.push(Relay {
                id: super::identity::peer_id(&r.node_name, config.psk.as_ref()),
                addrs,
                circuit: None,
            });
        }
        let any: std::net::IpAddr = [0, 0, 0, 0].into();
        let listen = match config.transport {
            Transport::Tcp => Multiaddr::from(any).with(Ma::Tcp(config.listen_port)),
            Transport::Quic => Multiaddr::from(any)
                .with(Ma::Udp(config.listen_port))
                .with(Ma::QuicV1),
        };
        swarm
            .listen_on(listen.clone())
            .map_err(|e| MeshError::Config(format!("tunnel cannot listen on {listen}: {e}")))?;
        info!(node = %config.node_name, peer = %local, relay = is_relay, %listen, "edgemesh tunnel");
        Ok(Self {
            swarm,
            relays,
            lan: HashMap::new(),
            pending: HashMap::new(),
            conns: HashMap::new(),
            peers,
            addrs,
            heartbeat: config.heartbeat,
            advertise_listen_addrs,
        })
    }

    pub(super) fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    pub(super) fn control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().stream.new_control()
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                _ = heartbeat.tick() => self.keep_reservations(),
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
        for (_, p) in self.pending.drain() {
            for r in p.replies {
                let _ = r.send(Err("the tunnel stopped".into()));
            }
        }
    }

    /// A reservation on each relay that has none (the relay is dialed if need be).
    fn keep_reservations(&mut self) {
        for r in self.relays.iter_mut().filter(|r| r.circuit.is_none()) {
            let Some(addr) = r.addrs.first() else {
                continue;
            };
            let circuit = addr.clone().with(Ma::P2p(r.id)).with(Ma::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => r.circuit = Some(id),
                Err(e) => debug!(%circuit, error = %e, "no reservation on the relay yet"),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { peer, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                if let Some(p) = self.pending.get_mut(&peer) {
                    p.replies.push(reply);
                    return;
                }
                let mut direct = self.lan.get(&peer).cloned().unwrap_or_default();
                let mut relayed = Vec::new();
                for r in &self.relays {
                    if r.id == peer {
                        direct.extend(r.addrs.iter().cloned());
                    } else if let Some(a) = r.addrs.first() {
                        relayed.push(
                            a.clone()
                                .with(Ma::P2p(r.id))
                                .with(Ma::P2pCircuit)
                                .with(Ma::P2p(peer)),
                        );
                    }
                }
                let (first, then) = if direct.is_empty() {
                    (relayed, Vec::new())
                } else {
                    (direct, relayed)
                };
                match self.dial(peer, first) {
                    Ok(()) => {
                        self.pending.insert(
                            peer,
                            Pending {
                                replies: vec![reply],
                                then,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), String> {
        if addrs.is_empty() {
            return Err(format!(
                "no address for {peer}: not found on the LAN (mDNS) and no relay configured"
            ));
        }
        debug!(%peer, ?addrs, "dialing");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                debug!(peer = %peer_id, relayed, addr = %endpoint.get_remote_address(), "connected");
                self.conns
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, relayed);
                self.publish();
                if let Some(p) = self.pending.remove(&peer_id) {
                    for r in p.replies {
                        let _ = r.send(Ok(()));
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(c) = self.conns.get_mut(&peer_id) {
                    c.remove(&connection_id);
                    if c.is_empty() {
                        self.conns.remove(&peer_id);
                    }
                }
                self.publish();
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                let Some(mut p) = self.pending.remove(&peer) else {
                    return;
                };
                let then = std::mem::take(&mut p.then);
                if !then.is_empty() && self.dial(peer, then).is_ok() {
                    debug!(%peer, error = %error, "not reached straight; through the relays");
                    self.pending.insert(peer, p);
                    return;
                }
                for r in p.replies {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            SwarmEvent::NewListenAddr { address, .. }
                if !address.iter().any(|p| p == Ma::P2pCircuit) =>
            {
                if self.advertise_listen_addrs {
                    self.swarm.add_external_address(address.clone());
                }
                self.addrs.send_modify(|a| a.push(address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.listener_gone(listener_id, reason.err().map(|e| e.to_string())),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    let addrs = self.lan.entry(peer).or_default();
                    if !addrs.contains(&addr) {
                        debug!(%peer, %addr, "found on the LAN");
                        addrs.push(addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if let Some(addrs) = self.lan.get_mut(&peer) {
                        addrs.retain(|a| *a != addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => debug!(relay = %relay_peer_id, "reservation on the relay"),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => {
                debug!(peer = %e.remote_peer_id, result = ?e.result, "hole punch");
            }
            _ => {}
        }
    }

    fn listener_gone(&mut self, id: ListenerId, error: Option<String>) {
        if let Some(r) = self.relays.iter_mut().find(|r| r.circuit == Some(id)) {
            r.circuit = None;
            warn!(relay = %r.id, error = ?error, "reservation on the relay lost; the next heartbeat asks again");
        }
    }

    fn publish(&self) {
        let now: BTreeMap<PeerId, Path> = self
            .conns
            .iter()
            .map(|(peer, c)| {
                let path = if c.values().any(|relayed| !relayed) {
                    Path::Direct
                } else {
                    Path::Relayed
                };
                (*peer, path)
            })
            .collect();
        self.peers.send_if_modified(|old| {
            let changed = *old != now;
            if changed {
                *old = now;
            }
            changed
        });
    }
}
