//! The container runtime keys of `modules.edged`, in every spelling upstream KubeEdge has
//! used: up to v1.11 (v1alpha1) `runtimeType: docker|remote` with `remoteRuntimeEndpoint` and
//! `remoteImageEndpoint`; v1.12–v1.17 `containerRuntime: docker|remote` with the same
//! endpoint keys, all directly in `modules.edged` (Go inlines the embedded
//! `TailoredKubeletFlag`, so no `tailoredKubeletFlag:` key appears in upstream's YAML; that
//! nesting is still read); since v1.14 `tailoredKubeletConfig.containerRuntimeEndpoint`.
//! `tailoredKubeletConfig.podLogsDir` (the kubelet's) says where container logs go.

use serde::{Deserialize, Serialize};

/// The kubelet's pod log root.
pub const DEFAULT_LOG_ROOT: &str = "/var/log/pods";
/// Upstream's default CRI endpoint.
pub const DEFAULT_CRI_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// The runtime keys (flattened into `modules.edged`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct RuntimeKeys {
    /// `runtimeType` (≤ v1.11): `docker` (the default) or `remote`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_type: String,
    /// `containerRuntime` (v1.12–v1.17, inlined from `TailoredKubeletFlag`): `docker` or
    /// `remote`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container_runtime: String,
    /// `remoteRuntimeEndpoint` (≤ v1.11).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_runtime_endpoint: String,
    /// `remoteImageEndpoint` (≤ v1.11); the runtime endpoint serves images when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_image_endpoint: String,
    /// `tailoredKubeletFlag` (v1.12, v1.13).
    #[serde(skip_serializing_if = "TailoredKubeletFlag::is_empty")]
    pub tailored_kubelet_flag: TailoredKubeletFlag,
    /// `tailoredKubeletConfig` (v1.14 and later).
    #[serde(skip_serializing_if = "TailoredKubeletConfig::is_empty")]
    pub tailored_kubelet_config: TailoredKubeletConfig,
}

/// `modules.edged.tailoredKubeletFlag` (the keys read here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct TailoredKubeletFlag {
    /// `containerRuntime`: `docker` or `remote`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container_runtime: String,
    /// `remoteRuntimeEndpoint`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_runtime_endpoint: String,
    /// `remoteImageEndpoint`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_image_endpoint: String,
}

impl TailoredKubeletFlag {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `modules.edged.tailoredKubeletConfig` (the keys read here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct TailoredKubeletConfig {
    /// `containerRuntimeEndpoint`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container_runtime_endpoint: String,
    /// `imageServiceEndpoint`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image_service_endpoint: String,
    /// `podLogsDir` (the kubelet's default: `/var/log/pods`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod_logs_dir: String,
    /// `clusterDNS`: the cluster DNS servers pods resolve with (EdgeMesh: 169.254.96.16).
    #[serde(rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    /// `clusterDomain` (default `cluster.local`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_domain: String,
    /// `resolvConf`: the node's resolver file (default `/etc/resolv.conf`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resolv_conf: String,
}

impl TailoredKubeletConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Which runtime edged drives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeChoice {
    /// Docker at `dockerAddress`.
    Docker,
    /// A CRI runtime at this endpoint.
    Remote(String),
}

impl RuntimeKeys {
    /// The runtime these keys pick: the newest spelling that is set wins; `remote` without an
    /// endpoint means upstream's default containerd socket. Nothing set: Docker (this
    /// increment's default).
    pub fn choice(&self) -> RuntimeChoice {
        let default = || DEFAULT_CRI_ENDPOINT.to_owned();
        let first = |a: &str, b: &str| {
            [a, b]
                .into_iter()
                .find(|s| !s.is_empty())
                .map_or_else(default, str::to_owned)
        };
        let cfg = &self.tailored_kubelet_config;
        if !cfg.container_runtime_endpoint.is_empty() {
            return RuntimeChoice::Remote(cfg.container_runtime_endpoint.clone());
        }
        if self.container_runtime == "remote" {
            return RuntimeChoice::Remote(first(&self.remote_runtime_endpoint, ""));
        }
        if !self.container_runtime.is_empty() {
            return RuntimeChoice::Docker;
        }
        let flag = &self.tailored_kubelet_flag;
        if flag.container_runtime == "remote" {
            return RuntimeChoice::Remote(first(
                &flag.remote_runtime_endpoint,
                &self.remote_runtime_endpoint,
            ));
        }
        if flag.container_runtime.is_empty() && self.runtime_type == "remote" {
            return RuntimeChoice::Remote(first(&self.remote_runtime_endpoint, ""));
        }
        RuntimeChoice::Docker
    }

    /// Where container logs go (`podLogsDir`, else the kubelet's `/var/log/pods`).
    pub fn pod_logs_dir(&self) -> &str {
        Some(self.tailored_kubelet_config.pod_logs_dir.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_LOG_ROOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(yaml: &str) -> RuntimeKeys {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn every_upstream_spelling_picks_the_runtime() {
        assert_eq!(keys("{}").choice(), RuntimeChoice::Docker);
        assert_eq!(keys("runtimeType: docker").choice(), RuntimeChoice::Docker);
        assert_eq!(
            keys("runtimeType: remote").choice(),
            RuntimeChoice::Remote("unix:///run/containerd/containerd.sock".into())
        );
        assert_eq!(
            keys("{runtimeType: remote, remoteRuntimeEndpoint: unix:///a.sock}").choice(),
            RuntimeChoice::Remote("unix:///a.sock".into())
        );
        assert_eq!(
            keys("tailoredKubeletFlag: {containerRuntime: remote, remoteRuntimeEndpoint: unix:///b.sock}")
                .choice(),
            RuntimeChoice::Remote("unix:///b.sock".into())
        );
        assert_eq!(
            keys("{runtimeType: remote, tailoredKubeletFlag: {containerRuntime: docker}}").choice(),
            RuntimeChoice::Docker
        );
        // v1.12's keadm writes these directly under modules.edged (Go inlines the flags).
        assert_eq!(
            keys("{containerRuntime: remote, remoteRuntimeEndpoint: unix:///d.sock}").choice(),
            RuntimeChoice::Remote("unix:///d.sock".into())
        );
        assert_eq!(
            keys("containerRuntime: remote").choice(),
            RuntimeChoice::Remote("unix:///run/containerd/containerd.sock".into())
        );
        assert_eq!(
            keys("{containerRuntime: docker, runtimeType: remote}").choice(),
            RuntimeChoice::Docker
        );
        let k = keys("tailoredKubeletConfig: {containerRuntimeEndpoint: unix:///c.sock, podLogsDir: /l, address: x}");
        assert_eq!(k.choice(), RuntimeChoice::Remote("unix:///c.sock".into()));
        assert_eq!(k.pod_logs_dir(), "/l");
        assert_eq!(keys("{}").pod_logs_dir(), "/var/log/pods");
    }
}
