//! Pod admission at the edge, as the kubelet's (`pkg/kubelet/lifecycle/predicate.go`): a pod
//! bound here by some other scheduler is checked against the pods already admitted before it
//! runs. The check edged makes is the scheduler's NodePorts filter (its `Fits`): a pod whose
//! host ports are taken is rejected, and goes to `Failed` with the predicate's reason and
//! message, as `kubelet.rejectPod` sets them.

use k8s_openapi::api::core::v1::Pod;

/// The NodePorts plugin's name: the reason of a rejected pod.
pub(crate) const NODE_PORTS: &str = "NodePorts";
/// The NodePorts plugin's failure reason.
const NODE_PORTS_REASON: &str = "node(s) didn't have free ports for the requested pod ports";
/// How the status message of a rejected pod begins (`kubelet.rejectPod`).
pub(crate) const REJECTED: &str = "Pod was rejected: ";
/// The address a host port binds when `hostIP` is empty.
const BIND_ALL: &str = "0.0.0.0";

/// One host port a pod asks for (`hostIP`, protocol, `hostPort`), sanitized as the
/// scheduler's `HostPortInfo` does: no address means all of them, no protocol means TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

/// The host ports of `pod`'s containers (init containers hold none, as in the scheduler).
pub(crate) fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p.host_ip.clone().filter(|i| !i.is_empty());
            let protocol = p.protocol.clone().filter(|p| !p.is_empty());
            Some(HostPort {
                ip: ip.unwrap_or_else(|| BIND_ALL.to_owned()),
                protocol: protocol.unwrap_or_else(|| "TCP".to_owned()),
                port,
            })
        })
        .collect()
}

/// Whether `want` conflicts with a port in `used`: on all addresses it conflicts with the same
/// protocol and port on any address; on one address, with that address or all of them.
fn conflicts(want: &HostPort, used: &HostPort) -> bool {
    want.port == used.port
        && want.protocol == used.protocol
        && (want.ip == BIND_ALL || used.ip == BIND_ALL || want.ip == used.ip)
}

/// Why a pod was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The pod status reason (and the event's).
    pub(crate) reason: String,
    /// The predicate's message (the event's; the status says `Pod was rejected: …`).
    pub(crate) message: String,
}

/// What the status of a pod rejected earlier says (it stays rejected across edged restarts:
/// a rejected pod is terminal).
pub(crate) fn previous_rejection(pod: &Pod) -> Option<Rejection> {
    let st = pod.status.as_ref()?;
    if st.phase.as_deref() != Some("Failed") {
        return None;
    }
    let message = st.message.as_deref()?.strip_prefix(REJECTED)?;
    Some(Rejection {
        reason: st.reason.clone().unwrap_or_default(),
        message: message.to_owned(),
    })
}

/// Admit `pod` given the host ports held by the admitted, non-terminal pods.
pub(crate) fn admit<'a>(
    pod: &Pod,
    used: impl IntoIterator<Item = &'a HostPort>,
) -> Result<(), Rejection> {
    let want = host_ports(pod);
    if want.is_empty() {
        return Ok(());
    }
    let used: Vec<&HostPort> = used.into_iter().collect();
    if want.iter().any(|w| used.iter().any(|u| conflicts(w, u))) {
        return Err(Rejection {
            reason: NODE_PORTS.to_owned(),
            message: format!("Predicate {NODE_PORTS} failed: {NODE_PORTS_REASON}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]}
        }))
        .unwrap()
    }

    #[test]
    fn host_port_conflicts_follow_the_scheduler() {
        let all = pod(json!([{"containerPort": 80, "hostPort": 8080}]));
        let lo = pod(json!([{"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"}]));
        let lo2 = pod(json!([{"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.2"}]));
        let udp = pod(json!([{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]));
        let none = pod(json!([{"containerPort": 80}]));
        let held = |p: &Pod| host_ports(p);
        assert!(admit(&all, &held(&all)).is_err());
        assert!(admit(&lo, &held(&all)).is_err(), "all addresses hold it");
        assert!(admit(&all, &held(&lo)).is_err(), "one address holds it");
        assert!(admit(&lo2, &held(&lo)).is_ok(), "another address");
        assert!(admit(&udp, &held(&all)).is_ok(), "another protocol");
        assert!(admit(&none, &held(&all)).is_ok(), "no host port");
        assert!(admit(&all, &held(&none)).is_ok());
        let r = admit(&all, &held(&all)).unwrap_err();
        assert_eq!(r.reason, "NodePorts");
        assert_eq!(
            r.message,
            "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
        );
    }
}
