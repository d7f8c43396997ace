//! [`run`]: the parts together, as edgemesh-agent runs them on a node.
//!
//! It makes the bridge interface (`edgemesh0`, 169.254.96.16), serves the
//! cluster DNS on the bridge address, runs the service proxy with its listeners on the bridge
//! address (free ports: nothing collides with cloudcore or edgecore), and keeps the nftables
//! table equal to the proxy's redirects. On cancel it removes the table and the interface.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::config::AgentConfig;
use crate::dns::{upstreams_from, ClusterDns};
use crate::error::MeshError;
use crate::intercept::{ensure_interface, remove_interface, Interceptor, TABLE};
use crate::proxy::{ProxyConfig, ServiceProxy};

/// What the agent takes besides its config file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The cluster domain (the kubelet's `clusterDomain`, `cluster.local`).
    pub cluster_domain: String,
    /// Where the node's resolvers are listed; names outside the zone go to them.
    pub resolv_conf: PathBuf,
    /// The nftables table.
    pub table: String,
    /// This node's name (upstream reads `NODE_NAME`): the tunnel's identity, and which
    /// endpoints are on this node.
    pub node_name: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            table: TABLE.into(),
            node_name: String::new(),
        }
    }
}

/// Runs the enabled modules of `config` until `cancel`, over `catalog` (which the caller
/// feeds: `catalog::feed::run` from a `kube::Client`, `catalog::store_feed::run` from a store
/// in process; with the filter mode of `config.modules.edge_proxy`).
pub async fn run(
    config: &AgentConfig,
    options: &AgentOptions,
    catalog: Catalog,
    cancel: CancellationToken,
) -> Result<(), MeshError> {
    let modules = &config.modules;
    let bridge = &config.common_config;
    let bridge_ip = IpAddr::V4(bridge.bridge_device_ip);
    if !modules.edge_dns.enable && !modules.edge_proxy.enable && !modules.edge_tunnel.enable {
        info!("edgemesh: neither edgeDNS nor edgeProxy is enabled; nothing to do");
        cancel.cancelled().await;
        return Ok(());
    }
    #[cfg(feature = "tunnel")]
    let tunnel = if modules.edge_tunnel.enable {
        let tc = modules.edge_tunnel.tunnel_config(&options.node_name)?;
        Some(crate::tunnel::Tunnel::start(tc, cancel.clone())?)
    } else {
        None
    };
    #[cfg(not(feature = "tunnel"))]
    if modules.edge_tunnel.enable {
        warn!("edgemesh: edgeTunnel is enabled but this build has no tunnel (feature `tunnel`)");
    }
    if !modules.edge_dns.enable && !modules.edge_proxy.enable {
        // A relay-only agent.
        cancel.cancelled().await;
        return Ok(());
    }
    ensure_interface(&bridge.bridge_device_name, bridge.bridge_device_ip).await?;

    if modules.edge_dns.enable {
        let addr = SocketAddr::new(bridge_ip, modules.edge_dns.listen_port);
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let upstreams = upstreams_from(&options.resolv_conf, &[bridge_ip]);
        info!(%addr, ?upstreams, "edgemesh: cluster DNS serving");
        let dns = ClusterDns::new(catalog.clone(), &options.cluster_domain, upstreams)?;
        tokio::spawn(dns.serve(udp, tcp, cancel.clone()));
    }

    let interceptor = Interceptor::detect(&options.table).await;
    if modules.edge_proxy.enable {
        let proxy_config = ProxyConfig {
            listen_ip: bridge_ip,
            #[cfg(feature = "tunnel")]
            tunnel,
            ..ProxyConfig::default()
        };
        let proxy = ServiceProxy::new(catalog, proxy_config);
        let mut redirects = proxy.redirects();
        tokio::spawn(proxy.run(cancel.clone()));
        // An empty table at once: a stale one of an earlier run is replaced.
        interceptor.apply(&[]).await?;
        loop {
            tokio::select! {
                r = redirects.changed() => if r.is_err() { break },
                () = cancel.cancelled() => break,
            }
            let table = redirects.borrow_and_update().clone();
            if let Err(e) = interceptor.apply(&table).await {
                warn!(error = %e, "edgemesh: nftables refused the redirects; next change retries");
            }
        }
    }
    cancel.cancelled().await;
    if let Err(e) = interceptor.remove().await {
        warn!(error = %e, "edgemesh: cannot remove the nftables table");
    }
    remove_interface(&bridge.bridge_device_name).await
}
