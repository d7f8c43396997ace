//! cloudcore's embedded control plane on etcd, as an operator starts it: `keadm init
//! --etcd-servers=…` against a three-member etcd cluster on loopback. The objects live in etcd
//! under kube-apiserver's layout (none on the host), survive a kill -9 of cloudcore, and an
//! edge node joins and turns Ready.

#[path = "../../kubeedge-apiserver/tests/common/etcd.rs"]
#[allow(dead_code, unreachable_pub)]
mod etcd;
#[path = "support/ha.rs"]
mod support;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{wait_for, Cluster};
use support::{busybox_pod, holder, phase, record_holder};

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_control_plane_keeps_its_state_in_etcd() -> Result<()> {
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let mut cluster = Cluster::init_with_flags(&[&servers], &[])?;

    cluster.kubectl(&["create", "configmap", "settings", "--from-literal=mode=ha"])?;
    let raw = members
        .etcdctl(&[
            "get",
            "/registry/configmaps/default/settings",
            "--print-value-only",
        ])
        .await?;
    let stored: serde_json::Value = serde_json::from_str(raw.trim()).context(raw.clone())?;
    ensure!(stored["data"]["mode"] == "ha", "{raw}");
    let db = cluster.root().join("var/lib/kubeedge/cloudcore/state.db");
    ensure!(!db.exists(), "a SQLite store was opened: {}", db.display());

    // kill -9 and start again: the state was in etcd, not in the process.
    let before = cluster.pid("cloudcore");
    cluster.kill9("cloudcore")?;
    let said = cluster.start_cloudcore()?;
    ensure!(
        said.contains("one replica of a control plane on etcd") && said.contains("haproxy.cfg"),
        "{said}"
    );
    let after = cluster.pid("cloudcore");
    ensure!(
        after.is_some() && after != before,
        "{before:?} -> {after:?}"
    );
    let mode = cluster.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.data.mode}",
    ])?;
    ensure!(mode == "ha", "{mode:?}");

    let ws = cluster.ws;
    cluster.join("etcd-edge", ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready("etcd-edge"))
        .with_context(|| cluster.logs_tail(30))?;
    let node = members
        .etcdctl(&["get", "/registry/minions/etcd-edge", "--print-value-only"])
        .await?;
    ensure!(node.contains("\"etcd-edge\""), "{node}");
    // The node's record names this replica, the leader of the singleton duties too.
    let leader = holder(&cluster)?;
    wait_for("the node's record", LIMIT, || {
        Ok(record_holder(&cluster, "etcd-edge") == leader)
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_the_singleton_duties_when_the_leader_dies() -> Result<()> {
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let a = Cluster::init_with_flags(&[&servers], &[])?;
    let mut leader = String::new();
    wait_for("a leader", LIMIT, || {
        leader = holder(&a).unwrap_or_default();
        Ok(!leader.is_empty())
    })?;
    let b = Cluster::init_with_flags(&[&servers], &[])?;
    // B sees A's lease and does not take it.
    ensure!(holder(&b)? == leader, "B took a live lease");
    // One CA and one ServiceAccount key: A's admin kubeconfig and a token A issued work on B.
    let b_server = server_of(&b)?;
    let on_b = a.kubectl(&[
        "--server",
        &b_server,
        "get",
        "namespace",
        "kubeedge",
        "-o",
        "name",
    ])?;
    ensure!(on_b.trim() == "namespace/kubeedge", "{on_b}");
    wait_for("the default ServiceAccount", LIMIT, || {
        Ok(
            a.kubectl(&["get", "serviceaccount", "default", "-o", "name"])
                .is_ok(),
        )
    })?;
    let token = a.kubectl(&["create", "token", "default"])?;
    let ca = a.root().join("var/lib/kubeedge/cloudcore/pki/ca.crt");
    let who = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &b_server,
            "--token",
            token.trim(),
        ])
        .arg(format!("--certificate-authority={}", ca.display()))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()?;
    let who_text = String::from_utf8_lossy(&who.stdout);
    ensure!(
        who_text == "system:serviceaccount:default:default",
        "{who_text} {}",
        String::from_utf8_lossy(&who.stderr)
    );

    a.kill9("cloudcore")?;
    let killed = std::time::Instant::now();
    let mut now = leader.clone();
    wait_for("a new leader", LIMIT, || {
        now = holder(&b).unwrap_or_default();
        Ok(!now.is_empty() && now != leader)
    })?;
    let took = killed.elapsed();
    println!(
        "leader failover after kill -9 (15 s lease, 10 s renew deadline, 2 s retry): {:.1} s",
        took.as_secs_f64()
    );
    ensure!(took <= Duration::from_secs(20), "failover took {took:?}");

    // The controllers now run on B: a Deployment gets its ReplicaSet.
    b.kubectl(&["create", "deployment", "after-failover", "--image=busybox"])?;
    wait_for("the ReplicaSet", LIMIT, || {
        Ok(!b
            .kubectl(&["get", "rs", "-l", "app=after-failover", "-o", "name"])?
            .trim()
            .is_empty())
    })?;
    Ok(())
}

/// The API server URL in `cluster`'s admin kubeconfig.
fn server_of(cluster: &Cluster) -> Result<String> {
    let text = std::fs::read_to_string(&cluster.kubeconfig)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .context("no server in the kubeconfig")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_moves_through_haproxy_when_its_replica_dies() -> Result<()> {
    kubeedge_bench::ensure_busybox_image().await?;
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let mut a = Cluster::init_with_flags(&[&servers], &[])?;
    wait_for("A leads", LIMIT, || Ok(!holder(&a)?.is_empty()))?;
    let b = Cluster::init_with_flags(&[&servers], &[])?;
    let (ws, https) = (kubeedge_bench::free_port()?, kubeedge_bench::free_port()?);
    let _lb = support::Haproxy::start(&[
        (ws, [a.ws.port(), b.ws.port()]),
        (https, [a.https_port, b.https_port]),
    ])?;

    // The edge joins through the load balancer's single address, and lands on A.
    let node = "ha-edge";
    a.https_port = https;
    a.join_sets.push("modules.edgeHub.heartbeat=2".into());
    a.join(node, std::net::SocketAddr::from(([127, 0, 0, 1], ws)))?;
    wait_for("node Ready", LIMIT, || a.node_ready(node)).with_context(|| a.logs_tail(30))?;
    let on_a = record_holder(&a, node);
    ensure!(!on_a.is_empty() && on_a == holder(&a)?, "{on_a:?}");
    a.apply(&busybox_pod("before", node))?;
    wait_for("pod before Running", LIMIT, || {
        Ok(phase(&a, "before") == "Running")
    })
    .with_context(|| a.logs_tail(30))?;

    // A dies; a pod applied meanwhile runs once the edge is on B and B leads.
    a.kill9("cloudcore")?;
    let killed = std::time::Instant::now();
    b.apply(&busybox_pod("during", node))?;
    wait_for("the edge on B", LIMIT, || {
        let h = record_holder(&b, node);
        Ok(!h.is_empty() && h != on_a)
    })
    .with_context(|| a.logs_tail(30))?;
    let moved = killed.elapsed();
    wait_for("pod during Running", LIMIT, || {
        Ok(phase(&b, "during") == "Running")
    })
    .with_context(|| a.logs_tail(30))?;
    println!(
        "edge on the other replica {:.1} s after kill -9; the pod applied meanwhile Running after {:.1} s",
        moved.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    ensure!(phase(&b, "before") == "Running");
    ensure!(b.node_ready(node)?, "node not Ready on B");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_reach_a_node_held_by_the_other_replica() -> Result<()> {
    kubeedge_bench::ensure_busybox_image().await?;
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let a = Cluster::init_with_flags(&[&servers], &[])?;
    let mut b = Cluster::init_with_flags(&[&servers], &[])?;
    // The edge (and its stream tunnel) on B; kubectl asks A.
    let node = "streams-edge";
    let ws = b.ws;
    b.join(node, ws)?;
    wait_for("node Ready", LIMIT, || a.node_ready(node)).with_context(|| b.logs_tail(30))?;
    let b_streams = format!("127.0.0.1:{}", b.stream_port);
    wait_for("the node's record naming B's stream server", LIMIT, || {
        Ok(a.kubectl(&[
            "get",
            "lease",
            "-n",
            "kubeedge",
            &format!("node-{node}"),
            "-o",
            "jsonpath={.metadata.annotations.kubeedge\\.io/stream-server}",
        ])?
        .trim()
            == b_streams)
    })?;
    a.apply(&busybox_pod("talker", node))?;
    wait_for(
        "pod Running",
        LIMIT,
        || Ok(phase(&a, "talker") == "Running"),
    )
    .with_context(|| b.logs_tail(30))?;
    let said = a.kubectl(&["exec", "talker", "--", "echo", "through A to B"])?;
    ensure!(said.trim() == "through A to B", "{said:?}");
    let code = std::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", a.kubeconfig.display()))
        .args(["exec", "talker", "--", "sh", "-c", "exit 7"])
        .status()?;
    ensure!(code.code() == Some(7), "{code:?}");
    let logs = a.kubectl(&["logs", "talker"]);
    ensure!(logs.is_ok(), "{logs:?}");
    let mut top = String::new();
    wait_for("kubectl top node through A", LIMIT, || {
        top = a.kubectl(&["top", "node", node]).unwrap_or_default();
        Ok(top.contains(node))
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_then_back_the_edge_runs_offline_and_converges() -> Result<()> {
    kubeedge_bench::ensure_busybox_image().await?;
    let mut members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let mut cloud = Cluster::init_with_flags(&[&servers], &[])?;
    let node = "quorum-edge";
    let ws = cloud.ws;
    cloud.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cloud.node_ready(node))
        .with_context(|| cloud.logs_tail(30))?;
    cloud.apply(&busybox_pod("steady", node))?;
    wait_for("pod Running", LIMIT, || {
        Ok(phase(&cloud, "steady") == "Running")
    })
    .with_context(|| cloud.logs_tail(30))?;
    let running = kubeedge_bench::cluster::app_containers(node)?;
    ensure!(!running.is_empty(), "no container for the pod");

    // Two members of three gone: the API answers 503, cloudcore cannot renew its heartbeat
    // and steps down (the edge's session ends), and the pod keeps running on the edge.
    members.kill(1).await?;
    members.kill(2).await?;
    let lost = std::time::Instant::now();
    wait_for("the monitor's /readyz at 503", LIMIT, || {
        Ok(kubeedge_bench::cluster::http_get(cloud.monitor, "/readyz")?.0 == 503)
    })
    .with_context(|| cloud.logs_tail(30))?;
    let stepped_down = lost.elapsed();
    wait_for("the edge's session ended", LIMIT, || {
        Ok(cloud
            .log("cloudcore")
            .contains("replica heartbeat not renewed: stepped down"))
    })?;
    let still = kubeedge_bench::cluster::app_containers(node)?;
    ensure!(
        still.iter().map(|c| &c.id).collect::<Vec<_>>()
            == running.iter().map(|c| &c.id).collect::<Vec<_>>(),
        "the pod's container changed while the cloud was away: {running:?} -> {still:?}"
    );

    // Quorum back: cloudcore serves again, the edge comes back, and a new pod runs.
    members.restart(1).await?;
    members.restart(2).await?;
    let back = std::time::Instant::now();
    wait_for("node Ready again", LIMIT, || cloud.node_ready(node))
        .with_context(|| cloud.logs_tail(30))?;
    cloud.apply(&busybox_pod("after", node))?;
    wait_for("the new pod Running", LIMIT, || {
        Ok(phase(&cloud, "after") == "Running")
    })
    .with_context(|| cloud.logs_tail(30))?;
    ensure!(phase(&cloud, "steady") == "Running");
    println!(
        "quorum lost: not ready after {:.1} s; quorum back: a new pod Running after {:.1} s",
        stepped_down.as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    Ok(())
}
