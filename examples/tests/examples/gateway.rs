//! `custom-gateway` against a real cloudcore (`keadm init`, the embedded control plane).

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, PostParams};
use kube::ResourceExt as _;
use kubeedge_bench::cluster::Cluster;
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_gateway_gets_its_pod_and_configmap_and_reports_the_pod_running() -> Result<()> {
    let cluster = Cluster::init()?;
    let token = cluster.token()?;
    let dir = tempfile::tempdir()?;
    let (ws, https) = (
        cluster.ws.to_string(),
        format!("127.0.0.1:{}", cluster.https_port),
    );
    let dir_arg = dir.path().display().to_string();
    let mut gateway = Running::start(
        "custom-gateway",
        &[&ws, &https, &token, "gateway-1", &dir_arg],
    )?;
    gateway.wait_line("node registration", |l| l == "registered node gateway-1")?;

    let client = cluster.client().await?;
    let node = Api::<Node>::all(client.clone()).get("gateway-1").await?;
    ensure!(
        node.labels().contains_key("node-role.kubernetes.io/edge"),
        "the gateway's node is an edge node: {node:?}"
    );
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"}, "data": {"mode": "gateway"}
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "spec": {"nodeName": "gateway-1", "containers": [{"name": "reader", "image": "reader:1",
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}]}]}
    }))?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod).await?;

    // The handler sees both objects, and the status it reports reaches the API.
    gateway.wait_line("the ConfigMap", |l| {
        l.ends_with("configmap default/settings")
    })?;
    gateway.wait_line("the pod", |l| l.ends_with("pod default/reader"))?;
    gateway.wait_line("the report", |l| l == "reported default/reader Running")?;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let p = pods.get("reader").await?;
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the pod's status never became Running; gateway output: {:?}",
            gateway.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
