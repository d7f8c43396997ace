//! Node records on the real (in-process) API: a hub writes itself as the holder of a node when
//! its websocket arrives and clears it when the session ends; when another replica takes a
//! node that has no session here, what this hub queued for it is dropped.

mod common;

use std::time::Duration;

use anyhow::{ensure, Result};
use common::{cloud, controlled::api, edge, join, pod};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
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
async fn records_follow_sessions_and_a_taken_node_loses_its_queue_here() -> Result<()> {
    let (_api_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let hub = cloud(HubConfig::default()).await?;
    let cancel = CancellationToken::new();
    tokio::spawn(NodeOwnership::new("kubeedge", "replica-a").run(
        client.clone(),
        hub.hub.clone(),
        cancel.clone(),
    ));

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
