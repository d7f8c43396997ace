//! Edged on containerd through the CRI (the test containerd that scripts/test.sh starts, with
//! its own CNI bridge): a pod runs with its IP from CNI, its logs are CRI log files in the
//! kubelet's layout and read back, exit codes are reported, deletion removes the sandbox and
//! its containers, and a restarted edged adopts the running pod without recreating it.
//! Each test skips, saying why, only when the containerd socket is absent.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::*;
use futures_util::StreamExt;
use kubeedge_edge::edged::runtime::{
    ContainerRuntime, ContainerState, LogOptions, LABEL_CONTAINER, LABEL_NODE, SANDBOX,
};
use kubeedge_edge::edged::{CriRuntime, Edged, Link};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

fn running(s: &k8s_openapi::api::core::v1::PodStatus, c: &str) -> bool {
    cstatus(s, c)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|st| st.running.is_some())
}

async fn logs(rt: &CriRuntime, id: &str) -> Result<String> {
    let mut out = Vec::new();
    let mut s = rt.logs(id, LogOptions::default());
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8(out)?)
}

/// The runtime id of container `name` (or the sandbox) of this node.
async fn id_of(h: &Harness<CriRuntime>, name: &str) -> Result<String> {
    let list = h.containers().await?;
    let found: Vec<_> = list
        .iter()
        .filter(|c| c.label(LABEL_CONTAINER) == Some(name))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        other => bail!("expected one {name}, found {}", other.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pod_runs_with_cni_ip_logs_and_is_removed() -> Result<()> {
    let Some(h) = Harness::start_cri("cri-run", |_| {}).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let p = pod(
        "cri-web",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [container("c", "echo hello-cri; echo second line; sleep 3600")]}),
    );
    let uid = p["metadata"]["uid"].as_str().context("uid")?.to_owned();
    h.push("insert", "pod", p).await?;
    let st = h
        .wait_status("default/cri-web", LIMIT, |s| {
            running(s, "c") && condition(s, "Ready").as_deref() == Some("True")
        })
        .await?;
    eprintln!(
        "cri: pod create -> Running and Ready in {:?}",
        started.elapsed()
    );
    let ip = st.pod_ip.clone().context("pod IP")?;
    assert!(ip.starts_with("10.89."), "pod IP {ip} from the CNI bridge");
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    let c = cstatus(&st, "c").context("container status")?;
    assert_eq!(c.restart_count, 0);

    // Logs: a CRI log file in the kubelet's layout, read back as plain lines.
    let id = id_of(&h, "c").await?;
    assert_eq!(
        c.container_id.as_deref(),
        Some(format!("containerd://{id}").as_str()),
        "the kubelet's containerID form on containerd"
    );
    let path =
        h.rt.log_root()
            .join(format!("default_cri-web_{uid}/c/0.log"));
    let text = eventually("log lines", LIMIT, || async {
        let t = logs(&h.rt, &id).await.ok()?;
        t.contains("second line").then_some(t)
    })
    .await?;
    assert_eq!(text, "hello-cri\nsecond line\n");
    let raw = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    assert!(raw.contains(" stdout F hello-cri\n"), "CRI format: {raw}");
    let mut tail = LogOptions::default();
    tail.tail = Some(1);
    let mut s = h.rt.logs(&id, tail);
    assert_eq!(s.next().await.context("tail")??, "second line\n");

    // Stats and status through the CRI.
    let stats = h.rt.container_stats(&id).await?;
    assert!(stats.memory.and_then(|m| m.working_set_bytes).is_some());
    let sandbox = id_of(&h, SANDBOX).await?;
    let info = h.rt.inspect_container(&sandbox).await?;
    assert_eq!(info.ip.as_deref(), Some(ip.as_str()));
    assert!(matches!(info.state, ContainerState::Running { .. }));
    let v = h.rt.version().await?;
    assert_eq!(v.name, "containerd");

    // Delete: the sandbox, its containers and the pod's log directory go.
    h.push(
        "delete",
        "pod",
        json!({"metadata": {"name": "cri-web", "namespace": "default", "uid": uid}}),
    )
    .await?;
    h.wait_gone("default/cri-web", LIMIT).await?;
    eventually("no containers left", LIMIT, || async {
        h.containers().await.ok()?.is_empty().then_some(())
    })
    .await?;
    assert!(matches!(
        h.rt.inspect_container(&sandbox).await,
        Err(kubeedge_edge::edged::RuntimeError::NotFound(_))
    ));
    assert!(!path.exists(), "log directory removed with the pod");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_exit_code_and_reason_are_reported() -> Result<()> {
    // With podSandboxImage set too (the runtime's own sandbox image is used either way).
    let Some(h) = Harness::start_cri("cri-exit", |c| {
        c.pod_sandbox_image = Some(CRI_PAUSE_IMAGE.into());
    })
    .await?
    else {
        return Ok(());
    };
    let p = pod(
        "cri-exit",
        json!({"restartPolicy": "Never", "containers": [container("c", "echo bye; exit 3")]}),
    );
    h.push("insert", "pod", p).await?;
    let st = h
        .wait_status("default/cri-exit", LIMIT, |s| {
            cstatus(s, "c")
                .and_then(|c| c.state.as_ref())
                .is_some_and(|st| st.terminated.is_some())
        })
        .await?;
    let t = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .context("terminated")?;
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    let id = id_of(&h, "c").await?;
    assert_eq!(logs(&h.rt, &id).await?, "bye\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_restarted_edged_adopts_the_running_pod() -> Result<()> {
    let Some(mut h) = Harness::start_cri("cri-adopt", |_| {}).await? else {
        return Ok(());
    };
    let p = pod(
        "cri-adopt",
        json!({"containers": [container("c", "sleep 3600")]}),
    );
    h.push("insert", "pod", p).await?;
    h.wait_status("default/cri-adopt", LIMIT, |s| running(s, "c"))
        .await?;
    let mut before: Vec<String> = h.containers().await?.into_iter().map(|c| c.id).collect();
    before.sort();
    assert_eq!(before.len(), 2, "a sandbox and a container");
    h.stop().await;

    // A new edged on the same store and node: it adopts, it does not recreate.
    let cfg = test_config(&h.node, &h.root());
    let (_cloud_tx, cloud_rx) = watch::channel(None);
    let (edged, _tx, handle) = Edged::new(cfg, h.rt.clone(), Link::new(h.db.clone(), cloud_rx));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(edged.run(cancel.clone()));
    let mut rx = handle.statuses();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let ok = rx
            .borrow_and_update()
            .get("default/cri-adopt")
            .is_some_and(|s| running(s, "c"));
        if ok {
            break;
        }
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .context("adopted pod Running")??;
    }
    let st = handle.status("default/cri-adopt").context("status")?;
    assert_eq!(cstatus(&st, "c").context("c")?.restart_count, 0);
    let mut after: Vec<String> =
        h.rt.list_containers(&[(LABEL_NODE, &h.node)])
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
    after.sort();
    assert_eq!(
        before, after,
        "same sandbox and container ids after the restart"
    );
    cancel.cancel();
    let _ = task.await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_logs_follow_new_lines() -> Result<()> {
    let Some(h) = Harness::start_cri("cri-follow", |_| {}).await? else {
        return Ok(());
    };
    let script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo later; sleep 3600";
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [container("c", script)]});
    h.push("insert", "pod", pod("cri-follow", spec)).await?;
    h.wait_status("default/cri-follow", LIMIT, |s| running(s, "c"))
        .await?;
    let id = id_of(&h, "c").await?;
    let mut o = LogOptions::default();
    o.follow = true;
    let mut s = h.rt.logs(&id, o);
    let mut out = String::new();
    tokio::time::timeout(LIMIT, async {
        while !out.contains("first") {
            out.push_str(&String::from_utf8_lossy(&s.next().await.context("end")??));
        }
        // Only now is the second line written: the stream must bring it.
        let done =
            h.rt.exec_sync(&id, vec!["touch".into(), "/tmp/go".into()], LIMIT)
                .await?;
        assert_eq!(done.exit_code, 0);
        while !out.contains("later") {
            out.push_str(&String::from_utf8_lossy(&s.next().await.context("end")??));
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("following, got {out:?}"))??;
    assert_eq!(out, "first\nlater\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_image_service() -> Result<()> {
    let Some(rt) = cri_runtime() else {
        return Ok(());
    };
    let rt = Arc::new(rt);
    let img = rt
        .image(IMAGE)
        .await?
        .context("busybox image imported by the script")?;
    assert!(img.id.starts_with("sha256:"));
    assert!(rt.list_images().await?.iter().any(|i| i.id == img.id));
    assert!(rt.image("kubeedge-rs-test/absent:0").await?.is_none());
    rt.remove_image("kubeedge-rs-test/absent:0").await?;
    // No registry is reachable: a pull fails with a typed error naming the image.
    match rt.pull_image("127.0.0.1:1/absent:0", None).await {
        Err(kubeedge_edge::edged::RuntimeError::Pull { image, .. }) => {
            assert_eq!(image, "127.0.0.1:1/absent:0")
        }
        other => bail!("expected a pull error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_is_not_a_cri_server_gives_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Nothing listens: the runtime is unavailable (retryable), quickly.
    let absent = CriRuntime::new(
        format!("unix://{}/absent.sock", dir.path().display()),
        dir.path(),
    );
    let e = tokio::time::timeout(LIMIT, absent.version())
        .await?
        .expect_err("no server");
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("absent.sock"), "{e}");
    // A server that speaks HTTP/1, not gRPC: an error, not a hang.
    let path = dir.path().join("http.sock");
    let listener = tokio::net::UnixListener::bind(&path)?;
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let wrong = CriRuntime::new(format!("unix://{}", path.display()), dir.path());
    let e = tokio::time::timeout(LIMIT, wrong.version())
        .await
        .context("a non-CRI server must not hang the call")?
        .expect_err("not a CRI server");
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(e.to_string().contains("is it a CRI runtime?"), "{e}");
    Ok(())
}
