//! What a real cluster does that the embedded control plane must do too (issue: real-cluster
//! fidelity): host ports are a scheduling constraint (NodePorts), and the `default/kubernetes`
//! Service and its Endpoints exist.

mod cp;

use std::time::Duration;

use anyhow::{ensure, Result};
use cp::{fast_config, wait_for, Cluster, AGENT, EDGE};
use k8s_openapi::api::core::v1::{Endpoints, Event, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubeedge_controlplane::KubernetesService;
use serde_json::json;

const NO_PORTS: &str =
    "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.";

fn host_port_pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.36",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
    }))?)
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

/// Before: the three pods were all bound to the one node, and the edge failed their sandboxes
/// with "port is already allocated" forever. Kubernetes binds one and keeps the others
/// pending with a FailedScheduling event, and binds the next once the port is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_fits_once_per_node() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let _n = c.node("edge-1", &[(EDGE, ""), (AGENT, "")]).await?;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    for name in ["web-0", "web-1", "web-2"] {
        pods.create(&PostParams::default(), &host_port_pod(name)?)
            .await?;
    }
    let unschedulable = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .filter(|c| c.status == "False")
            .and_then(|c| c.message.clone())
    };
    let (bound, pending) = wait_for("one bound, two unschedulable", || async {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        let bound: Vec<String> = all.iter().filter_map(node_of).collect();
        let pending: Vec<(String, String)> = all
            .iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, unschedulable(p)?)))
            .collect();
        (bound.len() == 1 && pending.len() == 2).then_some((bound, pending))
    })
    .await?;
    ensure!(bound == ["edge-1"], "{bound:?}");
    for (name, message) in &pending {
        ensure!(message == NO_PORTS, "{name}: {message}");
    }
    let events: Api<Event> = Api::default_namespaced(c.client.clone());
    wait_for("FailedScheduling events for both", || async {
        let evs = events.list(&ListParams::default()).await.ok()?.items;
        let named = |n: &str| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name.as_deref() == Some(n)
                    && e.message.as_deref() == Some(NO_PORTS)
            })
        };
        pending.iter().all(|(n, _)| named(n)).then_some(())
    })
    .await?;
    // The holder goes away: one of the others gets the port, the last still waits.
    let holder = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|p| node_of(p).is_some())
        .and_then(|p| p.metadata.name)
        .unwrap_or_default();
    pods.delete(&holder, &DeleteParams::default().grace_period(0))
        .await?;
    wait_for("the next pod bound in its place", || async {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        let bound = all
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some(holder.as_str()))
            .filter(|p| node_of(p).is_some())
            .count();
        (bound == 1).then_some(())
    })
    .await?;
    c.stop().await
}

/// Before: no `default/kubernetes` Service existed. kube-apiserver keeps it (ClusterIP the
/// first of the range, `https` 443 to the secure port) with Endpoints at its own address, and
/// recreates it when it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_and_endpoints_exist() -> Result<()> {
    let mut config = fast_config();
    let mut k = KubernetesService::new([10, 96, 0, 1].into(), ([192, 0, 2, 10], 6443).into());
    k.resync = Duration::from_millis(200);
    config.kubernetes_service = Some(k);
    let c = Cluster::start(config).await?;
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    let svc = wait_for("service default/kubernetes", || async {
        services.get_opt("kubernetes").await.ok().flatten()
    })
    .await?;
    let spec = svc.spec.clone().unwrap_or_default();
    ensure!(spec.cluster_ip.as_deref() == Some("10.96.0.1"), "{spec:?}");
    ensure!(spec.selector.is_none(), "{spec:?}");
    let port = spec.ports.clone().unwrap_or_default();
    ensure!(port.len() == 1, "{port:?}");
    ensure!(port[0].name.as_deref() == Some("https") && port[0].port == 443);
    ensure!(
        port[0].target_port == Some(IntOrString::Int(6443)),
        "{port:?}"
    );
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get("component").map(String::as_str) == Some("apiserver"));
    ensure!(labels.get("provider").map(String::as_str) == Some("kubernetes"));
    let eps: Api<Endpoints> = Api::default_namespaced(c.client.clone());
    let ep = wait_for("endpoints default/kubernetes", || async {
        eps.get_opt("kubernetes").await.ok().flatten()
    })
    .await?;
    let subset = ep.subsets.unwrap_or_default();
    ensure!(subset.len() == 1, "{subset:?}");
    let ips: Vec<String> = subset[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.ip.clone())
        .collect();
    ensure!(ips == ["192.0.2.10"], "{ips:?}");
    let ports = subset[0].ports.clone().unwrap_or_default();
    ensure!(ports.len() == 1 && ports[0].port == 6443, "{ports:?}");
    // Deleted, it comes back with the same ClusterIP.
    services
        .delete("kubernetes", &DeleteParams::default())
        .await?;
    let again = wait_for("service recreated", || async {
        services
            .get_opt("kubernetes")
            .await
            .ok()
            .flatten()
            .filter(|s| s.metadata.uid != svc.metadata.uid)
    })
    .await?;
    ensure!(again.spec.and_then(|s| s.cluster_ip).as_deref() == Some("10.96.0.1"));
    c.stop().await
}
