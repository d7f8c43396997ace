//! Shared set-up for the hub tests: a cloud on 127.0.0.1 port 0, joined edges, raw dials.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kubeedge_cloud::certs::{unix_now, Pki, PkiConfig};
use kubeedge_cloud::hub::HubConfig;
use kubeedge_edge::hub::{self, CertFiles, ClientTls};
use kubeedge_proto::{Content, Message, Route};
use tokio_util::sync::CancellationToken;

pub mod controlled;
pub mod partition;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(DEADLINE, f)
        .await
        .with_context(|| format!("timed out: {what}"))
}

/// Poll `cond` until it holds or the deadline passes.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The cloud under test: a CloudHub on 127.0.0.1, port 0 (shared with the load tools).
pub use kubeedge_bench::TestCloud as Cloud;

pub async fn cloud(cfg: HubConfig) -> Result<Cloud> {
    Ok(Cloud::start(cfg).await?)
}

pub async fn cloud_with(cfg: HubConfig, pki_cfg: PkiConfig) -> Result<Cloud> {
    Ok(Cloud::start_with(cfg, pki_cfg).await?)
}

/// Wait until `client`'s link state satisfies `cond`.
pub async fn until_state(
    client: &hub::Client,
    what: &str,
    cond: impl Fn(hub::ConnectionState) -> bool,
) -> Result<()> {
    let mut state = client.state();
    within(what, async {
        while !cond(*state.borrow_and_update()) {
            if state.changed().await.is_err() {
                break;
            }
        }
    })
    .await
}

/// The link is down.
pub fn disconnected(s: hub::ConnectionState) -> bool {
    s == hub::ConnectionState::Disconnected
}

/// The link is up in its `n`th session or a later one.
pub fn session_at_least(n: u64) -> impl Fn(hub::ConnectionState) -> bool {
    move |s| matches!(s, hub::ConnectionState::Connected(m) if m >= n)
}

pub fn fast() -> HubConfig {
    let mut c = HubConfig::default();
    c.keepalive_interval = Duration::from_secs(2);
    c.handshake_timeout = Duration::from_secs(2);
    c.outbox.resend_after = Duration::from_millis(200);
    c
}

pub async fn join(cloud: &Cloud, node: &str, dir: &std::path::Path) -> Result<ClientTls> {
    join_at(&cloud.pki, cloud.https, node, dir).await
}

/// Bootstrap `node` against the bootstrap server at `https` of the cloud owning `pki`.
pub async fn join_at(
    pki: &Pki,
    https: SocketAddr,
    node: &str,
    dir: &std::path::Path,
) -> Result<ClientTls> {
    let token = pki.issue_token(unix_now())?;
    let files = CertFiles::in_dir(dir);
    Ok(hub::bootstrap(&https.to_string(), &token, node, &files, DEADLINE).await?)
}

pub struct Edge {
    pub client: hub::Client,
    pub inbound: hub::Inbound,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), kubeedge_edge::HubError>>,
}

pub fn edge(cloud: &Cloud, node: &str, tls: ClientTls) -> Edge {
    edge_via(cloud.ws, node, tls, None)
}

/// An edge that dials `server` (the cloud, or a proxy in front of it).
pub fn edge_via(
    server: SocketAddr,
    node: &str,
    tls: ClientTls,
    rotation: Option<hub::CertRotation>,
) -> Edge {
    let mut cfg = hub::HubConfig::default();
    cfg.server = server.to_string();
    cfg.rotation = rotation;
    cfg.node_name = node.to_owned();
    cfg.heartbeat = Duration::from_millis(300);
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    cfg.message_qps = 10_000;
    cfg.message_burst = 10_000;
    let (client, inbound, driver) = hub::connect(cfg, tls);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(driver.run(cancel.clone()));
    Edge {
        client,
        inbound,
        cancel,
        task,
    }
}

pub fn pod(uid: &str, rv: &str, op: &str) -> Message {
    let content = Content::json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": uid, "resourceVersion": rv}
    }))
    .expect("json");
    Message::new(
        Route::new("edgecontroller", "resource", op, "default/pod/p"),
        content,
    )
    .with_resource_version(rv)
}

/// A raw websocket dial with chosen TLS material and headers.
pub async fn raw_dial(
    cloud: &Cloud,
    tls: Option<&ClientTls>,
    headers: &[(&str, &str)],
) -> Result<kubeedge_bench::RawWs> {
    let config = match tls {
        Some(t) => t.client_config()?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls_pki_types::CertificateDer::from(
                cloud.pki.ca_cert_der().to_vec(),
            ))?;
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        }
    };
    kubeedge_bench::ws_dial(cloud.ws, config, "x", headers).await
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    within(path, async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8(out)?;
        let status = text.get(9..12).unwrap_or_default().parse()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((status, body.to_owned()))
    })
    .await?
}

/// The value of the sample `name` (with its labels, as exposed) in a Prometheus text body.
pub use kubeedge_bench::cluster::metric as sample;

/// Scrape `addr`'s `/metrics` until the sample `name` satisfies `cond`; the body that did.
pub async fn until_sample(
    addr: SocketAddr,
    name: &str,
    cond: impl Fn(f64) -> bool,
) -> Result<String> {
    let what = format!("{name} to move");
    within(&what, async {
        loop {
            let (_, body) = http_get(addr, "/metrics").await?;
            if sample(&body, name).is_some_and(&cond) {
                return Ok::<_, anyhow::Error>(body);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}
