//! `hub-bench`: N simulated edge nodes over real TLS websockets against a CloudHub running in a
//! child process, so that the cloud's memory and CPU are measured alone.
//!
//! ```sh
//! cargo run --release -p kubeedge-bench --bin hub-bench -- 10000      # nodes to hold (default 1000)
//! ```
//!
//! It prints: the connect rate; cloud RSS per connected idle node; cloud CPU at idle (upstream's
//! 15 s heartbeat); downstream and upstream msgs/s at 1,000 nodes; p50/p99 delivery latency at
//! 1,000 nodes sending 1 msg/s each. The downstream and upstream rounds run twice, side by
//! side: without scrapes, and with the cloud's `/metrics` scraped 10 times a second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kubeedge_bench::sim;
use kubeedge_cloud::certs::{FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::{CloudHub, HubConfig};
use kubeedge_edge::hub::{self, ClientTls};
use kubeedge_proto::{Content, Message, Route};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the cloud (child process)

/// Commands on stdin, one per line; one answer line each on stdout.
///
/// ```text
///   connected                 -> <n>
///   rss                       -> <kB>
///   cpu                       -> <clock ticks used so far>
///   send <per-node> <nodes> <round> -> <seconds to enqueue>
///   upcount <n>               -> <seconds until n upstream messages arrived>
///   latency <n>               -> <p50 ms> <p99 ms> over the next n upstream messages
/// ```
async fn cloud(dir: PathBuf) -> Result<()> {
    let store = FsCertStore::in_dir(&dir);
    let pki = Arc::new(Pki::load_or_create(&store, PkiConfig::default())?);
    let mut cfg = HubConfig::default();
    cfg.node_limit = 100_000;
    cfg.keepalive_interval = Duration::from_secs(60);
    cfg.handshake_timeout = Duration::from_secs(120);
    let (hub, down, mut up) = CloudHub::new(pki, cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    {
        let (hub, cancel) = (hub.clone(), cancel.clone());
        tokio::spawn(async move { hub.serve_websocket(listener, cancel).await });
    }
    // cloudcore's monitor server, as it runs beside the hub.
    let mut registry = prometheus_client::registry::Registry::default();
    hub.register_metrics(&mut registry);
    let monitor_listener = TcpListener::bind("127.0.0.1:0").await?;
    let monitor = monitor_listener.local_addr()?;
    let (_ready, ready_rx) = tokio::sync::watch::channel(true);
    tokio::spawn(
        kubeedge_cloud::monitor::Monitor::new(Arc::new(registry), ready_rx)
            .serve(monitor_listener, cancel.clone()),
    );
    let mut out = tokio::io::stdout();
    out.write_all(format!("{addr} {monitor}\n").as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["connected"] => hub.connected().to_string(),
            ["rss"] => proc_status_kb("VmRSS").to_string(),
            ["cpu"] => proc_cpu_ticks().to_string(),
            ["send", per, nodes, round] => {
                let (per, nodes): (usize, usize) = (per.parse()?, nodes.parse()?);
                let round: usize = round.parse()?;
                let start = Instant::now();
                let mut tasks = Vec::new();
                for n in 0..nodes {
                    let down = down.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..per {
                            let _ = down.send(&format!("node-{n}"), pod(n, i, round)).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await?;
                }
                format!("{:.3}", start.elapsed().as_secs_f64())
            }
            ["upcount", n] => {
                let n: usize = n.parse()?;
                let start = Instant::now();
                for _ in 0..n {
                    up.recv().await.context("upstream closed")?;
                }
                format!("{:.3}", start.elapsed().as_secs_f64())
            }
            ["latency", n] => {
                let n: usize = n.parse()?;
                let mut lat = Vec::with_capacity(n);
                while lat.len() < n {
                    let u = up.recv().await.context("upstream closed")?;
                    let sent: u128 = u
                        .msg
                        .content
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if sent > 0 {
                        lat.push((now_nanos().saturating_sub(sent)) as f64 / 1e6);
                    }
                }
                lat.sort_by(f64::total_cmp);
                format!("{:.2} {:.2}", lat[lat.len() / 2], lat[lat.len() * 99 / 100])
            }
            _ => "?".to_owned(),
        };
        out.write_all(format!("{answer}\n").as_bytes()).await?;
        out.flush().await?;
    }
    cancel.cancel();
    Ok(())
}

fn pod(node: usize, i: usize, round: usize) -> Message {
    let content = Content::json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": "default",
                     "uid": format!("{node}-{i}-{round}"), "resourceVersion": "1"},
        "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "c", "image": "nginx"}]}
    }))
    .unwrap_or_default();
    Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            "insert",
            format!("default/pod/p{i}"),
        ),
        content,
    )
    .with_resource_version("1")
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn proc_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

// ---------------------------------------------------------------- the edges (this process)

struct Child {
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _proc: tokio::process::Child,
}

impl Child {
    async fn cmd(&mut self, cmd: &str) -> Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    async fn answer(&mut self) -> Result<String> {
        self.lines.next_line().await?.context("cloud exited")
    }

    async fn ask(&mut self, cmd: &str) -> Result<String> {
        self.cmd(cmd).await?;
        self.answer().await
    }
}

struct Edge {
    client: hub::Client,
    received: Arc<AtomicU64>,
}

async fn start_edge(
    server: &str,
    node: String,
    tls: ClientTls,
    heartbeat: Duration,
    cancel: &CancellationToken,
) -> Edge {
    let mut cfg = sim::config(server, node);
    cfg.heartbeat = heartbeat;
    cfg.message_qps = 100_000;
    cfg.message_burst = 100_000;
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let client = sim::acking_edge(cfg, tls, cancel, move |_| {
        r.fetch_add(1, Ordering::Relaxed);
    });
    Edge { client, received }
}

/// Scrape `/metrics` every `every` until aborted, counting complete answers.
async fn scrape_every(monitor: std::net::SocketAddr, every: Duration, done: Arc<AtomicU64>) {
    use tokio::io::AsyncReadExt as _;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Ok(mut s) = tokio::net::TcpStream::connect(monitor).await else {
            continue;
        };
        let _ = s
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: cloud\r\n\r\n")
            .await;
        let mut out = Vec::new();
        if s.read_to_end(&mut out).await.is_ok() && out.get(9..12) == Some(b"200") {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn wait_for(mut cond: impl FnMut() -> bool, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_connected(child: &mut Child, n: usize, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let c: usize = child.ask("connected").await?.parse()?;
        if c >= n {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("only {c} of {n} connected after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--cloud") {
        return cloud(PathBuf::from(args.get(2).context("dir")?)).await;
    }
    // `cargo test --all-targets` runs bench binaries without arguments: keep that quick.
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let smoke = args.len() < 2;
    let nodes = if smoke { 20 } else { nodes };
    let busy = nodes.min(1000);

    let dir = tempfile::tempdir()?;
    let pki = Pki::load_or_create(&FsCertStore::in_dir(dir.path()), PkiConfig::default())?;
    let mut proc = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--cloud")
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut child = Child {
        stdin: proc.stdin.take().context("stdin")?,
        lines: BufReader::new(proc.stdout.take().context("stdout")?).lines(),
        _proc: proc,
    };
    let addrs = child.lines.next_line().await?.context("cloud address")?;
    let (server, monitor) = addrs
        .split_once(' ')
        .context("cloud and monitor addresses")?;
    let (server, monitor) = (server.to_owned(), monitor.parse::<std::net::SocketAddr>()?);
    let base_rss: u64 = child.ask("rss").await?.parse()?;

    // One key, one certificate per node (CN system:node:<name>), signed through the CSR path.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let key_der = key.serialize_der();
    let ca = pki.ca_cert_der().to_vec();
    let mut certs = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("system:node:node-{n}"));
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        let cert = pki.sign_edge_csr(&kubeedge_cloud::certs::EdgeCsr::new(
            csr.der(),
            &format!("node-{n}"),
        ))?;
        certs.push(ClientTls::new(
            ca.clone(),
            cert,
            PrivateKeyDer::Pkcs8(key_der.clone().into()),
        ));
    }

    // 1. Connect everyone (upstream's 15 s heartbeat), 256 handshakes at a time.
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut edges = Vec::with_capacity(nodes);
    let mut waits = Vec::with_capacity(nodes);
    for (n, tls) in certs.into_iter().enumerate() {
        let e = start_edge(
            &server,
            format!("node-{n}"),
            tls,
            Duration::from_secs(15),
            &cancel,
        )
        .await;
        let c = e.client.clone();
        let permit = gate.clone().acquire_owned().await?;
        waits.push(tokio::spawn(async move {
            let r = c.connected().await;
            drop(permit);
            r
        }));
        edges.push(e);
    }
    for w in waits {
        w.await??;
    }
    wait_connected(&mut child, nodes, Duration::from_secs(600)).await?;
    let connect_secs = start.elapsed().as_secs_f64();
    println!(
        "nodes connected          {nodes} in {connect_secs:.1} s ({:.0} nodes/s)",
        nodes as f64 / connect_secs
    );

    // 2. Idle: RSS per node and CPU over a window of heartbeats.
    tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 5 })).await;
    let rss: u64 = child.ask("rss").await?.parse()?;
    let per_node = (rss.saturating_sub(base_rss)) as f64 / nodes as f64;
    println!("cloud RSS                {rss} kB total, {base_rss} kB before nodes, {per_node:.1} KiB per idle node");
    let window = Duration::from_secs(if smoke { 1 } else { 30 });
    let t0: u64 = child.ask("cpu").await?.parse()?;
    tokio::time::sleep(window).await;
    let t1: u64 = child.ask("cpu").await?.parse()?;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu = (t1 - t0) as f64 / ticks_per_sec / window.as_secs_f64() * 100.0;
    println!("cloud CPU at idle        {cpu:.2} % of one core ({nodes} nodes, 15 s heartbeat, {window:?} window)");

    // 3 and 4, twice: without scrapes, then with /metrics scraped 10 times a second.
    for (round, scraped) in [(0usize, false), (1, true)] {
        let suffix = if scraped { ", scraped 10/s" } else { "" };
        let down_label = format!("{:<25}", format!("downstream{suffix}"));
        let up_label = format!("{:<25}", format!("upstream{suffix}"));
        let scrapes = Arc::new(AtomicU64::new(0));
        let scraper = scraped.then(|| {
            tokio::spawn(scrape_every(
                monitor,
                Duration::from_millis(100),
                scrapes.clone(),
            ))
        });
        // 3. Downstream at `busy` nodes: ACK-mode pod inserts, each acked by the edge consumer.
        let per = if smoke { 10 } else { 100 };
        let total = (per * busy) as u64;
        let before: u64 = edges
            .iter()
            .take(busy)
            .map(|e| e.received.load(Ordering::Relaxed))
            .sum();
        let start = Instant::now();
        child.ask(&format!("send {per} {busy} {round}")).await?;
        wait_for(
            || {
                edges
                    .iter()
                    .take(busy)
                    .map(|e| e.received.load(Ordering::Relaxed))
                    .sum::<u64>()
                    - before
                    >= total
            },
            Duration::from_secs(300),
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        println!("{down_label}{total} msgs to {busy} nodes in {secs:.2} s: {:.0} msgs/s (ACK mode, acked)", total as f64 / secs);

        // 4. Upstream at `busy` nodes.
        let per_up = if smoke { 10 } else { 100 };
        let total_up = per_up * busy;
        child.cmd(&format!("upcount {total_up}")).await?;
        let senders: Vec<_> = edges
            .iter()
            .take(busy)
            .map(|e| {
                let c = e.client.clone();
                tokio::spawn(async move {
                    for _ in 0..per_up {
                        let m = Message::new(
                            Route::new("edged", "meta", "update", "default/podstatus/p"),
                            Content::string("{}"),
                        );
                        let _ = c.send(m).await;
                    }
                })
            })
            .collect();
        let took: f64 = child.answer().await?.parse()?;
        for s in senders {
            s.await?;
        }
        println!(
            "{up_label}{total_up} msgs from {busy} nodes in {took:.2} s: {:.0} msgs/s",
            total_up as f64 / took
        );
        if let Some(s) = scraper {
            s.abort();
            println!(
                "  /metrics scraped {} times during the two rounds",
                scrapes.load(Ordering::Relaxed)
            );
        }
    }

    // 5. Latency: `busy` nodes each send 1 msg/s carrying its send time.
    let seconds = if smoke { 2 } else { 10 };
    let samples = busy * seconds;
    let stop = CancellationToken::new();
    let tickers: Vec<_> = edges
        .iter()
        .take(busy)
        .enumerate()
        .map(|(i, e)| {
            let c = e.client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                // Spread the nodes over the second.
                tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / busy as u64))
                    .await;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let m = Message::new(
                        Route::new("edged", "meta", "update", "default/podstatus/p"),
                        Content::string(&now_nanos().to_string()),
                    );
                    let _ = c.send(m).await;
                }
            })
        })
        .collect();
    child.cmd(&format!("latency {samples}")).await?;
    let lat = child.answer().await?;
    stop.cancel();
    for t in tickers {
        let _ = t.await;
    }
    let mut it = lat.split_whitespace();
    println!(
        "delivery latency         p50 {} ms, p99 {} ms ({busy} nodes at 1 msg/s, {samples} samples)",
        it.next().unwrap_or("?"),
        it.next().unwrap_or("?")
    );
    cancel.cancel();
    Ok(())
}
