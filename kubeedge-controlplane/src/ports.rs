//! Host ports, for the scheduler's NodePorts filter (upstream
//! `pkg/scheduler/framework/plugins/nodeports/node_ports.go` and `HostPortInfo` in
//! `pkg/scheduler/framework/types.go`): a pod that asks for a hostPort does not fit a node
//! where another pod already holds the same protocol and port on the same host IP, and the
//! wildcard IP `0.0.0.0` (the default) clashes with every IP.

use k8s_openapi::api::core::v1::PodSpec;

/// The filter's reason, as upstream's NodePorts plugin words it.
pub(crate) const NO_FREE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

const WILDCARD: &str = "0.0.0.0";

/// One host port a pod holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

impl HostPort {
    fn clashes(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == WILDCARD || other.ip == WILDCARD)
    }
}

/// The host ports of a pod's containers and restartable (sidecar) init containers, with
/// upstream's defaults: protocol TCP, host IP `0.0.0.0`.
pub(crate) fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|hp| *hp > 0)?;
            let ip = p
                .host_ip
                .as_deref()
                .filter(|ip| !ip.is_empty() && *ip != "::")
                .unwrap_or(WILDCARD);
            Some(HostPort {
                ip: ip.to_owned(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            })
        })
        .collect()
}

/// Whether any of `wanted` clashes with a port in `used`.
pub(crate) fn conflict<'a>(
    used: impl IntoIterator<Item = &'a HostPort>,
    wanted: &[HostPort],
) -> bool {
    used.into_iter()
        .any(|u| wanted.iter().any(|w| w.clashes(u)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ports: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({"containers": [{"name": "c", "ports": ports}]}))
            .unwrap_or_default()
    }

    #[test]
    fn same_port_and_protocol_clash_on_the_wildcard() {
        let a = host_ports(&spec(json!([{"containerPort": 80, "hostPort": 8080}])));
        let b = host_ports(&spec(json!([{"containerPort": 81, "hostPort": 8080}])));
        assert!(conflict(&a, &b));
        let udp = host_ports(&spec(
            json!([{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]),
        ));
        assert!(!conflict(&a, &udp));
        let other = host_ports(&spec(json!([{"containerPort": 80, "hostPort": 8081}])));
        assert!(!conflict(&a, &other));
    }

    #[test]
    fn distinct_host_ips_do_not_clash_but_the_wildcard_does() {
        let one = host_ports(&spec(
            json!([{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]),
        ));
        let two = host_ports(&spec(
            json!([{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"}]),
        ));
        let any = host_ports(&spec(json!([{"containerPort": 80, "hostPort": 8080}])));
        assert!(!conflict(&one, &two));
        assert!(conflict(&one, &any));
        assert!(conflict(&any, &two));
    }

    #[test]
    fn container_ports_without_host_port_hold_nothing() {
        assert!(host_ports(&spec(json!([{"containerPort": 80}]))).is_empty());
    }
}
