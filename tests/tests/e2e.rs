//! End to end, as a user runs it: `keadm init` starts cloudcore (embedded control plane) on
//! free loopback ports, `keadm join` starts edgecore on this host with the real Docker engine,
//! and the stock kubectl drives it. Each test has its own cluster (own KUBEEDGE_ROOT, own node
//! name), so they run side by side; dropping a cluster runs `keadm reset`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{app_containers, containers, wait_for, Cluster, LinkProxy};
use kubeedge_bench::BUSYBOX_IMAGE;

/// Generous bound for things that take a few seconds when the machine is quiet.
const LIMIT: Duration = Duration::from_secs(90);

fn image() -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())
}

/// A Deployment `web` of `replicas` busybox pods pinned to edge nodes, mounting the
/// ConfigMap `web-content` at /etc/web.
fn deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector:
        node-role.kubernetes.io/edge: ""
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        volumeMounts:
        - {{name: content, mountPath: /etc/web}}
      volumes:
      - name: content
        configMap: {{name: web-content}}
"#
    )
}

fn configmap(text: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-content\n  namespace: default\ndata:\n  index.html: {text:?}\n"
    )
}

/// init + join (through `ws`, cloudcore's own address when None) + wait Ready; returns the
/// cluster and the time from `keadm join` returning to the node being Ready.
fn joined(node: &str, via: Option<&LinkProxy>) -> Result<(Cluster, Duration)> {
    image()?;
    let mut cluster = Cluster::init()?;
    let ws = via.map(|p| p.addr).unwrap_or(cluster.ws);
    let out = cluster.join(node, ws)?;
    ensure!(out.contains("[5/5]"), "keadm join steps: {out}");
    let joined = Instant::now();
    wait_for(&format!("node {node} Ready"), LIMIT, || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;
    Ok((cluster, joined.elapsed()))
}

fn deploy(cluster: &Cluster, replicas: u32) -> Result<()> {
    cluster.apply(&configmap("v1"))?;
    cluster.apply(&deployment(replicas))?;
    Ok(())
}

fn ids(node: &str) -> Result<BTreeSet<String>> {
    Ok(app_containers(node)?.into_iter().map(|c| c.id).collect())
}

fn uids(cluster: &Cluster) -> Result<BTreeSet<String>> {
    Ok(cluster
        .pods("default")?
        .into_iter()
        .map(|p| p.uid)
        .collect())
}

fn file_in(container: &str, path: &str) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "cat", path])
        .output()?;
    ensure!(out.status.success(), "docker exec cat {path}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn join_deploy_scale_configmap_delete_and_reset() -> Result<()> {
    let node = "e2e-life";
    let (cluster, ready_after) = joined(node, None)?;
    ensure!(
        ready_after <= Duration::from_secs(2),
        "join -> Ready took {ready_after:?} (goal: within 2 s)"
    );
    let nodes = cluster.kubectl(&["get", "node", node])?;
    ensure!(nodes.contains("agent,edge"), "ROLES: {nodes}");

    // Joining a joined host says so and changes nothing.
    let again = cluster.rejoin()?;
    ensure!(again.contains("already running"), "second join: {again}");

    deploy(&cluster, 2)?;
    let pods = cluster.wait_running("default", 2, LIMIT)?;
    let wide = cluster.kubectl(&["get", "po", "-o", "wide"])?;
    ensure!(
        pods.iter().all(|p| wide.contains(&p.name)) && wide.contains(node),
        "{wide}"
    );

    // The mounted ConfigMap follows an update.
    let first = app_containers(node)?
        .into_iter()
        .next()
        .context("a container")?;
    ensure!(file_in(&first.id, "/etc/web/index.html")? == "v1");
    cluster.apply(&configmap("v2"))?;
    wait_for("configmap v2 in the pod", LIMIT, || {
        Ok(file_in(&first.id, "/etc/web/index.html")? == "v2")
    })
    .with_context(|| cluster.logs_tail(30))?;

    // Scale up and down: exactly one container per pod each time.
    cluster.kubectl(&["scale", "deployment/web", "--replicas=4"])?;
    let up = cluster.wait_running("default", 4, LIMIT)?;
    cluster.kubectl(&["scale", "deployment/web", "--replicas=1"])?;
    let down = cluster.wait_running("default", 1, LIMIT)?;
    ensure!(
        up.iter().any(|p| p.uid == down[0].uid),
        "scale-down kept one of the pods"
    );

    // Delete: the pods go, and so do their containers (sandboxes too).
    cluster.kubectl(&["delete", "deployment", "web", "--wait=false"])?;
    wait_for("pods and containers gone", LIMIT, || {
        Ok(cluster.pods("default")?.is_empty() && containers(node)?.is_empty())
    })
    .with_context(|| cluster.logs_tail(30))?;

    // reset twice: both succeed, nothing is left.
    let first = cluster.keadm(&["reset"])?;
    ensure!(first.contains("keadm reset: done"), "{first}");
    let second = cluster.keadm(&["reset"])?;
    ensure!(second.contains("keadm reset: done"), "{second}");
    ensure!(cluster.pid("edgecore").is_none() && cluster.pid("cloudcore").is_none());
    for dir in ["etc/kubeedge", "var/lib/kubeedge", "var/lib/edged"] {
        ensure!(!cluster.root().join(dir).exists(), "{dir} left behind");
    }
    Ok(())
}

#[test]
fn cloudcore_restart_and_the_edge_agree() -> Result<()> {
    let node = "e2e-cloud-restart";
    let (mut cluster, _) = joined(node, None)?;
    deploy(&cluster, 2)?;
    cluster.wait_running("default", 2, LIMIT)?;
    let (pods, cs) = (uids(&cluster)?, ids(node)?);

    cluster.kill9("cloudcore")?;
    cluster.start_cloudcore()?;
    // keadm init returns once cloudcore serves: from there, kubectl and the edge agree
    // within 5 s, with the same pods and the same containers.
    cluster.wait_running("default", 2, Duration::from_secs(5))?;
    wait_for("node Ready again", Duration::from_secs(5), || {
        cluster.node_ready(node)
    })?;
    ensure!(uids(&cluster)? == pods, "pods were recreated");
    ensure!(ids(node)? == cs, "containers were recreated");

    // And the restarted cloud still drives the edge.
    cluster.kubectl(&["scale", "deployment/web", "--replicas=3"])?;
    cluster.wait_running("default", 3, LIMIT)?;
    ensure!(ids(node)?.is_superset(&cs), "old containers kept");
    Ok(())
}

#[test]
fn edgecore_kill9_and_restart_duplicates_and_loses_nothing() -> Result<()> {
    let node = "e2e-edge-restart";
    let (cluster, _) = joined(node, None)?;
    deploy(&cluster, 3)?;
    cluster.wait_running("default", 3, LIMIT)?;
    let (pods, cs) = (uids(&cluster)?, ids(node)?);

    cluster.kill9("edgecore")?;
    // The containers outlive edgecore.
    ensure!(
        ids(node)? == cs,
        "containers changed while edgecore was down"
    );
    let out = cluster.rejoin()?;
    ensure!(out.contains("starting it again"), "{out}");
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))?;
    // A pod created after the restart runs: the restarted edged has synced past the old ones.
    cluster.kubectl(&["scale", "deployment/web", "--replicas=4"])?;
    cluster.wait_running("default", 4, LIMIT)?;
    let now = ids(node)?;
    ensure!(
        now.is_superset(&cs),
        "a container was lost: {cs:?} -> {now:?}"
    );
    ensure!(now.len() == 4, "duplicated containers: {now:?}");
    ensure!(uids(&cluster)?.is_superset(&pods), "pods were recreated");
    Ok(())
}

/// How long the link stays cut: past the node lifecycle's grace period, so that the node goes
/// NotReady in the cloud while its pods keep running.
const CUT: Duration = Duration::from_secs(60);

#[test]
fn a_60s_link_cut_keeps_pods_and_catches_up() -> Result<()> {
    let node = "e2e-link-cut";
    image()?;
    let mut cluster = Cluster::init()?;
    let proxy = LinkProxy::start(cluster.ws)?;
    cluster.join(node, proxy.addr)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    deploy(&cluster, 2)?;
    let before = cluster.wait_running("default", 2, LIMIT)?;
    let cs = app_containers(node)?;

    proxy.set_cut(true);
    let cut_at = Instant::now();
    // While cut: a container dies (edged restarts it; the status waits at the edge), and the
    // cloud scales up (the new pod waits in the cloud).
    let victim = cs[0].clone();
    let status = std::process::Command::new("docker")
        .args(["kill", &victim.id])
        .output()?;
    ensure!(status.status.success(), "docker kill: {status:?}");
    cluster.kubectl(&["scale", "deployment/web", "--replicas=3"])?;
    wait_for("the edge restarts the killed container", LIMIT, || {
        Ok(app_containers(node)?
            .iter()
            .any(|c| c.pod_uid == victim.pod_uid && c.id != victim.id))
    })?;
    // The cloud sees the node go NotReady, and evicts nothing.
    wait_for("node NotReady in the cloud", CUT, || {
        Ok(!cluster.node_ready(node)?)
    })
    .with_context(|| cluster.logs_tail(30))?;
    if let Some(rest) = CUT.checked_sub(cut_at.elapsed()) {
        std::thread::sleep(rest); // the cut's length is the scenario, not a synchronisation
    }
    let during = cluster.pods("default")?;
    for p in &before {
        ensure!(
            during.iter().any(|d| d.uid == p.uid && !d.deleting),
            "pod {} was evicted during the cut",
            p.name
        );
    }
    ensure!(
        app_containers(node)?.len() == 2,
        "the edge kept exactly its two pods running"
    );

    proxy.set_cut(false);
    wait_for("node Ready after the cut", LIMIT, || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;
    let after = cluster.wait_running("default", 3, LIMIT)?;
    for p in &before {
        ensure!(
            after.iter().any(|a| a.uid == p.uid),
            "pod {} was recreated",
            p.name
        );
    }
    // The restart made during the cut reached the cloud.
    wait_for("restartCount caught up", LIMIT, || {
        Ok(cluster
            .pods("default")?
            .iter()
            .any(|p| p.uid == victim.pod_uid && p.restarts >= 1))
    })
    .with_context(|| cluster.logs_tail(30))?;
    let survivor = &cs[1];
    ensure!(
        app_containers(node)?.iter().any(|c| c.id == survivor.id),
        "the untouched container was recreated"
    );
    Ok(())
}
