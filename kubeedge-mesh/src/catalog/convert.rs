//! Services and Endpoints as the API serves them, reduced to the catalog's types.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    Backend, FilterMode, Key, Protocol, Service, ServicePort, TargetPort, SERVICE_PROXY_NAME,
};

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds` (three hours).
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10_800);

/// The catalog's view of `svc`; `None` without a namespace or a name. Ports of an unknown
/// protocol or out of range are left out (the API server refuses them).
pub fn service_of(svc: &core::Service, filter: FilterMode) -> Option<Service> {
    let namespace = svc.metadata.namespace.clone()?;
    let name = svc.metadata.name.clone()?;
    let spec = svc.spec.clone().unwrap_or_default();
    let external = spec.type_.as_deref() == Some("ExternalName");
    let ips = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    let cluster_ips = if external {
        Vec::new()
    } else {
        ips.iter().filter_map(|ip| ip.parse().ok()).collect()
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target = match p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(n).ok()?),
                Some(IntOrString::String(s)) => TargetPort::Name(s),
                None => TargetPort::Number(port),
            };
            Some(ServicePort {
                name: p.name.unwrap_or_default(),
                protocol: Protocol::parse(p.protocol.as_deref())?,
                port,
                target,
            })
        })
        .collect();
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_AFFINITY, Duration::from_secs)
    });
    let labelled = svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME));
    Some(Service {
        namespace,
        name,
        cluster_ips,
        external_name: spec.external_name.filter(|_| external),
        ports,
        affinity,
        proxied: filter.proxies(labelled),
    })
}

/// The Endpoints' key and its ready addresses, each with its subset's ports. Not-ready
/// addresses are left out, as kube-proxy leaves them out.
pub fn backends_of(ep: &core::Endpoints) -> Option<(Key, Vec<Backend>)> {
    let key = (ep.metadata.namespace.clone()?, ep.metadata.name.clone()?);
    let mut backends = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Arc<[(String, u16, Protocol)]> = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port).ok()?,
                    Protocol::parse(p.protocol.as_deref())?,
                ))
            })
            .collect();
        for a in subset.addresses.iter().flatten() {
            let Ok(ip) = a.ip.parse::<IpAddr>() else {
                continue;
            };
            backends.push(Backend {
                ip,
                hostname: a.hostname.clone(),
                node: a.node_name.clone(),
                ports: ports.clone(),
            });
        }
    }
    Some((key, backends))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> core::Service {
        serde_json::from_value(json).expect("a Service")
    }

    #[test]
    fn a_cluster_ip_service_with_affinity_and_the_opt_out_label() {
        let s = svc(serde_json::json!({
            "metadata": {"namespace": "default", "name": "nginx-svc",
                         "labels": {SERVICE_PROXY_NAME: "other"}},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"port": 8080, "targetPort": 80}, {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}],
                     "sessionAffinity": "ClientIP"}
        }));
        let got = service_of(&s, FilterMode::default()).expect("converted");
        assert_eq!(
            got.cluster_ips,
            vec!["10.96.0.20".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(got.ports[0].target, TargetPort::Number(80));
        assert_eq!(got.ports[1].protocol, Protocol::Udp);
        assert_eq!(got.ports[1].target, TargetPort::Name("dns".into()));
        assert_eq!(got.affinity, Some(DEFAULT_AFFINITY));
        assert!(!got.proxied, "the label opts it out");
        let only_labelled =
            service_of(&s, FilterMode::FilterIfLabelDoesNotExists).expect("converted");
        assert!(only_labelled.proxied);
    }

    #[test]
    fn headless_and_external_name_services_have_no_cluster_ip() {
        let headless = svc(serde_json::json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        assert!(service_of(&headless, FilterMode::default())
            .expect("converted")
            .cluster_ips
            .is_empty());
        let ext = svc(serde_json::json!({
            "metadata": {"namespace": "default", "name": "db"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}
        }));
        let got = service_of(&ext, FilterMode::default()).expect("converted");
        assert_eq!(got.external_name.as_deref(), Some("db.example.com"));
        assert!(got.cluster_ips.is_empty());
    }

    #[test]
    fn only_ready_addresses_become_backends() {
        let ep: core::Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": "nginx-svc"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.5", "nodeName": "edge-1"}],
                "notReadyAddresses": [{"ip": "10.244.2.9", "nodeName": "edge-2"}],
                "ports": [{"port": 80, "protocol": "TCP"}]
            }]
        }))
        .expect("Endpoints");
        let (key, backends) = backends_of(&ep).expect("converted");
        assert_eq!(key, ("default".to_owned(), "nginx-svc".to_owned()));
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].node.as_deref(), Some("edge-1"));
        assert_eq!(backends[0].port_for("", Protocol::Tcp), Some(80));
    }
}
