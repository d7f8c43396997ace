//! Load figures: create 10k pods over HTTPS while 100 watchers follow them, patch a tenth,
//! then list them all; on SQLite and, with feature `etcd`, on a 3-member etcd cluster on
//! loopback (Debian's `etcd`), printed side by side at the end.
//!
//! Run: `cargo bench -p kubeedge-apiserver --features etcd --bench apiserver` (env `PODS`,
//! `WATCHERS`, `CONCURRENCY` override the defaults 10000, 100, 16). Under
//! `cargo test --all-targets` it runs a small smoke version (200 pods, 5 watchers, one etcd
//! member).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use kubeedge_apiserver::{
    serve, write_kubeconfig, AnyStore, ApiConfig, ApiService, Pki, ServeConfig, SqliteStore,
};

#[cfg(feature = "etcd")]
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/etcd.rs"]
mod etcd;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// One measured step: its rate and latencies.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn report(what: &str, mut lat: Vec<Duration>, wall: Duration) -> Stat {
    lat.sort();
    let n = lat.len();
    let stat = Stat {
        per_s: n as f64 / wall.as_secs_f64(),
        p50_ms: pct(&lat, 0.50).as_secs_f64() * 1e3,
        p99_ms: pct(&lat, 0.99).as_secs_f64() * 1e3,
    };
    println!(
        "{what:<34} n={n:<8} {:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        stat.per_s,
        stat.p50_ms,
        stat.p99_ms,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    stat
}

/// What one store did.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    create: Stat,
    watch: Stat,
    patch: Stat,
    list: Stat,
}

fn pod_json(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench", "shard": format!("s{}", i % 10)}},
        "spec": {"nodeName": format!("edge-{}", i % 50), "containers": [{"name": "app", "image": "nginx:1.25",
            "ports": [{"containerPort": 80}], "env": [{"name": "INDEX", "value": i.to_string()}]}]}
    }))
    .unwrap_or_default()
}

fn request(
    method: http::Method,
    uri: &str,
    body: Vec<u8>,
) -> anyhow::Result<http::Request<kube::client::Body>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))?)
}

/// Extracts `"name":"pod-NNNNN"` from a watch line without parsing the whole object.
fn pod_name(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    let start = text.find("\"name\":\"pod-")? + 8;
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // then a small smoke run keeps the test suite quick.
    let full = std::env::args().any(|a| a == "--bench");
    let load = Load {
        pods: env_or("PODS", if full { 10_000 } else { 200 }),
        watchers: env_or("WATCHERS", if full { 100 } else { 5 }),
        concurrency: env_or("CONCURRENCY", if full { 16 } else { 4 }),
    };
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("bench.db"))?;
    println!("== SQLite (WAL, one file)");
    let mut columns = vec![("SQLite".to_owned(), run(sqlite.into(), load).await?)];
    #[cfg(feature = "etcd")]
    {
        let members = if full { 3 } else { 1 };
        let cluster = etcd::EtcdCluster::start(members).await?;
        let store = kubeedge_apiserver::EtcdStore::connect(kubeedge_apiserver::EtcdConfig::new(
            cluster.endpoints(),
        ))
        .await?;
        println!("== etcd ({members} members on loopback)");
        columns.push((
            format!("etcd, {members} member(s)"),
            run(store.into(), load).await?,
        ));
    }
    #[cfg(not(feature = "etcd"))]
    println!("(built without the etcd feature: SQLite only)");
    side_by_side(&columns);
    Ok(())
}

/// The load: pods created, watchers following them, concurrent writers.
#[derive(Debug, Clone, Copy)]
struct Load {
    pods: usize,
    watchers: usize,
    concurrency: usize,
}

fn side_by_side(columns: &[(String, Figures)]) {
    println!();
    print!("{:<36}", "side by side");
    for (name, _) in columns {
        print!("{name:>24}");
    }
    println!();
    type Cell = fn(&Figures) -> String;
    let rows: [(&str, Cell); 5] = [
        ("create pod, ops/s", |f| format!("{:.0}", f.create.per_s)),
        ("create pod, p50 / p99 ms", |f| {
            format!("{:.2} / {:.2}", f.create.p50_ms, f.create.p99_ms)
        }),
        ("watch events delivered/s", |f| {
            format!("{:.0}", f.watch.per_s)
        }),
        ("watch delivery, p50 / p99 ms", |f| {
            format!("{:.2} / {:.2}", f.watch.p50_ms, f.watch.p99_ms)
        }),
        ("patch pod (CAS), ops/s", |f| {
            format!("{:.0}", f.patch.per_s)
        }),
    ];
    for (label, cell) in rows {
        print!("{label:<36}");
        for (_, f) in columns {
            print!("{:>24}", cell(f));
        }
        println!();
    }
    print!("{:<36}", "list all pods, p50 ms");
    for (_, f) in columns {
        print!("{:>24}", format!("{:.1}", f.list.p50_ms));
    }
    println!();
}

async fn run(store: AnyStore, load: Load) -> anyhow::Result<Figures> {
    let Load {
        pods,
        watchers,
        concurrency,
    } = load;
    let dir = tempfile::tempdir()?;
    let service = ApiService::new(store, ApiConfig::default()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let pki = Pki::generate(&[])?;
    let tls = pki.server_tls()?;
    let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
    let kubeconfig = dir.path().join("admin.kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &format!("https://127.0.0.1:{}", addr.port()),
        &pki.ca_pem(),
        Some(&admin),
        None,
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        service.clone(),
        tls,
        ServeConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;

    println!("kubeedge-apiserver bench: {pods} pods, {watchers} watchers, {concurrency} concurrent writers, HTTPS on {addr}");

    // Watchers start from the current revision and time every event they receive.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(pods)));
    let rv = service.store_revision();
    let mut watch_tasks = tokio::task::JoinSet::new();
    for _ in 0..watchers {
        let client = client.clone();
        let sent_at = Arc::clone(&sent_at);
        let req = request(http::Method::GET, &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=600"), Vec::new())?;
        let resp = client.send(req).await?;
        watch_tasks.spawn(async move {
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            let mut lat = Vec::with_capacity(pods);
            while lat.len() < pods {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                let now = Instant::now();
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Some(name) = pod_name(&line) {
                        if let Some(t0) = sent_at.lock().ok().and_then(|m| m.get(name).copied()) {
                            lat.push(now.saturating_duration_since(t0));
                        }
                    }
                }
            }
            anyhow::Ok(lat)
        });
    }
    // Wait (bounded) until every watch is registered with the server.
    let registered = Instant::now();
    while service.active_watches() < watchers {
        anyhow::ensure!(
            registered.elapsed() < Duration::from_secs(30),
            "watches did not register"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Create.
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = Arc::clone(&next);
        let sent_at = Arc::clone(&sent_at);
        writers.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    break;
                }
                let body = pod_json(i);
                let t0 = Instant::now();
                if let Ok(mut m) = sent_at.lock() {
                    m.insert(format!("pod-{i:05}"), t0);
                }
                let resp = client
                    .send(request(
                        http::Method::POST,
                        "/api/v1/namespaces/default/pods",
                        body,
                    )?)
                    .await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await?;
                anyhow::ensure!(status.as_u16() == 201, "create returned {status}");
                lat.push(t0.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut create_lat = Vec::with_capacity(pods);
    while let Some(r) = writers.join_next().await {
        create_lat.extend(r??);
    }
    let create_wall = start.elapsed();
    let create = report("create pod (HTTPS, mutating)", create_lat, create_wall);

    let mut delivery = Vec::with_capacity(pods * watchers);
    let deadline = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(r) = watch_tasks.join_next().await {
            delivery.extend(r??);
        }
        anyhow::Ok(())
    });
    deadline
        .await
        .context("watchers did not receive every event within 300 s")??;
    let fan_wall = start.elapsed();
    println!(
        "watch events delivered: {} of {}",
        delivery.len(),
        pods * watchers
    );
    let watch = report("watch delivery (write start->recv)", delivery, fan_wall);

    // Patch (read-modify-write with CAS) a tenth of the pods.
    let start = Instant::now();
    let mut patch_lat = Vec::new();
    let mut patchers = tokio::task::JoinSet::new();
    let per = (pods / 10).max(1) / concurrency.max(1);
    for w in 0..concurrency {
        let client = client.clone();
        patchers.spawn(async move {
            let mut lat = Vec::new();
            for j in 0..per {
                let i = w * per + j;
                let t0 = Instant::now();
                let req = http::Request::builder()
                    .method(http::Method::PATCH)
                    .uri(format!("/api/v1/namespaces/default/pods/pod-{i:05}"))
                    .header("content-type", "application/strategic-merge-patch+json")
                    .body(kube::client::Body::from(
                        br#"{"metadata":{"labels":{"patched":"yes"}}}"#.to_vec(),
                    ))?;
                let resp = client.send(req).await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await?;
                anyhow::ensure!(status.is_success(), "patch returned {status}");
                lat.push(t0.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    while let Some(r) = patchers.join_next().await {
        patch_lat.extend(r??);
    }
    let patch = report(
        "patch pod (strategic, mutating)",
        patch_lat,
        start.elapsed(),
    );

    // List everything, a few times, whole and paged.
    let mut list_lat = Vec::new();
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let resp = client
            .send(request(http::Method::GET, "/api/v1/pods", Vec::new())?)
            .await?;
        let status = resp.status();
        let body: Bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "list returned {status}: {}",
            String::from_utf8_lossy(&body)
        );
        bytes = body.len();
        list_lat.push(t0.elapsed());
    }
    let list = report("list all pods (one request)", list_lat, start.elapsed());
    println!("list size: {:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    let t0 = Instant::now();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let uri = format!(
            "/api/v1/pods?limit=500{}",
            if cont.is_empty() {
                String::new()
            } else {
                format!("&continue={cont}")
            }
        );
        let resp = client
            .send(request(http::Method::GET, &uri, Vec::new())?)
            .await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        pages += 1;
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_owned(),
            _ => break,
        }
    }
    println!(
        "paged list (limit=500): {pages} pages in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let t0 = Instant::now();
    let resp = client
        .send(request(
            http::Method::GET,
            "/api/v1/pods?labelSelector=shard%3Ds3",
            Vec::new(),
        )?)
        .await?;
    let _ = resp.into_body().collect().await?;
    println!(
        "label-selected list (1/10 of pods): {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(Figures {
        create,
        watch,
        patch,
        list,
    })
}
