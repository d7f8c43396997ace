//! Faults of the runtime itself, on a containerd this test starts (own config, root, state
//! and socket in a temp dir; never the shared one): killed and restarted under running pods,
//! edged reconnects and adopts them without creating them again. Skips, saying why, when
//! containerd is not installed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::containerd::OwnContainerd;
use common::*;
use kubeedge_edge::edged::runtime::LABEL_POD_UID;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn host_net_pod(name: &str) -> serde_json::Value {
    pod(
        name,
        json!({"hostNetwork": true, "terminationGracePeriodSeconds": 0,
               "containers": [container("c", "sleep 3600")]}),
    )
}

fn running(s: &k8s_openapi::api::core::v1::PodStatus) -> bool {
    cstatus(s, "c")
        .and_then(|c| c.state.as_ref())
        .is_some_and(|st| st.running.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_killed_and_restarted_under_running_pods_is_adopted() -> Result<()> {
    let Some(mut ctrd) = OwnContainerd::start().await? else {
        return Ok(());
    };
    let h = Harness::start_on("ctrd-kill", Arc::new(ctrd.runtime()), |_| {}).await?;
    let first = host_net_pod("before");
    let uid = first["metadata"]["uid"].as_str().context("uid")?.to_owned();
    h.push("insert", "pod", first).await?;
    h.wait_status("default/before", LIMIT, running).await?;
    let before = ids_of(&h, &uid).await?;
    assert_eq!(before.len(), 2, "a sandbox and a container");

    // kill -9: the shims and containers live on; edged's calls now fail.
    ctrd.kill()?;
    h.push("insert", "pod", host_net_pod("during")).await?;
    h.wait_status("default/during", LIMIT, |s| {
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("container runtime unavailable"))
    })
    .await
    .context("edged sees the runtime down")?;

    // Back on the same state: edged reconnects (the pod pushed meanwhile runs) and adopts.
    ctrd.restart().await?;
    h.wait_status("default/during", LIMIT, running)
        .await
        .context("edged reconnected")?;
    let st = h.handle.status("default/before").context("status")?;
    assert!(running(&st), "{st:?}");
    assert_eq!(cstatus(&st, "c").context("c")?.restart_count, 0);
    assert_eq!(
        ids_of(&h, &uid).await?,
        before,
        "the same sandbox and container, not new ones"
    );
    Ok(())
}

/// The sorted ids of pod `uid`'s sandbox and containers.
async fn ids_of<R: TestRuntime>(h: &Harness<R>, uid: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = h
        .containers()
        .await?
        .into_iter()
        .filter(|c| c.label(LABEL_POD_UID) == Some(uid))
        .map(|c| c.id)
        .collect();
    v.sort();
    Ok(v)
}
