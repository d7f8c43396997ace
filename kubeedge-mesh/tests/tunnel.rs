//! The tunnel over real sockets on loopback: agents that meet through a relay, a QUIC pair,
//! a wrong pre-shared key, an endpoint that refuses, and garbage on the tunnel's stream.
//! (mDNS, NAT and a relay restart are in `tunnel_nodes.rs`, across network namespaces.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use common::until;
use kubeedge_mesh::tunnel::Multiaddr;
use kubeedge_mesh::tunnel::{Psk, RelayNode, Transport, Tunnel, TunnelConfig};
use kubeedge_mesh::MeshError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A TCP endpoint that writes its name and then echoes.
async fn endpoint(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn config(name: &str, psk: Option<Psk>) -> TunnelConfig {
    let mut c = TunnelConfig::new(name);
    c.listen_port = 0;
    c.mdns = false;
    c.psk = psk;
    c.heartbeat = Duration::from_millis(200);
    c
}

/// Where `t` listens, once it does.
async fn addr_of(t: &Tunnel) -> anyhow::Result<Multiaddr> {
    let addrs = t.listen_addrs();
    until("the tunnel listens", || {
        let a = addrs.borrow().first().cloned();
        async move { a }
    })
    .await
}

#[tokio::test]
async fn agents_meet_through_a_relay_and_carry_a_connection() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let psk = Some(Psk::from_file_contents(b"a test network\n"));
    let relay_node = |addr: &Multiaddr| vec![RelayNode::new("relay", vec![addr.to_string()])];
    let mut c = config("relay", psk);
    // The relay finds itself in the list by name: it serves as a relay.
    c.relays = vec![RelayNode::new("relay", vec![])];
    let relay = Tunnel::start(c, cancel.clone())?;
    let at = addr_of(&relay).await?;
    let mut c = config("edge-a", psk);
    c.relays = relay_node(&at);
    let a = Tunnel::start(c, cancel.clone())?;
    let mut c = config("edge-b", psk);
    c.relays = relay_node(&at);
    let b = Tunnel::start(c, cancel.clone())?;
    let on_b = endpoint("on-b").await?;

    // Neither knows where the other is: only the relay (B's reservation may take a beat).
    let mut s = until("edge-a reaches edge-b's endpoint", || {
        let a = a.clone();
        async move { a.connect("edge-b", on_b).await.ok() }
    })
    .await?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await?;
    ensure!(
        &buf[..n] == b"on-b\n",
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"ping").await?;
    let n = s.read(&mut buf).await?;
    ensure!(&buf[..n] == b"ping", "echoed");
    ensure!(
        a.peers().borrow().contains_key(&b.peer_id()),
        "a is connected to b"
    );
    ensure!(
        b.peer_id() == a.peer_of("edge-b"),
        "the node name gives the peer"
    );

    // An endpoint that refuses: the far agent says so.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let err = a.connect("edge-b", closed).await.err().context("refused")?;
    ensure!(
        matches!(err, MeshError::Tunnel(ref m) if m.contains("edge-b") && m.contains(&closed.to_string())),
        "{err}"
    );
    // A node nobody knows: an error, not a hang.
    let err = tokio::time::timeout(Duration::from_secs(10), a.connect("nowhere", on_b))
        .await
        .context("bounded")?;
    ensure!(err.is_err());
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_nothing_flows() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let good = Some(Psk::from_file_contents(b"the real key\n"));
    let bad = Some(Psk::from_file_contents(b"a guess\n"));
    let mut c = config("edge-b", good);
    c.relays = vec![RelayNode::new("edge-b", vec![])];
    let b = Tunnel::start(c, cancel.clone())?;
    let at = addr_of(&b).await?;
    let on_b = endpoint("on-b").await?;
    // Outsiders (another key, none): refused. A peer reading another key's stream may wait
    // for the handshake's timeout (10 s), so both try at once.
    let mut outsiders = Vec::new();
    for (name, psk) in [("intruder", bad), ("open", None)] {
        let mut c = config(name, psk);
        c.relays = vec![RelayNode::new("edge-b", vec![at.to_string()])];
        let x = Tunnel::start(c, cancel.clone())?;
        outsiders.push(async move {
            let r = tokio::time::timeout(Duration::from_secs(15), x.connect("edge-b", on_b)).await;
            (name, r)
        });
    }
    for (name, r) in futures_util::future::join_all(outsiders).await {
        ensure!(
            matches!(r, Ok(Err(_))),
            "{name}: {:?}",
            r.map(|r| r.map(|_| ()))
        );
        ensure!(b.peers().borrow().is_empty(), "{name} is connected to b");
    }
    // The right key: through.
    let mut c = config("member", good);
    c.relays = vec![RelayNode::new("edge-b", vec![at.to_string()])];
    let m = Tunnel::start(c, cancel.clone())?;
    let mut s = m.connect("edge-b", on_b).await?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await?;
    ensure!(&buf[..n] == b"on-b\n");
    cancel.cancel();
    Ok(())
}

#[cfg(feature = "quic")]
#[tokio::test]
async fn quic_carries_a_connection_and_refuses_a_key() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let mut c = config("q-b", None);
    c.transport = Transport::Quic;
    c.relays = vec![RelayNode::new("q-b", vec![])];
    let b = Tunnel::start(c, cancel.clone())?;
    let at = addr_of(&b).await?;
    ensure!(at.to_string().contains("/quic-v1"), "{at}");
    let mut c = config("q-a", None);
    c.transport = Transport::Quic;
    c.relays = vec![RelayNode::new("q-b", vec![at.to_string()])];
    let a = Tunnel::start(c, cancel.clone())?;
    let on_b = endpoint("on-b").await?;
    let mut s = a.connect("q-b", on_b).await?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await?;
    ensure!(&buf[..n] == b"on-b\n");

    let mut c = config("q-c", Some(Psk::from_file_contents(b"k")));
    c.transport = Transport::Quic;
    ensure!(
        matches!(Tunnel::start(c, cancel.clone()), Err(MeshError::Config(_))),
        "QUIC with a key is a configuration error, as upstream's"
    );
    cancel.cancel();
    Ok(())
}

#[cfg(not(feature = "quic"))]
#[tokio::test]
async fn without_the_quic_feature_quic_is_a_configuration_error() {
    let mut c = config("q-a", None);
    c.transport = Transport::Quic;
    let err = Tunnel::start(c, CancellationToken::new()).err();
    assert!(
        matches!(&err, Some(MeshError::Config(m)) if m.contains("quic")),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_on_a_tunnel_stream_gets_an_answer_not_a_crash() -> anyhow::Result<()> {
    use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};
    let cancel = CancellationToken::new();
    let mut c = config("g-b", None);
    c.relays = vec![RelayNode::new("g-b", vec![])];
    let b = Tunnel::start(c, cancel.clone())?;
    let at = addr_of(&b).await?;
    // A raw libp2p peer of the network opens the tunnel's protocol and sends garbage.
    let mut c = config("g-a", None);
    c.relays = vec![RelayNode::new("g-b", vec![at.to_string()])];
    let a = Tunnel::start(c, cancel.clone())?;
    let on_b = endpoint("on-b").await?;
    drop(a.connect("g-b", on_b).await?);
    let mut control = a.stream_control();
    let mut s = control
        .open_stream(b.peer_id(), kubeedge_mesh::tunnel::PROTOCOL)
        .await?;
    s.write_all(&[0, 5, b'{', b'x', 0xff, b'"', b'}']).await?;
    s.flush().await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .context("the agent answers and closes")??;
    let text = String::from_utf8_lossy(&answer);
    ensure!(text.contains("FAILED"), "{text}");
    // Still serving.
    let mut s = a.connect("g-b", on_b).await?;
    let mut buf = [0u8; 16];
    let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await?;
    ensure!(&buf[..n] == b"on-b\n");
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn udp_and_tcp_services_on_another_node_answer_through_the_proxy_and_the_tunnel(
) -> anyhow::Result<()> {
    use common::{put_endpoints, put_service};
    use kubeedge_mesh::catalog::{Catalog, Protocol};
    use kubeedge_mesh::proxy::{ProxyConfig, ServiceProxy};
    use serde_json::json;
    let cancel = CancellationToken::new();
    let mut c = config("u-b", None);
    c.relays = vec![RelayNode::new("u-b", vec![])];
    let b = Tunnel::start(c, cancel.clone())?;
    let at = addr_of(&b).await?;
    let mut c = config("u-a", None);
    c.relays = vec![RelayNode::new("u-b", vec![at.to_string()])];
    let a = Tunnel::start(c, cancel.clone())?;
    // Endpoints on node u-b: a UDP echo that prefixes "b:", and a TCP one.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let udp_at = udp.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let mut out = b"b:".to_vec();
            out.extend_from_slice(&buf[..n]);
            let _ = udp.send_to(&out, from).await;
        }
    });
    let tcp_at = endpoint("tcp-on-b").await?;
    let catalog = Catalog::new();
    put_service(
        &catalog,
        "default",
        "dns-like",
        json!({}),
        json!({"clusterIP": "10.96.7.1", "ports": [{"name": "u", "port": 53, "protocol": "UDP"}, {"name": "t", "port": 80}]}),
    );
    put_endpoints(
        &catalog,
        "default",
        "dns-like",
        json!([
        {"addresses": [{"ip": "127.0.0.1", "nodeName": "u-b"}],
         "ports": [{"name": "u", "port": udp_at.port(), "protocol": "UDP"}, {"name": "t", "port": tcp_at.port()}]}]),
    );
    let mut pc = ProxyConfig::default();
    pc.listen_ip = [127, 0, 0, 1].into();
    pc.tunnel = Some(a.clone());
    let proxy = ServiceProxy::new(catalog, pc);
    let redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    let (udp_to, tcp_to) = until("both listeners", || {
        let r = redirects.borrow().clone();
        async move {
            let u = r.iter().find(|r| r.protocol == Protocol::Udp)?.to;
            let t = r.iter().find(|r| r.protocol == Protocol::Tcp)?.to;
            Some((u, t))
        }
    })
    .await?;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    client.connect(udp_to).await?;
    let mut buf = [0u8; 64];
    for word in [&b"one"[..], b"two", b"three"] {
        client.send(word).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .context("a UDP answer through the tunnel")??;
        ensure!(
            &buf[..n] == [b"b:", word].concat().as_slice(),
            "{:?}",
            &buf[..n]
        );
    }
    let mut s = tokio::net::TcpStream::connect(tcp_to).await?;
    let n = s.read(&mut buf).await?;
    ensure!(&buf[..n] == b"tcp-on-b\n");
    ensure!(
        a.peers().borrow().contains_key(&b.peer_id()),
        "through the tunnel"
    );
    cancel.cancel();
    Ok(())
}
