//! MetaServer end to end: an edgecore (the library's `start`) joined to a real CloudHub, the
//! stock kubectl against its MetaServer on 127.0.0.1 (port 0). Reads come from the node's
//! store, online or offline; writes travel to the cloud as Applications.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::*;
use kubeedge_cloud::hub::HubConfig;
use kubeedge_edge::config::EdgeCoreConfig;
use kubeedge_proto::{Application, ApplicationVerb, Content, Message, Route};
use tokio::io::{AsyncBufReadExt, BufReader};

fn kubectl_path() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

async fn kubectl(
    server: &str,
    home: &std::path::Path,
    args: &[&str],
) -> Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(kubectl_path());
    cmd.arg("--server")
        .arg(format!("http://{server}"))
        .arg("--cache-dir")
        .arg(home.join("kubectl-cache"))
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = within("kubectl", cmd.output()).await??;
    Ok(out)
}

async fn kubectl_ok(server: &str, home: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = kubectl(server, home, args).await?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn push(rtype: &str, ns: &str, name: &str, body: serde_json::Value) -> Message {
    Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            "insert",
            format!("{ns}/{rtype}/{name}"),
        ),
        Content::json(&body).expect("json"),
    )
    .with_resource_version("5")
}

fn pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "5"},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"phase": "Running"}
    })
}

/// An edgecore with MetaServer on 127.0.0.1:0 joined to `cloud`.
async fn edgecore(cloud: &Cloud) -> Result<(kubeedge_edge::Running, String)> {
    let (path, _db) = cloud.edge_config()?;
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(
        "  metaManager:\n    metaServer:\n      enable: true\n      server: 127.0.0.1:0\n",
    );
    let config = EdgeCoreConfig::from_yaml(&text)?;
    let running = kubeedge_edge::start(config).await?;
    let addr = running
        .metaserver
        .context("metaserver enabled")?
        .to_string();
    Ok((running, addr))
}

/// The next Application the edge sends to the cloud.
async fn next_application(cloud: &mut Cloud) -> Result<Message> {
    within("application", async {
        loop {
            let up = cloud.up.recv().await.context("hub closed")?;
            if up.msg.route.group_str() == "dynamiccontroller" {
                return anyhow::Ok(up.msg);
            }
        }
    })
    .await?
}

/// The cloud's answer to `request`.
fn application_reply(request: &Message, app: &Application) -> Result<Message> {
    Ok(Message::new(
        Route::new(
            "dynamiccontroller",
            "resource",
            "applicationResponse",
            "ignore/Application/ignore",
        ),
        Content::json(app)?,
    )
    .with_parent(request.id().clone()))
}

/// Wait until the edge has committed each of `keys`.
async fn stored(running: &kubeedge_edge::Running, keys: &[&str]) -> Result<()> {
    within("pushes stored", async {
        for k in keys {
            while running.db.get(k).await?.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn kubectl_reads_what_the_node_holds_and_writes_go_to_the_cloud() -> Result<()> {
    trace();
    let mut cloud = cloud(HubConfig::default()).await?;
    let (running, addr) = edgecore(&cloud).await?;
    let home = tempfile::tempdir()?;
    within("edge joins", async {
        while cloud.hub.connected() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;

    cloud
        .down
        .send("edge-1", push("pod", "default", "web", pod("web")))
        .await?;
    cloud
        .down
        .send(
            "edge-1",
            push("configmap", "default", "cfg", serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "default", "uid": "u-cfg", "resourceVersion": "6"},
                "data": {"index.html": "hello"}})),
        )
        .await?;
    cloud
        .down
        .send(
            "edge-1",
            push("secret", "default", "sec", serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "sec", "namespace": "default", "uid": "u-sec", "resourceVersion": "7"},
                "data": {"k": "dg=="}})),
        )
        .await?;
    stored(
        &running,
        &[
            "default/pod/web",
            "default/configmap/cfg",
            "default/secret/sec",
        ],
    )
    .await?;

    let pods = kubectl_ok(&addr, home.path(), &["get", "pods", "-A"]).await?;
    assert!(pods.contains("web") && pods.contains("Running"), "{pods}");
    let cm = kubectl_ok(
        &addr,
        home.path(),
        &[
            "get",
            "configmap",
            "cfg",
            "-o",
            "jsonpath={.data.index\\.html}",
        ],
    )
    .await?;
    assert_eq!(cm, "hello");
    let sec = kubectl_ok(
        &addr,
        home.path(),
        &["get", "secrets", "-n", "default", "-o", "name"],
    )
    .await?;
    assert_eq!(sec.trim(), "secret/sec");

    // A resource MetaServer does not serve: 404, as kubectl reports it.
    let out = kubectl(&addr, home.path(), &["get", "deployments"]).await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("doesn't have a resource type"), "{err}");

    // get -w: a pod pushed later shows up on the watch.
    let mut watch = tokio::process::Command::new(kubectl_path())
        .arg("--server")
        .arg(format!("http://{addr}"))
        .arg("--cache-dir")
        .arg(home.path().join("kubectl-cache"))
        .args(["get", "pods", "-w", "--no-headers"])
        .env("HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let first = within("initial list", lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(first.starts_with("web"), "{first}");
    cloud
        .down
        .send("edge-1", push("pod", "default", "late", pod("late")))
        .await?;
    let next = within("watch event", lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(next.starts_with("late"), "{next}");
    drop(watch);

    // A write goes to the cloud as an Application; the cloud's answer is kubectl's answer.
    let label = tokio::spawn({
        let addr = addr.clone();
        let home = home.path().to_owned();
        async move { kubectl(&addr, &home, &["label", "pod", "web", "tier=edge"]).await }
    });
    let app_msg = next_application(&mut cloud).await?;
    assert_eq!(app_msg.route.source_str(), "metaserver");
    assert_eq!(app_msg.route.resource, "null");
    let app: Application = app_msg.content.decode()?;
    assert!(matches!(app.verb, ApplicationVerb::Patch));
    assert_eq!(app.key, "/core/v1/pods/default/web");
    assert_eq!(app.nodename, "edge-1");
    let mut labelled = pod("web");
    labelled["metadata"]["labels"] = serde_json::json!({"tier": "edge"});
    let reply_app = app.approved(Some(serde_json::to_vec(&labelled)?));
    let reply = application_reply(&app_msg, &reply_app)?;
    cloud.down.send("edge-1", reply).await?;
    let out = within("kubectl label", label).await???;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/web labeled"));

    // A rejected application: the cloud's Status is kubectl's error.
    let del = tokio::spawn({
        let addr = addr.clone();
        let home = home.path().to_owned();
        async move { kubectl(&addr, &home, &["delete", "configmap", "cfg"]).await }
    });
    let app_msg = next_application(&mut cloud).await?;
    let app: Application = app_msg.content.decode()?;
    assert!(matches!(app.verb, ApplicationVerb::Delete));
    let rejected = app.rejected(kubeedge_proto::StatusError::failure(
        403,
        "Forbidden",
        "configmaps \"cfg\" is forbidden: node edge-1 may not delete it",
    ));
    let reply = application_reply(&app_msg, &rejected)?;
    cloud.down.send("edge-1", reply).await?;
    let out = within("kubectl delete", del).await???;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden"), "{err}");

    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test]
async fn offline_start_serves_the_store_and_refuses_writes_clearly() -> Result<()> {
    trace();
    let cloud = cloud(HubConfig::default()).await?;
    let home = tempfile::tempdir()?;
    {
        let (running, _addr) = edgecore(&cloud).await?;
        within("edge joins", async {
            while cloud.hub.connected() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await?;
        cloud
            .down
            .send("edge-1", push("pod", "default", "kept", pod("kept")))
            .await?;
        stored(&running, &["default/pod/kept"]).await?;
        running.shutdown(Duration::from_secs(5)).await;
    }
    // The edge restarts with no cloud to reach (its websocket address now refuses).
    let (path, _db) = cloud.edge_config()?;
    let mut text = std::fs::read_to_string(&path)?.replace(&cloud.ws.to_string(), "127.0.0.1:1");
    text.push_str(
        "  metaManager:\n    metaServer:\n      enable: true\n      server: 127.0.0.1:0\n",
    );
    let running = kubeedge_edge::start(EdgeCoreConfig::from_yaml(&text)?).await?;
    assert_eq!(running.stored_pods, 1);
    let addr = running.metaserver.context("metaserver")?.to_string();
    let pods = kubectl_ok(&addr, home.path(), &["get", "pods", "-o", "name"]).await?;
    assert_eq!(pods.trim(), "pod/kept");
    let out = kubectl(&addr, home.path(), &["label", "pod", "kept", "a=b"]).await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cloud is unreachable"), "{err}");
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
