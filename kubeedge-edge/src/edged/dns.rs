//! A pod's resolver settings, as the kubelet makes them (`pkg/kubelet/network/dns/dns.go`):
//! `dnsPolicy` picks the cluster DNS (`clusterDNS`, with the pod's namespace's search path and
//! `ndots:5`) or the node's own resolv.conf, `spec.dnsConfig` is merged on top, and the result
//! is cut to the resolver's limits (3 nameservers, 32 search domains of 2,048 characters in
//! all). Edged hands it to the runtime with the pod's sandbox (Docker's `Dns*` host settings,
//! the CRI's `dns_config`).

use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};
use tracing::warn;

/// The resolver settings of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsConfig {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options` (`ndots:5`, `edns0`).
    pub options: Vec<String>,
}

/// The kubelet's settings that shape pods' DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsSettings {
    /// `clusterDNS`: the cluster DNS servers (with EdgeMesh, 169.254.96.16).
    pub cluster_dns: Vec<String>,
    /// `clusterDomain` (`cluster.local`).
    pub cluster_domain: String,
    /// `resolvConf`: the node's resolver file, for `dnsPolicy: Default` (empty: none).
    pub resolv_conf: String,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// The kubelet's limits (`k8s.io/kubernetes/pkg/apis/core/validation`).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// The node's resolv.conf: its nameservers, search list and options.
pub(crate) fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut c = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => c.servers.extend(words.next().map(str::to_owned)),
            // The last search line wins, as in the resolver.
            Some("search") => c.searches = words.map(str::to_owned).collect(),
            Some("options") => c.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    c
}

fn dedup(list: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in list {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Options merged by name; a later one replaces an earlier one of the same name.
fn merge_options(base: Vec<String>, extra: impl IntoIterator<Item = String>) -> Vec<String> {
    let name = |o: &str| o.split(':').next().unwrap_or_default().to_owned();
    let mut out = base;
    for o in extra {
        match out.iter().position(|x| name(x) == name(&o)) {
            Some(i) => out[i] = o,
            None => out.push(o),
        }
    }
    out
}

fn append(mut c: DnsConfig, extra: &PodDNSConfig) -> DnsConfig {
    c.servers = dedup(
        c.servers
            .into_iter()
            .chain(extra.nameservers.clone().unwrap_or_default()),
    );
    c.searches = dedup(
        c.searches
            .into_iter()
            .chain(extra.searches.clone().unwrap_or_default()),
    );
    let options = extra.options.iter().flatten().filter_map(|o| {
        let name = o.name.clone()?;
        Some(match &o.value {
            Some(v) => format!("{name}:{v}"),
            None => name,
        })
    });
    c.options = merge_options(c.options, options);
    c
}

/// Cuts the settings to the resolver's limits (the kubelet warns with an event; edged logs).
fn fit(mut c: DnsConfig, pod: &str) -> DnsConfig {
    if c.servers.len() > MAX_NAMESERVERS {
        warn!(
            pod,
            "more than {MAX_NAMESERVERS} nameservers; the rest are left out"
        );
        c.servers.truncate(MAX_NAMESERVERS);
    }
    if c.searches.len() > MAX_SEARCH_PATHS {
        warn!(
            pod,
            "more than {MAX_SEARCH_PATHS} search domains; the rest are left out"
        );
        c.searches.truncate(MAX_SEARCH_PATHS);
    }
    while c
        .searches
        .iter()
        .map(|s| s.len() + 1)
        .sum::<usize>()
        .saturating_sub(1)
        > MAX_SEARCH_CHARS
    {
        c.searches.pop();
    }
    c
}

/// The resolver settings of `pod` (`None`: leave the runtime's own, for a policy the kubelet
/// would refuse).
pub(crate) fn pod_dns(pod: &Pod, s: &DnsSettings) -> Option<DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let host = || {
        if s.resolv_conf.is_empty() {
            return DnsConfig::default();
        }
        std::fs::read_to_string(Path::new(&s.resolv_conf))
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let cluster = match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network),
        "Default" => Some(false),
        other => {
            warn!(
                pod = name,
                policy = other,
                "unknown dnsPolicy; the runtime's resolver is kept"
            );
            return None;
        }
    };
    let mut c = match cluster {
        None => DnsConfig::default(),
        Some(true) if !s.cluster_dns.is_empty() => {
            let node = host();
            let mut searches = Vec::new();
            if !s.cluster_domain.is_empty() {
                let d = &s.cluster_domain;
                searches = vec![
                    format!("{namespace}.svc.{d}"),
                    format!("svc.{d}"),
                    d.clone(),
                ];
            }
            DnsConfig {
                servers: s.cluster_dns.clone(),
                searches: dedup(searches.into_iter().chain(node.searches)),
                options: vec!["ndots:5".to_owned()],
            }
        }
        Some(true) => {
            warn!(
                pod = name,
                "clusterDNS is not set: the pod gets the node's resolver (dnsPolicy Default)"
            );
            host()
        }
        Some(false) => host(),
    };
    if let Some(extra) = &spec.dns_config {
        c = append(c, extra);
    }
    Some(fit(c, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .expect("a pod")
    }

    fn settings(dir: &Path, cluster: &[&str]) -> DnsSettings {
        let f = dir.join("resolv.conf");
        std::fs::write(
            &f,
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0 ndots:1\n",
        )
        .expect("write");
        DnsSettings {
            cluster_dns: cluster.iter().map(|s| (*s).to_owned()).collect(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: f.to_string_lossy().into_owned(),
        }
    }

    #[test]
    fn cluster_first_gets_the_cluster_dns_and_the_namespace_search_path() {
        let dir = tempfile::tempdir().expect("dir");
        let c = pod_dns(&pod(json!({})), &settings(dir.path(), &["169.254.96.16"])).expect("dns");
        assert_eq!(c.servers, ["169.254.96.16"]);
        assert_eq!(
            c.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
    }

    #[test]
    fn host_network_and_default_get_the_nodes_resolver_unless_with_host_net() {
        let dir = tempfile::tempdir().expect("dir");
        let s = settings(dir.path(), &["169.254.96.16"]);
        let host = pod_dns(&pod(json!({"hostNetwork": true})), &s).expect("dns");
        assert_eq!(host.servers, ["10.0.0.2"]);
        assert_eq!(host.options, ["edns0", "ndots:1"]);
        let default = pod_dns(&pod(json!({"dnsPolicy": "Default"})), &s).expect("dns");
        assert_eq!(default, host);
        let with_host_net = pod_dns(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &s,
        )
        .expect("dns");
        assert_eq!(with_host_net.servers, ["169.254.96.16"]);
        // No clusterDNS: ClusterFirst falls back to the node's resolver.
        let none = pod_dns(&pod(json!({})), &settings(dir.path(), &[])).expect("dns");
        assert_eq!(none.servers, ["10.0.0.2"]);
    }

    #[test]
    fn dns_config_is_merged_and_none_takes_only_it() {
        let dir = tempfile::tempdir().expect("dir");
        let s = settings(dir.path(), &["169.254.96.16"]);
        let extra = json!({"nameservers": ["1.1.1.1", "169.254.96.16"], "searches": ["a.example"],
                           "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]});
        let merged = pod_dns(&pod(json!({"dnsConfig": extra.clone()})), &s).expect("dns");
        assert_eq!(merged.servers, ["169.254.96.16", "1.1.1.1"]);
        assert_eq!(
            merged.searches.last().map(String::as_str),
            Some("a.example")
        );
        assert_eq!(merged.options, ["ndots:2", "edns0"]);
        let only =
            pod_dns(&pod(json!({"dnsPolicy": "None", "dnsConfig": extra})), &s).expect("dns");
        assert_eq!(only.servers, ["1.1.1.1", "169.254.96.16"]);
        assert_eq!(only.searches, ["a.example"]);
    }

    #[test]
    fn limits_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let s = settings(dir.path(), &["10.0.0.10"]);
        let many: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let extra = json!({"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "searches": many});
        let c = pod_dns(&pod(json!({"dnsConfig": extra})), &s).expect("dns");
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.searches.len(), 32);
    }
}
