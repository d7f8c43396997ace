//! The node: registration (`insert` of `<ns>/node/<name>`), a status patch
//! (`<ns>/nodepatch/<name>`, content a JSON string) and a lease renewal
//! (`kube-node-lease/lease/<name>`) every `nodeStatusUpdateFrequency` while the cloud is
//! reachable (PROTOCOL.md §4.1–4.2). A runtime that does not answer turns the Ready condition
//! False; it never stops edged.

use std::collections::BTreeMap;
use std::time::Duration;

use kubeedge_proto::{Content, Message, Operation};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::link::{edged_message, Link};
use super::runtime::ContainerRuntime;
use super::status::now;
use super::EdgedConfig;

/// The kubelet version edged reports.
pub const KUBELET_VERSION: &str = concat!("v1.29.0-kubeedge-rs-", env!("CARGO_PKG_VERSION"));

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The first non-loopback local IPv4 address of the host (from `/proc/net/fib_trie`).
pub fn detect_ip() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last = "";
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.contains("/32 host LOCAL") && !last.starts_with("127.") && !last.is_empty() {
            return Some(last.to_owned());
        }
        if t.split('.').count() == 4 && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            last = t;
        }
    }
    None
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

fn lease(cfg: &EdgedConfig) -> Value {
    let secs = cfg.node_status_update_frequency.as_secs().max(1);
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": cfg.node_name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": cfg.node_name,
            "leaseDurationSeconds": (secs * 4).max(40),
            "renewTime": jiff::Timestamp::now().to_string(),
        },
    })
}

/// The `Err` of an `ObjectResp` reply: None on success.
fn reply_error(reply: &Message) -> Option<(String, String)> {
    let v: Value = reply.content.decode().ok()?;
    let err = v.get("Err")?;
    if err.is_null() {
        return None;
    }
    let status = err.get("ErrStatus").unwrap_or(err);
    let reason = status.get("reason").and_then(Value::as_str).unwrap_or("");
    let message = status.get("message").and_then(Value::as_str).unwrap_or("");
    if reason.is_empty() && message.is_empty() {
        return None;
    }
    Some((reason.to_owned(), message.to_owned()))
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
                Ok(reply) => match reply_error(&reply) {
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
            let patch = json!({ "status": status }).to_string();
            let msg = edged_message(
                Operation::Patch,
                format!("{ns}/nodepatch/{name}"),
                Content::string(&patch),
            );
            let sent = link.request(msg, timeout).await;
            let lease_msg = edged_message(
                Operation::Update,
                format!("kube-node-lease/lease/{name}"),
                Content::json(&lease(&cfg)).unwrap_or_default(),
            );
            match link.request(lease_msg, timeout).await {
                Ok(reply) => {
                    if let Some((reason, _)) = reply_error(&reply) {
                        if reason == "NotFound" {
                            let create = edged_message(
                                Operation::Insert,
                                format!("kube-node-lease/lease/{name}"),
                                Content::json(&lease(&cfg)).unwrap_or_default(),
                            );
                            let _ = link.request(create, timeout).await;
                        }
                    }
                }
                Err(e) => debug!(node = %name, error = %e, "lease renewal not answered"),
            }
            sent.is_ok()
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
        let req = edged_message(Operation::Insert, "default/node/n".into(), Content::null());
        let ok = req.reply(Content::json(&json!({"Object": {}, "Err": null})).unwrap());
        assert_eq!(reply_error(&ok), None);
        let exists = req.reply(
            Content::json(&json!({"Object": null, "Err": {"ErrStatus": {"reason": "AlreadyExists", "message": "x"}}}))
                .unwrap(),
        );
        assert_eq!(
            reply_error(&exists).map(|e| e.0),
            Some("AlreadyExists".into())
        );
        let zero =
            req.reply(Content::json(&json!({"Err": {"ErrStatus": {"metadata": {}}}})).unwrap());
        assert_eq!(reply_error(&zero), None, "a zero StatusError is success");
    }
}
