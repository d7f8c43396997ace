//! Interactive streams, port forwarding and stats through the runtime trait, each scenario on
//! Docker and on containerd (the CRI's Exec/Attach/PortForward URLs on containerd's stream
//! server, spoken as `v4.channel.k8s.io` over WebSocket; ContainerStats).

mod common;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::*;
use futures_util::StreamExt;
use kubeedge_edge::edged::runtime::{ContainerRuntime, StreamOptions, TerminalSize, SANDBOX};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(15);

on_both_runtimes!(exec_with_stdin_echoes_and_reports_the_exit_code);
on_both_runtimes!(exec_with_a_tty_follows_resizes);
on_both_runtimes!(attach_reaches_the_main_process_and_its_exit);
on_both_runtimes!(port_forward_reaches_httpd_in_the_pod);
on_both_runtimes!(stats_of_a_running_busybox_are_not_zero);

fn sleeper() -> serde_json::Value {
    json!({"terminationGracePeriodSeconds": 0, "containers": [container("c", "sleep 3600")]})
}

fn exec(command: &str, stdin: bool, tty: bool) -> StreamOptions {
    let mut o = StreamOptions::default();
    o.command = vec!["sh".into(), "-c".into(), command.into()];
    o.stdin = stdin;
    o.tty = tty;
    o
}

/// A line through stdin comes back on stdout, stderr comes too, and the exit code is the
/// command's (0 as well as non-zero).
async fn exec_with_stdin_echoes_and_reports_the_exit_code<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let id = run_pod(&h, "ex", sleeper(), "c").await?;
    let script = "read l; echo got-$l; echo to-stderr >&2; exit 3";
    let mut s = h.rt.exec(&id, exec(script, true, false)).await?;
    s.input.write_all(b"ping\n").await?;
    s.input.flush().await?;
    // stdout and stderr are separate streams: read to the end, then look at both.
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(T, s.output.next()).await? {
        out.extend_from_slice(&chunk?);
    }
    let out = String::from_utf8(out)?;
    assert!(
        out.contains("got-ping\n") && out.contains("to-stderr\n"),
        "{out:?}"
    );
    assert!(s.resize.is_none(), "no resize without a TTY");
    let exit = tokio::time::timeout(T, s.exit).await??;
    assert_eq!(exit, Some(3));

    let ok = h.rt.exec(&id, exec("echo fine", false, false)).await?;
    assert_eq!(tokio::time::timeout(T, ok.exit).await??, Some(0));
    Ok(())
}

/// With a TTY, the command sees a terminal, and a resize reaches it (`stty size` reports the
/// rows and columns sent).
async fn exec_with_a_tty_follows_resizes<R: TestRuntime>(h: Harness<R>, _rt: &str) -> Result<()> {
    let id = run_pod(&h, "tty", sleeper(), "c").await?;
    let script = "test -t 1 && echo has-tty; while read l; do busybox stty size; done";
    let mut s = h.rt.exec(&id, exec(script, true, true)).await?;
    read_until(&mut s.output, "has-tty", T).await?;
    let resize = s.resize.clone().context("a resize sender with a TTY")?;
    resize
        .send(TerminalSize {
            width: 123,
            height: 45,
        })
        .await?;
    // The resize and the stdin line travel apart: ask until the new size shows.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        s.input.write_all(b"size\n").await?;
        s.input.flush().await?;
        match read_until(&mut s.output, "45 123", Duration::from_millis(500)).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
    }
    Ok(())
}

/// Attach with stdin to a container started with `stdin: true`: a line reaches its main
/// process, and once that process exits the stream ends with the container's exit code.
async fn attach_reaches_the_main_process_and_its_exit<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let mut c = container(
        "c",
        "while read l; do echo got-$l; [ \"$l\" = bye ] && exit 4; done",
    );
    c["stdin"] = json!(true);
    let spec = json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                      "containers": [c]});
    let id = run_pod(&h, "att", spec, "c").await?;
    let mut o = StreamOptions::default();
    o.stdin = true;
    let mut s = h.rt.attach(&id, o).await?;
    s.input.write_all(b"ping\n").await?;
    s.input.flush().await?;
    read_until(&mut s.output, "got-ping", T).await?;
    s.input.write_all(b"bye\n").await?;
    s.input.flush().await?;
    read_until(&mut s.output, "got-bye", T).await?;
    let exit = tokio::time::timeout(T, s.exit).await??;
    assert_eq!(exit, Some(4));
    Ok(())
}

/// Port 8080 of the pod (no hostPort) answers an HTTP request through port_forward, twice
/// (each forward is its own connection).
async fn port_forward_reaches_httpd_in_the_pod<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let web = container(
        "web",
        "mkdir -p /www; echo forwarded > /www/index.html; exec httpd -f -p 8080 -h /www",
    );
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [web]});
    run_pod(&h, "pf", spec, "web").await?;
    let sandbox = container_id(&h, SANDBOX).await?;
    for _ in 0..2 {
        let text = eventually("an answer through port_forward", T, || async {
            let mut s = h.rt.port_forward(&sandbox, 8080).await.ok()?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
                .await
                .ok()?;
            let mut buf = Vec::new();
            tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
                .await
                .ok()?
                .ok()?;
            let t = String::from_utf8_lossy(&buf).into_owned();
            t.starts_with("HTTP/1.").then_some(t)
        })
        .await?;
        assert!(text.contains(" 200 "), "{text}");
        assert!(text.ends_with("forwarded\n"), "{text}");
    }
    Ok(())
}

/// A running busybox that did some work: CPU time and working set are above zero, sampled
/// recently.
async fn stats_of_a_running_busybox_are_not_zero<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done; sleep 3600";
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [container("c", script)]});
    let id = run_pod(&h, "st", spec, "c").await?;
    let stats = eventually("non-zero stats", T, || async {
        let s = h.rt.stats(&id).await.ok()?;
        (s.cpu_usage_core_nano_seconds > 0 && s.memory_working_set_bytes > 0).then_some(s)
    })
    .await?;
    let age = std::time::SystemTime::now()
        .duration_since(stats.timestamp)
        .unwrap_or_default();
    if age > Duration::from_secs(60) {
        bail!("stats sampled {age:?} ago: {stats:?}");
    }
    assert!(stats.memory_usage_bytes.unwrap_or(u64::MAX) >= stats.memory_working_set_bytes);
    Ok(())
}

/// On containerd, port forwarding dials `localhost` inside the pod's network namespace, so a
/// listener bound only to the pod's 127.0.0.1 is reached (on Docker it is not: there the
/// sandbox's bridge address is dialled, see `ContainerRuntime::port_forward`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_loopback_listener_on_containerd() -> Result<()> {
    let Some(h) = Harness::start_cri("pf-loopback", |_| {}).await? else {
        return Ok(());
    };
    let web = container(
        "web",
        "mkdir -p /www; echo local > /www/index.html; exec httpd -f -p 127.0.0.1:8081 -h /www",
    );
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [web]});
    run_pod(&h, "pflo", spec, "web").await?;
    let sandbox = container_id(&h, SANDBOX).await?;
    let text = eventually("an answer from 127.0.0.1:8081 in the pod", T, || async {
        let mut s = h.rt.port_forward(&sandbox, 8081).await.ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let t = String::from_utf8_lossy(&buf).into_owned();
        t.starts_with("HTTP/1.").then_some(t)
    })
    .await?;
    assert!(text.ends_with("local\n"), "{text}");
    Ok(())
}
