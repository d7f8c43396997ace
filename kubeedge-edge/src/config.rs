//! `edgecore.yaml` (`edgecore.config.kubeedge.io/v1alpha2`) with upstream's keys and defaults
//! (PROTOCOL.md §9.4). Unknown keys are ignored, so an upstream file loads unchanged; the keys
//! this implementation acts on are typed here and converted into runtime config in one place.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "hub")]
use crate::hub::{CertFiles, CertRotation, HubConfig};

mod runtime;

/// The kubelet version this edge reports (edged's node status, MetaServer's `/version`).
pub const KUBELET_VERSION: &str = concat!("v1.29.0-kubeedge-rs-", env!("CARGO_PKG_VERSION"));
pub use runtime::{
    RuntimeChoice, RuntimeKeys, TailoredKubeletConfig, TailoredKubeletFlag, DEFAULT_CRI_ENDPOINT,
    DEFAULT_LOG_ROOT,
};

/// The file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeCoreConfig {
    /// `edgecore.config.kubeedge.io/v1alpha2`.
    pub api_version: String,
    /// `EdgeCore`.
    pub kind: String,
    /// `database`.
    pub database: Database,
    /// `modules`.
    pub modules: Modules,
}

/// `database`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Database {
    /// `sqlite3`.
    pub driver_name: String,
    /// `default`.
    pub alias_name: String,
    /// `/var/lib/kubeedge/edgecore.db`.
    pub data_source: PathBuf,
}

/// `modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Modules {
    /// `edgeHub`.
    pub edge_hub: EdgeHub,
    /// `metaManager`.
    pub meta_manager: MetaManager,
    /// `edged`.
    pub edged: Edged,
    /// `eventBus`.
    pub event_bus: EventBus,
    /// `deviceTwin`.
    pub device_twin: Enable,
    /// `serviceBus`.
    pub service_bus: Enable,
    /// `edgeStream`.
    pub edge_stream: EdgeStream,
    /// `edgeMesh`: EdgeMesh inside edgecore (the seed's `modules.edgeMesh.enable`).
    pub edge_mesh: EdgeMesh,
}

/// `modules.edgeMesh`: EdgeMesh (cluster DNS and the service proxy, `kubeedge-mesh`) run by
/// edgecore over its own MetaServer, from upstream edgemesh-agent's config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeMesh {
    /// `enable` (default false: it takes over the node's network, a bridge `edgemesh0`, port
    /// 53 on it and an nftables table, and needs root; `keadm join --set
    /// modules.edgeMesh.enable=true` turns it on and points pods' DNS at it).
    pub enable: bool,
    /// `configFile`: upstream's `edgemesh-agent.yaml`; when absent, the cluster DNS and the
    /// proxy run with upstream's defaults.
    pub config_file: PathBuf,
}

impl Default for EdgeMesh {
    fn default() -> Self {
        Self {
            enable: false,
            config_file: "/etc/edgemesh/config/edgemesh-agent.yaml".into(),
        }
    }
}

/// `modules.edgeStream`: the stream tunnel to the cloud (`kubectl logs`). The tunnel presents
/// the hub's node certificate (upstream's `tlsTunnel*File` defaults are the same files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeStream {
    /// `enable` (upstream default: false; `keadm join` here turns it on).
    pub enable: bool,
    /// `server`: the cloud's tunnel address, `host:port` (upstream default
    /// `127.0.0.1:10004`).
    pub server: String,
    /// `handshakeTimeout`, seconds.
    pub handshake_timeout: u64,
}

impl Default for EdgeStream {
    fn default() -> Self {
        Self {
            enable: false,
            server: "127.0.0.1:10004".into(),
            handshake_timeout: 30,
        }
    }
}

/// A module with only an `enable` flag (its other keys are kept by upstream files, ignored here).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Enable {
    /// `enable`.
    pub enable: bool,
}

/// `modules.eventBus`, with upstream's keys. Two defaults differ from upstream so that an edge
/// works with no separate broker: `mqttMode` is 0 (the embedded broker) and
/// `mqttServerInternal` is `tcp://127.0.0.1:1883`, where mappers look for a broker. A file that
/// sets `mqttMode: 2` (as keadm writes it) uses the external broker exactly as upstream does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EventBus {
    /// `enable`.
    pub enable: bool,
    /// `mqttQOS`.
    #[serde(rename = "mqttQOS")]
    pub mqtt_qos: u8,
    /// `mqttRetain`.
    pub mqtt_retain: bool,
    /// `mqttSessionQueueSize`.
    pub mqtt_session_queue_size: usize,
    /// `mqttServerExternal`.
    pub mqtt_server_external: String,
    /// `mqttServerInternal`.
    pub mqtt_server_internal: String,
    /// `mqttSubClientID`.
    #[serde(rename = "mqttSubClientID")]
    pub mqtt_sub_client_id: String,
    /// `mqttPubClientID`.
    #[serde(rename = "mqttPubClientID")]
    pub mqtt_pub_client_id: String,
    /// `mqttUsername`.
    pub mqtt_username: String,
    /// `mqttPassword`.
    pub mqtt_password: String,
    /// `mqttMode`: 0 internal, 1 both, 2 external.
    pub mqtt_mode: u8,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            enable: true,
            mqtt_qos: 0,
            mqtt_retain: false,
            mqtt_session_queue_size: 100,
            mqtt_server_external: "tcp://127.0.0.1:1883".into(),
            mqtt_server_internal: "tcp://127.0.0.1:1883".into(),
            mqtt_sub_client_id: String::new(),
            mqtt_pub_client_id: String::new(),
            mqtt_username: String::new(),
            mqtt_password: String::new(),
            mqtt_mode: 0,
        }
    }
}

/// `modules.edgeHub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct EdgeHub {
    /// `enable`.
    pub enable: bool,
    /// `heartbeat`, seconds.
    pub heartbeat: u64,
    /// `messageQPS`.
    #[serde(rename = "messageQPS")]
    pub message_qps: u32,
    /// `messageBurst`.
    pub message_burst: u32,
    /// `projectID`.
    #[serde(rename = "projectID")]
    pub project_id: String,
    /// `tlsCaFile`.
    pub tls_ca_file: PathBuf,
    /// `tlsCertFile`.
    pub tls_cert_file: PathBuf,
    /// `tlsPrivateKeyFile`.
    pub tls_private_key_file: PathBuf,
    /// `token`: `<caHash>.<jwt>`, used when the certificate files are missing.
    pub token: String,
    /// `httpServer`: `https://<cloud>:10002`.
    pub http_server: String,
    /// `rotateCertificates`.
    pub rotate_certificates: bool,
    /// `websocket`.
    pub websocket: WebSocket,
}

/// `modules.edgeHub.websocket`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct WebSocket {
    /// `enable`.
    pub enable: bool,
    /// `server`: `<cloud>:10000`.
    pub server: String,
    /// `handshakeTimeout`, seconds.
    pub handshake_timeout: u64,
    /// `readDeadline`, seconds.
    pub read_deadline: u64,
    /// `writeDeadline`, seconds.
    pub write_deadline: u64,
}

/// `modules.metaManager`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct MetaManager {
    /// `enable`.
    pub enable: bool,
    /// `remoteQueryTimeout`, seconds.
    pub remote_query_timeout: u64,
    /// `metaServer`.
    pub meta_server: MetaServer,
}

/// `modules.metaManager.metaServer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct MetaServer {
    /// `enable`.
    pub enable: bool,
    /// `server`.
    pub server: String,
}

/// `modules.edged` (the keys this implementation reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Edged {
    /// `enable`.
    pub enable: bool,
    /// `hostnameOverride`: the node name.
    pub hostname_override: String,
    /// `registerNodeNamespace`.
    pub register_node_namespace: String,
    /// `nodeIP`.
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
    /// `nodeLabels`.
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// `podSandboxImage`; empty = edged's built-in sandbox image (imported locally, no
    /// registry needed). A configured image that is absent and cannot be pulled falls back
    /// to the built-in one too.
    pub pod_sandbox_image: String,
    /// `nodeStatusUpdateFrequency`, seconds.
    pub node_status_update_frequency: u64,
    /// `nodeLeaseDurationSeconds` (the kubelet's, 40): the node Lease is renewed every
    /// quarter of it.
    pub node_lease_duration_seconds: u32,
    /// `rootDirectory`: pod volumes live under `<rootDirectory>/pods`.
    pub root_directory: PathBuf,
    /// `dockerAddress`.
    pub docker_address: String,
    /// The CRI runtime keys (`runtimeType`, `tailoredKubeletFlag`, `tailoredKubeletConfig`).
    #[serde(flatten)]
    pub runtime: RuntimeKeys,
    /// `clusterDNS` (v1alpha1, up to v1.11: one string, commas between servers); since v1.12
    /// `tailoredKubeletConfig.clusterDNS`, which wins when set.
    #[serde(rename = "clusterDNS", skip_serializing_if = "String::is_empty")]
    pub cluster_dns: String,
    /// `clusterDomain` (v1alpha1); `tailoredKubeletConfig.clusterDomain` wins when set.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_domain: String,
    /// `maxPods`.
    pub max_pods: u32,
    /// `podSyncFrequencyMs` (kubeedge-rs): how often each pod is compared with the runtime.
    pub pod_sync_frequency_ms: u64,
    /// `restartBackoffInitialMs` (kubeedge-rs): the first crash-loop delay (kubelet: 10 s).
    pub restart_backoff_initial_ms: u64,
    /// `restartBackoffMaxMs` (kubeedge-rs): the crash-loop delay cap (kubelet: 300 s).
    pub restart_backoff_max_ms: u64,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge-node".to_owned())
}

impl Default for EdgeCoreConfig {
    fn default() -> Self {
        Self {
            api_version: "edgecore.config.kubeedge.io/v1alpha2".into(),
            kind: "EdgeCore".into(),
            database: Database::default(),
            modules: Modules::default(),
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Self {
            driver_name: "sqlite3".into(),
            alias_name: "default".into(),
            data_source: "/var/lib/kubeedge/edgecore.db".into(),
        }
    }
}

impl Default for Modules {
    fn default() -> Self {
        Self {
            edge_hub: EdgeHub::default(),
            meta_manager: MetaManager::default(),
            edged: Edged::default(),
            event_bus: EventBus::default(),
            device_twin: Enable { enable: true },
            service_bus: Enable { enable: false },
            edge_stream: EdgeStream::default(),
            edge_mesh: EdgeMesh::default(),
        }
    }
}

impl Default for EdgeHub {
    fn default() -> Self {
        Self {
            enable: true,
            heartbeat: 15,
            message_qps: 30,
            message_burst: 60,
            project_id: kubeedge_proto::DEFAULT_PROJECT_ID.into(),
            tls_ca_file: "/etc/kubeedge/ca/rootCA.crt".into(),
            tls_cert_file: "/etc/kubeedge/certs/server.crt".into(),
            tls_private_key_file: "/etc/kubeedge/certs/server.key".into(),
            token: String::new(),
            http_server: "https://127.0.0.1:10002".into(),
            rotate_certificates: true,
            websocket: WebSocket::default(),
        }
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            enable: true,
            server: "127.0.0.1:10000".into(),
            handshake_timeout: 30,
            read_deadline: 15,
            write_deadline: 15,
        }
    }
}

impl Default for MetaManager {
    fn default() -> Self {
        Self {
            enable: true,
            remote_query_timeout: 60,
            meta_server: MetaServer::default(),
        }
    }
}

impl Default for MetaServer {
    fn default() -> Self {
        Self {
            enable: false,
            server: "127.0.0.1:10550".into(),
        }
    }
}

impl Default for Edged {
    fn default() -> Self {
        Self {
            enable: true,
            hostname_override: hostname(),
            register_node_namespace: "default".into(),
            node_ip: String::new(),
            node_labels: std::collections::BTreeMap::new(),
            pod_sandbox_image: String::new(),
            node_status_update_frequency: 10,
            node_lease_duration_seconds: 40,
            root_directory: "/var/lib/edged".into(),
            docker_address: "unix:///var/run/docker.sock".into(),
            runtime: RuntimeKeys::default(),
            cluster_dns: String::new(),
            cluster_domain: String::new(),
            max_pods: 110,
            pod_sync_frequency_ms: 2000,
            restart_backoff_initial_ms: 10_000,
            restart_backoff_max_ms: 300_000,
        }
    }
}

impl Edged {
    #[cfg(feature = "edged")]
    /// The pods' DNS settings: `tailoredKubeletConfig`'s keys, else v1alpha1's flat ones, else
    /// the kubelet's defaults (no cluster DNS, `cluster.local`, `/etc/resolv.conf`).
    pub fn dns_settings(&self) -> crate::edged::DnsSettings {
        let t = &self.runtime.tailored_kubelet_config;
        let defaults = crate::edged::DnsSettings::default();
        let cluster_dns = if t.cluster_dns.is_empty() {
            self.cluster_dns
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            t.cluster_dns.clone()
        };
        let first = |a: &String, b: &String, d: String| {
            [a, b]
                .into_iter()
                .find(|x| !x.is_empty())
                .cloned()
                .unwrap_or(d)
        };
        crate::edged::DnsSettings {
            cluster_dns,
            cluster_domain: first(
                &t.cluster_domain,
                &self.cluster_domain,
                defaults.cluster_domain,
            ),
            resolv_conf: first(&t.resolv_conf, &String::new(), defaults.resolv_conf),
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not YAML of the expected shape.
    #[error("invalid edgecore config")]
    Parse(#[source] serde_yaml::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid edgecore config: {0}")]
    Invalid(String),
}

impl EdgeCoreConfig {
    /// Parse YAML.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(ConfigError::Parse)
    }

    /// The full default configuration as YAML (`--defaultconfig`).
    pub fn default_yaml() -> String {
        serde_yaml::to_string(&Self::default()).unwrap_or_default()
    }

    /// A minimal configuration (`--minconfig`): what a node needs to join.
    pub fn min_yaml() -> String {
        let d = Self::default();
        format!(
            "apiVersion: {}\nkind: EdgeCore\ndatabase:\n  dataSource: {}\nmodules:\n  edgeHub:\n    httpServer: {}\n    token: \"\"\n    websocket:\n      server: {}\n  edged:\n    hostnameOverride: {}\n",
            d.api_version,
            d.database.data_source.display(),
            d.modules.edge_hub.http_server,
            d.modules.edge_hub.websocket.server,
            d.modules.edged.hostname_override,
        )
    }

    /// The node name (`edged.hostnameOverride`).
    pub fn node_name(&self) -> &str {
        &self.modules.edged.hostname_override
    }

    #[cfg(feature = "hub")]
    /// The certificate files.
    pub fn cert_files(&self) -> CertFiles {
        let h = &self.modules.edge_hub;
        let mut f = CertFiles::in_dir(std::path::Path::new("/"));
        f.ca = h.tls_ca_file.clone();
        f.cert = h.tls_cert_file.clone();
        f.key = h.tls_private_key_file.clone();
        f
    }

    #[cfg(feature = "hub")]
    /// The hub client settings, validated.
    pub fn hub(&self) -> Result<HubConfig, ConfigError> {
        let h = &self.modules.edge_hub;
        if h.heartbeat == 0 {
            return Err(ConfigError::Invalid(
                "edgeHub.heartbeat must be at least 1 second".into(),
            ));
        }
        if self.node_name().is_empty() || self.node_name().contains('/') {
            return Err(ConfigError::Invalid(format!(
                "invalid node name {:?}",
                self.node_name()
            )));
        }
        Ok(HubConfig {
            server: h.websocket.server.clone(),
            project_id: h.project_id.clone(),
            node_name: self.node_name().to_owned(),
            heartbeat: Duration::from_secs(h.heartbeat),
            handshake_timeout: Duration::from_secs(h.websocket.handshake_timeout.max(1)),
            write_timeout: Duration::from_secs(h.websocket.write_deadline.max(1)),
            message_qps: h.message_qps,
            message_burst: h.message_burst,
            rotation: h
                .rotate_certificates
                .then(|| CertRotation::new(h.http_server.clone(), self.cert_files())),
            ..HubConfig::default()
        })
    }

    #[cfg(feature = "eventbus")]
    /// The event bus settings, validated; `None` when `eventBus.enable` is false.
    pub fn event_bus(&self) -> Result<Option<crate::eventbus::EventBusConfig>, ConfigError> {
        use crate::eventbus::{BrokerAddr, EventBusConfig, MqttMode};
        let e = &self.modules.event_bus;
        if !e.enable {
            return Ok(None);
        }
        let addr = |key: &str, v: &str| {
            BrokerAddr::parse(v).ok_or_else(|| {
                ConfigError::Invalid(format!("eventBus.{key} {v:?} is not tcp://host:port"))
            })
        };
        let mut c = EventBusConfig::new(self.node_name());
        c.mode = match e.mqtt_mode {
            0 => MqttMode::Internal,
            1 => MqttMode::Both,
            2 => MqttMode::External,
            n => {
                return Err(ConfigError::Invalid(format!(
                    "eventBus.mqttMode must be 0, 1 or 2, not {n}"
                )))
            }
        };
        c.internal = addr("mqttServerInternal", &e.mqtt_server_internal)?;
        c.external = addr("mqttServerExternal", &e.mqtt_server_external)?;
        if c.mode == MqttMode::Both && c.internal == c.external {
            return Err(ConfigError::Invalid(
                "eventBus.mqttMode 1 needs different mqttServerInternal and mqttServerExternal"
                    .into(),
            ));
        }
        if e.mqtt_qos > 2 {
            return Err(ConfigError::Invalid(
                "eventBus.mqttQOS must be 0, 1 or 2".into(),
            ));
        }
        c.qos = e.mqtt_qos;
        c.retain = e.mqtt_retain;
        c.queue = e.mqtt_session_queue_size.max(1);
        c.client_id = e.mqtt_sub_client_id.clone();
        if !e.mqtt_username.is_empty() {
            c.credentials = Some((e.mqtt_username.clone(), e.mqtt_password.clone()));
        }
        Ok(Some(c))
    }

    /// `metaManager.remoteQueryTimeout`.
    pub fn remote_query_timeout(&self) -> Duration {
        Duration::from_secs(self.modules.meta_manager.remote_query_timeout.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "edged")]
    #[test]
    fn pod_dns_keys_in_both_layouts() {
        let current = "modules:\n  edged:\n    tailoredKubeletConfig:\n      clusterDNS:\n      \
                       - 169.254.96.16\n      clusterDomain: edge.local\n";
        let c = EdgeCoreConfig::from_yaml(current).expect("parses");
        let d = c.modules.edged.dns_settings();
        assert_eq!(d.cluster_dns, ["169.254.96.16"]);
        assert_eq!(d.cluster_domain, "edge.local");
        assert_eq!(d.resolv_conf, "/etc/resolv.conf");
        let v1alpha1 = "modules:\n  edged:\n    clusterDNS: 10.96.0.10,10.96.0.11\n";
        let d = EdgeCoreConfig::from_yaml(v1alpha1)
            .expect("parses")
            .modules
            .edged
            .dns_settings();
        assert_eq!(d.cluster_dns, ["10.96.0.10", "10.96.0.11"]);
        assert_eq!(d.cluster_domain, "cluster.local");
        let none = EdgeCoreConfig::default().modules.edged.dns_settings();
        assert!(none.cluster_dns.is_empty());
    }

    #[test]
    fn upstream_keys_and_unknown_keys() {
        let yaml = r#"
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database:
  dataSource: /tmp/x.db
modules:
  edgeHub:
    heartbeat: 10
    messageQPS: 5
    projectID: p
    token: abc
    websocket:
      server: 10.0.0.1:10000
      handshakeTimeout: 7
    quic: {enable: false}
  edged:
    hostnameOverride: edge-9
    tailoredKubeletConfig: {address: 127.0.0.1}
  eventBus:
    enable: false
    mqttMode: 2
"#;
        let c = EdgeCoreConfig::from_yaml(yaml).unwrap();
        assert_eq!(c.database.data_source, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.modules.edge_hub.message_qps, 5);
        assert_eq!(
            c.modules.edge_hub.message_burst, 60,
            "defaults fill the rest"
        );
        assert!(!c.modules.event_bus.enable);
        assert_eq!(c.modules.event_bus.mqtt_mode, 2);
        assert!(c.event_bus().unwrap().is_none());
        let hub = c.hub().unwrap();
        assert_eq!(hub.server, "10.0.0.1:10000");
        assert_eq!(hub.node_name, "edge-9");
        assert_eq!(hub.heartbeat, Duration::from_secs(10));
        assert_eq!(hub.handshake_timeout, Duration::from_secs(7));
    }

    #[test]
    fn default_and_min_configs_round_trip() {
        let d = EdgeCoreConfig::from_yaml(&EdgeCoreConfig::default_yaml()).unwrap();
        assert_eq!(d, EdgeCoreConfig::default());
        let m = EdgeCoreConfig::from_yaml(&EdgeCoreConfig::min_yaml()).unwrap();
        assert_eq!(m, EdgeCoreConfig::default());
        assert!(EdgeCoreConfig::from_yaml("modules: [").is_err());
        let mut bad = EdgeCoreConfig::default();
        bad.modules.edge_hub.heartbeat = 0;
        assert!(bad.hub().is_err());
    }
}
