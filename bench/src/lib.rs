//! Shared pieces of the load tools and process tests: a CloudHub on loopback, pod messages,
//! process RSS, and waiting on a condition with a deadline.

pub mod devices;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeedge_cloud::certs::{unix_now, FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::{CloudHub, Downstream, HubConfig, Upstream};
use kubeedge_proto::{Content, Message, Route};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A condition did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {limit:?}: {what}")]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// The deadline.
    pub limit: Duration,
}

/// Poll `cond` every 10 ms until it holds, or fail after `limit`.
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return Err(TimedOut {
                what: what.to_owned(),
                limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A process's resident set size in kB (0 when unknown).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An edgecontroller pod message for `default/pod/<name>` with resourceVersion 1, padded with
/// an annotation of `padding` bytes.
pub fn pod(name: &str, uid: &str, op: &str, padding: usize) -> Message {
    let content = Content::json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": "1",
                     "labels": {"app": "demo"}, "annotations": {"note": "x".repeat(padding)}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "app", "image": "nginx:1.25"}]},
        "status": {"phase": "Pending"}
    }))
    .unwrap_or_default();
    Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            op,
            format!("default/pod/{name}"),
        ),
        content,
    )
    .with_resource_version("1")
}

/// A CloudHub serving both ports on 127.0.0.1 (port 0) until dropped.
#[derive(Debug)]
pub struct TestCloud {
    /// The PKI.
    pub pki: Arc<Pki>,
    /// The hub.
    pub hub: CloudHub,
    /// Downstream handle.
    pub down: Downstream,
    /// Upstream messages.
    pub up: mpsc::Receiver<Upstream>,
    /// The websocket address.
    pub ws: SocketAddr,
    /// The bootstrap address.
    pub https: SocketAddr,
    /// A scratch directory that lives as long as the cloud.
    pub dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for TestCloud {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestCloud {
    /// Start one.
    pub async fn start(config: HubConfig) -> std::io::Result<Self> {
        Self::start_with(config, PkiConfig::default()).await
    }

    /// Start one with PKI settings (e.g. short certificate lifetimes).
    pub async fn start_with(config: HubConfig, pki_config: PkiConfig) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::load_or_create(&FsCertStore::in_dir(dir.path().join("cloud")), pki_config)
            .map_err(std::io::Error::other)?;
        let pki = Arc::new(pki);
        let (hub, down, up) = CloudHub::new(pki.clone(), config);
        let ws_l = TcpListener::bind("127.0.0.1:0").await?;
        let https_l = TcpListener::bind("127.0.0.1:0").await?;
        let (ws, https) = (ws_l.local_addr()?, https_l.local_addr()?);
        let cancel = CancellationToken::new();
        let (h, c) = (hub.clone(), cancel.clone());
        tokio::spawn(async move { h.serve(ws_l, https_l, c).await });
        Ok(Self {
            pki,
            hub,
            down,
            up,
            ws,
            https,
            dir,
            cancel,
        })
    }

    /// An `edgecore.yaml` for node `edge-1` joining this cloud with a fresh token, with its
    /// files under `dir/edge`. Returns the config path and the database path.
    pub fn edge_config(&self) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let edge = self.dir.path().join("edge");
        std::fs::create_dir_all(&edge)?;
        let token = self
            .pki
            .issue_token(unix_now())
            .map_err(std::io::Error::other)?;
        let yaml = format!(
            "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase:\n  dataSource: {d}/edgecore.db\nmodules:\n  edgeHub:\n    heartbeat: 1\n    messageQPS: 1000000\n    messageBurst: 1000000\n    token: {token}\n    httpServer: https://{https}\n    tlsCaFile: {d}/ca/rootCA.crt\n    tlsCertFile: {d}/certs/server.crt\n    tlsPrivateKeyFile: {d}/certs/server.key\n    websocket:\n      server: {ws}\n  edged:\n    hostnameOverride: edge-1\n  eventBus:\n    enable: false\n",
            d = edge.display(),
            https = self.https,
            ws = self.ws,
        );
        let path = edge.join("edgecore.yaml");
        std::fs::write(&path, yaml)?;
        Ok((path, edge.join("edgecore.db")))
    }
}
