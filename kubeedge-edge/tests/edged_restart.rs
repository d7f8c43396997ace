//! On Docker and on containerd: kill -9 of an edgecore-like process (this test binary, re-run as a child that runs edged
//! on a store file), then a restart: the running containers are adopted with the same ids,
//! nothing is duplicated, restart counts carry on, and containers that no stored pod owns
//! (an orphan, and a pod deleted while edged was down) are removed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use kubeedge_edge::edged::runtime::{
    ContainerConfig, ContainerRuntime, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, SANDBOX,
};
use kubeedge_edge::edged::{DockerRuntime, Edged, Link};
use kubeedge_edge::meta::{MetaDb, MetaOp, MetaRecord, SqliteStore};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

/// The child: edged on `EDGED_CHILD_DIR`'s store for node `EDGED_CHILD_NODE`, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edged_child() -> Result<()> {
    let (Ok(dir), Ok(node)) = (
        std::env::var("EDGED_CHILD_DIR"),
        std::env::var("EDGED_CHILD_NODE"),
    ) else {
        return Ok(()); // Not a child: nothing to do.
    };
    let dir = Path::new(&dir);
    let (store, _) = SqliteStore::open(&dir.join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let cfg = test_config(&node, &dir.join("edged"));
    let (_cloud_tx, cloud_rx) = watch::channel(None);
    let link = Link::new(db, cloud_rx);
    // Bounded, so that a child never outlives a failed parent for long.
    let bound = Duration::from_secs(90);
    let cancel = CancellationToken::new();
    if std::env::var("EDGED_CHILD_RUNTIME").as_deref() == Ok("containerd") {
        let rt = Arc::new(cri_runtime().context("containerd")?);
        let (edged, _tx, _handle) = Edged::new(cfg, rt, link);
        let _ = tokio::time::timeout(bound, edged.run(cancel)).await;
    } else {
        let rt = Arc::new(DockerRuntime::new("unix:///var/run/docker.sock"));
        let (edged, _tx, _handle) = Edged::new(cfg, rt, link);
        let _ = tokio::time::timeout(bound, edged.run(cancel)).await;
    }
    Ok(())
}

struct ChildEdged(Child);

impl Drop for ChildEdged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path, node: &str, runtime: &str) -> Result<ChildEdged> {
    Ok(ChildEdged(
        Command::new(std::env::current_exe()?)
            .args(["edged_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("EDGED_CHILD_DIR", dir)
            .env("EDGED_CHILD_NODE", node)
            .env("EDGED_CHILD_RUNTIME", runtime)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?,
    ))
}

struct Cleanup<R: TestRuntime>(Arc<R>, String);

impl<R: TestRuntime> Drop for Cleanup<R> {
    fn drop(&mut self) {
        self.0.cleanup(&self.1);
    }
}

async fn store_pod(db: &MetaDb, p: &serde_json::Value) -> Result<()> {
    let name = p["metadata"]["name"].as_str().context("name")?;
    db.apply(vec![MetaOp::Upsert(MetaRecord {
        key: format!("default/pod/{name}"),
        resource_type: "pod".into(),
        value: p.to_string(),
    })])
    .await?;
    Ok(())
}

type Containers = Vec<(String, String, String, u32, bool)>;

/// (pod uid, container name, id, attempt, running) of the node's containers.
async fn containers<R: ContainerRuntime>(rt: &R, node: &str) -> Result<Containers> {
    let mut out: Containers = rt
        .list_containers(&[(LABEL_NODE, node)])
        .await?
        .into_iter()
        .map(|c| {
            (
                c.label(LABEL_POD_UID).unwrap_or_default().to_owned(),
                c.label(LABEL_CONTAINER).unwrap_or_default().to_owned(),
                c.id.clone(),
                c.label(LABEL_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                c.running,
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

fn of(list: &Containers, uid: &str) -> BTreeSet<String> {
    list.iter()
        .filter(|c| c.0 == uid)
        .map(|c| c.2.clone())
        .collect()
}

/// The scenario on each runtime (its own child processes, so not through the harness).
mod kill_9_then_restart_adopts_containers_and_removes_orphans {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker() -> Result<()> {
        let rt = DockerRuntime::new("unix:///var/run/docker.sock");
        ensure_image(&rt).await?;
        super::kill_9_then_restart_adopts_containers_and_removes_orphans(Arc::new(rt), "docker")
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn containerd() -> Result<()> {
        let Some(rt) = cri_runtime() else {
            return Ok(());
        };
        super::kill_9_then_restart_adopts_containers_and_removes_orphans(Arc::new(rt), "containerd")
            .await
    }
}

async fn kill_9_then_restart_adopts_containers_and_removes_orphans<R: TestRuntime>(
    rt: Arc<R>,
    runtime: &str,
) -> Result<()> {
    let node = node_name("restart");
    let _cleanup = Cleanup(rt.clone(), node.clone());
    let dir = tempfile::tempdir()?;
    let (store, _) = SqliteStore::open(&dir.path().join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let keep = pod(
        "keep",
        json!({"containers": [container("app", "sleep 3600")]}),
    );
    let gone = pod(
        "gone",
        json!({"containers": [container("app", "sleep 3600")]}),
    );
    let crash = pod("crash", json!({"containers": [container("app", "exit 1")]}));
    for p in [&keep, &gone, &crash] {
        store_pod(&db, p).await?;
    }
    let uid = |p: &serde_json::Value| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let (keep_uid, gone_uid, crash_uid) = (uid(&keep), uid(&gone), uid(&crash));

    let mut child = spawn_child(dir.path(), &node, runtime)?;
    let before = eventually("pods running, crash restarted twice", LIMIT, || async {
        let list = containers(rt.as_ref(), &node).await.ok()?;
        let running = |u: &str| list.iter().filter(|c| c.0 == u && c.4).count();
        let crash_attempt = list
            .iter()
            .filter(|c| c.0 == crash_uid && c.1 == "app")
            .map(|c| c.3)
            .max()
            .unwrap_or(0);
        (running(&keep_uid) == 2 && running(&gone_uid) == 2 && crash_attempt >= 2).then_some(list)
    })
    .await?;
    let crash_before = before
        .iter()
        .filter(|c| c.0 == crash_uid && c.1 == "app")
        .map(|c| c.3)
        .max()
        .unwrap_or(0);

    // kill -9.
    child.0.kill()?;
    child.0.wait()?;
    // While edged is down: "gone" is deleted (as MetaManager does on a delete push), and a
    // container no stored pod owns appears.
    db.apply(vec![MetaOp::DeletePod {
        key: "default/pod/gone".into(),
        uid: gone_uid.clone(),
    }])
    .await?;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(LABEL_NODE.to_owned(), node.clone());
    labels.insert(LABEL_POD_UID.to_owned(), "uid-orphan".to_owned());
    labels.insert(LABEL_POD_NAME.to_owned(), "orphan".to_owned());
    labels.insert(LABEL_POD_NAMESPACE.to_owned(), "default".to_owned());
    // A sandbox (on the CRI the only kind that stands alone) of no stored pod.
    labels.insert(LABEL_CONTAINER.to_owned(), SANDBOX.to_owned());
    let mut orphan_cfg = ContainerConfig::default();
    orphan_cfg.name = format!("{node}-orphan");
    orphan_cfg.image = IMAGE.into();
    orphan_cfg.entrypoint = Some(vec!["sleep".into(), "3600".into()]);
    orphan_cfg.labels = labels;
    let orphan = rt.create_container(orphan_cfg).await?;
    rt.start_container(&orphan).await?;

    let _child = spawn_child(dir.path(), &node, runtime)?;
    let after = eventually("orphans removed", LIMIT, || async {
        let list = containers(rt.as_ref(), &node).await.ok()?;
        let orphan_left = list.iter().any(|c| c.2 == orphan);
        let gone_left = list.iter().any(|c| c.0 == gone_uid);
        (!orphan_left && !gone_left).then_some(list)
    })
    .await?;
    assert_eq!(
        of(&after, &keep_uid),
        of(&before, &keep_uid),
        "the healthy pod's sandbox and container are adopted, not recreated"
    );
    // Stays so (a bounded observation window: no duplicate, no restart).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        let list = containers(rt.as_ref(), &node).await?;
        assert_eq!(of(&list, &keep_uid), of(&before, &keep_uid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Restart counts carry on from the labels.
    let next = eventually("crash restarted by the new edged", LIMIT, || async {
        let list = containers(rt.as_ref(), &node).await.ok()?;
        list.iter()
            .filter(|c| c.0 == crash_uid && c.1 == "app" && c.3 > crash_before)
            .map(|c| c.3)
            .max()
    })
    .await?;
    assert!(next > crash_before, "{next} after {crash_before}");
    let patch = eventually("crash status reported", LIMIT, || async {
        let entries = db.outbox(1000).await.ok()?;
        let e = entries.iter().find(|e| e.key == "default/podpatch/crash")?;
        let msg = kubeedge_proto::Message::from_json(e.message.as_bytes()).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&msg.content.bytes()).ok()?;
        let n = v["status"]["containerStatuses"][0]["restartCount"].as_u64()?;
        (n > u64::from(crash_before)).then_some(n)
    })
    .await?;
    assert!(patch > u64::from(crash_before));
    Ok(())
}
