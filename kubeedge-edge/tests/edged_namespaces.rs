//! PID namespaces as the kubelet sets them: each container its own by default (its command
//! is PID 1, so a process that does not handle SIGTERM lives out the whole grace period), the
//! sandbox's with `shareProcessNamespace: true` (PID 1 is the pause process).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

on_both_runtimes!(pid_namespace_per_container_unless_shared);
const GRACE: u64 = 3;

/// PID 1's command line, seen from inside container `c` of pod `name`.
async fn pid1<R: TestRuntime>(h: &Harness<R>, name: &str) -> Result<String> {
    let st = h
        .wait_status(&format!("default/{name}"), LIMIT, |s| {
            cstatus(s, "c").is_some_and(|c| c.ready)
        })
        .await?;
    let id = cstatus(&st, "c")
        .and_then(|c| c.container_id.clone())
        .context("container id")?;
    let id = runtime_id(&id);
    let out =
        h.rt.exec_sync(
            id,
            vec!["cat".into(), "/proc/1/cmdline".into()],
            Duration::from_secs(5),
        )
        .await?;
    Ok(String::from_utf8_lossy(&out.output).replace('\0', " "))
}

/// Delete pod `p` as kubectl does and measure how long its container takes to go.
async fn delete_and_time<R: TestRuntime>(h: &Harness<R>, mut p: Value) -> Result<Duration> {
    let key = format!(
        "default/{}",
        p["metadata"]["name"].as_str().unwrap_or_default()
    );
    p["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(GRACE);
    let t0 = Instant::now();
    h.push("update", "pod", p).await?;
    h.wait_gone(&key, LIMIT).await?;
    Ok(t0.elapsed())
}

async fn pid_namespace_per_container_unless_shared<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    // `sleep` does not handle SIGTERM: as PID 1 the kernel drops the signal.
    let mut c = container("c", "");
    c["command"] = json!(["sleep", "3600"]);
    let own = pod(
        "own",
        json!({"terminationGracePeriodSeconds": GRACE, "containers": [c.clone()]}),
    );
    let shared = pod(
        "shared",
        json!({"terminationGracePeriodSeconds": GRACE, "shareProcessNamespace": true,
               "containers": [c]}),
    );
    h.push("insert", "pod", own.clone()).await?;
    h.push("insert", "pod", shared.clone()).await?;

    let own_pid1 = pid1(&h, "own").await?;
    let shared_pid1 = pid1(&h, "shared").await?;

    // Its own namespace: SIGTERM is ignored, SIGKILL comes after the whole grace period.
    let took = delete_and_time(&h, own).await?;
    assert!(
        took >= Duration::from_millis(GRACE * 1000 - 100),
        "a SIGTERM-ignoring PID 1 was stopped after {took:?}, before its {GRACE} s grace period"
    );
    assert!(
        took < Duration::from_secs(GRACE + 5),
        "grace not enforced: {took:?}"
    );
    assert!(
        own_pid1.starts_with("sleep 3600"),
        "own namespace: PID 1 is {own_pid1:?}"
    );
    // The sandbox's process: Docker's built-in pause image runs `busybox sleep`, the test
    // containerd's sandbox_image `/bin/sleep 2147483647`.
    assert!(
        shared_pid1.contains("pause")
            || shared_pid1.contains("busybox sleep")
            || shared_pid1.contains("sleep 2147483647"),
        "shared namespace: PID 1 is the sandbox's, not {shared_pid1:?}"
    );

    // The sandbox's namespace: `sleep` is not PID 1 there, so SIGTERM ends it at once.
    let took = delete_and_time(&h, shared).await?;
    assert!(
        took < Duration::from_millis(GRACE * 1000 - 500),
        "with shareProcessNamespace SIGTERM ends sleep at once, not after {took:?}"
    );
    assert!(h.containers().await?.is_empty(), "containers removed");
    Ok(())
}
