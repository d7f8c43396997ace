//! Real-cluster fidelity, end to end: what a real kube-apiserver and kubelet do that our edge
//! and cloud must do too, checked through the keadm-made cloudcore and edgecore processes.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{wait_for, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn lease(cluster: &Cluster, node: &str) -> Result<Option<Value>> {
    let out = cluster.kubectl(&["get", "lease", "-n", "kube-node-lease", node, "-o", "json"]);
    match out {
        Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
        Err(e) if e.to_string().contains("NotFound") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The node Lease is renewed as the kubelet renews it: every quarter of
/// `nodeLeaseDurationSeconds`, `renewTime` a MicroTime (six fractional digits: a real API
/// server refuses nanoseconds), each update conditional on the resourceVersion it read (a
/// real API server refuses an unconditional Lease update with 422), and a Lease changed
/// behind the edge's back (409 for the edge) is read again and renewed.
///
/// Before: `renewTime` had nanoseconds and updates carried no resourceVersion, so on a real
/// cluster the Lease was never renewed and the edge said nothing.
#[test]
fn the_node_lease_is_renewed_as_the_kubelet_renews_it() -> Result<()> {
    let node = "fid-lease";
    let mut cluster = Cluster::init()?;
    cluster
        .join_sets
        .push("modules.edged.nodeLeaseDurationSeconds=4".into());
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    let mut seen: Vec<(String, String)> = Vec::new();
    wait_for("three renewals", LIMIT, || {
        if let Some(l) = lease(&cluster, node)? {
            let t = l["spec"]["renewTime"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let rv = l["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if seen.last().map(|(_, r)| r) != Some(&rv) {
                seen.push((t, rv));
            }
        }
        Ok(seen.len() >= 3)
    })
    .with_context(|| cluster.logs_tail(30))?;
    for (t, _) in &seen {
        let frac = t
            .strip_suffix('Z')
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or_default();
        ensure!(
            frac.len() == 6 && frac.bytes().all(|b| b.is_ascii_digit()),
            "renewTime {t:?} is not a MicroTime"
        );
    }
    ensure!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "renewTime goes forward: {seen:?}"
    );
    let l = lease(&cluster, node)?.context("lease")?;
    ensure!(l["spec"]["holderIdentity"] == node, "{l}");
    ensure!(l["spec"]["leaseDurationSeconds"] == 4, "{l}");

    // Someone else writes the Lease: the edge's next update conflicts, it reads the Lease
    // again and renews it on top of that write.
    cluster.kubectl(&[
        "annotate",
        "lease",
        "-n",
        "kube-node-lease",
        node,
        "fidelity/touched=yes",
    ])?;
    let touched = lease(&cluster, node)?.context("lease")?;
    let touched_rv = touched["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let touched_at = touched["spec"]["renewTime"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for("renewed after the conflict", LIMIT, || {
        let Some(l) = lease(&cluster, node)? else {
            return Ok(false);
        };
        Ok(l["metadata"]["resourceVersion"] != touched_rv.as_str()
            && l["spec"]["renewTime"].as_str().unwrap_or_default() > touched_at.as_str()
            && l["metadata"]["annotations"]["fidelity/touched"] == "yes")
    })
    .with_context(|| cluster.logs_tail(30))?;
    Ok(())
}

fn image() -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())
}

/// The README's example scaled to three on one edge node, as a new user tries it: its
/// hostPort fits once. Before: all three were bound, the edge retried the other two sandboxes
/// every 10 s ("port is already allocated") and they showed Pending with no reason. Now, as
/// on Kubernetes: one runs and answers on the hostPort, two stay unbound with the NodePorts
/// reason and `FailedScheduling` events, and the edge is never asked to run them.
#[test]
fn a_host_port_deployment_scaled_past_the_node_stays_pending_with_a_reason() -> Result<()> {
    image()?;
    let node = "fid-ports";
    let mut cluster = Cluster::init()?;
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    let port = kubeedge_bench::free_port()?;
    let deploy = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{node-role.kubernetes.io/edge: ""}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www"]
        ports: [{{containerPort: 80, hostPort: {port}}}]
"#,
        image = kubeedge_bench::BUSYBOX_IMAGE,
    );
    cluster.apply(&deploy)?;
    cluster.wait_running("default", 1, LIMIT)?;
    cluster.kubectl(&["scale", "deploy", "web", "--replicas=3"])?;
    let expected =
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.";
    wait_for("two pods pending with the NodePorts reason", LIMIT, || {
        let out = cluster.kubectl(&["get", "pods", "-o", "json"])?;
        let v: Value = serde_json::from_str(&out)?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let pending = items
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_null())
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == "PodScheduled"
                            && c["status"] == "False"
                            && c["reason"] == "Unschedulable"
                            && c["message"] == expected
                    })
                })
            })
            .count();
        Ok(items.len() == 3 && pending == 2)
    })
    .with_context(|| cluster.logs_tail(30))?;
    let events = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=FailedScheduling",
        "-o",
        "json",
    ])?;
    let v: Value = serde_json::from_str(&events)?;
    ensure!(
        v["items"]
            .as_array()
            .is_some_and(|e| e.len() >= 2 && e.iter().all(|e| e["message"] == expected)),
        "FailedScheduling events: {events}"
    );
    // The one that runs still answers on its hostPort, and the edge runs exactly one pod.
    let body = std::process::Command::new("busybox")
        .args([
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&body.stdout).contains("hello"),
        "{body:?}"
    );
    ensure!(kubeedge_bench::cluster::app_containers(node)?.len() == 1);
    Ok(())
}
