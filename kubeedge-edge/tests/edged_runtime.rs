//! The Docker runtime's streams (for the logs/exec tunnel): logs with tail, since,
//! timestamps and follow; exec and attach with stdin, with and without a TTY.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use kubeedge_edge::edged::runtime::{
    ContainerConfig, ContainerRuntime, LogOptions, StreamOptions, LABEL_NODE,
};
use kubeedge_edge::edged::DockerRuntime;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(10);

async fn collect_until(
    mut s: futures_util::stream::BoxStream<'static, kubeedge_edge::edged::runtime::Result<Bytes>>,
    want: &str,
) -> Result<String> {
    let mut out = String::new();
    tokio::time::timeout(T, async {
        while !out.contains(want) {
            match s.next().await {
                Some(Ok(b)) => out.push_str(&String::from_utf8_lossy(&b)),
                Some(Err(e)) => return Err(anyhow::Error::from(e)),
                None => break,
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("waiting for {want:?}, got {out:?}"))??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_and_attach_streams() -> Result<()> {
    let rt = DockerRuntime::new("unix:///var/run/docker.sock");
    ensure_image(&rt).await?;
    let node = node_name("streams");
    struct Clean(String);
    impl Drop for Clean {
        fn drop(&mut self) {
            docker_cleanup(&self.0);
        }
    }
    let _clean = Clean(node.clone());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_NODE.to_owned(), node.clone());
    let mut cfg = ContainerConfig::default();
    cfg.name = format!("{node}-c");
    cfg.image = IMAGE.into();
    cfg.entrypoint = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo one; echo two; while read l; do echo got-$l; done".into(),
    ]);
    cfg.labels = labels;
    cfg.stdin = true;
    let id = rt.create_container(cfg).await?;
    rt.start_container(&id).await?;

    // tail, timestamps.
    let mut opts = LogOptions::default();
    opts.tail = Some(1);
    let out = collect_until(rt.logs(&id, opts), "two").await?;
    assert_eq!(out, "two\n", "tail 1");
    let mut opts = LogOptions::default();
    opts.timestamps = true;
    let out = collect_until(rt.logs(&id, opts), "two").await?;
    assert!(out.starts_with("20") && out.contains(" one\n"), "{out:?}");
    // since: nothing is newer than the future.
    let mut opts = LogOptions::default();
    opts.since = Some(jiff::Timestamp::now().as_second() + 3600);
    let out: Vec<_> = tokio::time::timeout(T, rt.logs(&id, opts).collect::<Vec<_>>()).await?;
    assert!(
        out.iter().all(|b| b.as_ref().is_ok_and(|b| b.is_empty())),
        "{out:?}"
    );

    // follow + attach with stdin: what goes in shows up in the followed logs.
    let mut opts = LogOptions::default();
    opts.follow = true;
    let follow = rt.logs(&id, opts);
    let mut a = StreamOptions::default();
    a.stdin = true;
    let mut attached = rt.attach(&id, a).await?;
    attached.input.write_all(b"ping\n").await?;
    attached.input.flush().await?;
    let out = collect_until(follow, "got-ping").await?;
    assert!(out.contains("one\ntwo\n"));
    collect_until(attached.output, "got-ping").await?;

    // exec with stdin.
    let mut e = StreamOptions::default();
    e.command = vec!["cat".into()];
    e.stdin = true;
    let mut ex = rt.exec(&id, e).await?;
    ex.input.write_all(b"through exec\n").await?;
    ex.input.shutdown().await?;
    let out = collect_until(ex.output, "through exec").await?;
    assert_eq!(out, "through exec\n");

    // exec with a TTY.
    let mut e = StreamOptions::default();
    e.command = vec!["sh".into(), "-c".into(), "test -t 1 && echo has-tty".into()];
    e.tty = true;
    let ex = rt.exec(&id, e).await?;
    collect_until(ex.output, "has-tty").await?;

    // exec_sync (probes).
    let r = rt
        .exec_sync(
            &id,
            vec!["sh".into(), "-c".into(), "echo x; exit 7".into()],
            T,
        )
        .await?;
    assert_eq!((r.exit_code, r.output.as_slice()), (7, b"x\n".as_slice()));
    rt.remove_container(&id).await?;
    assert!(rt.inspect_container(&id).await.is_err());
    Ok(())
}
