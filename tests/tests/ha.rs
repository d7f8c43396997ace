//! cloudcore's embedded control plane on etcd, as an operator starts it: `keadm init
//! --etcd-servers=…` against a three-member etcd cluster on loopback. The objects live in etcd
//! under kube-apiserver's layout (none on the host), survive a kill -9 of cloudcore, and an
//! edge node joins and turns Ready.

#[path = "../../kubeedge-apiserver/tests/common/etcd.rs"]
#[allow(dead_code, unreachable_pub)]
mod etcd;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{wait_for, Cluster};

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
    cluster.start_cloudcore()?;
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
        Ok(cluster
            .kubectl(&[
                "get",
                "lease",
                "-n",
                "kubeedge",
                "node-etcd-edge",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .is_ok_and(|h| h.trim() == leader))
    })?;
    Ok(())
}

/// The holder of the Lease kubeedge/cloudcore, as `cluster`'s API tells it.
fn holder(cluster: &Cluster) -> Result<String> {
    Ok(cluster
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kubeedge",
            "cloudcore",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?
        .trim()
        .to_owned())
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
