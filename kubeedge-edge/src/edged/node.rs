//! The node: registration (`insert` of `<ns>/node/<name>`), a status patch
//! (`<ns>/nodepatch/<name>`, content a JSON string) every `nodeStatusUpdateFrequency` while
//! the cloud is reachable (PROTOCOL.md §4.1–4.2); the Lease has its own schedule
//! ([`super::lease`]). A runtime that does not answer turns the Ready condition
//! False; it never stops edged.

use std::collections::BTreeMap;
use std::time::Duration;

use kubeedge_proto::{Content, Operation};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::link::{edged_message, Link};
use super::runtime::ContainerRuntime;
use super::status::now;
use super::EdgedConfig;

pub use crate::config::KUBELET_VERSION;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The host's IPv4 address on the interface of its default route, as upstream picks the
/// node IP (so not a container bridge such as docker0); without a default route, the first
/// non-loopback local address. From `/proc/net/route` and `/proc/net/fib_trie`.
pub fn detect_ip() -> Option<String> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let fib = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    pick_ip(&route, &fib)
}

/// An address of `/proc/net/route` (hex, host byte order as the kernel prints it).
fn route_addr(hex: &str) -> Option<std::net::Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(std::net::Ipv4Addr::from(v.swap_bytes()))
}

fn pick_ip(route: &str, fib_trie: &str) -> Option<String> {
    // Local addresses, in fib_trie order.
    let mut local: Vec<std::net::Ipv4Addr> = Vec::new();
    let mut last = "";
    for line in fib_trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.contains("/32 host LOCAL") && !last.starts_with("127.") && !last.is_empty() {
            if let Ok(ip) = last.parse() {
                if !local.contains(&ip) {
                    local.push(ip);
                }
            }
        }
        if t.split('.').count() == 4 && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            last = t;
        }
    }
    // The default route's interface (lowest metric), then its directly connected networks.
    let rows: Vec<Vec<&str>> = route
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8)
        .collect();
    let default_iface = rows
        .iter()
        .filter(|f| f[1] == "00000000")
        .min_by_key(|f| f[6].parse::<u32>().unwrap_or(u32::MAX))
        .map(|f| f[0]);
    if let Some(iface) = default_iface {
        for f in rows.iter().filter(|f| f[0] == iface && f[1] != "00000000") {
            let (Some(net), Some(mask)) = (route_addr(f[1]), route_addr(f[7])) else {
                continue;
            };
            let (net, mask) = (u32::from(net), u32::from(mask));
            if let Some(ip) = local.iter().find(|ip| u32::from(**ip) & mask == net & mask) {
                return Some(ip.to_string());
            }
        }
    }
    local.first().map(|ip| ip.to_string())
}

fn mem_total_ki() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The node's status (capacity, allocatable, nodeInfo, addresses, conditions).
pub(crate) fn node_status(cfg: &EdgedConfig, runtime: Result<String, String>) -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let resources = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", mem_total_ki()),
        "pods": cfg.max_pods.to_string(),
    });
    let t = now();
    let (ready, reason, message, runtime_version) = match runtime {
        Ok(v) => (
            "True",
            "EdgeReady",
            "edged is posting ready status".to_owned(),
            v,
        ),
        Err(e) => (
            "False",
            "ContainerRuntimeDown",
            format!("container runtime is down: {e}"),
            String::new(),
        ),
    };
    let cond = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "conditions": [
            cond("Ready", ready, reason, &message),
            cond("MemoryPressure", "False", "EdgeHasSufficientMemory", "edged has sufficient memory available"),
            cond("DiskPressure", "False", "EdgeHasNoDiskPressure", "edged has no disk pressure"),
            cond("PIDPressure", "False", "EdgeHasSufficientPID", "edged has sufficient PID available"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        "nodeInfo": {
            "machineID": read("/etc/machine-id"),
            "systemUUID": read("/sys/class/dmi/id/product_uuid"),
            "bootID": read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": arch(),
        },
    })
}

/// The Node object to register.
pub(crate) fn node_object(cfg: &EdgedConfig, status: Value) -> Value {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("node-role.kubernetes.io/edge".into(), String::new());
    labels.insert("node-role.kubernetes.io/agent".into(), String::new());
    labels.insert("kubernetes.io/hostname".into(), cfg.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), arch().into());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), arch().into());
    for (k, v) in &cfg.node_labels {
        labels.insert(k.clone(), v.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels},
        "spec": {},
        "status": status,
    })
}

async fn runtime_state<R: ContainerRuntime>(rt: &R) -> Result<String, String> {
    match tokio::time::timeout(Duration::from_secs(5), rt.version()).await {
        Ok(Ok(v)) => Ok(format!("{}://{}", v.name, v.version)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5s".into()),
    }
}

/// Register and keep the node's status and lease fresh until `cancel`.
pub(crate) async fn run<R: ContainerRuntime>(
    cfg: EdgedConfig,
    runtime: std::sync::Arc<R>,
    link: Link,
    cancel: CancellationToken,
) {
    let timeout = Duration::from_secs(10);
    let ns = cfg.register_namespace.clone();
    let name = cfg.node_name.clone();
    let mut registered = false;
    let mut retry = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = link.connected() => {}
        }
        let rt = runtime_state(runtime.as_ref()).await;
        if rt.is_err() {
            warn!(node = %name, "container runtime down: node reported not ready");
        }
        let status = node_status(&cfg, rt);
        let ok = if !registered {
            let msg = edged_message(
                Operation::Insert,
                format!("{ns}/node/{name}"),
                Content::json(&node_object(&cfg, status)).unwrap_or_default(),
            );
            match link.request(msg, timeout).await {
                Ok(reply) => match crate::meta::refusal(&reply) {
                    None => true,
                    Some((reason, _)) if reason == "AlreadyExists" => true,
                    Some((reason, message)) => {
                        warn!(node = %name, reason, message, "node registration refused");
                        false
                    }
                },
                Err(e) => {
                    debug!(node = %name, error = %e, "node registration not answered");
                    false
                }
            }
        } else {
            let patch = json!({ "status": status });
            let msg = kubeedge_proto::report::node_patch(&ns, &name, &patch);
            match link.request(msg, timeout).await {
                Ok(reply) => {
                    if let Some((reason, message)) = crate::meta::refusal(&reply) {
                        warn!(node = %name, reason, message, %patch, "node status patch refused");
                    }
                    true
                }
                Err(e) => {
                    debug!(node = %name, error = %e, "node status patch not answered");
                    false
                }
            }
        };
        let wait = if ok {
            if !registered {
                info!(node = %name, "node registered");
            }
            registered = true;
            retry = Duration::from_millis(200);
            cfg.node_status_update_frequency
        } else {
            retry = (retry * 2).min(cfg.node_status_update_frequency);
            retry
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    const FIB: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     |-- 172.17.0.1\n        /32 host LOCAL\n     |-- 192.0.2.2\n        /32 host LOCAL\n";

    #[test]
    fn the_node_ip_is_on_the_default_route_not_a_bridge() {
        assert_eq!(pick_ip(ROUTE, FIB).as_deref(), Some("192.0.2.2"));
        // No default route: the first non-loopback address.
        assert_eq!(pick_ip("", FIB).as_deref(), Some("172.17.0.1"));
        assert_eq!(pick_ip(ROUTE, "").as_deref(), None);
    }

    #[test]
    fn node_object_has_edge_labels_and_version() {
        let cfg = EdgedConfig {
            node_name: "edge-9".into(),
            node_ip: "10.1.2.3".into(),
            ..EdgedConfig::default()
        };
        let n = node_object(&cfg, node_status(&cfg, Err("down".into())));
        let labels = &n["metadata"]["labels"];
        assert_eq!(labels["node-role.kubernetes.io/edge"], "");
        assert_eq!(labels["node-role.kubernetes.io/agent"], "");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert!(KUBELET_VERSION.contains("kubeedge-rs"));
        let ready = &n["status"]["conditions"][0];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainerRuntimeDown");
        assert_eq!(n["status"]["addresses"][0]["address"], "10.1.2.3");
        assert!(n["status"]["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki"));
    }

    #[test]
    fn reply_errors() {
        let req = edged_message(Operation::Insert, "default/node/n", Content::null());
        let ok = req.reply(Content::json(&json!({"Object": {}, "Err": null})).unwrap());
        assert_eq!(crate::meta::refusal(&ok), None);
        let exists = req.reply(
            Content::json(&json!({"Object": null, "Err": {"ErrStatus": {"reason": "AlreadyExists", "message": "x"}}}))
                .unwrap(),
        );
        assert_eq!(
            crate::meta::refusal(&exists).map(|e| e.0),
            Some("AlreadyExists".into())
        );
        let zero =
            req.reply(Content::json(&json!({"Err": {"ErrStatus": {"metadata": {}}}})).unwrap());
        assert_eq!(
            crate::meta::refusal(&zero),
            None,
            "a zero StatusError is success"
        );
    }
}
