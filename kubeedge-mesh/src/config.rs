//! [`AgentConfig`]: upstream edgemesh-agent's configuration file (`edgemesh-agent.yaml`, the
//! `edgemesh-agent-cfg` ConfigMap), read as it is, with upstream's defaults.
//!
//! Fields this agent does not use yet are accepted and ignored, so that an upstream file
//! loads unchanged.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::catalog::FilterMode;
use crate::error::MeshError;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct AgentConfig {
    /// Where the Services are read from.
    #[serde(rename = "kubeAPIConfig")]
    pub kube_api: KubeApiConfig,
    /// The interface and address the agent serves on.
    pub common_config: CommonConfig,
    /// The modules.
    pub modules: Modules,
}

/// `kubeAPIConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct KubeApiConfig {
    /// The API server's address (overrides the kubeconfig's).
    pub master: String,
    /// A kubeconfig file.
    pub kube_config: String,
    /// The edge node's MetaServer.
    pub meta_server: Option<MetaServer>,
}

/// `kubeAPIConfig.metaServer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct MetaServer {
    /// Its address (upstream's default `http://127.0.0.1:10550`).
    pub server: String,
}

impl Default for MetaServer {
    fn default() -> Self {
        Self {
            server: "http://127.0.0.1:10550".into(),
        }
    }
}

/// `commonConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct CommonConfig {
    /// The bridge interface the agent makes (`edgemesh0`).
    pub bridge_device_name: String,
    /// Its address (`169.254.96.16`): the DNS and the proxy's listeners bind it.
    #[serde(rename = "bridgeDeviceIP")]
    pub bridge_device_ip: Ipv4Addr,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            bridge_device_name: "edgemesh0".into(),
            bridge_device_ip: crate::dns::MESH_DNS_IP,
        }
    }
}

/// `modules`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Modules {
    /// `edgeDNS`.
    #[serde(rename = "edgeDNS")]
    pub edge_dns: EdgeDns,
    /// `edgeProxy`.
    pub edge_proxy: EdgeProxy,
    /// `edgeTunnel`.
    pub edge_tunnel: EdgeTunnel,
}

/// `modules.edgeDNS`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeDns {
    /// Serve the cluster DNS (upstream turns it on for edge nodes).
    pub enable: bool,
    /// The port (53).
    pub listen_port: u16,
}

impl Default for EdgeDns {
    fn default() -> Self {
        Self {
            enable: false,
            listen_port: 53,
        }
    }
}

/// `modules.edgeProxy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeProxy {
    /// Proxy the Services.
    pub enable: bool,
    /// `FilterIfLabelExists` (default) or `FilterIfLabelDoesNotExists`.
    pub service_filter_mode: String,
}

impl EdgeProxy {
    /// The filter mode; an unknown one is an error (upstream refuses it too).
    pub fn filter_mode(&self) -> Result<FilterMode, MeshError> {
        if self.service_filter_mode.is_empty() {
            return Ok(FilterMode::default());
        }
        FilterMode::parse(&self.service_filter_mode).ok_or_else(|| {
            MeshError::Config(format!(
                "modules.edgeProxy.serviceFilterMode {:?}: want FilterIfLabelExists or \
                 FilterIfLabelDoesNotExists",
                self.service_filter_mode
            ))
        })
    }
}

/// `modules.edgeTunnel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeTunnel {
    /// Run the tunnel between nodes.
    pub enable: bool,
    /// Its port (20006).
    pub listen_port: u16,
    /// The relay nodes, for nodes on other networks.
    pub relay_nodes: Vec<RelayNode>,
    /// The pre-shared key that keeps other nodes out.
    pub psk: Psk,
    /// `tcp` (default) or `quic`.
    pub transport: String,
    /// Seconds between checks that each relay still holds this node's reservation (upstream's
    /// `heartbeatPeriod`; 10 when unset).
    pub heartbeat_period: Option<u64>,
}

impl Default for EdgeTunnel {
    fn default() -> Self {
        Self {
            enable: false,
            listen_port: 20006,
            relay_nodes: Vec::new(),
            psk: Psk::default(),
            transport: String::new(),
            heartbeat_period: None,
        }
    }
}

/// `modules.edgeTunnel.relayNodes[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct RelayNode {
    /// The relay's node name.
    pub node_name: String,
    /// Addresses it is reached at.
    pub advertise_address: Vec<String>,
}

/// `modules.edgeTunnel.psk`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Psk {
    /// Require the key (upstream's default).
    pub enable: bool,
    /// The file holding it (`/etc/edgemesh/psk`, from the `edgemesh-agent-psk` ConfigMap).
    pub path: PathBuf,
}

impl Default for Psk {
    fn default() -> Self {
        Self {
            enable: true,
            path: "/etc/edgemesh/psk".into(),
        }
    }
}

#[cfg(feature = "tunnel")]
impl EdgeTunnel {
    /// The tunnel's settings for the node `node_name`, the key read from its file.
    pub fn tunnel_config(&self, node_name: &str) -> Result<crate::tunnel::TunnelConfig, MeshError> {
        use crate::tunnel::{Psk as Key, RelayNode as Relay, Transport, TunnelConfig};
        if node_name.is_empty() {
            return Err(MeshError::Config(
                "modules.edgeTunnel: the node's name is needed (NODE_NAME)".into(),
            ));
        }
        let mut c = TunnelConfig::new(node_name);
        c.listen_port = self.listen_port;
        c.transport = match self.transport.as_str() {
            "" | "tcp" => Transport::Tcp,
            "quic" => Transport::Quic,
            other => {
                return Err(MeshError::Config(format!(
                    "modules.edgeTunnel.transport {other:?}: want tcp or quic"
                )))
            }
        };
        c.relays = self
            .relay_nodes
            .iter()
            .map(|r| Relay::new(r.node_name.clone(), r.advertise_address.clone()))
            .collect();
        c.psk = if self.psk.enable {
            Some(Key::read(&self.psk.path)?)
        } else {
            None
        };
        if let Some(s) = self.heartbeat_period.filter(|s| *s > 0) {
            c.heartbeat = std::time::Duration::from_secs(s);
        }
        Ok(c)
    }
}

impl AgentConfig {
    /// As upstream's agent sets itself up on an edge node: the cluster DNS on (edge nodes have
    /// no CoreDNS) and Services read from the node's MetaServer at `metaserver`
    /// (`http://127.0.0.1:10550`).
    pub fn on_edge(mut self, metaserver: &str) -> Self {
        self.modules.edge_dns.enable = true;
        self.kube_api.meta_server = Some(MetaServer {
            server: metaserver.to_owned(),
        });
        self
    }

    /// With no config file: the cluster DNS and the proxy on, the tunnel off.
    pub fn defaults_for_edge(metaserver: &str) -> Self {
        let mut c = Self::default().on_edge(metaserver);
        c.modules.edge_proxy.enable = true;
        c
    }

    /// Reads the YAML of an edgemesh-agent config file.
    pub fn from_yaml(text: &str) -> Result<Self, MeshError> {
        serde_yaml::from_str(text)
            .map_err(|e| MeshError::Config(format!("edgemesh-agent config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_configmap_loads_with_its_defaults() {
        // build/agent/resources/04-configmap.yaml, relay nodes filled in.
        let cfg = AgentConfig::from_yaml(
            "modules:\n  edgeProxy:\n    enable: true\n  edgeTunnel:\n    enable: true\n    \
             relayNodes:\n    - nodeName: relay-1\n      advertiseAddress:\n      - 1.1.1.1\n",
        )
        .expect("loads");
        assert!(cfg.modules.edge_proxy.enable && cfg.modules.edge_tunnel.enable);
        assert_eq!(
            cfg.modules.edge_tunnel.relay_nodes[0].advertise_address,
            ["1.1.1.1"]
        );
        assert_eq!(cfg.modules.edge_tunnel.listen_port, 20006);
        assert!(cfg.modules.edge_tunnel.psk.enable);
        assert_eq!(cfg.common_config.bridge_device_name, "edgemesh0");
        assert_eq!(cfg.modules.edge_dns.listen_port, 53);
        assert_eq!(
            cfg.modules.edge_proxy.filter_mode().expect("mode"),
            FilterMode::FilterIfLabelExists
        );
    }

    #[test]
    fn an_unknown_filter_mode_is_refused() {
        let cfg =
            AgentConfig::from_yaml("modules:\n  edgeProxy:\n    serviceFilterMode: Sometimes\n")
                .expect("loads");
        assert!(cfg.modules.edge_proxy.filter_mode().is_err());
    }
}
