//! Shared set-up of the edged tests: a busybox image built locally, and an edged on the real
//! Docker engine with its own node name (so parallel tests never see each other's
//! containers), its store in a temp dir, and no cloud (statuses land in the durable outbox).

#![allow(dead_code, unreachable_pub, unused_macros)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::PodStatus;
use kubeedge_edge::edged::runtime::{ContainerRuntime, LABEL_NODE};
use kubeedge_edge::edged::{
    Backoff, Cloud, CriRuntime, DockerRuntime, Edged, EdgedConfig, EdgedHandle, Link,
};
use kubeedge_edge::meta::{MetaDb, MetaOp, MetaRecord, SqliteStore};
use kubeedge_proto::{Content, Message, Route};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, OnceCell};
use tokio_util::sync::CancellationToken;

pub mod containerd;

/// The test image: a static busybox with its applets.
pub const IMAGE: &str = kubeedge_bench::BUSYBOX_IMAGE;

static IMAGE_READY: OnceCell<()> = OnceCell::const_new();

/// Import the test image once per test binary (idempotent across binaries too).
pub async fn ensure_image(_rt: &DockerRuntime) -> Result<()> {
    IMAGE_READY
        .get_or_try_init(|| async { kubeedge_bench::ensure_busybox_image().await })
        .await?;
    Ok(())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(kubeedge_bench::free_port()?)
}

/// Remove every container of node `node` (used at the end of a test, and on drop).
pub fn docker_cleanup(node: &str) {
    kubeedge_bench::remove_node_containers(node);
}

/// The edged settings of a test: short periods and backoffs.
pub fn test_config(node: &str, root: &Path) -> EdgedConfig {
    let mut c = EdgedConfig::default();
    c.node_name = node.to_owned();
    c.node_ip = "127.0.0.1".into();
    c.root_dir = root.to_path_buf();
    c.sync_frequency = Duration::from_millis(200);
    c.node_status_update_frequency = Duration::from_secs(1);
    c.backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_millis(2400),
    };
    c
}

/// A unique node name.
pub fn node_name(test: &str) -> String {
    format!("t-{test}-{:08x}", fastrand::u32(..))
}

/// A runtime the edged tests run on: how a test's leftovers are swept.
pub trait TestRuntime: ContainerRuntime {
    /// Remove every container (and sandbox) of node `node`.
    fn cleanup(&self, node: &str);
}

impl TestRuntime for DockerRuntime {
    fn cleanup(&self, node: &str) {
        docker_cleanup(node);
    }
}

impl TestRuntime for CriRuntime {
    fn cleanup(&self, node: &str) {
        cri_sweep(self, Some(node));
    }
}

/// Remove every sandbox and container of `node` (all of them with None) from a CRI runtime,
/// from synchronous code (a drop): on a thread of its own with its own reactor.
pub fn cri_sweep(rt: &CriRuntime, node: Option<&str>) {
    let (endpoint, logs) = (rt.endpoint().to_owned(), rt.log_root().to_path_buf());
    let node = node.map(str::to_owned);
    let _ = std::thread::spawn(move || {
        let Ok(tokio_rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        tokio_rt.block_on(async {
            let rt = CriRuntime::new(endpoint, logs);
            let labels: Vec<(&str, &str)> = node.iter().map(|n| (LABEL_NODE, n.as_str())).collect();
            for c in rt.list_containers(&labels).await.unwrap_or_default() {
                let _ = rt.remove_container(&c.id).await;
            }
        });
    })
    .join();
}

/// The test containerd socket (started by scripts/test.sh).
pub const CRI_SOCKET: &str = "/run/kubeedge-rs-containerd/containerd.sock";
/// The pause image scripts/test.sh imports into that containerd.
pub const CRI_PAUSE_IMAGE: &str = "docker.io/kubeedge-rs/pause:cri";

/// The test containerd, or None (with the reason printed) when its socket is absent.
pub fn cri_runtime() -> Option<CriRuntime> {
    if !Path::new(CRI_SOCKET).exists() {
        eprintln!("skipped: no containerd at {CRI_SOCKET} (scripts/test.sh starts one)");
        return None;
    }
    let logs = std::env::temp_dir().join("kubeedge-rs-cri-test-logs");
    Some(CriRuntime::new(format!("unix://{CRI_SOCKET}"), logs))
}

/// Run `scenario(h: Harness<R>, runtime_name: &str) -> Result<()>` as two tests,
/// `<scenario>::docker` and `<scenario>::containerd` (which skips, saying why, only when the
/// test containerd is absent). An optional second argument tunes the [`EdgedConfig`] of both.
macro_rules! on_both_runtimes {
    ($scenario:ident) => {
        on_both_runtimes!($scenario, |_| {});
    };
    ($scenario:ident, $tune:expr) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn docker() -> anyhow::Result<()> {
                let h = crate::common::Harness::start_with(stringify!($scenario), $tune).await?;
                super::$scenario(h, "docker").await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn containerd() -> anyhow::Result<()> {
                let Some(h) =
                    crate::common::Harness::start_cri(stringify!($scenario), $tune).await?
                else {
                    return Ok(());
                };
                super::$scenario(h, "containerd").await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_runtimes;

/// An edged on a real runtime (Docker unless said otherwise), offline, in a temp dir.
pub struct Harness<R: TestRuntime = DockerRuntime> {
    pub node: String,
    pub dir: tempfile::TempDir,
    pub db: MetaDb,
    pub tx: mpsc::Sender<Message>,
    pub handle: EdgedHandle,
    pub rt: Arc<R>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _cloud: watch::Sender<Option<Cloud>>,
}

impl<R: TestRuntime> Drop for Harness<R> {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.rt.cleanup(&self.node);
        // A runtime call already under way when edged was cancelled can still create a
        // container: sweep again once it has had time to land.
        std::thread::sleep(Duration::from_millis(300));
        self.rt.cleanup(&self.node);
    }
}

impl Harness<CriRuntime> {
    /// An edged on the test containerd (whose own `sandbox_image` is the pause image the
    /// script imported; edged's default config names none); None when it is absent.
    pub async fn start_cri(
        test: &str,
        tune: impl FnOnce(&mut EdgedConfig),
    ) -> Result<Option<Self>> {
        let Some(rt) = cri_runtime() else {
            return Ok(None);
        };
        Ok(Some(Self::start_on(test, Arc::new(rt), tune).await?))
    }
}

impl Harness {
    pub async fn start(test: &str) -> Result<Self> {
        Self::start_with(test, |_| {}).await
    }

    pub async fn start_with(test: &str, tune: impl FnOnce(&mut EdgedConfig)) -> Result<Self> {
        let rt = Arc::new(DockerRuntime::new("unix:///var/run/docker.sock"));
        ensure_image(&rt).await?;
        Self::start_on(test, rt, tune).await
    }
}

impl<R: TestRuntime> Harness<R> {
    pub async fn start_on(
        test: &str,
        rt: Arc<R>,
        tune: impl FnOnce(&mut EdgedConfig),
    ) -> Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let node = node_name(test);
        let dir = tempfile::tempdir()?;
        let (store, _) = SqliteStore::open(&dir.path().join("edgecore.db"))?;
        let db = MetaDb::spawn(store);
        let mut cfg = test_config(&node, &dir.path().join("edged"));
        tune(&mut cfg);
        let (cloud_tx, cloud_rx) = watch::channel(None);
        let (edged, tx, handle) = Edged::new(cfg, rt.clone(), Link::new(db.clone(), cloud_rx));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(edged.run(cancel.clone()));
        Ok(Self {
            node,
            dir,
            db,
            tx,
            handle,
            rt,
            cancel,
            task: Some(task),
            _cloud: cloud_tx,
        })
    }

    /// What MetaManager does with a push: store, then forward.
    pub async fn push(&self, op: &str, kind: &str, object: Value) -> Result<()> {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = object["metadata"]["name"].as_str().context("name")?;
        let key = format!("{ns}/{kind}/{name}");
        let op_enum = if op == "delete" {
            MetaOp::Delete { key: key.clone() }
        } else {
            MetaOp::Upsert(MetaRecord {
                key: key.clone(),
                resource_type: kind.into(),
                value: object.to_string(),
            })
        };
        self.db.apply(vec![op_enum]).await?;
        let msg = Message::new(
            Route::new("edgecontroller", "resource", op, key),
            Content::json(&object)?,
        );
        self.tx.send(msg).await?;
        Ok(())
    }

    /// Wait until pod `ns/name`'s status satisfies `pred`.
    pub async fn wait_status(
        &self,
        key: &str,
        limit: Duration,
        mut pred: impl FnMut(&PodStatus) -> bool,
    ) -> Result<PodStatus> {
        let mut rx = self.handle.statuses();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(s) = rx.borrow_and_update().get(key) {
                if pred(s) {
                    return Ok(s.clone());
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let last = self.handle.status(key);
                bail!(
                    "pod {key}: condition not met within {limit:?}; last status: {}",
                    serde_json::to_string_pretty(&last).unwrap_or_default()
                );
            }
        }
    }

    /// Wait until pod `ns/name` has no status any more (stopped and removed).
    pub async fn wait_gone(&self, key: &str, limit: Duration) -> Result<()> {
        let mut rx = self.handle.statuses();
        let deadline = tokio::time::Instant::now() + limit;
        while rx.borrow_and_update().contains_key(key) {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                bail!("pod {key} still there after {limit:?}");
            }
        }
        Ok(())
    }

    /// The latest upstream messages in the outbox, by resource.
    pub async fn outbox(&self) -> Result<BTreeMap<String, Message>> {
        let mut out = BTreeMap::new();
        for e in self.db.outbox(10_000).await? {
            out.insert(e.key, Message::from_json(e.message.as_bytes())?);
        }
        Ok(out)
    }

    /// The events about pod `pod` with `reason` on their way upstream (the latest of each).
    pub async fn events(&self, pod: &str, reason: &str) -> Result<Vec<Value>> {
        let mut found = Vec::new();
        for (key, msg) in self.outbox().await? {
            if !key.contains("/event/") {
                continue;
            }
            let v: Value = msg.content.decode()?;
            if v["involvedObject"]["name"] == pod && v["reason"] == reason {
                found.push(v);
            }
        }
        Ok(found)
    }

    /// The one event about pod `pod` with `reason`, once it is there (within `limit`).
    pub async fn event(&self, pod: &str, reason: &str, limit: Duration) -> Result<Value> {
        eventually(&format!("{reason} event about {pod}"), limit, || async {
            self.events(pod, reason).await.ok()?.pop()
        })
        .await
    }

    /// The containers of this node.
    pub async fn containers(&self) -> Result<Vec<kubeedge_edge::edged::runtime::ContainerSummary>> {
        Ok(self.rt.list_containers(&[(LABEL_NODE, &self.node)]).await?)
    }

    /// Stop edged (containers stay).
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("edged")
    }
}

/// A pod object.
pub fn pod(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}-{:08x}", fastrand::u32(..)),
                     "resourceVersion": "1", "labels": {"app": name}},
        "spec": spec,
    })
}

/// A busybox container.
pub fn container(name: &str, script: &str) -> Value {
    json!({"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
           "command": ["sh", "-c", script]})
}

/// The condition `kind` of a status.
pub fn condition(s: &PodStatus, kind: &str) -> Option<String> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// Container status `name`.
pub fn cstatus<'a>(
    s: &'a PodStatus,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    s.container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// Poll `f` until it returns Some, within `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP GET to 127.0.0.1 (None on any failure).
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.starts_with("HTTP/1.").then_some(text)
}

/// Read `s` until what came contains `want` (within `limit`); everything read so far.
pub async fn read_until(
    s: &mut futures_util::stream::BoxStream<
        'static,
        kubeedge_edge::edged::runtime::Result<bytes::Bytes>,
    >,
    want: &str,
    limit: Duration,
) -> Result<String> {
    use futures_util::StreamExt;
    let mut out = String::new();
    let read = async {
        while !out.contains(want) {
            match s.next().await {
                Some(chunk) => out.push_str(&String::from_utf8_lossy(&chunk?)),
                None => bail!("the stream ended"),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(e.context(format!("waiting for {want:?}, got {out:?}"))),
        Err(_) => bail!("waiting for {want:?} for {limit:?}, got {out:?}"),
    }
}

/// The runtime id of this node's only container named `name` ([`SANDBOX`] for the sandbox).
pub async fn container_id<R: TestRuntime>(h: &Harness<R>, name: &str) -> Result<String> {
    let found: Vec<_> = h
        .containers()
        .await?
        .into_iter()
        .filter(|c| c.label(kubeedge_edge::edged::runtime::LABEL_CONTAINER) == Some(name))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        other => bail!("expected one container {name}, found {}", other.len()),
    }
}

/// Push pod `name` and wait until its container `container` runs; that container's id.
pub async fn run_pod<R: TestRuntime>(
    h: &Harness<R>,
    name: &str,
    spec: Value,
    container: &str,
) -> Result<String> {
    h.push("insert", "pod", pod(name, spec)).await?;
    h.wait_status(&format!("default/{name}"), Duration::from_secs(30), |s| {
        cstatus(s, container)
            .and_then(|c| c.state.as_ref())
            .is_some_and(|st| st.running.is_some())
    })
    .await?;
    container_id(h, container).await
}

/// The runtime's id in a status's `containerID` (`docker://…`, `containerd://…`).
pub fn runtime_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}
