//! mesh-bench: the EdgeMesh service proxy and cluster DNS on loopback, side by side with
//! going straight to the endpoint.
//!
//! Prints, in one run:
//! - request latency p50/p99 on one connection (64-byte echo) through the proxy and direct;
//! - connection latency p50/p99 (connect, one echo, close) through the proxy and direct;
//! - TCP throughput (1 GiB one way) through the proxy and direct;
//! - cluster DNS queries per second (A lookups of 1,000 Services and misses, 8 clients);
//! - the RSS of a process holding the catalog, the DNS and the proxy with 0 and 1,000
//!   Services (a listener per Service port).
//!
//! `mesh-bench` runs everything; `MESH_BENCH_GIB` sets the throughput volume.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1 as core;
use kubeedge_mesh::catalog::{backends_of, service_of, Catalog, Change, FilterMode};
use kubeedge_mesh::dns::ClusterDns;
use kubeedge_mesh::proxy::{ProxyConfig, ServiceProxy};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Services `svc-0..n` in `bench`, cluster IPs 10.96.x.y, each with two endpoints at `backend`.
fn fill(catalog: &Catalog, n: usize, backend: SocketAddr) -> anyhow::Result<()> {
    let mut changes = Vec::new();
    for i in 0..n {
        let name = format!("svc-{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        let svc: core::Service = serde_json::from_value(json!({
            "metadata": {"namespace": "bench", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "targetPort": backend.port()}]},
        }))?;
        changes.push(Change::Service(
            service_of(&svc, FilterMode::default()).context("svc")?,
        ));
        let ep: core::Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "bench", "name": name},
            "subsets": [{"addresses": [{"ip": backend.ip().to_string()}, {"ip": "127.0.0.2"}],
                         "ports": [{"port": backend.port()}]}],
        }))?;
        let (k, b) = backends_of(&ep).context("endpoints")?;
        changes.push(Change::Endpoints(k, b));
    }
    catalog.apply(changes);
    Ok(())
}

/// A proxy on 127.0.0.1 for `catalog`; returns once it serves `n` redirects.
async fn proxy(
    catalog: &Catalog,
    n: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut config = ProxyConfig::default();
    config.listen_ip = [127, 0, 0, 1].into();
    let proxy = ServiceProxy::new(catalog.clone(), config);
    let mut redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    loop {
        {
            let r = redirects.borrow_and_update();
            if r.len() >= n {
                return Ok(r.iter().map(|r| r.to).collect());
            }
        }
        tokio::time::timeout(Duration::from_secs(30), redirects.changed()).await??;
    }
}

/// An echo server (64-byte requests) that also counts bytes of a bulk stream: a connection
/// that starts with `B` is drained and answered with one byte at its end.
async fn server() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if n > 0 && buf[0] == b'B' {
                    let want = u64::from_be_bytes(buf[1..9].try_into().unwrap_or_default());
                    let mut got = (n - 9) as u64;
                    while got < want {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got += k as u64,
                        }
                    }
                    let _ = s.write_all(b"k").await;
                    return;
                }
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1);
    v[i].as_secs_f64() * 1e6
}

async fn request_latency(to: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut s = TcpStream::connect(to).await?;
    s.set_nodelay(true)?;
    let req = [b'r'; 64];
    let mut buf = [0u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&req).await?;
        s.read_exact(&mut buf).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

async fn connect_latency(to: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let req = [b'c'; 64];
    let mut buf = [0u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect(to).await?;
        s.set_nodelay(true)?;
        s.write_all(&req).await?;
        s.read_exact(&mut buf).await?;
        drop(s);
        out.push(t.elapsed());
    }
    Ok(out)
}

/// MB/s of `bytes` written one way and acknowledged by the server.
async fn throughput(to: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(to).await?;
    let t = Instant::now();
    let mut head = vec![b'B'];
    head.extend_from_slice(&bytes.to_be_bytes());
    s.write_all(&head).await?;
    let chunk = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let k = chunk.len().min((bytes - sent) as usize);
        s.write_all(&chunk[..k]).await?;
        sent += k as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// Queries per second of `clients` clients, each asking in turn, for `secs` seconds.
async fn dns_qps(
    server: SocketAddr,
    services: usize,
    clients: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(server).await?;
            let mut buf = vec![0u8; 1500];
            let mut i = c;
            while Instant::now() < stop {
                // One in ten is a miss.
                let name = if i % 10 == 9 {
                    format!("missing-{i}.bench.svc.cluster.local.")
                } else {
                    format!("svc-{}.bench.svc.cluster.local.", i % services.max(1))
                };
                let mut m = Message::query();
                m.metadata.id = (i & 0xffff) as u16;
                m.add_query(Query::query(Name::from_ascii(&name)?, RecordType::A));
                socket.send(&m.to_vec()?).await?;
                tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await??;
                done.fetch_add(1, Ordering::Relaxed);
                i += clients;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / secs as f64)
}

/// The child: holds `n` Services with the DNS and the proxy, says `ready`, and waits.
async fn rss_child(n: usize) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let catalog = Catalog::new();
    fill(&catalog, n, "127.0.0.1:9".parse()?)?;
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let udp = UdpSocket::bind(tcp.local_addr()?).await?;
    tokio::spawn(
        ClusterDns::new(catalog.clone(), "cluster.local", vec![])?.serve(udp, tcp, cancel.clone()),
    );
    proxy(&catalog, n, &cancel).await?;
    println!("ready");
    cancel.cancelled().await;
    Ok(())
}

async fn child_rss(n: usize) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["--rss-child", &n.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await??;
    anyhow::ensure!(line.as_deref() == Some("ready"), "child said {line:?}");
    let pid = child.id().context("pid")?;
    let kb = kubeedge_bench::rss_kb(pid);
    child.kill().await?;
    Ok(kb as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--rss-child") {
        let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        return rss_child(n).await;
    }
    let gib: u64 = std::env::var("MESH_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cancel = CancellationToken::new();
    let backend = server().await?;
    let catalog = Catalog::new();
    fill(&catalog, 1, backend)?;
    // One endpoint only for the latency runs (the second, 127.0.0.2, listens on nothing).
    let ep: core::Endpoints = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": "svc-0"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": backend.port()}]}],
    }))?;
    let (k, b) = backends_of(&ep).context("endpoints")?;
    catalog.apply([Change::Endpoints(k, b)]);
    let to = proxy(&catalog, 1, &cancel).await?[0];

    println!(
        "mesh-bench: service proxy and cluster DNS on loopback ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<44} {:>12} {:>12}", "", "direct", "via proxy");
    let mut d = request_latency(backend, 5_000).await?;
    let mut p = request_latency(to, 5_000).await?;
    println!(
        "{:<44} {:>9.0} us {:>9.0} us",
        "request latency p50 (64 B echo, 5,000)",
        pct(&mut d, 0.5),
        pct(&mut p, 0.5)
    );
    println!(
        "{:<44} {:>9.0} us {:>9.0} us",
        "request latency p99",
        pct(&mut d, 0.99),
        pct(&mut p, 0.99)
    );
    let mut d = connect_latency(backend, 2_000).await?;
    let mut p = connect_latency(to, 2_000).await?;
    println!(
        "{:<44} {:>9.0} us {:>9.0} us",
        "connection latency p50 (connect+echo, 2,000)",
        pct(&mut d, 0.5),
        pct(&mut p, 0.5)
    );
    println!(
        "{:<44} {:>9.0} us {:>9.0} us",
        "connection latency p99",
        pct(&mut d, 0.99),
        pct(&mut p, 0.99)
    );
    let bytes = gib << 30;
    let direct = throughput(backend, bytes).await?;
    let via = throughput(to, bytes).await?;
    println!(
        "{:<44} {:>7.0} MB/s {:>7.0} MB/s ({:.0} % of direct)",
        format!("TCP throughput ({gib} GiB one way)"),
        direct,
        via,
        via / direct * 100.0
    );

    let dns_catalog = Catalog::new();
    fill(&dns_catalog, 1_000, backend)?;
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let dns_addr = tcp.local_addr()?;
    let udp = UdpSocket::bind(dns_addr).await?;
    tokio::spawn(
        ClusterDns::new(dns_catalog, "cluster.local", vec![])?.serve(udp, tcp, cancel.clone()),
    );
    let qps = dns_qps(dns_addr, 1_000, 8, 3).await?;
    println!(
        "{:<44} {:>12.0}",
        "cluster DNS queries/s (1,000 Services, 8 clients)", qps
    );

    let idle = child_rss(0).await?;
    let loaded = child_rss(1_000).await?;
    println!("{:<44} {:>9.1} MiB", "RSS, DNS + proxy, no Services", idle);
    println!(
        "{:<44} {:>9.1} MiB",
        "RSS, DNS + proxy, 1,000 Services", loaded
    );
    cancel.cancel();
    Ok(())
}
