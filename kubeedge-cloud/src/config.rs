//! `cloudcore.yaml` (`cloudcore.config.kubeedge.io/v1alpha1`, PROTOCOL.md §9.3): upstream's
//! file model with upstream's defaults (unknown keys are ignored, so an upstream file works
//! unchanged), and its conversion into the typed settings of the hub and controllers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::certs::{FsCertStore, PkiConfig};
use crate::dynamiccontroller::DynamicConfig;
use crate::edgecontroller::EdgeControllerConfig;
use crate::error::ControllerError;
use crate::hub::HubConfig;
use crate::synccontroller::SyncConfig;

/// The `apiVersion` of the file.
pub const API_VERSION: &str = "cloudcore.config.kubeedge.io/v1alpha1";

macro_rules! file_struct {
    ($(#[$m:meta])* $name:ident { $( $(#[$fm:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }
        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }
    };
}

file_struct! {
    /// The whole file.
    CloudCoreFile {
        /// `apiVersion`.
        api_version: String = API_VERSION.to_owned(),
        /// `kind` (`CloudCore`).
        kind: String = "CloudCore".to_owned(),
        /// `commonConfig`.
        common_config: CommonConfig = CommonConfig::default(),
        /// `kubeAPIConfig`.
        #[serde(rename = "kubeAPIConfig")]
        kube_api_config: KubeApiConfig = KubeApiConfig::default(),
        /// `featureGates`.
        feature_gates: BTreeMap<String, bool> = BTreeMap::new(),
        /// `modules`.
        modules: Modules = Modules::default(),
    }
}

file_struct! {
    /// `commonConfig`.
    CommonConfig {
        /// `tunnelPort`.
        tunnel_port: u16 = 10350,
        /// `monitorServer`.
        monitor_server: MonitorServerFile = MonitorServerFile::default(),
    }
}

file_struct! {
    /// `commonConfig.monitorServer`: where `/metrics`, `/healthz` and `/readyz` are served.
    MonitorServerFile {
        /// `bindAddress` (upstream's default, loopback only; `0.0.0.0:9091` for all
        /// interfaces, port 0 for any free port).
        bind_address: String = "127.0.0.1:9091".to_owned(),
        /// `enableProfiling`: a CPU profile in pprof's format at `/debug/pprof/profile` (upstream
        /// installs Go's pprof handlers); needs cloudcore's `profiling` feature.
        enable_profiling: bool = false,
    }
}

file_struct! {
    /// `kubeAPIConfig`: the cluster to run against. Neither `master` nor `kubeConfig` set
    /// means the embedded control plane.
    KubeApiConfig {
        /// `master`: API server URL.
        master: String = String::new(),
        /// `kubeConfig`: path of a kubeconfig file.
        kube_config: String = String::new(),
        /// `contentType`.
        content_type: String = "application/vnd.kubernetes.protobuf".to_owned(),
        /// `qps`.
        qps: f32 = 100.0,
        /// `burst`.
        burst: u32 = 200,
    }
}

impl KubeApiConfig {
    /// True when a real cluster is configured.
    pub fn is_external(&self) -> bool {
        !self.master.is_empty() || !self.kube_config.is_empty()
    }
}

file_struct! {
    /// An `{enable: bool}` module.
    Enable {
        /// `enable`.
        enable: bool = true,
    }
}

file_struct! {
    /// `modules`.
    Modules {
        /// `cloudHub`.
        cloud_hub: CloudHubFile = CloudHubFile::default(),
        /// `edgeController`.
        edge_controller: EdgeControllerFile = EdgeControllerFile::default(),
        /// `deviceController`.
        device_controller: serde_yaml::Value = serde_yaml::from_str("enable: true").unwrap_or_default(),
        /// `nodeUpgradeJobController`.
        node_upgrade_job_controller: serde_yaml::Value = serde_yaml::from_str("enable: false").unwrap_or_default(),
        /// `syncController`.
        sync_controller: Enable = Enable { enable: true },
        /// `dynamicController` (upstream default: disabled).
        dynamic_controller: Enable = Enable { enable: false },
        /// `cloudStream`.
        cloud_stream: serde_yaml::Value = serde_yaml::from_str(CLOUD_STREAM_DEFAULT).unwrap_or_default(),
        /// `router`.
        router: serde_yaml::Value = serde_yaml::from_str("enable: false\naddress: 0.0.0.0\nport: 9443\nrestTimeout: 60").unwrap_or_default(),
        /// `iptablesManager`.
        iptables_manager: serde_yaml::Value = serde_yaml::from_str("enable: true\nmode: internal").unwrap_or_default(),
    }
}

const CLOUD_STREAM_DEFAULT: &str = "enable: false
tlsTunnelCAFile: /etc/kubeedge/ca/rootCA.crt
tlsTunnelCertFile: /etc/kubeedge/certs/server.crt
tlsTunnelPrivateKeyFile: /etc/kubeedge/certs/server.key
tunnelPort: 10004
tlsStreamCAFile: /etc/kubeedge/ca/streamCA.crt
tlsStreamCertFile: /etc/kubeedge/certs/stream.crt
tlsStreamPrivateKeyFile: /etc/kubeedge/certs/stream.key
streamPort: 10003";

file_struct! {
    /// `modules.cloudHub`.
    CloudHubFile {
        /// `enable`.
        enable: bool = true,
        /// `keepaliveInterval` (seconds).
        keepalive_interval: u64 = 30,
        /// `nodeLimit`.
        node_limit: usize = 1000,
        /// `tlsCAFile`.
        #[serde(rename = "tlsCAFile")]
        tls_ca_file: String = "/etc/kubeedge/ca/rootCA.crt".to_owned(),
        /// `tlsCAKeyFile`.
        #[serde(rename = "tlsCAKeyFile")]
        tls_ca_key_file: String = "/etc/kubeedge/ca/rootCA.key".to_owned(),
        /// `tlsCertFile`.
        tls_cert_file: String = "/etc/kubeedge/certs/server.crt".to_owned(),
        /// `tlsPrivateKeyFile`.
        tls_private_key_file: String = "/etc/kubeedge/certs/server.key".to_owned(),
        /// `writeTimeout` (seconds, unused upstream too).
        write_timeout: u64 = 30,
        /// `advertiseAddress`: IPs in the server certificate.
        advertise_address: Vec<String> = Vec::new(),
        /// `dnsNames`.
        dns_names: Vec<String> = Vec::new(),
        /// `edgeCertSigningDuration` (days).
        edge_cert_signing_duration: u64 = 365,
        /// `tokenRefreshDuration` (hours).
        token_refresh_duration: u64 = 12,
        /// `quic` (not served).
        quic: serde_yaml::Value = serde_yaml::from_str("enable: false\naddress: 0.0.0.0\nport: 10001\nmaxIncomingStreams: 10000").unwrap_or_default(),
        /// `unixsocket` (not served).
        unixsocket: serde_yaml::Value = serde_yaml::from_str("enable: true\naddress: unix:///var/lib/kubeedge/kubeedge.sock").unwrap_or_default(),
        /// `websocket`.
        websocket: Listen = Listen { enable: true, address: "0.0.0.0".to_owned(), port: 10000 },
        /// `https`.
        https: Listen = Listen { enable: true, address: "0.0.0.0".to_owned(), port: 10002 },
        /// `authorization` (v1.18+): `enable` turns on the node identity check.
        authorization: Option<serde_yaml::Value> = None,
    }
}

file_struct! {
    /// A listener.
    Listen {
        /// `enable`.
        enable: bool = true,
        /// `address`.
        address: String = "0.0.0.0".to_owned(),
        /// `port`.
        port: u16 = 0,
    }
}

file_struct! {
    /// `modules.edgeController`.
    EdgeControllerFile {
        /// `enable`.
        enable: bool = true,
        /// `nodeUpdateFrequency` (seconds).
        node_update_frequency: u64 = 10,
        /// `buffer`: upstream's channel sizes (kept, unused).
        buffer: BTreeMap<String, i64> = BTreeMap::new(),
        /// `load`: upstream's worker counts; the largest sets our worker count.
        load: BTreeMap<String, i64> = BTreeMap::new(),
    }
}

impl CloudCoreFile {
    /// Parse a file. Unknown keys are ignored; absent keys take upstream's defaults.
    pub fn parse(text: &str) -> Result<Self, ControllerError> {
        let f: Self = serde_yaml::from_str(text)
            .map_err(|e| ControllerError::Config(format!("cloudcore.yaml: {e}")))?;
        if !f.api_version.is_empty() && f.api_version != API_VERSION {
            return Err(ControllerError::Config(format!(
                "apiVersion {:?} is not {API_VERSION}",
                f.api_version
            )));
        }
        Ok(f)
    }

    /// Upstream's `--defaultconfig`: every key with its default, `advertiseAddress` set to
    /// `advertise`.
    pub fn default_config(advertise: IpAddr) -> Self {
        let mut f = Self::default();
        f.modules.cloud_hub.advertise_address = vec![advertise.to_string()];
        f.modules.cloud_hub.dns_names = vec![String::new()];
        f.modules.edge_controller.buffer = [
            "updatePodStatus",
            "updateNodeStatus",
            "queryConfigMap",
            "querySecret",
            "queryService",
            "queryEndpoints",
            "podEvent",
            "configMapEvent",
            "secretEvent",
            "serviceEvent",
            "endpointsEvent",
            "rulesEvent",
            "ruleEndpointsEvent",
            "queryPersistentVolume",
            "queryPersistentVolumeClaim",
            "queryVolumeAttachment",
            "createNode",
            "patchNode",
            "queryNode",
            "updateNode",
            "patchPod",
            "deletePod",
            "createLease",
            "queryLease",
            "serviceAccountToken",
        ]
        .iter()
        .map(|k| ((*k).to_owned(), 1024))
        .collect();
        f.modules.edge_controller.load = [
            "updatePodStatusWorkers",
            "updateNodeStatusWorkers",
            "queryConfigMapWorkers",
            "querySecretWorkers",
            "queryServiceWorkers",
            "queryEndpointsWorkers",
            "queryPersistentVolumeWorkers",
            "queryPersistentVolumeClaimWorkers",
            "queryVolumeAttachmentWorkers",
            "createNodeWorkers",
            "patchNodeWorkers",
            "queryNodeWorkers",
            "updateNodeWorkers",
            "patchPodWorkers",
            "deletePodWorkers",
            "createLeaseWorkers",
            "queryLeaseWorkers",
            "UpdateRuleStatusWorkers",
            "ServiceAccountTokenWorkers",
        ]
        .iter()
        .map(|k| ((*k).to_owned(), 4))
        .collect();
        f
    }

    /// Upstream's `--minconfig`: what a user usually changes.
    pub fn min_config_yaml(advertise: IpAddr) -> String {
        format!(
            "apiVersion: {API_VERSION}\nkind: CloudCore\nkubeAPIConfig:\n  kubeConfig: \"\"\n  master: \"\"\nmodules:\n  cloudHub:\n    advertiseAddress:\n    - {advertise}\n    https:\n      address: 0.0.0.0\n      enable: true\n      port: 10002\n    nodeLimit: 1000\n    tlsCAFile: /etc/kubeedge/ca/rootCA.crt\n    tlsCAKeyFile: /etc/kubeedge/ca/rootCA.key\n    tlsCertFile: /etc/kubeedge/certs/server.crt\n    tlsPrivateKeyFile: /etc/kubeedge/certs/server.key\n    unixsocket:\n      address: unix:///var/lib/kubeedge/kubeedge.sock\n      enable: true\n    websocket:\n      address: 0.0.0.0\n      enable: true\n      port: 10000\n"
        )
    }

    /// As YAML.
    pub fn to_yaml(&self) -> Result<String, ControllerError> {
        serde_yaml::to_string(self).map_err(|e| ControllerError::Config(e.to_string()))
    }

    /// The typed settings.
    pub fn settings(&self) -> Result<Settings, ControllerError> {
        let hubf = &self.modules.cloud_hub;
        let mut hub = HubConfig {
            node_limit: hubf.node_limit.max(1),
            keepalive_interval: Duration::from_secs(hubf.keepalive_interval.max(1)),
            ..HubConfig::default()
        };
        let authorization = hubf
            .authorization
            .as_ref()
            .and_then(|a| a.get("enable"))
            .and_then(serde_yaml::Value::as_bool);
        // Our default checks the node identity; `authorization.enable: false` written out
        // explicitly turns it off, and legacy (v1.12) edge certificates are accepted then.
        if authorization == Some(false) {
            hub.enforce_node_identity = false;
            hub.allow_legacy_certs = true;
        }
        let mut pki = PkiConfig::default();
        let mut ips = Vec::new();
        for a in &hubf.advertise_address {
            let ip: IpAddr = a.parse().map_err(|_| {
                ControllerError::Config(format!("advertiseAddress {a:?} is not an IP address"))
            })?;
            ips.push(ip);
        }
        if !ips.is_empty() {
            pki.advertise_address = ips;
        }
        pki.dns_names = hubf
            .dns_names
            .iter()
            .filter(|d| !d.is_empty())
            .cloned()
            .collect();
        pki.edge_cert_validity =
            Duration::from_secs(hubf.edge_cert_signing_duration.max(1) * 86_400);
        pki.token_refresh = Duration::from_secs(hubf.token_refresh_duration.max(1) * 3600);
        let store = FsCertStore {
            ca_cert: hubf.tls_ca_file.clone().into(),
            ca_key: hubf.tls_ca_key_file.clone().into(),
            server_cert: hubf.tls_cert_file.clone().into(),
            server_key: hubf.tls_private_key_file.clone().into(),
            token: std::path::Path::new(&hubf.tls_ca_file)
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("token"),
        };
        let listen =
            |l: &Listen, what: &str| -> Result<Option<std::net::SocketAddr>, ControllerError> {
                if !l.enable {
                    return Ok(None);
                }
                let ip: IpAddr = l.address.parse().map_err(|_| {
                    ControllerError::Config(format!(
                        "{what}.address {:?} is not an IP address",
                        l.address
                    ))
                })?;
                Ok(Some((ip, l.port).into()))
            };
        let mut edge = EdgeControllerConfig::default();
        if let Some(max) = self.modules.edge_controller.load.values().max() {
            edge.upstream_workers = usize::try_from(*max)
                .unwrap_or(1)
                .clamp(1, 256)
                .max(edge.upstream_workers);
        }
        let cs = &self.modules.cloud_stream;
        let stream: Option<std::net::SocketAddr> =
            if cs.get("enable").and_then(serde_yaml::Value::as_bool) == Some(true) {
                let port = cs
                    .get("tunnelPort")
                    .and_then(serde_yaml::Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(10004);
                // Upstream listens on every address; here the tunnel listens where the hub does.
                let ip = listen(&hubf.websocket, "websocket")?
                    .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                Some((ip, port).into())
            } else {
                None
            };
        // The stream server for a real kube-apiserver, with the CA of its kubelet-client
        // certificate (upstream's `tlsStreamCAFile`).
        let stream_server = stream.map(|tunnel: std::net::SocketAddr| {
            let port = cs
                .get("streamPort")
                .and_then(serde_yaml::Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(10003);
            let ca = cs
                .get("tlsStreamCAFile")
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or("/etc/kubeedge/ca/streamCA.crt");
            (
                std::net::SocketAddr::new(tunnel.ip(), port),
                std::path::PathBuf::from(ca),
            )
        });
        Ok(Settings {
            stream,
            stream_server,
            hub_enabled: hubf.enable,
            websocket: listen(&hubf.websocket, "websocket")?,
            https: listen(&hubf.https, "https")?,
            hub,
            pki,
            cert_files: store,
            edge_controller: self.modules.edge_controller.enable.then_some(edge),
            sync: self
                .modules
                .sync_controller
                .enable
                .then(SyncConfig::default),
            dynamic: self
                .modules
                .dynamic_controller
                .enable
                .then(DynamicConfig::default),
            device: self.device_settings()?,
            node_authorization: authorization != Some(false),
            router: crate::router::RouterSettings::from_file(&self.modules.router)?,
        })
    }

    /// `deviceController`: `enable` (default on) and, as a kubeedge-rs extension,
    /// `apiVersion: devices.kubeedge.io/v1alpha2` for clusters that hold v1.12-era Devices
    /// (twin ids are then the bare device names, as v1.12–v1.16 edges use).
    fn device_settings(
        &self,
    ) -> Result<Option<crate::devicecontroller::DeviceControllerConfig>, ControllerError> {
        use crate::devicecontroller::{DeviceApi, DeviceControllerConfig};
        let d = &self.modules.device_controller;
        if d.get("enable").and_then(serde_yaml::Value::as_bool) == Some(false) {
            return Ok(None);
        }
        let mut cfg = DeviceControllerConfig::default();
        match d.get("apiVersion").and_then(serde_yaml::Value::as_str) {
            None | Some("devices.kubeedge.io/v1beta1") => {}
            Some("devices.kubeedge.io/v1alpha2") => {
                cfg.api = DeviceApi::V1alpha2;
                cfg.namespaced_ids = false;
            }
            Some(other) => {
                return Err(ControllerError::Config(format!(
                    "deviceController.apiVersion {other:?}: use devices.kubeedge.io/v1beta1 or devices.kubeedge.io/v1alpha2"
                )))
            }
        }
        Ok(Some(cfg))
    }
}

/// The typed settings a `cloudcore.yaml` gives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// Where the CloudStream tunnel listens (`cloudStream.enable` and `tunnelPort`; the
    /// hub's websocket address). `None`: disabled.
    pub stream: Option<std::net::SocketAddr>,
    /// Where the stream server for a real kube-apiserver listens (`streamPort`) and the CA
    /// file of the API server's client certificate (`tlsStreamCAFile`), with the tunnel.
    pub stream_server: Option<(std::net::SocketAddr, std::path::PathBuf)>,
    /// `cloudHub.enable`.
    pub hub_enabled: bool,
    /// Where the websocket hub listens (`None`: disabled).
    pub websocket: Option<std::net::SocketAddr>,
    /// Where the certificate bootstrap listens (`None`: disabled).
    pub https: Option<std::net::SocketAddr>,
    /// Hub settings.
    pub hub: HubConfig,
    /// PKI settings.
    pub pki: PkiConfig,
    /// The certificate files.
    pub cert_files: FsCertStore,
    /// Edge controller (`None`: disabled).
    pub edge_controller: Option<EdgeControllerConfig>,
    /// Sync controller (`None`: disabled).
    pub sync: Option<SyncConfig>,
    /// Dynamic controller (`None`: disabled).
    pub dynamic: Option<DynamicConfig>,
    /// Device controller (`None`: disabled).
    pub device: Option<crate::devicecontroller::DeviceControllerConfig>,
    /// The Router (`None`: disabled, upstream's default).
    pub router: Option<crate::router::RouterSettings>,
    /// Node authorization: edges' requests run as their node. Off only when
    /// `cloudHub.authorization.enable: false` is written out (upstream compatibility).
    pub node_authorization: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"
apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
kubeAPIConfig:
  kubeConfig: /root/.kube/config
  master: ""
  qps: 100
modules:
  cloudHub:
    advertiseAddress:
    - 192.168.1.10
    dnsNames:
    - ""
    nodeLimit: 500
    keepaliveInterval: 15
    websocket:
      address: 0.0.0.0
      enable: true
      port: 10000
    https:
      enable: true
      port: 10002
    unixsocket: {enable: true, address: "unix:///var/lib/kubeedge/kubeedge.sock"}
    authorization:
      enable: false
      debug: true
  edgeController:
    enable: true
    buffer: {updatePodStatus: 1024}
    load: {updatePodStatusWorkers: 1, UpdateRuleStatusWorkers: 4, ServiceAccountTokenWorkers: 4}
  dynamicController:
    enable: true
  taskManager: {enable: false, someNewKey: 1}
  cloudStream: {enable: false, streamPort: 10003}
someFutureKey: {x: 1}
"#;

    #[test]
    fn an_upstream_file_reads_unchanged() {
        let f = CloudCoreFile::parse(UPSTREAM).expect("parse");
        assert!(f.kube_api_config.is_external());
        let s = f.settings().expect("settings");
        assert_eq!(s.hub.node_limit, 500);
        assert_eq!(s.hub.keepalive_interval, Duration::from_secs(15));
        assert!(!s.hub.enforce_node_identity);
        assert_eq!(
            s.pki.advertise_address,
            vec!["192.168.1.10".parse::<IpAddr>().expect("ip")]
        );
        assert!(s.pki.dns_names.is_empty());
        assert_eq!(s.websocket, Some("0.0.0.0:10000".parse().expect("addr")));
        assert_eq!(s.https, Some("0.0.0.0:10002".parse().expect("addr")));
        assert!(s.dynamic.is_some());
        assert!(s.sync.is_some());
    }

    #[test]
    fn defaults_round_trip_and_match_upstream() {
        let f = CloudCoreFile::default_config("10.0.0.1".parse().expect("ip"));
        let text = f.to_yaml().expect("yaml");
        let back = CloudCoreFile::parse(&text).expect("parse back");
        assert_eq!(back, f);
        for key in [
            "keepaliveInterval: 30",
            "nodeLimit: 1000",
            "tlsCAFile: /etc/kubeedge/ca/rootCA.crt",
            "port: 10000",
            "port: 10002",
            "edgeCertSigningDuration: 365",
            "tokenRefreshDuration: 12",
            "contentType: application/vnd.kubernetes.protobuf",
            "UpdateRuleStatusWorkers: 4",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
        let min = CloudCoreFile::parse(&CloudCoreFile::min_config_yaml(
            "10.0.0.1".parse().expect("ip"),
        ))
        .expect("min");
        assert!(!min.kube_api_config.is_external());
        assert!(min.settings().is_ok());
    }

    #[test]
    fn bad_files_get_clear_errors() {
        assert!(CloudCoreFile::parse("apiVersion: other/v1").is_err());
        assert!(CloudCoreFile::parse("modules: [1, 2]").is_err());
        let f = CloudCoreFile::parse("modules:\n  cloudHub:\n    advertiseAddress: [not-an-ip]")
            .expect("parse");
        assert!(f.settings().is_err());
    }
}
