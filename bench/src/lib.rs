//! Shared pieces of the load tools and process tests: a CloudHub on loopback, pod messages,
//! process RSS, and waiting on a condition with a deadline.

pub mod cluster;
pub mod devices;
pub mod haproxy;
pub mod meshnet;
pub mod proxy;
pub mod sim;

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

/// A loopback port that was free a moment ago (for servers and child processes that cannot
/// take a listener).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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

/// A websocket over TLS to a CloudHub, dialled by hand (no edge client in between).
pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Dial the hub at `addr` with `config` (client certificate or none), on upstream's path
/// `/e632aba927ea4ac2b575ec1603d56f10/<node>/events`, with extra handshake `headers`.
pub async fn ws_dial(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    node: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<RawWs> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let mut req = format!("wss://{addr}/e632aba927ea4ac2b575ec1603d56f10/{node}/events")
        .into_client_request()?;
    for (k, v) in headers {
        req.headers_mut()
            .insert(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
    }
    let dial = tokio_tungstenite::client_async(req, stream);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(20), dial).await??;
    Ok(ws)
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
        Self::serve(Arc::new(pki), config, dir).await
    }

    /// Another hub on the same PKI, as a second cloudcore replica: edges joined to this one
    /// are accepted there too.
    pub async fn replica(&self, config: HubConfig) -> std::io::Result<Self> {
        Self::serve(self.pki.clone(), config, tempfile::tempdir()?).await
    }

    async fn serve(
        pki: Arc<Pki>,
        config: HubConfig,
        dir: tempfile::TempDir,
    ) -> std::io::Result<Self> {
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
    /// files under `dir/edge` and edged off (no containers). Returns the config path and the
    /// database path.
    pub fn edge_config(&self) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        self.edge_config_for("edge-1", "    enable: false\n")
    }

    /// An `edgecore.yaml` for node `node` joining this cloud with a fresh token, with its files
    /// under `dir/<node>`; `edged` is extra YAML for the `modules.edged` section (indented four
    /// spaces). Returns the config path and the database path.
    pub fn edge_config_for(
        &self,
        node: &str,
        edged: &str,
    ) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let edge = self.dir.path().join(node);
        std::fs::create_dir_all(&edge)?;
        let token = self
            .pki
            .issue_token(unix_now())
            .map_err(std::io::Error::other)?;
        let yaml = format!(
            "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase:\n  dataSource: {d}/edgecore.db\nmodules:\n  edgeHub:\n    heartbeat: 1\n    messageQPS: 1000000\n    messageBurst: 1000000\n    token: {token}\n    httpServer: https://{https}\n    tlsCaFile: {d}/ca/rootCA.crt\n    tlsCertFile: {d}/certs/server.crt\n    tlsPrivateKeyFile: {d}/certs/server.key\n    websocket:\n      server: {ws}\n  edged:\n    hostnameOverride: {node}\n    rootDirectory: {d}/edged\n{edged}  eventBus:\n    enable: false\n",
            d = edge.display(),
            https = self.https,
            ws = self.ws,
        );
        let path = edge.join("edgecore.yaml");
        std::fs::write(&path, yaml)?;
        Ok((path, edge.join("edgecore.db")))
    }

    /// Answer edged's requests as a cloud controller would (node register, node status
    /// patch, lease, pod status patch, pod delete): `{"Object":…,"Err":null}` replies. Every
    /// upstream message is also passed to `seen`.
    pub fn answer_edged(
        &mut self,
        mut seen: impl FnMut(&Upstream) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(1);
        let up = std::mem::replace(&mut self.up, rx);
        drop(tx);
        let down = self.down.clone();
        tokio::spawn(answer_loop(up, down, move |u| seen(u)))
    }
}

async fn answer_loop(
    mut up: mpsc::Receiver<Upstream>,
    down: Downstream,
    mut seen: impl FnMut(&Upstream),
) {
    while let Some(u) = up.recv().await {
        seen(&u);
        let op = u.msg.route.operation_str().to_owned();
        if u.msg.route.source_str() != "edged" || op == "response" {
            continue;
        }
        let object = if u.msg.content.is_string() {
            serde_json::from_slice::<serde_json::Value>(&u.msg.content.bytes()).unwrap_or_default()
        } else {
            u.msg
                .content
                .decode::<serde_json::Value>()
                .unwrap_or_default()
        };
        let body = if op == "delete" {
            Content::string("OK")
        } else if op == "query" && u.msg.route.resource.contains("/lease/") {
            // No Lease yet, as a real cloud answers it: the edge creates one.
            Content::json(&serde_json::json!({"Object": null, "Err": {"ErrStatus": {
                "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404,
                "message": format!("leases.coordination.k8s.io {:?} not found", u.node)}}}))
            .unwrap_or_default()
        } else {
            Content::json(&serde_json::json!({"Object": object, "Err": null})).unwrap_or_default()
        };
        // As upstream's edgecontroller answers: source edgecontroller, group resource (NO-ACK).
        let reply = Message::new(
            Route::new(
                "edgecontroller",
                "resource",
                "response",
                u.msg.route.resource.clone(),
            ),
            body,
        )
        .with_parent(u.msg.id().clone());
        let _ = down.send(&u.node, reply).await;
    }
}

/// The test and bench image: the host's static busybox with its applets, imported into the
/// local engine once (no registry needed).
pub const BUSYBOX_IMAGE: &str = "kubeedge-rs-test/busybox:2";

fn busybox_rootfs() -> std::io::Result<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox")?;
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "tmp/", "etc/", "www/"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, d, std::io::empty())?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(busybox.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    b.append_data(&mut h, "bin/busybox", busybox.as_slice())?;
    for applet in [
        "sh", "httpd", "sleep", "cat", "echo", "env", "true", "false", "touch", "wget", "ls",
        "kill", "date", "rm", "mkdir", "id", "tar", "stty", "head", "dd", "wc",
    ] {
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        b.append_link(&mut l, format!("bin/{applet}"), "busybox")?;
    }
    b.into_inner()
}

/// Make sure [`BUSYBOX_IMAGE`] exists in the engine at `/var/run/docker.sock`.
pub async fn ensure_busybox_image() -> anyhow::Result<()> {
    use kubeedge_edge::edged::{ContainerRuntime, DockerRuntime};
    let rt = DockerRuntime::new("unix:///var/run/docker.sock");
    if rt.image(BUSYBOX_IMAGE).await?.is_none() {
        rt.import_image(
            BUSYBOX_IMAGE,
            busybox_rootfs()?,
            vec![r#"CMD ["/bin/sh"]"#.into()],
        )
        .await?;
    }
    Ok(())
}

/// Remove every container edged made for node `node`.
pub fn remove_node_containers(node: &str) {
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ids=$(docker ps -aq --filter label={label}={node}); [ -z \"$ids\" ] || docker rm -f $ids >/dev/null 2>&1",
            label = kubeedge_edge::edged::runtime::LABEL_NODE
        ))
        .status();
}
