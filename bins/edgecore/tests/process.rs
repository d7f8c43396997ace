//! The edgecore binary as a process: joins with a token, persists pushes, survives kill -9
//! without losing an acknowledged write, redelivery fills the rest, and SIGTERM stops it cleanly.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kubeedge_cloud::certs::{unix_now, FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::{CloudHub, HubConfig};
use kubeedge_proto::{Content, Message, Route};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("timed out: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn write_config(dir: &Path, ws: &str, https: &str, token: &str) -> Result<std::path::PathBuf> {
    let yaml = format!(
        "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase:\n  dataSource: {db}\nmodules:\n  edgeHub:\n    heartbeat: 1\n    messageQPS: 100000\n    messageBurst: 100000\n    token: {token}\n    httpServer: https://{https}\n    tlsCaFile: {d}/ca/rootCA.crt\n    tlsCertFile: {d}/certs/server.crt\n    tlsPrivateKeyFile: {d}/certs/server.key\n    websocket:\n      server: {ws}\n  edged:\n    hostnameOverride: edge-1\n",
        db = dir.join("edgecore.db").display(),
        d = dir.display(),
    );
    let path = dir.join("edgecore.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

fn spawn(config: &Path) -> Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()?)
}

fn pod(i: usize) -> Message {
    let content = Content::json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("u{i}"), "resourceVersion": "1"}
    }))
    .unwrap_or_default();
    Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            "insert",
            format!("default/pod/p{i}"),
        ),
        content,
    )
    .with_resource_version("1")
}

fn rows(db: &Path) -> Result<usize> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(
        conn.query_row("SELECT count(*) FROM meta WHERE type = 'pod'", [], |r| {
            r.get::<_, i64>(0)
        })? as usize,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acked_push_and_sigterm_is_clean() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Arc::new(Pki::load_or_create(
        &FsCertStore::in_dir(dir.path().join("cloud")),
        PkiConfig::default(),
    )?);
    let mut cfg = HubConfig::default();
    cfg.keepalive_interval = Duration::from_secs(3);
    cfg.outbox.resend_after = Duration::from_millis(300);
    cfg.outbox.capacity = 2000;
    let (hub, down, _up) = CloudHub::new(pki.clone(), cfg);
    let ws_l = TcpListener::bind("127.0.0.1:0").await?;
    let https_l = TcpListener::bind("127.0.0.1:0").await?;
    let (ws, https) = (ws_l.local_addr()?, https_l.local_addr()?);
    let cancel = CancellationToken::new();
    {
        let (h, c) = (hub.clone(), cancel.clone());
        tokio::spawn(async move { h.serve_websocket(ws_l, c).await });
        let (h, c) = (hub.clone(), cancel.clone());
        tokio::spawn(async move { h.serve_https(https_l, c).await });
    }
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir)?;
    let token = pki.issue_token(unix_now())?.to_string();
    let config = write_config(&edge_dir, &ws.to_string(), &https.to_string(), &token)?;
    let db = edge_dir.join("edgecore.db");

    let mut child = spawn(&config)?;
    eventually("edgecore joins", Duration::from_secs(30), || {
        hub.connected() == 1
    })
    .await?;

    const N: usize = 1000;
    let d = down.clone();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            d.send("edge-1", pod(i)).await?;
        }
        anyhow::Ok(())
    });
    // Kill -9 halfway through.
    eventually("half acked", Duration::from_secs(30), || {
        producer.is_finished() && down.queued("edge-1") <= N / 2
    })
    .await?;
    child.kill()?;
    child.wait()?;
    eventually("session gone", Duration::from_secs(10), || {
        hub.connected() == 0
    })
    .await?;
    let unacked = down.queued("edge-1");
    let acked = N - unacked;
    let stored = rows(&db)?;
    assert!(
        stored >= acked,
        "{acked} pushes were acked but only {stored} are stored"
    );
    assert!(
        unacked > 0,
        "the kill must land mid-burst (unacked {unacked})"
    );

    // Restart: the cloud redelivers every unacked push.
    let mut child = spawn(&config)?;
    eventually("all acked after restart", Duration::from_secs(60), || {
        down.queued("edge-1") == 0
    })
    .await?;
    assert_eq!(rows(&db)?, N);

    // SIGTERM: a clean exit.
    let pid = child.id().to_string();
    // The shell builtin: no procps needed.
    Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()?;
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    assert!(status.success(), "{status}");
    eventually("websocket closed", Duration::from_secs(10), || {
        hub.connected() == 0
    })
    .await?;
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn default_and_min_config_print_and_parse() -> Result<()> {
    for flag in ["--defaultconfig", "--minconfig"] {
        let out = Command::new(env!("CARGO_BIN_EXE_edgecore"))
            .arg(flag)
            .output()?;
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout)?;
        kubeedge_edge::config::EdgeCoreConfig::from_yaml(&text).context("parses back")?;
        assert!(text.contains("edgecore.config.kubeedge.io/v1alpha2"));
    }
    Ok(())
}

#[tokio::test]
async fn starts_offline_with_its_stored_pods() -> Result<()> {
    // No cloud at all: edgecore starts, opens its store and keeps running.
    let dir = tempfile::tempdir()?;
    let store = kubeedge_edge::meta::SqliteStore::open(&dir.path().join("edgecore.db"))?.0;
    let db = kubeedge_edge::meta::MetaDb::spawn(store);
    db.apply(vec![kubeedge_edge::meta::MetaOp::Upsert(
        kubeedge_edge::meta::MetaRecord {
            key: "default/pod/p".into(),
            resource_type: "pod".into(),
            value: "{\"kind\":\"Pod\"}".into(),
        },
    )])
    .await?;
    drop(db);
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?; // nothing listens after drop
    let token = format!("{}.a.b.c", "0".repeat(64));
    let config = write_config(dir.path(), &closed.to_string(), &closed.to_string(), &token)?;
    let mut cfg =
        kubeedge_edge::config::EdgeCoreConfig::from_yaml(&std::fs::read_to_string(&config)?)?;
    cfg.modules.edge_hub.rotate_certificates = false;
    let running = kubeedge_edge::start(cfg).await?;
    assert_eq!(running.stored_pods, 1);
    assert!(running.db.get("default/pod/p").await?.is_some());
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
