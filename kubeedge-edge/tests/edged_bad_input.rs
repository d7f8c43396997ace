//! Bad input: a missing image, a bad command and an invalid volume give the kubelet's container
//! statuses and events while other pods run; a runtime that is down is retried. On Docker and
//! on containerd.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::*;
use kubeedge_edge::edged::{CriRuntime, DockerRuntime};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(20);

on_both_runtimes!(bad_pods_get_clear_statuses_and_events_and_others_run);

fn waiting_reason(s: &k8s_openapi::api::core::v1::PodStatus, c: &str) -> Option<String> {
    cstatus(s, c)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

async fn bad_pods_get_clear_statuses_and_events_and_others_run<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let mut missing = container("c", "sleep 3600");
    missing["image"] = json!("kubeedge-rs-test/does-not-exist:0");
    h.push(
        "insert",
        "pod",
        pod("noimage", json!({"containers": [missing]})),
    )
    .await?;
    let mut badcmd = container("c", "");
    badcmd["command"] = json!(["/no/such/binary"]);
    h.push(
        "insert",
        "pod",
        pod("badcmd", json!({"containers": [badcmd]})),
    )
    .await?;
    let mut badvol = container("c", "sleep 3600");
    badvol["volumeMounts"] = json!([{"name": "v", "mountPath": "/v"}]);
    h.push(
        "insert",
        "pod",
        pod(
            "badvol",
            json!({"containers": [badvol], "volumes": [{"name": "v", "hostPath": {"path": "relative/path"}}]}),
        ),
    )
    .await?;
    // A mount the runtime itself refuses (a directory over the busybox binary, a file): the
    // runtime's own message in the container's waiting state.
    let mut badmount = container("c", "sleep 3600");
    badmount["volumeMounts"] = json!([{"name": "v", "mountPath": "/bin/busybox"}]);
    let dir = h.dir.path().join("a-directory");
    std::fs::create_dir_all(&dir)?;
    let vol = json!([{"name": "v", "hostPath": {"path": dir.display().to_string()}}]);
    h.push(
        "insert",
        "pod",
        pod(
            "badmount",
            json!({"containers": [badmount], "volumes": vol}),
        ),
    )
    .await?;
    h.push(
        "insert",
        "pod",
        pod(
            "good",
            json!({"containers": [container("c", "sleep 3600")]}),
        ),
    )
    .await?;

    let st = h
        .wait_status("default/noimage", LIMIT, |s| {
            matches!(
                waiting_reason(s, "c").as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
        .await?;
    let msg = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("does-not-exist"), "{msg}");
    assert_eq!(st.phase.as_deref(), Some("Pending"));

    // Docker creates the container and fails to start it: the kubelet's RunContainerError.
    let st = h
        .wait_status("default/badcmd", LIMIT, |s| {
            waiting_reason(s, "c").as_deref() == Some("RunContainerError")
        })
        .await?;
    let msg = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("/no/such/binary"), "{msg}");

    let st = h
        .wait_status("default/badvol", LIMIT, |s| {
            waiting_reason(s, "c").as_deref() == Some("CreateContainerError")
        })
        .await?;
    let msg = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("absolute"), "{msg}");

    let st = h
        .wait_status("default/badmount", LIMIT, |s| {
            matches!(
                waiting_reason(s, "c").as_deref(),
                Some("CreateContainerError" | "RunContainerError")
            )
        })
        .await?;
    let msg = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    // The runtime's message as it gave it (the kubelet's `s.Message()`), no wrapping of ours.
    assert!(
        msg.contains("/bin/busybox") && msg.contains("not a directory"),
        "{msg}"
    );
    assert!(!msg.starts_with("runtime refused"), "{msg}");

    h.wait_status("default/good", LIMIT, |s| {
        condition(s, "Ready").as_deref() == Some("True")
    })
    .await?;

    // Each failure is also an Event (kind Pod, reason Failed, about the container) on its way
    // upstream, with the kubelet's message.
    for p in ["badcmd", "badvol"] {
        let v = h.event(p, "Failed", LIMIT).await?;
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("Error: "), "{p}: {msg}");
        assert_eq!(v["involvedObject"]["fieldPath"], "spec.containers{c}");
    }
    // The pull keeps failing the same way: one Event, its count going up (the kubelet's
    // correlation of identical events).
    let pulls = eventually("the pull failure counted twice", LIMIT, || async {
        let mut evs = h.events("noimage", "Failed").await.ok()?;
        (evs.len() == 1 && evs[0]["count"].as_u64() >= Some(2)).then(|| evs.remove(0))
    })
    .await?;
    let msg = pulls["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Failed to pull image \"kubeedge-rs-test/does-not-exist:0\": "),
        "{msg}"
    );
    assert!(pulls["firstTimestamp"].is_string() && pulls["lastTimestamp"].is_string());
    for p in ["noimage", "badcmd", "badvol"] {
        let v = h.event(p, "Failed", LIMIT).await?;
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["involvedObject"]["kind"], "Pod");
        assert_eq!(v["type"], "Warning");
    }
    Ok(())
}

/// A unix socket that forwards to a real runtime's socket once `up` is called: the runtime
/// "down", then "up".
struct RuntimeProxy {
    path: std::path::PathBuf,
    target: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RuntimeProxy {
    fn new(target: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(Self {
            path: dir.path().join("runtime.sock"),
            target: target.into(),
            _dir: dir,
        })
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn up(&self) -> Result<()> {
        let l = tokio::net::UnixListener::bind(&self.path)?;
        let target = self.target.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::UnixStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
            }
        });
        Ok(())
    }
}

/// No runtime at start: edged keeps going and says why the pod does not run; the runtime
/// comes up: the pod runs.
async fn runtime_down_is_retried_not_fatal<R: TestRuntime>(
    h: Harness<R>,
    proxy: RuntimeProxy,
) -> Result<()> {
    h.push(
        "insert",
        "pod",
        pod(
            "survivor",
            json!({"containers": [container("c", "sleep 3600")]}),
        ),
    )
    .await?;
    let st = h
        .wait_status("default/survivor", LIMIT, |s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("container runtime unavailable"))
        })
        .await?;
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    proxy.up()?;
    h.wait_status("default/survivor", Duration::from_secs(30), |s| {
        condition(s, "Ready").as_deref() == Some("True")
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_down_is_retried_not_fatal() -> Result<()> {
    // The image exists (built through the real socket).
    ensure_image(&DockerRuntime::new("unix:///var/run/docker.sock")).await?;
    let proxy = RuntimeProxy::new("/var/run/docker.sock")?;
    let rt = Arc::new(DockerRuntime::new(proxy.endpoint()));
    let h = Harness::start_on("down", rt, |_| {}).await?;
    runtime_down_is_retried_not_fatal(h, proxy).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_down_is_retried_not_fatal() -> Result<()> {
    let Some(shared) = cri_runtime() else {
        return Ok(());
    };
    let proxy = RuntimeProxy::new(CRI_SOCKET)?;
    let rt = Arc::new(CriRuntime::new(proxy.endpoint(), shared.log_root()));
    let h = Harness::start_on("cri-down", rt, |_| {}).await?;
    runtime_down_is_retried_not_fatal(h, proxy).await
}
