//! One suite, two runtimes: each scenario here is written once over the runtime and run on
//! Docker and on containerd through the CRI (the containerd test skips, saying why, only when
//! its socket is absent). Pod start times are printed for comparison.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use futures_util::StreamExt;
use kubeedge_edge::edged::runtime::{LogOptions, LABEL_CONTAINER};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

on_both_runtimes!(web_pod_answers_on_its_host_port);
on_both_runtimes!(crashing_container_counts_restarts);
on_both_runtimes!(logs_read_back_then_delete_removes_everything);
on_both_runtimes!(exec_readiness_probes_follow_the_exit_code);
on_both_runtimes!(unpullable_image_reports_err_image_pull);
on_both_runtimes!(pods_resolve_through_the_cluster_dns, |c| {
    c.dns.cluster_dns = vec!["169.254.96.16".into()];
});

/// What container `name` of the pod printed, once it holds `want`.
async fn printed<R: TestRuntime>(h: &Harness<R>, name: &str, want: &str) -> Result<String> {
    let id = eventually("the container", LIMIT, || async {
        h.containers()
            .await
            .ok()?
            .into_iter()
            .find(|c| c.label(LABEL_CONTAINER) == Some(name))
            .map(|c| c.id)
    })
    .await?;
    eventually("its output", LIMIT, || async {
        let mut s = h.rt.logs(&id, LogOptions::default());
        let mut out = Vec::new();
        while let Some(Ok(b)) = s.next().await {
            out.extend_from_slice(&b);
        }
        let t = String::from_utf8_lossy(&out).into_owned();
        t.contains(want).then_some(t)
    })
    .await
}

/// `clusterDNS` set (EdgeMesh's 169.254.96.16): a pod's resolv.conf names it, with the
/// namespace's search path and `ndots:5`, as the kubelet writes it; `dnsConfig` adds to it,
/// and `dnsPolicy: None` takes only `dnsConfig`.
async fn pods_resolve_through_the_cluster_dns<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let show = "cat /etc/resolv.conf; echo END; sleep 3600";
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [container("c", show)],
                      "dnsConfig": {"options": [{"name": "edns0"}]}});
    h.push("insert", "pod", pod("resolver", spec)).await?;
    let text = printed(&h, "c", "END").await?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"nameserver 169.254.96.16"), "{text}");
    let search = lines
        .iter()
        .find(|l| l.starts_with("search "))
        .context("a search line")?;
    assert!(
        search.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{text}"
    );
    let options = lines
        .iter()
        .find(|l| l.starts_with("options "))
        .context("options")?;
    assert!(
        options.contains("ndots:5") && options.contains("edns0"),
        "{text}"
    );

    let none = json!({"terminationGracePeriodSeconds": 0, "dnsPolicy": "None",
                      "dnsConfig": {"nameservers": ["192.0.2.53"], "searches": ["only.example"]},
                      "containers": [container("n", show)]});
    h.push("insert", "pod", pod("nodns", none)).await?;
    let text = printed(&h, "n", "END").await?;
    assert!(text.contains("nameserver 192.0.2.53"), "{text}");
    assert!(
        !text.contains("169.254.96.16") && text.contains("only.example"),
        "{text}"
    );
    Ok(())
}

/// An image that is absent and cannot be pulled: the container waits with upstream's
/// `ErrImagePull`/`ImagePullBackOff` and a message naming the image.
async fn unpullable_image_reports_err_image_pull<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let image = "127.0.0.1:1/kubeedge-rs-test/absent:0";
    let c = json!({"name": "c", "image": image, "imagePullPolicy": "IfNotPresent"});
    h.push("insert", "pod", pod("nopull", json!({"containers": [c]})))
        .await?;
    let st = h
        .wait_status("default/nopull", LIMIT, |s| {
            cstatus(s, "c")
                .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
        .await?;
    let w = cstatus(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.clone())
        .context("waiting")?;
    assert!(w.message.unwrap_or_default().contains(image));
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    Ok(())
}

/// Exec readiness probes (ExecSync on the CRI): exit 0 makes a container ready, a failing
/// command keeps the other one unready while it runs.
async fn exec_readiness_probes_follow_the_exit_code<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let mut yes = container("yes", "touch /tmp/ready; sleep 3600");
    yes["readinessProbe"] = json!({"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1});
    let mut no = container("no", "sleep 3600");
    no["readinessProbe"] = json!({"exec": {"command": ["false"]}, "periodSeconds": 1});
    let spec = json!({"terminationGracePeriodSeconds": 0, "containers": [yes, no]});
    h.push("insert", "pod", pod("probed", spec)).await?;
    let st = h
        .wait_status("default/probed", LIMIT, |s| {
            cstatus(s, "yes").is_some_and(|c| c.ready)
                && cstatus(s, "no")
                    .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await?;
    assert!(!cstatus(&st, "no").context("no")?.ready);
    assert_eq!(condition(&st, "Ready").as_deref(), Some("False"));
    Ok(())
}

/// A web pod with a hostPort: Ready, with a pod IP, and the port answers on the node.
async fn web_pod_answers_on_its_host_port<R: TestRuntime>(h: Harness<R>, rt: &str) -> Result<()> {
    let port = free_port()?;
    let mut c = container(
        "web",
        "mkdir -p /www; echo hi > /www/index.html; exec httpd -f -p 8080 -h /www",
    );
    c["ports"] = json!([{"containerPort": 8080, "hostPort": port}]);
    let started = Instant::now();
    h.push(
        "insert",
        "pod",
        pod(
            "web",
            json!({"terminationGracePeriodSeconds": 1, "containers": [c]}),
        ),
    )
    .await?;
    let st = h
        .wait_status("default/web", LIMIT, |s| {
            condition(s, "Ready").as_deref() == Some("True")
        })
        .await?;
    eprintln!("{rt}: pod create -> Ready in {:?}", started.elapsed());
    assert!(st.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()));
    let cs = cstatus(&st, "web").context("container status")?;
    assert_eq!(cs.restart_count, 0);
    assert!(cs.image_id.contains("sha256:"), "{}", cs.image_id);
    let body = eventually("http on the hostPort", LIMIT, || async {
        http_get(port, "/index.html")
            .await
            .filter(|b| b.contains("200"))
    })
    .await?;
    assert!(body.ends_with("hi\n"), "{body}");
    Ok(())
}

/// A container that exits 3: restarted with back-off, restartCount grows, lastState keeps
/// the exit code.
async fn crashing_container_counts_restarts<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    h.push(
        "insert",
        "pod",
        pod("crash", json!({"containers": [container("c", "exit 3")]})),
    )
    .await?;
    let st = h
        .wait_status("default/crash", LIMIT, |s| {
            cstatus(s, "c").is_some_and(|c| c.restart_count >= 2)
        })
        .await?;
    let c = cstatus(&st, "c").context("c")?;
    let last = c.last_state.as_ref().and_then(|l| l.terminated.as_ref());
    assert_eq!(
        last.map(|t| t.exit_code),
        Some(3),
        "lastState holds the exit"
    );
    Ok(())
}

/// Logs with tail through the runtime, then a delete: no status, no container left.
async fn logs_read_back_then_delete_removes_everything<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let p = pod(
        "talk",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [container("c", "echo one; echo two; echo three; sleep 3600")]}),
    );
    let uid = p["metadata"]["uid"].clone();
    h.push("insert", "pod", p).await?;
    h.wait_status("default/talk", LIMIT, |s| {
        condition(s, "Ready").as_deref() == Some("True")
    })
    .await?;
    let id = h
        .containers()
        .await?
        .into_iter()
        .find(|c| c.label(LABEL_CONTAINER) == Some("c"))
        .context("container c")?
        .id;
    let text = eventually("three log lines", LIMIT, || async {
        let mut o = LogOptions::default();
        o.tail = Some(2);
        let mut s = h.rt.logs(&id, o);
        let mut out = Vec::new();
        while let Some(Ok(b)) = s.next().await {
            out.extend_from_slice(&b);
        }
        let t = String::from_utf8_lossy(&out).into_owned();
        t.contains("three").then_some(t)
    })
    .await?;
    assert_eq!(text, "two\nthree\n");
    let minimal = json!({"metadata": {"name": "talk", "namespace": "default", "uid": uid}});
    h.push("delete", "pod", minimal).await?;
    h.wait_gone("default/talk", LIMIT).await?;
    assert!(h.containers().await?.is_empty());
    Ok(())
}
