//! mesh-bench: the EdgeMesh service proxy, the tunnel and the cluster DNS, side by side with
//! going straight to the endpoint.
//!
//! Prints, in one run:
//! - on loopback: request latency p50/p99 on one connection (64-byte echo), connection
//!   latency p50/p99 (connect, one echo, close) and TCP throughput (1 GiB one way), straight
//!   to the endpoint, through the proxy, and through the proxy and the tunnel (TCP, PSK,
//!   noise, yamux) to a second agent (a child process) that connects to it;
//! - the LAN path: the same three with the endpoint and the second agent in a network
//!   namespace behind a veth link shaped to 1 Gbit/s each way (needs root, `ip`, `tc`);
//! - cluster DNS queries per second (A lookups of 1,000 Services and misses, 8 clients);
//! - the RSS of a process holding the catalog, the DNS, the proxy and the tunnel with 0 and
//!   1,000 Services (a listener per Service port).
//!
//! `MESH_BENCH_GIB` sets the loopback throughput volume, `MESH_BENCH_LAN_MIB` the LAN one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1 as core;
use kubeedge_bench::meshnet::{self, throughput, Far, FAR_NODE};
use kubeedge_mesh::catalog::{backends_of, service_of, Catalog, Change, FilterMode};
use kubeedge_mesh::dns::ClusterDns;
use kubeedge_mesh::proxy::{ProxyConfig, Redirect, ServiceProxy};
use kubeedge_mesh::tunnel::Tunnel;
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

/// A proxy on 127.0.0.1 for `catalog` (endpoints on other nodes through `tunnel`); returns
/// once it serves `n` redirects.
async fn proxy(
    catalog: &Catalog,
    n: usize,
    tunnel: Option<Tunnel>,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<Redirect>> {
    let mut config = ProxyConfig::default();
    config.listen_ip = [127, 0, 0, 1].into();
    config.tunnel = tunnel;
    let proxy = ServiceProxy::new(catalog.clone(), config);
    let mut redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    loop {
        {
            let r = redirects.borrow_and_update();
            if r.len() >= n {
                return Ok(r.to_vec());
            }
        }
        tokio::time::timeout(Duration::from_secs(30), redirects.changed()).await??;
    }
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
    // The tunnel too, as an agent runs it (listening, no peers yet).
    let mut c = kubeedge_mesh::tunnel::TunnelConfig::new("rss-child");
    c.listen_port = 0;
    c.mdns = false;
    c.psk = meshnet::psk();
    let tunnel = Tunnel::start(c, cancel.clone())?;
    proxy(&catalog, n, Some(tunnel), &cancel).await?;
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

/// Puts a Service `name` at `cluster_ip` with one endpoint `to`, on `node` if given.
fn one(
    catalog: &Catalog,
    name: &str,
    cluster_ip: &str,
    to: SocketAddr,
    node: Option<&str>,
) -> anyhow::Result<()> {
    let svc: core::Service = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": name},
        "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80, "targetPort": to.port()}]},
    }))?;
    let ep: core::Endpoints = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": name},
        "subsets": [{"addresses": [{"ip": to.ip().to_string(), "nodeName": node}],
                     "ports": [{"port": to.port()}]}],
    }))?;
    let (k, b) = backends_of(&ep).context("endpoints")?;
    catalog.apply([
        Change::Service(service_of(&svc, FilterMode::default()).context("svc")?),
        Change::Endpoints(k, b),
    ]);
    Ok(())
}

/// The far side and a proxy that reaches its backend straight (`10.96.9.1`) and through the
/// tunnel (`10.96.9.2`): the backend's address, and the two listeners.
async fn paths(
    far: &Far,
    cancel: &CancellationToken,
) -> anyhow::Result<(SocketAddr, SocketAddr, SocketAddr)> {
    let backend = SocketAddr::new(far.ip(), far.backend_port);
    let catalog = Catalog::new();
    one(&catalog, "straight", "10.96.9.1", backend, None)?;
    // Through the tunnel the far agent connects to its own loopback.
    one(
        &catalog,
        "tunnelled",
        "10.96.9.2",
        ([127, 0, 0, 1], far.backend_port).into(),
        Some(FAR_NODE),
    )?;
    let redirects = proxy(&catalog, 2, Some(far.near_tunnel(cancel)?), cancel).await?;
    let to = |ip: [u8; 4]| {
        redirects
            .iter()
            .find(|r| r.cluster_ip == std::net::IpAddr::from(ip))
            .map(|r| r.to)
            .context("listener")
    };
    Ok((backend, to([10, 96, 9, 1])?, to([10, 96, 9, 2])?))
}

fn row3(what: &str, unit: &str, v: [f64; 3]) {
    println!(
        "{what:<44} {:>9.0} {unit} {:>9.0} {unit} {:>9.0} {unit}",
        v[0], v[1], v[2]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--rss-child") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            return rss_child(n).await;
        }
        Some("--far-child") => return meshnet::far_child().await,
        _ => {}
    }
    let gib: u64 = std::env::var("MESH_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let lan_mib: u64 = std::env::var("MESH_BENCH_LAN_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let cancel = CancellationToken::new();
    let far = Far::start(None).await?;
    let (backend, via_proxy, via_tunnel) = paths(&far, &cancel).await?;

    println!(
        "mesh-bench: service proxy, tunnel and cluster DNS ({} cores); the tunnel is TCP + PSK + noise + yamux",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "loopback", "direct", "via proxy", "via tunnel"
    );
    let mut lat = Vec::new();
    for to in [backend, via_proxy, via_tunnel] {
        lat.push(request_latency(to, 5_000).await?);
    }
    row3(
        "request latency p50 (64 B echo, 5,000)",
        "us",
        [0, 1, 2].map(|i| pct(&mut lat[i], 0.5)),
    );
    row3(
        "request latency p99",
        "us",
        [0, 1, 2].map(|i| pct(&mut lat[i], 0.99)),
    );
    let mut lat = Vec::new();
    for to in [backend, via_proxy, via_tunnel] {
        lat.push(connect_latency(to, 2_000).await?);
    }
    row3(
        "connection latency p50 (connect+echo, 2,000)",
        "us",
        [0, 1, 2].map(|i| pct(&mut lat[i], 0.5)),
    );
    row3(
        "connection latency p99",
        "us",
        [0, 1, 2].map(|i| pct(&mut lat[i], 0.99)),
    );
    let bytes = gib << 30;
    let mut mbs = [0.0; 3];
    for (i, to) in [backend, via_proxy, via_tunnel].into_iter().enumerate() {
        mbs[i] = throughput(to, bytes).await?;
    }
    println!(
        "{:<44} {:>7.0} MB/s {:>7.0} MB/s {:>7.0} MB/s ({:.0} % / {:.0} % of direct)",
        format!("TCP throughput ({gib} GiB one way)"),
        mbs[0],
        mbs[1],
        mbs[2],
        mbs[1] / mbs[0] * 100.0,
        mbs[2] / mbs[0] * 100.0
    );
    far.stop().await;

    // The LAN path: the far side across a 1 Gbit/s veth link.
    match Far::start(Some("1gbit")).await {
        Ok(far) => {
            let (backend, via_proxy, via_tunnel) = paths(&far, &cancel).await?;
            let bytes = lan_mib << 20;
            let mut mbs = [0.0; 3];
            for (i, to) in [backend, via_proxy, via_tunnel].into_iter().enumerate() {
                mbs[i] = throughput(to, bytes).await?;
            }
            let mut lat = Vec::new();
            for to in [backend, via_proxy, via_tunnel] {
                lat.push(request_latency(to, 2_000).await?);
            }
            println!(
                "{:<44} {:>12} {:>12} {:>12}",
                "LAN path (veth, tbf rate 1gbit)", "direct", "via proxy", "via tunnel"
            );
            row3(
                "request latency p50 (64 B echo, 2,000)",
                "us",
                [0, 1, 2].map(|i| pct(&mut lat[i], 0.5)),
            );
            row3(
                "request latency p99",
                "us",
                [0, 1, 2].map(|i| pct(&mut lat[i], 0.99)),
            );
            println!(
                "{:<44} {:>7.0} MB/s {:>7.0} MB/s {:>7.0} MB/s ({:.0} % / {:.0} % of direct)",
                format!("TCP throughput ({lan_mib} MiB one way)"),
                mbs[0],
                mbs[1],
                mbs[2],
                mbs[1] / mbs[0] * 100.0,
                mbs[2] / mbs[0] * 100.0
            );
            far.stop().await;
        }
        Err(e) => println!("LAN path: skipped ({e:#}; needs root, ip and tc)"),
    }

    let dns_catalog = Catalog::new();
    fill(&dns_catalog, 1_000, "127.0.0.1:9".parse()?)?;
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
    println!(
        "{:<44} {:>9.1} MiB",
        "RSS, DNS + proxy + tunnel, no Services", idle
    );
    println!(
        "{:<44} {:>9.1} MiB",
        "RSS, DNS + proxy + tunnel, 1,000 Services", loaded
    );
    cancel.cancel();
    Ok(())
}
