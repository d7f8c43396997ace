//! Edged on each runtime (Docker and containerd, see `on_both_runtimes!`): a web pod on a hostPort, env and valueFrom, mounted
//! configMaps and secrets that follow updates, crash backoff and restartCount, liveness and
//! readiness probes, graceful delete with preStop.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(20);

on_both_runtimes!(web_pod_serves_its_configmap_on_a_host_port);
on_both_runtimes!(env_value_from_and_secret_files_follow_updates);
on_both_runtimes!(crashing_container_backs_off_and_counts_restarts);
on_both_runtimes!(failing_liveness_restarts_and_failing_readiness_unreadies);
on_both_runtimes!(graceful_delete_runs_pre_stop_and_honours_the_grace_period);
on_both_runtimes!(host_network_pod_listens_on_the_host);
on_both_runtimes!(a_delete_push_removes_the_pod);

fn configmap(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default", "uid": format!("cm-{name}")},
           "data": data})
}

fn secret(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": "default", "uid": format!("s-{name}")},
           "data": data})
}

async fn web_pod_serves_its_configmap_on_a_host_port<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let port = free_port()?;
    h.push(
        "insert",
        "configmap",
        configmap("site", json!({"index.html": "hello from a configmap\n"})),
    )
    .await?;
    let mut c = container("web", "exec httpd -f -p 8080 -h /www");
    c["ports"] = json!([{"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}]);
    c["volumeMounts"] = json!([{"name": "site", "mountPath": "/www"}]);
    let p = pod(
        "web",
        json!({"containers": [c], "volumes": [{"name": "site", "configMap": {"name": "site"}}]}),
    );
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    h.push("insert", "pod", p).await?;

    let st = h
        .wait_status("default/web", LIMIT, |s| {
            condition(s, "Ready").as_deref() == Some("True")
        })
        .await?;
    assert_eq!(st.phase.as_deref(), Some("Running"));
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&st, kind).as_deref(), Some("True"), "{kind}");
    }
    let cs = cstatus(&st, "web").context("container status")?;
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert_eq!(cs.restart_count, 0);
    assert_eq!(cs.image, IMAGE);
    assert!(cs.image_id.contains("sha256:"), "{}", cs.image_id);
    assert!(cs
        .container_id
        .as_deref()
        .is_some_and(|c| c.starts_with(&format!("{}://", h.rt.id_scheme()))));
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    assert!(st.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()));
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(st.start_time.is_some());

    let body = eventually("http on the hostPort", LIMIT, || async {
        http_get(port, "/index.html")
            .await
            .filter(|b| b.contains("200"))
    })
    .await?;
    assert!(body.contains("hello from a configmap"), "{body}");

    // The status went out through the podpatch path: a JSON string with the pod's UID.
    let out = h.outbox().await?;
    let patch = out
        .get("default/podpatch/web")
        .context("podpatch in the outbox")?;
    assert_eq!(patch.route.operation_str(), "patch");
    assert_eq!(patch.route.source_str(), "edged");
    assert_eq!(patch.route.group_str(), "meta");
    assert!(patch.content.is_string(), "podpatch content is a string");
    let v: serde_json::Value = serde_json::from_slice(&patch.content.bytes())?;
    assert_eq!(v["metadata"]["uid"], uid.as_str());
    assert!(v["status"]["containerStatuses"].is_array());

    // A configMap update reaches the served file.
    h.push(
        "update",
        "configmap",
        configmap("site", json!({"index.html": "updated content\n"})),
    )
    .await?;
    eventually("updated file served", LIMIT, || async {
        http_get(port, "/index.html")
            .await
            .filter(|b| b.contains("updated content"))
    })
    .await?;
    Ok(())
}

async fn env_value_from_and_secret_files_follow_updates<R: TestRuntime>(
    h: Harness<R>,
    rt: &str,
) -> Result<()> {
    h.push(
        "insert",
        "configmap",
        configmap("cfg", json!({"mode": "edge", "level": "3"})),
    )
    .await?;
    // "s3cret" and "token-1" in base64.
    h.push(
        "update",
        "secret",
        secret(
            "creds",
            json!({"password": "czNjcmV0", "token": "dG9rZW4tMQ=="}),
        ),
    )
    .await?;
    let mut c = container("app", "sleep 3600");
    c["env"] = json!([
        {"name": "PLAIN", "value": "v1"},
        {"name": "EXPANDED", "value": "x-$(PLAIN)"},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]);
    c["envFrom"] = json!([{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]);
    c["workingDir"] = json!("/etc");
    c["securityContext"] = json!({"runAsUser": 1234});
    c["resources"] = json!({"limits": {"memory": "64Mi", "cpu": "500m"}});
    let mut init = container("init", "echo init-done > /scratch/init");
    init["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}]);
    c["volumeMounts"] = json!([
        {"name": "creds", "mountPath": "/etc/creds"},
        {"name": "info", "mountPath": "/etc/podinfo"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]);
    let p = pod(
        "env",
        json!({"nodeName": h.node, "initContainers": [init], "containers": [c], "volumes": [
            {"name": "creds", "secret": {"secretName": "creds"}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            {"name": "scratch", "emptyDir": {}},
        ]}),
    );
    h.push("insert", "pod", p).await?;
    let st = h
        .wait_status("default/env", LIMIT, |s| {
            s.phase.as_deref() == Some("Running") && cstatus(s, "app").is_some_and(|c| c.ready)
        })
        .await?;
    let id = cstatus(&st, "app")
        .and_then(|c| c.container_id.clone())
        .context("id")?;
    let id = runtime_id(&id).to_owned();
    let exec = |cmd: &str| {
        let rt = h.rt.clone();
        let id = id.clone();
        let cmd = cmd.to_owned();
        async move {
            let out = rt
                .exec_sync(
                    &id,
                    vec!["sh".into(), "-c".into(), cmd],
                    Duration::from_secs(5),
                )
                .await?;
            anyhow::Ok(String::from_utf8_lossy(&out.output).into_owned())
        }
    };
    let env = exec("env").await?;
    let pod_ip = st.pod_ip.clone().unwrap_or_default();
    for want in [
        "PLAIN=v1".to_owned(),
        "EXPANDED=x-v1".to_owned(),
        "MODE=edge".to_owned(),
        "PASSWORD=s3cret".to_owned(),
        "POD_NAME=env".to_owned(),
        format!("POD_IP={pod_ip}"),
        format!("NODE={}", h.node),
        "CFG_level=3".to_owned(),
        "CFG_mode=edge".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in:\n{env}");
    }
    assert_eq!(exec("cat /etc/creds/password").await?, "s3cret");
    assert_eq!(exec("cat /etc/creds/token").await?, "token-1");
    assert_eq!(exec("cat /etc/podinfo/name").await?, "env");
    assert!(exec("cat /etc/podinfo/labels")
        .await?
        .contains("app=\"env\""));
    assert_eq!(
        exec("cat /scratch/init").await?,
        "init-done\n",
        "init container ran first"
    );
    assert_eq!(condition(&st, "Initialized").as_deref(), Some("True"));
    assert_eq!(exec("pwd").await?, "/etc\n", "workingDir");
    assert_eq!(exec("id -u").await?, "1234\n", "runAsUser");
    // Limits: 64 MiB and half a CPU (Docker-specific: read back from the engine's own
    // HostConfig; on containerd the cgroup files below say the same).
    if rt == "docker" {
        let out = std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
                &id,
            ])
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "67108864 500000000"
        );
    } else {
        // cgroup v2 files, else v1's.
        let mem = exec(
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        )
        .await?;
        let cpu = exec(
            "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        )
        .await?;
        assert!(mem.ends_with("67108864\n"), "{mem}");
        assert!(
            cpu.ends_with("50000 100000\n") || cpu.ends_with("\n50000\n") || cpu == "50000\n",
            "{cpu}"
        );
    }

    // A secret update reaches the mounted files ("n3w" = bjN3).
    h.push(
        "update",
        "secret",
        secret("creds", json!({"password": "bjN3"})),
    )
    .await?;
    eventually("secret file updated", LIMIT, || async {
        exec("cat /etc/creds/password; ls /etc/creds")
            .await
            .ok()
            .filter(|o| o.starts_with("n3w") && !o.contains("token"))
    })
    .await?;
    Ok(())
}

async fn crashing_container_backs_off_and_counts_restarts<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    h.push(
        "insert",
        "pod",
        pod(
            "crash",
            json!({"containers": [container("c", "echo bye; exit 3")]}),
        ),
    )
    .await?;
    let mut seen = Vec::new();
    let mut backoff_seen = false;
    let mut rx = h.handle.statuses();
    let start = Instant::now();
    while seen.len() < 4 {
        anyhow::ensure!(start.elapsed() < LIMIT, "restarts so far: {seen:?}");
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        let Some(st) = h.handle.status("default/crash") else {
            continue;
        };
        let Some(c) = cstatus(&st, "c") else { continue };
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        if waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
            backoff_seen = true;
            let last = c.last_state.as_ref().and_then(|l| l.terminated.as_ref());
            assert_eq!(
                last.map(|t| t.exit_code),
                Some(3),
                "lastState holds the exit"
            );
        }
        let n = c.restart_count as usize;
        if n > seen.len() {
            seen.push(start.elapsed());
        }
    }
    assert!(backoff_seen, "CrashLoopBackOff reported while waiting");
    // Backoff: immediate, 300 ms, 600 ms, 1.2 s: the gaps grow.
    let gap = |i: usize| seen[i] - seen[i - 1];
    assert!(gap(3) > gap(1), "gaps {seen:?}");
    assert!(gap(3) >= Duration::from_millis(500), "gaps {seen:?}");
    Ok(())
}

async fn failing_liveness_restarts_and_failing_readiness_unreadies<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let mut live = container("live", "sleep 3600");
    live["livenessProbe"] = json!({"exec": {"command": ["cat", "/tmp/missing"]},
                                   "periodSeconds": 1, "failureThreshold": 1});
    let mut unready = container("unready", "sleep 3600");
    unready["readinessProbe"] = json!({"exec": {"command": ["false"]}, "periodSeconds": 1});
    h.push(
        "insert",
        "pod",
        pod(
            "probes",
            json!({"terminationGracePeriodSeconds": 0, "containers": [live, unready]}),
        ),
    )
    .await?;
    let st = h
        .wait_status("default/probes", LIMIT, |s| {
            cstatus(s, "live").is_some_and(|c| c.restart_count >= 1)
        })
        .await?;
    let last = cstatus(&st, "live")
        .and_then(|c| c.last_state.clone())
        .and_then(|l| l.terminated);
    assert!(last.is_some(), "the killed instance shows as lastState");
    let st = h
        .wait_status("default/probes", LIMIT, |s| {
            s.phase.as_deref() == Some("Running")
                && cstatus(s, "unready")
                    .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await?;
    let u = cstatus(&st, "unready").context("status")?;
    assert!(!u.ready, "failing readiness probe: not ready");
    assert_eq!(u.restart_count, 0, "readiness never restarts");
    assert_eq!(condition(&st, "Ready").as_deref(), Some("False"));
    assert_eq!(condition(&st, "ContainersReady").as_deref(), Some("False"));
    Ok(())
}

async fn graceful_delete_runs_pre_stop_and_honours_the_grace_period<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let out = h.dir.path().join("out");
    std::fs::create_dir_all(&out)?;
    // It ignores SIGTERM: only the grace period's SIGKILL ends it.
    let mut c = container("app", "trap '' TERM; sleep 3600 & wait");
    c["lifecycle"] =
        json!({"preStop": {"exec": {"command": ["sh", "-c", "date +%s > /out/prestop"]}}});
    c["volumeMounts"] = json!([{"name": "out", "mountPath": "/out"}]);
    let mut p = pod(
        "grace",
        json!({"terminationGracePeriodSeconds": 2, "containers": [c],
               "volumes": [{"name": "out", "hostPath": {"path": out.display().to_string()}}]}),
    );
    h.push("insert", "pod", p.clone()).await?;
    h.wait_status("default/grace", LIMIT, |s| {
        cstatus(s, "app").is_some_and(|c| c.ready)
    })
    .await?;
    // kubectl delete: an update with deletionTimestamp.
    p["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(2);
    let t0 = Instant::now();
    h.push("update", "pod", p).await?;
    h.wait_gone("default/grace", LIMIT).await?;
    let took = t0.elapsed();
    assert!(out.join("prestop").exists(), "preStop ran");
    assert!(
        took >= Duration::from_millis(1900),
        "stopped after {took:?}, before the grace period"
    );
    assert!(
        took < Duration::from_secs(6),
        "grace not enforced: {took:?}"
    );
    assert!(h.containers().await?.is_empty(), "containers removed");
    // Edged deletes the pod upstream once it is stopped.
    let outbox = h.outbox().await?;
    let del = outbox.get("default/pod/grace").context("pod delete sent")?;
    assert_eq!(del.route.operation_str(), "delete");
    let v: serde_json::Value = del.content.decode()?;
    assert_eq!(v["gracePeriodSeconds"], 0);
    Ok(())
}

async fn host_network_pod_listens_on_the_host<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let port = free_port()?;
    let mut c = container("web", &format!("exec httpd -f -p 127.0.0.1:{port} -h /etc"));
    c["readinessProbe"] = json!({"tcpSocket": {"port": port}, "periodSeconds": 1});
    h.push(
        "insert",
        "pod",
        pod("hostnet", json!({"hostNetwork": true, "containers": [c]})),
    )
    .await?;
    let st = h
        .wait_status("default/hostnet", LIMIT, |s| {
            condition(s, "Ready").as_deref() == Some("True")
        })
        .await?;
    assert_eq!(
        st.pod_ip, st.host_ip,
        "a host-network pod has the node's address"
    );
    eventually("http on the host's loopback", LIMIT, || async {
        http_get(port, "/").await
    })
    .await?;
    Ok(())
}

async fn a_delete_push_removes_the_pod<R: TestRuntime>(h: Harness<R>, _rt: &str) -> Result<()> {
    // What the cloud sends at reconnect for a pod deleted while the edge was offline.
    let p = pod(
        "victim",
        json!({"terminationGracePeriodSeconds": 1, "containers": [container("c", "sleep 3600")]}),
    );
    h.push("insert", "pod", p.clone()).await?;
    h.wait_status("default/victim", LIMIT, |s| {
        condition(s, "Ready").as_deref() == Some("True")
    })
    .await?;
    let minimal = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "victim", "namespace": "default", "uid": p["metadata"]["uid"]}});
    h.push("delete", "pod", minimal).await?;
    h.wait_gone("default/victim", LIMIT).await?;
    assert!(h.containers().await?.is_empty());
    assert!(
        !h.outbox().await?.contains_key("default/pod/victim"),
        "the cloud already deleted it: no delete is sent back"
    );
    Ok(())
}
