//! `sched-bench`: the embedded control plane's scheduler against kubeedge-apiserver (SQLite in
//! a temp dir, served in-process), with fake Ready nodes registered through the API.
//!
//! ```sh
//! cargo run --release -p kubeedge-bench --bin sched-bench -- 1000 100 200   # pods, nodes, paced rate/s
//! ```
//!
//! It prints, for `pods` pods on `nodes` nodes:
//! - burst: every pod created at once (64 creators); scheduling throughput in pods/s (first
//!   create to last binding) and create -> bound latency p50/p99 (queueing included);
//! - paced: the same number of pods created at a steady `rate` per second; create -> bound
//!   latency p50/p99/max.
//!
//! Latency runs from just before the create request to the moment a separate watch sees
//! `spec.nodeName` set, so it includes the create, the scheduler's watch, the decision, the
//! binding write and the watch back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Client;
use kubeedge_apiserver::{ApiConfig, ApiService, SqliteConfig, SqliteStore};
use kubeedge_controlplane::{self as controlplane, ControlPlaneConfig};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Times = Arc<Mutex<HashMap<String, Instant>>>;

async fn register_node(client: &Client, i: usize) -> Result<()> {
    let name = format!("edge-{i:03}");
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
        "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "", "kubernetes.io/hostname": name}}}))?;
    nodes.create(&PostParams::default(), &node).await?;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let alloc = json!({"cpu": "8", "memory": "32Gi", "pods": "110"});
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "capacity": alloc, "allocatable": alloc,
    }});
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))?)
}

/// Records when each pod is first seen bound.
async fn observe(client: Client, bound: Times, cancel: CancellationToken) {
    let api: Api<Pod> = Api::namespaced(client, "bench");
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures_util::pin_mut!(stream);
    loop {
        let p = tokio::select! {
            () = cancel.cancelled() => return,
            p = stream.next() => p,
        };
        let Some(Ok(p)) = p else { continue };
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            let now = Instant::now();
            if let (Some(name), Ok(mut b)) = (p.metadata.name, bound.lock()) {
                b.entry(name).or_insert(now);
            }
        }
    }
}

async fn create(api: Api<Pod>, name: String, created: Times) -> Result<()> {
    let p = pod(&name)?;
    let start = Instant::now();
    api.create(&PostParams::default(), &p).await?;
    if let Ok(mut c) = created.lock() {
        c.insert(name, start);
    }
    Ok(())
}

async fn wait_bound(bound: &Times, names: &[String], limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let done = bound
            .lock()
            .map(|b| names.iter().all(|n| b.contains_key(n)))
            .unwrap_or(false);
        if done {
            return Ok(());
        }
        if start.elapsed() > limit {
            let n = bound.lock().map(|b| b.len()).unwrap_or(0);
            bail!("only {n} pods bound within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    first_create: Instant,
    last_bound: Instant,
}

fn stats(created: &Times, bound: &Times, names: &[String]) -> Result<Stats> {
    let c = created.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let b = bound.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut lat = Vec::new();
    let mut first = None::<Instant>;
    let mut last = None::<Instant>;
    for n in names {
        let (s, e) = (*c.get(n).context("created")?, *b.get(n).context("bound")?);
        lat.push(e.saturating_duration_since(s).as_secs_f64() * 1000.0);
        first = Some(first.map_or(s, |f| f.min(s)));
        last = Some(last.map_or(e, |l| l.max(e)));
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Ok(Stats {
        p50: pct(0.50),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or(0.0),
        first_create: first.context("no pods")?,
        last_bound: last.context("no pods")?,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let pods: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let nodes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let rate: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200.0);

    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open_with(dir.path().join("state.db"), SqliteConfig::default())?;
    let service = ApiService::new(store, ApiConfig::default()).await?;
    let client = Client::new(service, "default");
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
    )
    .await?;
    let reg = Instant::now();
    for i in 0..nodes {
        register_node(&client, i).await?;
    }
    println!(
        "sched-bench: {pods} pods on {nodes} nodes (kubeedge-apiserver in-process on SQLite); nodes registered in {:.2} s",
        reg.elapsed().as_secs_f64()
    );

    let cancel = CancellationToken::new();
    let cp = tokio::spawn(controlplane::run(
        client.clone(),
        ControlPlaneConfig::default(),
        cancel.clone(),
    ));
    let created: Times = Arc::default();
    let bound: Times = Arc::default();
    let obs = tokio::spawn(observe(client.clone(), Arc::clone(&bound), cancel.clone()));
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench");

    // Warm-up: one pod bound means every cache is synced.
    create(api.clone(), "warmup".into(), Arc::clone(&created)).await?;
    wait_bound(&bound, &["warmup".to_owned()], Duration::from_secs(30)).await?;

    // Burst.
    let names: Vec<String> = (0..pods).map(|i| format!("burst-{i:05}")).collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for n in &names {
        let permit = Arc::clone(&sem).acquire_owned().await?;
        let (api, n, created) = (api.clone(), n.clone(), Arc::clone(&created));
        tasks.spawn(async move {
            let r = create(api, n, created).await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    wait_bound(&bound, &names, Duration::from_secs(120)).await?;
    let s = stats(&created, &bound, &names)?;
    let secs = s.last_bound.duration_since(s.first_create).as_secs_f64();
    println!(
        "burst: {pods} pods scheduled in {secs:.2} s = {:.0} pods/s; create->bound p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pods as f64 / secs,
        s.p50,
        s.p99,
        s.max
    );

    // Paced.
    let names: Vec<String> = (0..pods).map(|i| format!("paced-{i:05}")).collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for n in &names {
        tick.tick().await;
        let (api, n, created) = (api.clone(), n.clone(), Arc::clone(&created));
        tasks.spawn(create(api, n, created));
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    wait_bound(&bound, &names, Duration::from_secs(120)).await?;
    let s = stats(&created, &bound, &names)?;
    println!(
        "paced: {pods} pods at {rate:.0}/s: create->bound p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 <= 100 ms)",
        s.p50, s.p99, s.max
    );

    // Spread check: no node carries more than its share plus one.
    let all = api.list(&Default::default()).await?.items;
    let mut per: HashMap<String, usize> = HashMap::new();
    for p in &all {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per.entry(n).or_default() += 1;
        }
    }
    let (lo, hi) = (
        per.values().min().copied().unwrap_or(0),
        per.values().max().copied().unwrap_or(0),
    );
    println!("spread: {} nodes used, {lo}..{hi} pods per node", per.len());

    cancel.cancel();
    let _ = obs.await;
    cp.await??;
    Ok(())
}
