//! Node records on the real (in-process) API: a hub writes itself as the holder of a node when
//! its websocket arrives and clears it when the session ends; when another replica takes a
//! node that has no session here, what this hub queued for it is dropped (without a shared
//! ledger) or kept until the node acks it there (with one). Two replicas on one API, and an
//! edge moving between them, get every message to the edge once.

mod common;

use std::time::Duration;

use std::collections::HashMap;

use anyhow::{ensure, Context as _, Result};
use common::{cloud, controlled::api, edge, edge_via, join, pod};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_bench::proxy::Proxy;
use kubeedge_cloud::hub::HubConfig;
use kubeedge_cloud::ownership::{record_name, NodeOwnership};
use tokio_util::sync::CancellationToken;

async fn holder(leases: &Api<Lease>, node: &str) -> Option<String> {
    leases
        .get_opt(&record_name(node))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Polls `holder` of `node` until it is `want` (10 s at most).
async fn until_holder(leases: &Api<Lease>, node: &str, want: Option<&str>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = holder(leases, node).await;
        if now.as_deref() == want {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "holder of {node}: {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_sessions_and_without_a_shared_ledger_a_taken_node_loses_its_queue(
) -> Result<()> {
    let (_api_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let hub = cloud(HubConfig::default()).await?;
    let cancel = CancellationToken::new();
    let mut ownership = NodeOwnership::new("kubeedge", "replica-a");
    ownership.shared_ledger = false;
    tokio::spawn(ownership.run(client.clone(), hub.hub.clone(), cancel.clone()));

    // The websocket arrives: this replica holds the node; it leaves: nobody does.
    let dir = tempfile::tempdir()?;
    let tls = join(&hub, "e1", dir.path()).await?;
    let e1 = edge(&hub, "e1", tls.clone());
    until_holder(&leases, "e1", Some("replica-a")).await?;
    e1.cancel.cancel();
    until_holder(&leases, "e1", None).await?;
    let e1 = edge(&hub, "e1", tls);
    until_holder(&leases, "e1", Some("replica-a")).await?;

    // e2 is not connected here; changes for it are queued. Replica B takes it: the queue goes.
    for i in 0..3 {
        hub.down
            .send("e2", pod(&format!("uid-{i}"), "5", "update"))
            .await?;
    }
    ensure!(hub.down.queued("e2") == 3);
    let taken: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": record_name("e2"), "labels": {"kubeedge.io/owner-record": "node"}},
        "spec": {"holderIdentity": "replica-b"}
    }))?;
    leases.create(&PostParams::default(), &taken).await?;
    common::eventually("e2's queue dropped", || hub.down.queued("e2") == 0).await?;
    // The capacity came back: the node can be queued for again.
    hub.down.send("e2", pod("uid-9", "6", "update")).await?;
    ensure!(hub.down.queued("e2") == 1);

    // Another replica taking e1, which has a session here, changes nothing here until the
    // session ends; then e1's record is left to B.
    let mut l = leases.get(&record_name("e1")).await?;
    if let Some(s) = l.spec.as_mut() {
        s.holder_identity = Some("replica-b".into());
    }
    leases
        .replace(&record_name("e1"), &PostParams::default(), &l)
        .await?;
    e1.cancel.cancel();
    common::eventually("e1's session ended", || !hub.hub.is_connected("e1")).await?;
    tokio::time::timeout(Duration::from_secs(5), e1.task)
        .await
        .ok();
    ensure!(holder(&leases, "e1").await.as_deref() == Some("replica-b"));
    cancel.cancel();
    Ok(())
}

/// One replica: a hub on the shared PKI, its node records and every controller, on `client`.
async fn replica(
    first: Option<&common::Cloud>,
    client: &kube::Client,
    identity: &str,
) -> Result<(common::Cloud, CancellationToken)> {
    let mut cloud = match first {
        Some(a) => a.replica(common::fast()).await?,
        None => cloud(common::fast()).await?,
    };
    let (cancel, _task) = common::controlled::start_controllers(&mut cloud, client);
    tokio::spawn(NodeOwnership::new("kubeedge", identity).run(
        client.clone(),
        cloud.hub.clone(),
        cancel.clone(),
    ));
    Ok((cloud, cancel))
}

fn busy_pod(name: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_moving_between_replicas_gets_every_message_once() -> Result<()> {
    let (_api_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    common::controlled::edge_node(&client, "e1").await?;
    let (a, stop_a) = replica(None, &client, "replica-a").await?;
    let (b, stop_b) = replica(Some(&a), &client, "replica-b").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The edge reaches the replicas through one address, as through a load balancer.
    let lb = Proxy::start(a.ws).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&a, "e1", dir.path()).await?;
    let mut e = edge_via(lb.addr, "e1", tls, None);
    until_holder(&leases, "e1", Some("replica-a")).await?;

    // Pods are created and updated while the edge moves A -> B -> A; it acks what it gets.
    const PODS: usize = 40;
    let producer = {
        let pods = pods.clone();
        tokio::spawn(async move {
            for i in 0..PODS {
                pods.create(&PostParams::default(), &busy_pod(&format!("p{i}"), "e1")?)
                    .await?;
                if i % 2 == 0 {
                    let patch = serde_json::json!({"metadata": {"labels": {"step": "2"}}});
                    pods.patch(
                        &format!("p{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                }
            }
            anyhow::Ok(())
        })
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut latest: HashMap<String, String> = HashMap::new();
    let mut moves = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if producer.is_finished() && latest.len() == PODS {
            // Done once every pod's current version has arrived.
            let mut all = true;
            for p in pods.list(&Default::default()).await? {
                let (uid, rv) = (
                    p.metadata.uid.unwrap_or_default(),
                    p.metadata.resource_version.unwrap_or_default(),
                );
                all &= latest.get(&uid) == Some(&rv);
            }
            if all {
                break;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        ensure!(
            !left.is_zero(),
            "not every version arrived: {} of {PODS} pods, moves {moves:?}",
            latest.len()
        );
        let Ok(msg) =
            tokio::time::timeout(left.min(Duration::from_millis(200)), e.inbound.recv()).await
        else {
            continue;
        };
        let msg = msg.context("edge closed")?;
        if !msg.route.resource.contains("/pod/") {
            e.client.send(msg.ack()).await?;
            continue;
        }
        let uid = msg.content.decode::<serde_json::Value>()?["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let rv = msg.header.resource_version.clone();
        *seen.entry(format!("{uid}@{rv}")).or_default() += 1;
        if latest
            .get(&uid)
            .is_none_or(|v| v.parse::<u64>().unwrap_or(0) < rv.parse::<u64>().unwrap_or(0))
        {
            latest.insert(uid, rv);
        }
        e.client.send(msg.ack()).await?;
        // Move while messages and acks are in flight: to B after a third, back to A after
        // two thirds of the pods.
        let target = match (latest.len(), moves.len()) {
            (n, 0) if n >= PODS / 3 => Some(("B", b.ws)),
            (n, 1) if n >= 2 * PODS / 3 => Some(("A", a.ws)),
            _ => None,
        };
        if let Some((name, addr)) = target {
            lb.retarget(addr);
            lb.cut();
            moves.push(name);
        }
    }
    producer.await??;
    ensure!(moves == ["B", "A"], "{moves:?}");
    until_holder(&leases, "e1", Some("replica-a")).await?;
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(dups.is_empty(), "delivered more than once: {dups:?}");
    // Nothing is left queued for the edge on either replica: B's queue emptied as the edge
    // acked through A.
    common::eventually("both outboxes drained", || {
        a.down.queued("e1") == 0 && b.down.queued("e1") == 0
    })
    .await
    .with_context(|| format!("A {} B {}", a.down.queued("e1"), b.down.queued("e1")))?;
    stop_a.cancel();
    stop_b.cancel();
    Ok(())
}
