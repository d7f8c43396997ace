//! The tunnel between hosts: network namespaces made and removed by the test.
//!
//! ```text
//!   node-a 192.168.70.1 ─┐
//!   node-b 192.168.70.2 ─┼─ br0 (LAN) ── router 192.168.70.254 ══ NAT ══ 10.70.0.1 ── node-c 10.70.0.2
//!   relay  192.168.70.3 ─┘                 (node-c may reach the relay only)
//! ```
//!
//! Every node's pod is `172.17.0.2:80` (as on Docker nodes: the address means nothing off
//! its node) and answers its node's name. Node A and node C proxy Services whose endpoints
//! are on the others: node B is found by mDNS and reached straight, node C only through the
//! relay. Then the relay restarts (an open connection through it ends with an error, and node C
//! takes a reservation again), and node B goes away (its endpoint is skipped).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use common::netns::{join, Netns};
use common::{put_endpoints, put_service, until};
use kubeedge_mesh::catalog::Catalog;
use kubeedge_mesh::proxy::{ProxyConfig, ServiceProxy};
use kubeedge_mesh::tunnel::{Path, PeerId, Psk, RelayNode, Tunnel, TunnelConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const POD: &str = "172.17.0.2";
/// The Services every proxying node knows: cluster IP, and the nodes of its endpoints.
const SERVICES: [(&str, &str, &[&str]); 3] = [
    ("web", "10.96.0.10", &["node-a", "node-b", "node-c"]),
    ("web-b", "10.96.0.11", &["node-b"]),
    ("web-c", "10.96.0.12", &["node-c"]),
];

fn psk() -> Option<Psk> {
    Some(Psk::from_file_contents(b"the LAN's key\n"))
}

fn tunnel_config(name: &str) -> TunnelConfig {
    let mut c = TunnelConfig::new(name);
    c.psk = psk();
    c.relays = vec![RelayNode::new("relay", vec!["192.168.70.3".into()])];
    c.mdns_interval = Duration::from_millis(500);
    c.heartbeat = Duration::from_millis(300);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// A running node: its tunnel's peers, the proxy's listener per cluster IP, and its stop.
struct Node {
    peers: watch::Receiver<BTreeMap<PeerId, Path>>,
    listeners: BTreeMap<IpAddr, SocketAddr>,
    stop: CancellationToken,
    thread: JoinHandle<anyhow::Result<()>>,
}

/// Starts node `name` in `ns`: its pod, its tunnel, and (with `proxy`) the Services' proxy.
fn start(ns: &Netns, name: &'static str, proxy: bool) -> anyhow::Result<Node> {
    let stop = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let done = stop.clone();
    let thread = ns.run(move || async move {
        if name != "relay" {
            let pod = TcpListener::bind((POD.parse::<IpAddr>()?, 80)).await?;
            tokio::spawn(serve_pod(pod, name));
        }
        let tunnel = Tunnel::start(tunnel_config(name), done.clone())?;
        let mut listeners = BTreeMap::new();
        if proxy {
            let catalog = Catalog::new();
            for (svc, ip, nodes) in SERVICES {
                put_service(
                    &catalog,
                    "default",
                    svc,
                    json!({}),
                    json!({"clusterIP": ip, "ports": [{"port": 80}]}),
                );
                let addresses: Vec<_> = nodes
                    .iter()
                    .map(|n| json!({"ip": POD, "nodeName": n}))
                    .collect();
                put_endpoints(
                    &catalog,
                    "default",
                    svc,
                    json!([{"addresses": addresses, "ports": [{"port": 80}]}]),
                );
            }
            let mut config = ProxyConfig::default();
            config.listen_ip = [127, 0, 0, 1].into();
            config.connect_timeout = Duration::from_secs(3);
            config.tunnel = Some(tunnel.clone());
            let proxy = ServiceProxy::new(catalog, config);
            let redirects = proxy.redirects();
            tokio::spawn(proxy.run(done.clone()));
            listeners = until("the proxy's listeners", || {
                let r = redirects.borrow().clone();
                async move {
                    (r.len() == SERVICES.len())
                        .then(|| r.iter().map(|r| (r.cluster_ip, r.to)).collect())
                }
            })
            .await?;
        }
        tx.send((tunnel.peers(), listeners))?;
        done.cancelled().await;
        Ok(())
    });
    let (peers, listeners) = rx
        .recv_timeout(Duration::from_secs(20))
        .with_context(|| format!("{name} did not start"))?;
    Ok(Node {
        peers,
        listeners,
        stop,
        thread,
    })
}

impl Node {
    fn to(&self, cluster_ip: &str) -> anyhow::Result<SocketAddr> {
        let ip: IpAddr = cluster_ip.parse()?;
        self.listeners.get(&ip).copied().context("no listener")
    }

    fn path_to(&self, node: &str) -> Option<Path> {
        let peer = kubeedge_mesh::tunnel::identity::peer_id(node, psk().as_ref());
        self.peers.borrow().get(&peer).copied()
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        join(self.thread)
    }
}

/// A pod: says its node's name, then echoes.
async fn serve_pod(l: TcpListener, name: &'static str) {
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let _ = s.write_all(name.as_bytes()).await;
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Who answers at `to`, asked from inside `ns`.
fn who(ns: &Netns, to: SocketAddr) -> anyhow::Result<String> {
    join(ns.run(move || async move {
        let mut s = tokio::time::timeout(Duration::from_secs(8), TcpStream::connect(to)).await??;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await??;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }))
}

/// Waits (15 s at most) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        ensure!(
            std::time::Instant::now() < deadline,
            "{what}: not within 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn veth_to(bridge_ns: &Netns, ns: &Netns, ip: &str) -> anyhow::Result<()> {
    let port = format!("v{}", fastrand::u32(..));
    bridge_ns.exec(&[
        "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
    ])?;
    bridge_ns.exec(&["ip", "link", "set", &port, "master", "br0"])?;
    bridge_ns.exec(&["ip", "link", "set", &port, "up"])?;
    ns.exec(&["ip", "addr", "add", ip, "dev", "eth0"])?;
    ns.exec(&["ip", "link", "set", "eth0", "up"])
}

#[test]
fn lan_peers_by_mdns_a_natted_node_through_the_relay_and_a_relay_restart() -> anyhow::Result<()> {
    let lan = Netns::new("tlan")?;
    lan.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
    lan.exec(&["ip", "link", "set", "br0", "up"])?;
    let (a, b, r) = (Netns::new("ta")?, Netns::new("tb")?, Netns::new("tr")?);
    veth_to(&lan, &a, "192.168.70.1/24")?;
    veth_to(&lan, &b, "192.168.70.2/24")?;
    veth_to(&lan, &r, "192.168.70.3/24")?;
    let (router, c) = (Netns::new("trt")?, Netns::new("tc")?);
    veth_to(&lan, &router, "192.168.70.254/24")?;
    router.exec(&[
        "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &c.0,
    ])?;
    router.exec(&["ip", "addr", "add", "10.70.0.1/24", "dev", "eth1"])?;
    router.exec(&["ip", "link", "set", "eth1", "up"])?;
    c.exec(&["ip", "addr", "add", "10.70.0.2/24", "dev", "eth0"])?;
    c.exec(&["ip", "link", "set", "eth0", "up"])?;
    c.exec(&["ip", "route", "add", "default", "via", "10.70.0.1"])?;
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let rules = "table ip kem-nat {\n\
        chain outbound { type nat hook postrouting priority srcnat; oifname \"eth0\" masquerade; }\n\
        chain forwarded { type filter hook forward priority filter; policy drop;\n\
          ct state established,related accept;\n\
          iifname \"eth1\" ip daddr 192.168.70.3 accept; }\n}\n";
    let file = std::env::temp_dir().join(format!("kem-nat-{}.nft", std::process::id()));
    std::fs::write(&file, rules)?;
    router.exec(&["nft", "-f", file.to_str().context("path")?])?;
    let _ = std::fs::remove_file(&file);
    for ns in [&a, &b, &c] {
        ns.exec(&["ip", "addr", "add", &format!("{POD}/32"), "dev", "lo"])?;
    }

    // No start order: the edge nodes before the relay.
    let node_a = start(&a, "node-a", true)?;
    let node_c = start(&c, "node-c", true)?;
    let node_b = start(&b, "node-b", false)?;
    let relay = start(&r, "relay", false)?;

    // A and B are on one LAN: found by mDNS, straight.
    eventually("node-a reaches node-b's pod", || {
        who(
            &a,
            node_a.to("10.96.0.11").unwrap_or(([0, 0, 0, 0], 0).into()),
        )
        .is_ok_and(|w| w == "node-b")
    })?;
    eventually("node-a and node-b connected straight", || {
        node_a.path_to("node-b") == Some(Path::Direct)
    })?;
    // C is behind the NAT: through the relay, both ways.
    eventually("node-a reaches node-c's pod", || {
        who(
            &a,
            node_a.to("10.96.0.12").unwrap_or(([0, 0, 0, 0], 0).into()),
        )
        .is_ok_and(|w| w == "node-c")
    })?;
    ensure!(
        node_a.path_to("node-c") == Some(Path::Relayed),
        "{:?}",
        node_a.path_to("node-c")
    );
    ensure!(
        who(&c, node_c.to("10.96.0.11")?)? == "node-b",
        "node-c reaches node-b"
    );
    // One Service over the three nodes' pods, all at one address: each on its node.
    let web = node_a.to("10.96.0.10")?;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(who(&a, web)?);
    }
    ensure!(seen.len() == 3, "{seen:?}");

    // A connection through the relay is open when the relay goes: it ends, with an error.
    let to_c = node_a.to("10.96.0.12")?;
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let in_flight = a.run(move || async move {
        let mut s = TcpStream::connect(to_c).await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        ensure!(&buf[..n] == b"node-c");
        opened_tx.send(())?;
        gone_rx.await?;
        let _ = s.write_all(b"still there?").await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        ensure!(ended.is_ok(), "the connection through the lost relay hangs");
        Ok(())
    });
    opened_rx.recv_timeout(Duration::from_secs(10))?;
    relay.stop()?;
    let _ = gone_tx.send(());
    join(in_flight)?;
    // The relay comes back on its address: C takes a reservation again, and is reached.
    let relay = start(&r, "relay", false)?;
    eventually("node-a reaches node-c again", || {
        who(&a, to_c).is_ok_and(|w| w == "node-c")
    })?;

    // Node B goes away (its Endpoints not changed yet): the others serve.
    node_b.stop()?;
    for _ in 0..6 {
        let w = who(&a, web)?;
        ensure!(w != "node-b", "{w}");
    }
    node_a.stop()?;
    node_c.stop()?;
    relay.stop()?;
    Ok(())
}
