//! kill -9 in the middle of writes loses no acknowledged write.
//!
//! The test re-runs its own binary as a child (`durability_child`, inert unless the
//! environment variable below is set) that writes objects and prints each acknowledged name.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use kubeedge_apiserver::{ObjectKey, SqliteStore, Store, WriteOp};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const ENV: &str = "KUBEEDGE_APISERVER_DURABILITY_DB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_child() -> anyhow::Result<()> {
    let Some(path) = std::env::var_os(ENV) else {
        return Ok(());
    };
    let store = SqliteStore::open(path)?;
    let mut tasks = tokio::task::JoinSet::new();
    // Several concurrent writers, so kills land inside group commits.
    for w in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let key = ObjectKey::new("core/configmaps", "default", name.clone());
                store
                    .write(WriteOp::Create {
                        key,
                        value: json!({"metadata": {"name": name}}),
                    })
                    .await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {name}")?;
                out.flush()?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() -> anyhow::Result<()> {
    if std::env::var_os(ENV).is_some() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    for round in 0..3 {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "durability_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut acked = Vec::new();
        let target = 200 + round * 150;
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(name) = line.strip_prefix("ACK ") {
                    acked.push(name.to_owned());
                    if acked.len() >= target {
                        break;
                    }
                }
            }
            anyhow::Ok(())
        })
        .await
        .context("child too slow")??;
        ensure!(
            acked.len() >= target,
            "round {round}: the child stopped after {} writes",
            acked.len()
        );
        // SIGKILL while the other writers are mid-flight.
        child.start_kill()?;
        child.wait().await?;
        // Anything printed before the kill was acknowledged too.
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(name) = line.strip_prefix("ACK ") {
                acked.push(name.to_owned());
            }
        }
        let store = SqliteStore::open(&db)?;
        let stored = store
            .list(
                kubeedge_apiserver::Scope {
                    resource: "core/configmaps".into(),
                    namespace: None,
                },
                None,
                None,
            )
            .await?
            .items
            .len();
        println!(
            "round {round}: {} acknowledged, {stored} stored after kill -9",
            acked.len()
        );
        for name in &acked {
            let got = store
                .get(ObjectKey::new("core/configmaps", "default", name.clone()))
                .await?;
            ensure!(
                got.is_some(),
                "round {round}: acknowledged write {name} lost"
            );
        }
        // The revision counter survived with the objects.
        ensure!(
            store.revision() >= acked.len() as u64,
            "revision went backwards"
        );
        // Each round's child restarts its names; clear them so creates don't collide.
        let page = store
            .list(
                kubeedge_apiserver::Scope {
                    resource: "core/configmaps".into(),
                    namespace: None,
                },
                None,
                None,
            )
            .await?;
        for s in page.items {
            store
                .write(WriteOp::Delete {
                    key: s.key,
                    expected_rv: None,
                })
                .await?;
        }
    }
    Ok(())
}
