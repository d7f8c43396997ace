//! Pods bound to the node by someone else than our scheduler: the kubelet's admission at the
//! edge (a host port already held rejects the later pod: `Failed`, reason `NodePorts`, an
//! event), and a pod sandbox the runtime refuses shown in the pod's status and events.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use k8s_openapi::api::core::v1::PodStatus;
use kubeedge_edge::edged::runtime::{
    ContainerConfig, ContainerRuntime, PortMapping, LABEL_NODE, LABEL_POD_UID,
};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

on_both_runtimes!(a_pod_whose_host_port_is_taken_is_rejected_as_the_kubelet_does);

fn web(name: &str, port: u16, host_ip: &str) -> Value {
    let mut c = container("c", "sleep 3600");
    c["ports"] = json!([{"containerPort": 8080, "hostPort": port, "hostIP": host_ip}]);
    pod(
        name,
        json!({"terminationGracePeriodSeconds": 1, "containers": [c]}),
    )
}

fn ready(s: &PodStatus) -> bool {
    condition(s, "Ready").as_deref() == Some("True")
}

async fn a_pod_whose_host_port_is_taken_is_rejected_as_the_kubelet_does<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let port = free_port()?;
    h.push("insert", "pod", web("first", port, "127.0.0.1"))
        .await?;
    h.wait_status("default/first", LIMIT, ready).await?;

    // The same port on the same address: rejected, never run.
    let second = web("second", port, "127.0.0.1");
    let uid = second["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    h.push("insert", "pod", second.clone()).await?;
    let st = h
        .wait_status("default/second", LIMIT, |s| {
            s.phase.as_deref() == Some("Failed")
        })
        .await?;
    assert_eq!(st.reason.as_deref(), Some("NodePorts"));
    assert_eq!(
        st.message.as_deref(),
        Some("Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports")
    );
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    assert!(
        st.container_statuses.is_none(),
        "a rejected pod has no containers"
    );
    let v = h.event("second", "NodePorts", LIMIT).await?;
    assert_eq!(v["type"], "Warning");
    assert_eq!(v["involvedObject"]["name"], "second");
    assert_eq!(
        v["message"],
        "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    let containers =
        h.rt.list_containers(&[(LABEL_NODE, &h.node), (LABEL_POD_UID, &uid)])
            .await?;
    assert!(containers.is_empty(), "nothing created for a rejected pod");

    // Another address of the same port is free: admitted and running.
    h.push("insert", "pod", web("third", port, "127.0.0.2"))
        .await?;
    h.wait_status("default/third", LIMIT, ready).await?;

    // kubectl delete of the rejected pod completes at once, and is sent upstream.
    let mut del = second;
    del["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    del["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    h.push("update", "pod", del).await?;
    h.wait_gone("default/second", LIMIT).await?;
    let out = h.outbox().await?;
    let d = out.get("default/pod/second").context("pod delete sent")?;
    assert_eq!(d.route.operation_str(), "delete");
    Ok(())
}

/// A container of another node holding `port` on 127.0.0.1, removed on drop.
struct Blocker {
    node: String,
}

impl Drop for Blocker {
    fn drop(&mut self) {
        docker_cleanup(&self.node);
    }
}

/// Docker only by nature: Docker binds a hostPort itself, so a port already held refuses the
/// sandbox; on containerd the CNI portmap plugin only adds DNAT rules and binds nothing, so
/// the same sandbox is not refused (as on a kubelet node with containerd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sandbox_shows_in_the_status_and_an_event() -> Result<()> {
    let h = Harness::start("sandbox").await?;
    let port = free_port()?;
    let blocker = Blocker {
        node: format!("{}-blocker", h.node),
    };
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_NODE.to_owned(), blocker.node.clone());
    let mut cfg = ContainerConfig::default();
    cfg.name = blocker.node.clone();
    cfg.image = IMAGE.into();
    cfg.entrypoint = Some(vec!["sleep".into(), "3600".into()]);
    cfg.labels = labels;
    cfg.ports = vec![PortMapping {
        container_port: 80,
        host_port: port,
        host_ip: "127.0.0.1".into(),
        protocol: "tcp".into(),
    }];
    let id = h.rt.create_container(cfg).await?;
    h.rt.start_container(&id).await?;

    h.push("insert", "pod", web("blocked", port, "127.0.0.1"))
        .await?;
    let v = h.event("blocked", "FailedCreatePodSandBox", LIMIT).await?;
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Failed to create pod sandbox: ") && msg.contains(&port.to_string()),
        "{msg}"
    );
    assert_eq!(v["type"], "Warning");
    let st = h
        .wait_status("default/blocked", LIMIT, |s| {
            condition(s, "PodReadyToStartContainers").as_deref() == Some("False")
        })
        .await?;
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let waiting = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref())
        .context("container waiting")?;
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));

    // The port comes free: the sandbox is retried and the pod runs.
    h.rt.remove_container(&id).await?;
    let st = h.wait_status("default/blocked", LIMIT, ready).await?;
    assert_eq!(
        condition(&st, "PodReadyToStartContainers").as_deref(),
        Some("True")
    );
    drop(blocker);
    Ok(())
}
