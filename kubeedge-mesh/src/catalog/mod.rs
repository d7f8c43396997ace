//! [`Catalog`]: the Services and their ready endpoints, as the DNS and the proxy see them.
//!
//! It holds what kube-proxy and CoreDNS read from Services and Endpoints, already reduced to
//! what they use: cluster IPs, ports, session affinity, ExternalName, and the ready addresses
//! of each Endpoints subset with its ports. Readers take a [`Snapshot`] (an `Arc`, never
//! locked while used) and may wait for the next one; writers are `feed` (`kube` watchers on
//! the node's MetaServer or an API server, feature `kube`), `store_feed` (a kubeedge-apiserver
//! store in process, feature `store`) or a test.

mod convert;
#[cfg(feature = "kube")]
pub mod feed;
#[cfg(feature = "store")]
pub mod store_feed;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use convert::{backends_of, service_of};

/// The label by which a Service says another proxy serves it (upstream's
/// `service.edgemesh.kubeedge.io/service-proxy-name`).
pub const SERVICE_PROXY_NAME: &str = "service.edgemesh.kubeedge.io/service-proxy-name";

/// Which Services the proxy serves, by [`SERVICE_PROXY_NAME`] (upstream's
/// `modules.edgeProxy.serviceFilterMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterMode {
    /// Every Service but those with the label (upstream's default).
    #[default]
    FilterIfLabelExists,
    /// Only the Services with the label.
    FilterIfLabelDoesNotExists,
}

impl FilterMode {
    /// The mode upstream's config names `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "FilterIfLabelExists" => Some(Self::FilterIfLabelExists),
            "FilterIfLabelDoesNotExists" => Some(Self::FilterIfLabelDoesNotExists),
            _ => None,
        }
    }

    /// Whether a Service with (`true`) or without the label is proxied.
    pub fn proxies(self, labelled: bool) -> bool {
        match self {
            Self::FilterIfLabelExists => !labelled,
            Self::FilterIfLabelDoesNotExists => labelled,
        }
    }
}

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP: resolved in DNS, not proxied.
    Sctp,
}

impl Protocol {
    /// `TCP`, `UDP` or `SCTP` as a Service spells it (absent means TCP).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The lower-case name used in SRV names (`_tcp`) and nftables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// A number.
    Number(u16),
    /// A container port's name.
    Name(String),
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Its name (empty for a single unnamed port): the Endpoints port of the same name serves it.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The port on the cluster IP.
    pub port: u16,
    /// Where the pods listen.
    pub target: TargetPort,
}

/// A Service, as the mesh uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its cluster IPs; none for a headless Service (`clusterIP: None`) or an ExternalName one.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalName` of an ExternalName Service.
    pub external_name: Option<String>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// Whether this proxy serves it ([`FilterMode`] and [`SERVICE_PROXY_NAME`]).
    pub proxied: bool,
}

/// A ready endpoint address of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The pod's IP.
    pub ip: IpAddr,
    /// Its `hostname` (a headless Service's pods with `spec.hostname` and `spec.subdomain`).
    pub hostname: Option<String>,
    /// The node it runs on.
    pub node: Option<String>,
    /// Its subset's ports: name, number and protocol.
    pub ports: Arc<[(String, u16, Protocol)]>,
}

impl Backend {
    /// The port serving the Service port named `name` with `protocol`, if this backend has it.
    pub fn port_for(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _, p)| n == name && *p == protocol)
            .map(|(_, port, _)| *port)
    }
}

/// `(namespace, name)`.
pub type Key = (String, String);

/// The catalog at one moment. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    services: BTreeMap<Key, Arc<Service>>,
    endpoints: BTreeMap<Key, Arc<[Backend]>>,
    /// Cluster IP to Service, for reverse lookups.
    by_cluster_ip: HashMap<IpAddr, Key>,
}

impl Snapshot {
    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The ready backends of the Service `namespace/name` (empty when it has none).
    pub fn backends(&self, namespace: &str, name: &str) -> &[Backend] {
        self.endpoints
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|b| &b[..])
            .unwrap_or(&[])
    }

    /// Every Service.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The Service whose cluster IP is `ip`.
    pub fn by_cluster_ip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.by_cluster_ip
            .get(&ip)
            .and_then(|k| self.services.get(k))
    }

    /// The Service and backend with the endpoint IP `ip`, for reverse lookups of headless
    /// Services' pods.
    pub fn by_endpoint_ip(&self, ip: IpAddr) -> Option<(&Arc<Service>, &Backend)> {
        self.endpoints.iter().find_map(|(k, backends)| {
            let b = backends.iter().find(|b| b.ip == ip)?;
            let svc = self.services.get(k)?;
            Some((svc, b))
        })
    }

    /// How many Services there are.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// A change to the catalog.
#[derive(Debug, Clone)]
pub enum Change {
    /// A Service was added or changed.
    Service(Service),
    /// The Service `namespace/name` was deleted.
    ServiceGone(Key),
    /// The ready backends of the Service `namespace/name` are now these.
    Endpoints(Key, Vec<Backend>),
    /// The Endpoints `namespace/name` were deleted.
    EndpointsGone(Key),
    /// A fresh list of every Service (after a watch was lost): the rest are gone.
    AllServices(Vec<Service>),
    /// A fresh list of every Endpoints.
    AllEndpoints(Vec<(Key, Vec<Backend>)>),
}

/// The catalog: the current [`Snapshot`] and a way to wait for the next. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Self { tx: Arc::new(tx) }
    }

    /// The catalog now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later snapshot (the latest, when several came at once).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Applies `changes` as one new snapshot.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut next = Snapshot::clone(&self.snapshot());
        let mut any = false;
        for change in changes {
            any |= apply(&mut next, change);
        }
        if any {
            next.by_cluster_ip = next
                .services
                .iter()
                .flat_map(|(k, s)| s.cluster_ips.iter().map(move |ip| (*ip, k.clone())))
                .collect();
            self.tx.send_replace(Arc::new(next));
        }
    }
}

/// Applies one change; whether anything changed.
fn apply(s: &mut Snapshot, change: Change) -> bool {
    match change {
        Change::Service(svc) => {
            let key = (svc.namespace.clone(), svc.name.clone());
            if s.services.get(&key).is_some_and(|old| **old == svc) {
                return false;
            }
            s.services.insert(key, Arc::new(svc));
        }
        Change::ServiceGone(key) => return s.services.remove(&key).is_some(),
        Change::Endpoints(key, backends) => {
            if s.endpoints.get(&key).is_some_and(|old| **old == *backends) {
                return false;
            }
            s.endpoints.insert(key, backends.into());
        }
        Change::EndpointsGone(key) => return s.endpoints.remove(&key).is_some(),
        Change::AllServices(list) => {
            s.services = list
                .into_iter()
                .map(|svc| ((svc.namespace.clone(), svc.name.clone()), Arc::new(svc)))
                .collect();
        }
        Change::AllEndpoints(list) => {
            s.endpoints = list.into_iter().map(|(k, b)| (k, b.into())).collect();
        }
    }
    true
}
