//! [`ServiceProxy`]: each proxied Service port (TCP or UDP) gets a listener of its own on a
//! free port, and each connection (or UDP client) is sent to one of the Service's ready
//! endpoints.
//!
//! This is the proxy upstream edgemesh-agent runs (kube-proxy's userspace design): the
//! interceptor ([`crate::intercept`]) redirects `clusterIP:port` to the listener, the
//! listener picks an endpoint with the port's balancer (round robin or random,
//! and `sessionAffinity: ClientIP`), and an endpoint that does not answer is skipped for the
//! next. Endpoints are read from the catalog at each new connection, so a change (an endpoint
//! gone, its node gone) applies to the next connection at once. Services that opt out
//! ([`crate::catalog::SERVICE_PROXY_NAME`]) and SCTP ports get no listener.

mod balance;
mod tcp;
mod udp;

pub use balance::Balance;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::catalog::{Catalog, Protocol, Snapshot};
use balance::Balancer;

/// The proxy's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// The address the listeners bind (upstream: the `edgemesh0` address, 169.254.96.16);
    /// each listener takes a free port of it.
    pub listen_ip: IpAddr,
    /// How connections are spread over endpoints.
    pub balance: Balance,
    /// How long a connection to one endpoint may take before the next is tried.
    pub connect_timeout: Duration,
    /// How long a UDP client's flow lives without a datagram.
    pub udp_idle: Duration,
    /// The tunnel to other nodes: a TCP endpoint whose `nodeName` is another node is reached
    /// through it (its address means nothing here); without it, every endpoint is dialed
    /// straight.
    #[cfg(feature = "tunnel")]
    pub tunnel: Option<crate::tunnel::Tunnel>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(crate::dns::MESH_DNS_IP),
            balance: Balance::default(),
            connect_timeout: Duration::from_secs(3),
            udp_idle: Duration::from_secs(10),
            #[cfg(feature = "tunnel")]
            tunnel: None,
        }
    }
}

/// One redirect the interceptor installs: `cluster_ip:port/protocol` to the listener `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Redirect {
    /// The Service's cluster IP.
    pub cluster_ip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The proxy's listener for it.
    pub to: SocketAddr,
}

/// A Service port: namespace, name, port name, protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PortKey {
    namespace: String,
    name: String,
    port: String,
    protocol: Protocol,
}

/// One endpoint of a Service port: its address, and the node it runs on (two nodes' pods
/// may have one address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    node: Option<String>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{} on {node}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Either end of a proxied TCP connection.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// What a listener needs to pick an endpoint.
#[derive(Debug)]
pub(crate) struct Port {
    key: PortKey,
    catalog: Catalog,
    balancer: Balancer<Endpoint>,
    config: ProxyConfig,
}

impl Port {
    /// The endpoints of this port now (sorted, so that round robin walks them in turn) and
    /// the Service's affinity.
    fn candidates(&self, snap: &Snapshot) -> (Vec<Endpoint>, Option<Duration>) {
        let k = &self.key;
        let Some(svc) = snap.service(&k.namespace, &k.name).filter(|s| s.proxied) else {
            return (Vec::new(), None);
        };
        let Some(port) = svc
            .ports
            .iter()
            .find(|p| p.name == k.port && p.protocol == k.protocol)
        else {
            return (Vec::new(), None);
        };
        let mut addrs: Vec<Endpoint> = snap
            .backends(&k.namespace, &k.name)
            .iter()
            // Only addresses whose subset lists this port (by the Service port's name), as
            // kube-proxy reads Endpoints: another subset's address may not serve it.
            .filter_map(|b| {
                Some(Endpoint {
                    addr: SocketAddr::new(b.ip, b.port_for(&port.name, port.protocol)?),
                    node: b.node.clone(),
                })
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        (addrs, svc.affinity)
    }

    /// The endpoints to try for `client`, in order, with the affinity to record.
    pub(crate) fn order(&self, client: IpAddr) -> (Vec<Endpoint>, Option<Duration>) {
        let (addrs, affinity) = self.candidates(&self.catalog.snapshot());
        (self.balancer.order(client, &addrs, affinity), affinity)
    }

    /// The tunnel and the node to reach `ep` through, when it runs on another node and there
    /// is a tunnel.
    #[cfg(feature = "tunnel")]
    pub(crate) fn tunnel_for<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> Option<(&'a crate::tunnel::Tunnel, &'a str)> {
        let tunnel = self.config.tunnel.as_ref()?;
        let node = ep.node.as_deref().filter(|n| *n != tunnel.node_name())?;
        Some((tunnel, node))
    }

    /// A TCP connection to `ep`: through the tunnel when it runs on another node and there
    /// is a tunnel, straight otherwise.
    pub(crate) async fn connect(&self, ep: &Endpoint) -> std::io::Result<Box<dyn Duplex>> {
        #[cfg(feature = "tunnel")]
        if let Some((tunnel, node)) = self.tunnel_for(ep) {
            let stream = tunnel
                .connect(node, ep.addr)
                .await
                .map_err(std::io::Error::other)?;
            return Ok(Box::new(stream));
        }
        let stream = tokio::net::TcpStream::connect(ep.addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

struct Open {
    to: SocketAddr,
    stop: CancellationToken,
}

/// The service proxy.
#[derive(Debug)]
pub struct ServiceProxy {
    catalog: Catalog,
    config: ProxyConfig,
    redirects: watch::Sender<Arc<Vec<Redirect>>>,
}

impl ServiceProxy {
    /// A proxy for the Services of `catalog`.
    pub fn new(catalog: Catalog, config: ProxyConfig) -> Self {
        Self {
            catalog,
            config,
            redirects: watch::channel(Arc::new(Vec::new())).0,
        }
    }

    /// The redirects the proxy serves now, and each later set: what the interceptor installs.
    pub fn redirects(&self) -> watch::Receiver<Arc<Vec<Redirect>>> {
        self.redirects.subscribe()
    }

    /// Follows the catalog until `cancel`: a listener for each proxied port, closed when the
    /// port goes (connections already made stay).
    pub async fn run(self, cancel: CancellationToken) {
        let mut changes = self.catalog.subscribe();
        let mut open: HashMap<PortKey, Open> = HashMap::new();
        loop {
            let snap = changes.borrow_and_update().clone();
            self.reconcile(&snap, &mut open).await;
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                () = cancel.cancelled() => break,
            }
        }
        for o in open.values() {
            o.stop.cancel();
        }
    }

    async fn reconcile(&self, snap: &Snapshot, open: &mut HashMap<PortKey, Open>) {
        let mut wanted: BTreeMap<PortKey, Vec<(IpAddr, u16)>> = BTreeMap::new();
        for svc in snap
            .services()
            .filter(|s| s.proxied && !s.cluster_ips.is_empty())
        {
            for p in svc.ports.iter().filter(|p| p.protocol != Protocol::Sctp) {
                let key = PortKey {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    port: p.name.clone(),
                    protocol: p.protocol,
                };
                let ips = svc.cluster_ips.iter().map(|ip| (*ip, p.port)).collect();
                wanted.insert(key, ips);
            }
        }
        open.retain(|key, o| {
            let keep = wanted.contains_key(key);
            if !keep {
                debug!(?key, "service port gone; closing its listener");
                o.stop.cancel();
            }
            keep
        });
        let mut redirects = Vec::new();
        for (key, ips) in wanted {
            let to = match open.get(&key) {
                Some(o) => o.to,
                None => match self.listen(key.clone()).await {
                    Ok(o) => {
                        let to = o.to;
                        open.insert(key.clone(), o);
                        to
                    }
                    Err(e) => {
                        warn!(?key, error = %e, "cannot open a listener for a service port");
                        continue;
                    }
                },
            };
            redirects.extend(ips.into_iter().map(|(cluster_ip, port)| Redirect {
                cluster_ip,
                port,
                protocol: key.protocol,
                to,
            }));
        }
        redirects.sort();
        self.redirects.send_if_modified(|old| {
            let changed = **old != redirects;
            if changed {
                *old = Arc::new(redirects);
            }
            changed
        });
    }

    async fn listen(&self, key: PortKey) -> std::io::Result<Open> {
        let stop = CancellationToken::new();
        let protocol = key.protocol;
        let port = Arc::new(Port {
            key,
            catalog: self.catalog.clone(),
            balancer: Balancer::new(self.config.balance),
            config: self.config.clone(),
        });
        let bind = SocketAddr::new(self.config.listen_ip, 0);
        let to = match protocol {
            Protocol::Udp => {
                let socket = tokio::net::UdpSocket::bind(bind).await?;
                let to = socket.local_addr()?;
                tokio::spawn(udp::serve(socket, port, stop.clone()));
                to
            }
            _ => {
                let listener = tokio::net::TcpListener::bind(bind).await?;
                let to = listener.local_addr()?;
                tokio::spawn(tcp::serve(listener, port, stop.clone()));
                to
            }
        };
        Ok(Open { to, stop })
    }
}
