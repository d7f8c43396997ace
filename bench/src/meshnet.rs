//! mesh-bench's far side: the backend and a second agent's tunnel in a child process, on
//! loopback or across a veth link with a set rate (a network namespace the bench makes and
//! removes), and the byte-counting backend and client the throughput runs use.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kubeedge_mesh::tunnel::{Multiaddr, Psk, RelayNode, Tunnel, TunnelConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The far agent's node name.
pub const FAR_NODE: &str = "bench-far";

/// An echo server (64-byte requests) on `ip` that also counts bytes of a bulk stream: a
/// connection that starts with `B` and a length is drained and answered with one byte at its
/// end.
pub async fn server(ip: IpAddr) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0)).await?;
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

/// MB/s of `bytes` written one way and acknowledged by the server.
pub async fn throughput(to: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
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

/// The network's key in the bench (the tunnel runs as deployed: TCP, the PSK, noise, yamux).
pub fn psk() -> Option<Psk> {
    Some(Psk::from_file_contents(b"mesh-bench\n"))
}

/// The child: a backend on all addresses and the far agent's tunnel; prints
/// `ready <backend port> <tunnel port>` and runs until killed.
pub async fn far_child() -> anyhow::Result<()> {
    let backend = server([0, 0, 0, 0].into()).await?;
    let mut c = TunnelConfig::new(FAR_NODE);
    c.listen_port = 0;
    c.mdns = false;
    c.psk = psk();
    c.relays = vec![RelayNode::new(FAR_NODE, vec![])];
    let tunnel = Tunnel::start(c, CancellationToken::new())?;
    let mut addrs = tunnel.listen_addrs();
    let port = loop {
        let port = addrs.borrow_and_update().iter().find_map(tcp_port);
        if let Some(p) = port {
            break p;
        }
        addrs.changed().await?;
    };
    println!("ready {} {port}", backend.port());
    std::future::pending::<()>().await;
    Ok(())
}

fn tcp_port(a: &Multiaddr) -> Option<u16> {
    let text = a.to_string();
    let (_, rest) = text.split_once("/tcp/")?;
    rest.split('/').next()?.parse().ok()
}

/// The far side, running: its backend's and tunnel's ports.
#[derive(Debug)]
pub struct Far {
    child: tokio::process::Child,
    /// The backend's port.
    pub backend_port: u16,
    /// The far tunnel's port.
    pub tunnel_port: u16,
    netns: Option<Netns>,
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "delete", &self.0]);
    }
}

impl Far {
    /// Starts the far side: on loopback (`link_rate` none) or in a network namespace joined to
    /// this one by a veth pair (10.77.0.1 here, 10.77.0.2 there) shaped to `link_rate` each way
    /// (a `tc` token bucket rate such as `1gbit`; netem is not in every kernel).
    pub async fn start(link_rate: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let exe = exe.to_str().context("exe path")?.to_owned();
        let mut netns = None;
        let mut cmd = if let Some(rate) = link_rate {
            let ns = format!("kem-bench-{}", std::process::id());
            let host = format!("kb{}", std::process::id() % 100_000);
            sh(&["ip", "netns", "add", &ns])?;
            // Removed on any failure below (its veth end goes with it), and by `stop`.
            netns = Some(Netns(ns.clone()));
            sh(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", &host])?;
            sh(&["ip", "link", "set", &host, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &ns];
                all.extend_from_slice(args);
                sh(&all)
            };
            inside(&["ip", "addr", "add", "10.77.0.2/24", "dev", "eth0"])?;
            inside(&["ip", "link", "set", "eth0", "up"])?;
            inside(&["ip", "link", "set", "lo", "up"])?;
            sh(&[
                "tc", "qdisc", "add", "dev", &host, "root", "tbf", "rate", rate, "burst", "256kb",
                "latency", "50ms",
            ])?;
            inside(&[
                "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "256kb",
                "latency", "50ms",
            ])?;
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", &ns, &exe, "--far-child"]);
            c
        } else {
            let mut c = tokio::process::Command::new(&exe);
            c.arg("--far-child");
            c
        };
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let mut lines = tokio::io::BufReader::new(out).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("the far side said nothing")?;
        let mut words = line.split(' ');
        anyhow::ensure!(words.next() == Some("ready"), "far side said {line:?}");
        let backend_port = words.next().context("port")?.parse()?;
        let tunnel_port = words.next().context("port")?.parse()?;
        Ok(Self {
            child,
            backend_port,
            tunnel_port,
            netns,
        })
    }

    /// The far side's address from here.
    pub fn ip(&self) -> IpAddr {
        if self.netns.is_some() {
            [10, 77, 0, 2].into()
        } else {
            [127, 0, 0, 1].into()
        }
    }

    /// A near agent's tunnel that reaches the far one.
    pub fn near_tunnel(&self, cancel: &CancellationToken) -> anyhow::Result<Tunnel> {
        let mut c = TunnelConfig::new("bench-near");
        c.listen_port = 0;
        c.mdns = false;
        c.psk = psk();
        let far = format!(
            "/{}/{}/tcp/{}",
            if self.ip().is_ipv4() { "ip4" } else { "ip6" },
            self.ip(),
            self.tunnel_port
        );
        c.relays = vec![RelayNode::new(FAR_NODE, vec![far])];
        Ok(Tunnel::start(c, cancel.clone())?)
    }

    /// Stops the far side and removes its namespace.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        drop(self.netns.take());
    }
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let st = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| args.join(" "))?;
    anyhow::ensure!(st.success(), "{} failed", args.join(" "));
    Ok(())
}
