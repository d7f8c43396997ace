//! `fanout-bench`: issue 8's pod fan-out. N pods, one per node, created through the
//! Kubernetes API (kubeedge-apiserver on SQLite, in process) and delivered by the
//! EdgeController (with the sync ledger writing ObjectSyncs) through CloudHub to N simulated
//! edge nodes on real TLS websockets; timed from each pod's creation call to its receipt at
//! the edge.
//!
//! ```sh
//! cargo run --release -p kubeedge-bench --bin fanout-bench -- 1000
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kubeedge_bench::sim;
use kubeedge_cloud::certs::{FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::{CloudHub, HubConfig};
use kubeedge_edge::hub::{self, ClientTls};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

type Receipts = Arc<Mutex<HashMap<String, Instant>>>;

fn start_edge(
    server: &str,
    node: String,
    tls: ClientTls,
    receipts: Receipts,
    cancel: &CancellationToken,
) -> hub::Client {
    let mut cfg = sim::config(server, node);
    cfg.message_qps = 100_000;
    cfg.message_burst = 100_000;
    sim::acking_edge(cfg, tls, cancel, move |m| {
        let now = Instant::now();
        if m.route.operation_str() == "insert" {
            if let Ok(mut r) = receipts.lock() {
                r.entry(m.route.resource.clone()).or_insert(now);
            }
        }
    })
}

fn pod(name: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "fanout"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx:1.25"}]}
    }))?)
}

fn pct(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);

    // The "cluster": kubeedge-apiserver on SQLite, in process.
    let dir = tempfile::tempdir()?;
    let store = kubeedge_apiserver::SqliteStore::open(dir.path().join("state.db"))?;
    let service = kubeedge_apiserver::ApiService::new(store, Default::default()).await?;
    let client = kube::Client::new(service, "default");

    // The cloud: CloudHub plus the controllers.
    let pki = Arc::new(Pki::load_or_create(
        &FsCertStore::in_dir(dir.path().join("pki")),
        PkiConfig::default(),
    )?);
    let mut cfg = HubConfig::default();
    cfg.node_limit = nodes + 10;
    cfg.handshake_timeout = Duration::from_secs(120);
    let (hub, down, up) = CloudHub::new(pki.clone(), cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = listener.local_addr()?.to_string();
    let cancel = CancellationToken::new();
    {
        let (hub, cancel) = (hub.clone(), cancel.clone());
        tokio::spawn(async move { hub.serve_websocket(listener, cancel).await });
    }
    let names: Vec<String> = (0..nodes).map(|n| format!("node-{n}")).collect();
    let node_api: Api<Node> = Api::all(client.clone());
    for n in &names {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": n, "labels": {"node-role.kubernetes.io/edge": ""}}
        }))?;
        node_api.create(&PostParams::default(), &node).await?;
    }
    let controllers = tokio::spawn(kubeedge_cloud::run_controllers(
        client.clone(),
        hub.clone(),
        down,
        up,
        kubeedge_cloud::ControllersConfig::default(),
        cancel.clone(),
    ));

    // The edges: one certificate per node through the CSR path.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let key_der = key.serialize_der();
    let receipts: Receipts = Arc::default();
    let mut clients = Vec::with_capacity(nodes);
    let start = Instant::now();
    for n in &names {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("system:node:{n}"));
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        let cert = pki.sign_edge_csr(&kubeedge_cloud::certs::EdgeCsr::new(csr.der(), n))?;
        let tls = ClientTls::new(
            pki.ca_cert_der().to_vec(),
            cert,
            PrivateKeyDer::Pkcs8(key_der.clone().into()),
        );
        clients.push(start_edge(
            &server,
            n.clone(),
            tls,
            receipts.clone(),
            &cancel,
        ));
    }
    let limit = Duration::from_secs(120);
    while hub.connected() < nodes {
        if start.elapsed() > limit {
            bail!("only {} of {nodes} edges connected", hub.connected());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{nodes} edges connected in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    // Warm up: one pod through the whole path, so that the watches are listed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("warmup", &names[0])?)
        .await?;
    let warm = Instant::now();
    while !receipts
        .lock()
        .map(|r| r.contains_key("default/pod/warmup"))
        .unwrap_or(false)
    {
        if warm.elapsed() > limit {
            bail!("warm-up pod never arrived");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The fan-out: N creates, 64 in flight, each timed from its create call.
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(64));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(nodes);
    for (i, n) in names.iter().enumerate() {
        let permit = gate.clone().acquire_owned().await?;
        let (pods, created, name, node) =
            (pods.clone(), created.clone(), format!("p{i}"), n.clone());
        tasks.push(tokio::spawn(async move {
            let p = pod(&name, &node)?;
            let at = Instant::now();
            if let Ok(mut c) = created.lock() {
                c.insert(format!("default/pod/{name}"), at);
            }
            pods.create(&PostParams::default(), &p).await?;
            drop(permit);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created_all = t0.elapsed();
    let expect = nodes + 1;
    while receipts.lock().map(|r| r.len()).unwrap_or(0) < expect {
        if t0.elapsed() > limit {
            bail!(
                "only {} of {nodes} pods arrived",
                receipts.lock().map(|r| r.len()).unwrap_or(1) - 1
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let r = receipts
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let c = created
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut lat: Vec<f64> = c
        .iter()
        .filter_map(|(k, at)| {
            r.get(k)
                .map(|got| got.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let last = c
        .keys()
        .filter_map(|k| r.get(k))
        .max()
        .context("no receipts")?;
    let total = last.duration_since(t0);
    println!("pod fan-out: {nodes} pods to {nodes} nodes (one each), created through the API");
    println!("  creates issued in     {:.3} s", created_all.as_secs_f64());
    println!("  complete (all at edge) {:.3} s", total.as_secs_f64());
    println!(
        "  creation -> receipt   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(&lat, 50),
        pct(&lat, 99),
        lat.last().copied().unwrap_or_default()
    );
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    drop(clients);
    Ok(())
}
