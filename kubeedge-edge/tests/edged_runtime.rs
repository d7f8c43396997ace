//! The runtime's log streams (for the logs tunnel) on Docker and on containerd: logs with
//! tail, since, timestamps and follow, with attach's stdin showing up in the followed logs;
//! exec_sync's exit code and output; a removed container is gone.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use futures_util::StreamExt;
use kubeedge_edge::edged::runtime::{LogOptions, StreamOptions};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(10);

on_both_runtimes!(logs_follow_and_attach_streams);

async fn logs_follow_and_attach_streams<R: TestRuntime>(h: Harness<R>, _rt: &str) -> Result<()> {
    let mut c = container(
        "c",
        "echo one; echo two; while read l; do echo got-$l; done",
    );
    c["stdin"] = json!(true);
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [c]});
    let id = run_pod(&h, "streams", spec, "c").await?;

    // tail, timestamps (once both lines are written).
    let mut opts = LogOptions::default();
    opts.tail = Some(1);
    let out = eventually("two lines logged", T, || async {
        let mut o = LogOptions::default();
        o.tail = Some(1);
        let mut s = h.rt.logs(&id, o);
        read_until(&mut s, "two", Duration::from_secs(1)).await.ok()
    })
    .await?;
    assert_eq!(out, "two\n", "tail 1");
    opts.tail = None;
    opts.timestamps = true;
    let out = read_until(&mut h.rt.logs(&id, opts), "two", T).await?;
    assert!(out.starts_with("20") && out.contains(" one\n"), "{out:?}");
    // since: nothing is newer than the future.
    let mut opts = LogOptions::default();
    opts.since = Some(jiff::Timestamp::now().as_second() + 3600);
    let out: Vec<_> = tokio::time::timeout(T, h.rt.logs(&id, opts).collect::<Vec<_>>()).await?;
    assert!(
        out.iter().all(|b| b.as_ref().is_ok_and(|b| b.is_empty())),
        "{out:?}"
    );

    // follow + attach with stdin: what goes in shows up in the followed logs.
    let mut opts = LogOptions::default();
    opts.follow = true;
    let mut follow = h.rt.logs(&id, opts);
    let mut a = StreamOptions::default();
    a.stdin = true;
    let mut attached = h.rt.attach(&id, a).await?;
    attached.input.write_all(b"ping\n").await?;
    attached.input.flush().await?;
    let out = read_until(&mut follow, "got-ping", T).await?;
    assert!(out.contains("one\ntwo\n"), "{out:?}");
    read_until(&mut attached.output, "got-ping", T).await?;

    // exec_sync (probes).
    let r =
        h.rt.exec_sync(
            &id,
            vec!["sh".into(), "-c".into(), "echo x; exit 7".into()],
            T,
        )
        .await?;
    assert_eq!((r.exit_code, r.output.as_slice()), (7, b"x\n".as_slice()));
    h.rt.remove_container(&id).await?;
    assert!(h.rt.inspect_container(&id).await.is_err());
    Ok(())
}
