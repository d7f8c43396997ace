//! The edgecore binary as a process: joins with a token, persists pushes, survives kill -9
//! without losing an acknowledged write, redelivery fills the rest, SIGTERM stops it cleanly,
//! and churn keeps its memory flat.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result};
use kubeedge_bench::{pod, rss_kb, wait_until, TestCloud};
use kubeedge_cloud::hub::HubConfig;
use tokio::net::TcpListener;

/// An edgecore process, killed when dropped (a failed test never leaves one behind).
struct Edgecore(Child);

impl Drop for Edgecore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> Result<Edgecore> {
    Ok(Edgecore(
        Command::new(env!("CARGO_BIN_EXE_edgecore"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?,
    ))
}

fn rows(db: &Path) -> Result<usize> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(
        conn.query_row("SELECT count(*) FROM meta WHERE type = 'pod'", [], |r| {
            r.get::<_, i64>(0)
        })? as usize,
    )
}

fn p(i: usize, op: &str) -> kubeedge_proto::Message {
    pod(&format!("p{i}"), &format!("u{i}"), op, 0)
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acked_push_and_sigterm_is_clean() -> Result<()> {
    let mut cfg = HubConfig::default();
    cfg.keepalive_interval = Duration::from_secs(3);
    cfg.outbox.resend_after = Duration::from_millis(300);
    cfg.outbox.capacity = 2000;
    let cloud = TestCloud::start(cfg).await?;
    let (hub, down) = (cloud.hub.clone(), cloud.down.clone());
    let (config, db) = cloud.edge_config()?;

    let mut child = spawn(&config)?;
    wait_until("edgecore joins", LIMIT, || hub.connected() == 1).await?;

    const N: usize = 1000;
    let d = down.clone();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            d.send("edge-1", p(i, "insert")).await?;
        }
        anyhow::Ok(())
    });
    // Kill -9 halfway through.
    wait_until("half acked", LIMIT, || {
        producer.is_finished() && down.queued("edge-1") <= N / 2
    })
    .await?;
    child.0.kill()?;
    child.0.wait()?;
    wait_until("session gone", LIMIT, || hub.connected() == 0).await?;
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
    wait_until("all acked after restart", Duration::from_secs(60), || {
        down.queued("edge-1") == 0
    })
    .await?;
    assert_eq!(rows(&db)?, N);

    // SIGTERM (the shell's builtin kill: no procps needed): a clean exit.
    let pid = child.0.id();
    Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()?;
    let status = tokio::task::spawn_blocking(move || child.0.wait()).await??;
    assert!(status.success(), "{status}");
    wait_until("websocket closed", LIMIT, || hub.connected() == 0).await?;
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
    let db_path = dir.path().join("edgecore.db");
    let store = kubeedge_edge::meta::SqliteStore::open(&db_path)?.0;
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
    // An address nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .to_string();
    let mut cfg = kubeedge_edge::config::EdgeCoreConfig::default();
    cfg.database.data_source = db_path;
    cfg.modules.edge_hub.token = format!("{}.a.b.c", "0".repeat(64));
    cfg.modules.edge_hub.http_server = format!("https://{closed}");
    cfg.modules.edge_hub.websocket.server = closed;
    cfg.modules.edge_hub.tls_ca_file = dir.path().join("ca.crt");
    cfg.modules.edge_hub.tls_cert_file = dir.path().join("server.crt");
    cfg.modules.edge_hub.tls_private_key_file = dir.path().join("server.key");
    cfg.modules.edge_hub.rotate_certificates = false;
    // No MQTT broker on the fixed default port in tests.
    cfg.modules.event_bus.enable = false;
    let running = kubeedge_edge::start(cfg).await?;
    assert_eq!(running.stored_pods, 1);
    assert!(running.db.get("default/pod/p").await?.is_some());
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// The short form of the soak (`edge-bench --soak 30` runs the 30-minute one): pods created
/// and deleted in rounds; after a warm-up (15 rounds, 6,000 messages: past every bounded
/// cache) RSS stays within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_rss_flat() -> Result<()> {
    let mut cfg = HubConfig::default();
    cfg.outbox.capacity = 10_000;
    let cloud = TestCloud::start(cfg).await?;
    let (hub, down) = (cloud.hub.clone(), cloud.down.clone());
    let (config, db) = cloud.edge_config()?;
    let child = spawn(&config)?;
    let pid = child.0.id();
    wait_until("joins", LIMIT, || hub.connected() == 1).await?;
    let mut after_warmup = 0;
    for round in 0..40 {
        // Each round is a new version of the pods, as an API server would number them.
        let rv = (round + 1).to_string();
        for i in 0..200 {
            down.send("edge-1", p(i, "insert").with_resource_version(&rv))
                .await?;
        }
        for i in 0..200 {
            down.send("edge-1", p(i, "delete").with_resource_version(&rv))
                .await?;
        }
        wait_until("round acked", LIMIT, || down.queued("edge-1") == 0).await?;
        if round == 14 {
            after_warmup = rss_kb(pid);
        }
    }
    let end = rss_kb(pid);
    assert!(after_warmup > 0 && end > 0);
    let growth = end as f64 / after_warmup as f64 - 1.0;
    assert!(
        growth < 0.10,
        "RSS grew {:.1} % ({after_warmup} kB -> {end} kB)",
        growth * 100.0
    );
    assert_eq!(rows(&db)?, 0, "every pod deleted");
    Ok(())
}
