//! `ha-bench`: HA cloudcore (issue 19). Three cloudcores (`keadm init --etcd-servers`) on a
//! three-member etcd on loopback, behind two HAProxies (round robin), and N simulated edges (the hub
//! client of kubeedge-edge, default 10,000) spread over them. Prints RSS per replica and per
//! node, the failover time of the nodes a replica held after its `kill -9` (to a new pod
//! reaching each of a sample of them), and the leader failover time.
//!
//! ```sh
//! cargo build --release -p cloudcore -p keadm -p edgecore -p kubeedge-bench
//! ulimit -n 20000   # two HAProxies and 10,000 sessions
//! target/release/ha-bench 10000
//! ```

#[path = "../../../kubeedge-apiserver/tests/common/etcd.rs"]
#[allow(dead_code, unreachable_pub)]
mod etcd;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kubeedge_bench::cluster::Cluster;
use kubeedge_bench::haproxy::Haproxy;
use kubeedge_bench::rss_kb;
use kubeedge_bench::sim;
use kubeedge_cloud::certs::{EdgeCsr, FsCertStore, PkiConfig};
use kubeedge_edge::hub::{self, ClientTls, ConnectionState};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// When each pod first reached its node.
type Receipts = Arc<Mutex<HashMap<String, Instant>>>;

fn sim(
    server: SocketAddr,
    node: String,
    tls: ClientTls,
    got: Receipts,
    cancel: &CancellationToken,
) -> hub::Client {
    let mut cfg = sim::config(&server.to_string(), node);
    cfg.backoff_min = Duration::from_millis(200);
    cfg.backoff_max = Duration::from_secs(2);
    sim::acking_edge(cfg, tls, cancel, move |m| {
        if let Some((_, name)) = m.route.resource.rsplit_once("/pod/") {
            got.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name.to_owned())
                .or_insert_with(Instant::now);
        }
    })
}

/// Node records: node -> (holder identity, the holder's stream server from the record).
async fn records(leases: &Api<Lease>) -> Result<HashMap<String, (String, String)>> {
    Ok(leases
        .list(&kube::api::ListParams::default().labels("kubeedge.io/owner-record=node"))
        .await?
        .into_iter()
        .filter_map(|l| {
            let node = l.metadata.name?.strip_prefix("node-")?.to_owned();
            let stream = l
                .metadata
                .annotations
                .and_then(|a| a.get("kubeedge.io/stream-server").cloned())
                .unwrap_or_default();
            let holder = l.spec?.holder_identity.filter(|h| !h.is_empty())?;
            Some((node, (holder, stream)))
        })
        .collect())
}

async fn leader(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("cloudcore")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn until<F: AsyncFnMut() -> Result<bool>>(
    what: &str,
    limit: Duration,
    mut cond: F,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond().await? {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The bench, stopped on SIGINT or SIGTERM so that dropping it stops every process it started.
#[tokio::main]
async fn main() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run() => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

async fn run() -> Result<()> {
    let nodes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let sample = nodes.min(200);
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    // Room for every node on one replica (CloudHub's nodeLimit is 1,000 by default).
    let limit = format!("modules.cloudHub.nodeLimit={}", nodes + 100);
    let a = Cluster::init_with_flags(&[&servers], &[&limit])?;
    let client = a.client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    until("a leader", Duration::from_secs(60), async || {
        Ok(leader(&leases).await.is_some())
    })
    .await?;
    let b = Cluster::init_with_flags(&[&servers], &[&limit])?;
    let c = Cluster::init_with_flags(&[&servers], &[&limit])?;
    let replicas = [&a, &b, &c];
    let pids: Vec<u32> = replicas
        .iter()
        .map(|r| r.pid("cloudcore").context("cloudcore pid"))
        .collect::<Result<_>>()?;
    let idle: Vec<u64> = pids.iter().map(|p| rss_kb(*p)).collect();
    // Two haproxies, each for half the nodes: one takes 9,000 connections at most.
    let backends: Vec<(u16, Option<u32>)> = replicas.iter().map(|r| (r.ws.port(), None)).collect();
    let mut lbs = Vec::new();
    let mut _haproxies = Vec::new();
    for _ in 0..2 {
        let ws = kubeedge_bench::free_port()?;
        _haproxies.push(Haproxy::balanced("roundrobin", &[(ws, backends.clone())])?);
        lbs.push(SocketAddr::from(([127, 0, 0, 1], ws)));
    }

    // Certificates from the shared CA (one key, one certificate per node).
    // The replicas keep a generated CA in the `kubeedge/casecret` Secret, not in files.
    let pki = kubeedge_cloud::secrets::load_pki(
        &client,
        &FsCertStore::in_dir(a.root().join("etc/kubeedge")),
        PkiConfig::default(),
    )
    .await?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let key_der = key.serialize_der();
    let ca = pki.ca_cert_der().to_vec();
    // The nodes exist in the API, as an edge's registration would make them.
    let node_api: Api<Node> = Api::all(client.clone());
    futures_util::stream::iter(0..nodes)
        .map(|n| {
            let node_api = node_api.clone();
            async move {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("sim-{n}"), "labels": {"node-role.kubernetes.io/edge": ""}}
                }))?;
                node_api.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    eprintln!("ha-bench: {nodes} Node objects created");
    let got: Receipts = Arc::default();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let gate = Arc::new(Semaphore::new(256));
    let connect_start = Instant::now();
    let mut sims = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let node = format!("sim-{n}");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        let cert = pki.sign_edge_csr(&EdgeCsr::new(csr.der(), &node))?;
        let tls = ClientTls::new(
            ca.clone(),
            cert,
            PrivateKeyDer::Pkcs8(key_der.clone().into()),
        );
        let permit = gate.clone().acquire_owned().await?;
        let client = sim(lbs[n % 2], node, tls, got.clone(), &cancel);
        let mut state = client.state();
        tokio::spawn(async move {
            let connected = state.wait_for(|s| matches!(s, ConnectionState::Connected(_)));
            let _ = tokio::time::timeout(Duration::from_secs(120), connected).await;
            drop(permit);
        });
        sims.push(client);
    }
    eprintln!("ha-bench: {nodes} simulated nodes started");
    let mut polls = 0u32;
    until(
        "every simulated node connected",
        Duration::from_secs(600),
        async || {
            let up = sims
                .iter()
                .filter(|c| matches!(*c.state().borrow(), ConnectionState::Connected(_)))
                .count();
            polls += 1;
            if polls.is_multiple_of(50) {
                eprintln!("ha-bench: {up} of {nodes} connected");
            }
            Ok(up == nodes)
        },
    )
    .await?;
    eprintln!("ha-bench: all connected");
    let connected = connect_start.elapsed();
    until(
        "every node's record held",
        Duration::from_secs(300),
        async || Ok(records(&leases).await?.len() == nodes),
    )
    .await?;
    let held = records(&leases).await?;
    eprintln!("ha-bench: every record held");
    // Which replica is which identity: the records name the holder's stream server.
    let identity: Vec<String> = replicas
        .iter()
        .map(|r| {
            let port = format!(":{}", r.stream_port);
            held.values()
                .find(|(_, s)| s.ends_with(&port))
                .map(|(h, _)| h.clone())
                .unwrap_or_default()
        })
        .collect();
    let count = |id: &str| held.values().filter(|(h, _)| h == id).count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "ha-bench: {nodes} simulated nodes over 3 cloudcores on a 3-member etcd (loopback, HAProxy round robin); connected in {:.1} s",
        connected.as_secs_f64()
    );
    println!(
        "{:<8} {:>7} {:>13} {:>13} {:>13}",
        "replica", "nodes", "RSS idle", "RSS held", "per node"
    );
    for (i, pid) in pids.iter().enumerate() {
        let now = rss_kb(*pid);
        let n = count(&identity[i]).max(1);
        println!(
            "{:<8} {:>7} {:>9.1} MiB {:>9.1} MiB {:>9.1} KiB",
            ["A", "B", "C"][i],
            count(&identity[i]),
            mib(idle[i]),
            mib(now),
            now.saturating_sub(idle[i]) as f64 / n as f64
        );
    }

    // kill -9 of the replica holding the most nodes (not the leader).
    let lead = leader(&leases).await.unwrap_or_default();
    let lead_at = identity
        .iter()
        .position(|id| *id == lead)
        .context("which replica leads")?;
    let which = (0..3)
        .filter(|i| *i != lead_at)
        .max_by_key(|i| count(&identity[*i]))
        .context("a replica to kill")?;
    let victim = identity[which].clone();
    let victim_nodes: Vec<String> = held
        .iter()
        .filter(|(_, (h, _))| *h == victim)
        .map(|(n, _)| n.clone())
        .collect();
    let survivor = replicas[(which + 1) % 3];
    let pods: Api<Pod> = Api::namespaced(survivor.client().await?, "default");
    replicas[which].kill9("cloudcore")?;
    let killed = Instant::now();
    let mut created = HashMap::new();
    for node in victim_nodes.iter().take(sample) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("after-{node}"), "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        created.insert(format!("after-{node}"), Instant::now());
    }
    let survivor_leases: Api<Lease> = Api::namespaced(survivor.client().await?, "kubeedge");
    until(
        "the killed replica's nodes held again",
        Duration::from_secs(300),
        async || {
            let now = records(&survivor_leases).await?;
            Ok(victim_nodes
                .iter()
                .all(|n| now.get(n).is_some_and(|(h, _)| *h != victim)))
        },
    )
    .await?;
    let rehomed = killed.elapsed();
    until(
        "a new pod on each sampled node",
        Duration::from_secs(300),
        async || {
            let g = got.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(victim_nodes
                .iter()
                .take(sample)
                .all(|n| g.contains_key(&format!("after-{n}"))))
        },
    )
    .await?;
    // Each sampled pod's receipt: from its create, and from the kill.
    let (mut lat, since_kill): (Vec<f64>, Vec<f64>) = {
        let g = got.lock().unwrap_or_else(PoisonError::into_inner);
        created
            .iter()
            .filter_map(|(pod, at)| {
                let t = g.get(pod)?;
                Some((
                    t.duration_since(*at).as_secs_f64(),
                    t.duration_since(killed).as_secs_f64(),
                ))
            })
            .unzip()
    };
    lat.sort_by(f64::total_cmp);
    let flowing = since_kill.into_iter().fold(0.0, f64::max);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "kill -9 of a replica holding {} nodes: all held again after {:.1} s; a pod created after the kill reached {} of its nodes (from its create) at p50 {:.1} s, p99 {:.1} s, max {:.1} s; the last one {:.1} s after the kill",
        victim_nodes.len(),
        rehomed.as_secs_f64(),
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        flowing
    );

    // kill -9 of the leader: the last replica takes the singleton duties.
    let last = replicas[3 - which - lead_at];
    let last_leases: Api<Lease> = Api::namespaced(last.client().await?, "kubeedge");
    replicas[lead_at].kill9("cloudcore")?;
    let leader_failover = until("a new leader", Duration::from_secs(120), async || {
        Ok(leader(&last_leases).await.is_some_and(|h| h != lead))
    })
    .await?;
    println!(
        "kill -9 of the leader: another replica leads after {:.1} s (15 s lease, 10 s renew deadline, 2 s retry)",
        leader_failover.as_secs_f64()
    );
    Ok(())
}
