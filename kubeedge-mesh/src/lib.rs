//! EdgeMesh as a library: Kubernetes Services reachable from edge pods and hosts, read from
//! the node's MetaServer (so they keep working with the cloud offline) or from an API server.
//!
//! Each part stands alone:
//! - [`catalog`]: the Services and their ready endpoints, fed by a `kube` watcher
//!   ([`catalog::feed`]).
//! - [`dns`]: the cluster zone (`*.svc.cluster.local`, SRV, PTR, pod names) answered from the
//!   catalog over UDP and TCP (hickory-server), everything else forwarded.
//! - [`proxy`]: a TCP/UDP listener per Service port, balancing over the endpoints (round
//!   robin, random, `sessionAffinity: ClientIP`), skipping endpoints that do not answer.
//! - [`intercept`]: the nftables table that sends `clusterIP:port` to those listeners.
//!
//! ```no_run
//! # async fn run(client: kube::Client) -> Result<(), kubeedge_mesh::MeshError> {
//! use kubeedge_mesh::{catalog, dns::ClusterDns, proxy::{ProxyConfig, ServiceProxy}};
//! use tokio_util::sync::CancellationToken;
//!
//! let cancel = CancellationToken::new();
//! let catalog = catalog::Catalog::new();
//! tokio::spawn(catalog::feed::run(client, catalog.clone(), Default::default(), cancel.clone()));
//! let dns = ClusterDns::new(catalog.clone(), "cluster.local", vec!["1.1.1.1:53".parse().unwrap()])?;
//! let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn(dns.serve(udp, tcp, cancel.clone()));
//! let proxy = ServiceProxy::new(catalog, ProxyConfig::default());
//! let redirects = proxy.redirects();
//! tokio::spawn(proxy.run(cancel.clone()));
//! # Ok(()) }
//! ```

pub mod agent;
pub mod catalog;
pub mod config;
pub mod dns;
mod error;
pub mod intercept;
pub mod proxy;
#[cfg(feature = "tunnel")]
pub mod tunnel;

pub use error::MeshError;
