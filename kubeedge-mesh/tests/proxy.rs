//! The service proxy over real sockets on loopback: endpoints are servers that say who they
//! are. Round robin, ClientIP affinity, an endpoint gone or dead, the opt-out label, and UDP.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::ensure;
use common::{put_endpoints, put_service, until};
use kubeedge_mesh::catalog::{Catalog, Protocol, SERVICE_PROXY_NAME};
use kubeedge_mesh::proxy::{ProxyConfig, Redirect, ServiceProxy};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A TCP endpoint that writes its name and then echoes.
async fn endpoint(name: &'static str) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let done = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = done.cancelled() => return,
            };
            let Ok((mut s, _)) = accepted else { return };
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
    Ok((addr, stop))
}

/// Each endpoint in its own subset (they share an IP, not a port).
fn subsets(addrs: &[SocketAddr]) -> Value {
    Value::Array(
        addrs
            .iter()
            .map(|a| json!({"addresses": [{"ip": a.ip().to_string()}], "ports": [{"port": a.port()}]}))
            .collect(),
    )
}

fn config() -> ProxyConfig {
    let mut c = ProxyConfig::default();
    c.listen_ip = [127, 0, 0, 1].into();
    c
}

async fn listener_of(
    redirects: &mut watch::Receiver<Arc<Vec<Redirect>>>,
    cluster_ip: &str,
    protocol: Protocol,
) -> anyhow::Result<SocketAddr> {
    let ip: std::net::IpAddr = cluster_ip.parse()?;
    let r = redirects.clone();
    until("the redirect", || {
        let r = r.clone();
        async move {
            r.borrow()
                .iter()
                .find(|x| x.cluster_ip == ip && x.protocol == protocol)
                .map(|x| x.to)
        }
    })
    .await
}

/// Connects through the proxy and returns the endpoint's name (after checking the echo).
async fn who(to: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(to).await?;
    s.write_all(b"ping").await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"ping") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await??;
        ensure!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(got)?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn connections_are_balanced_and_follow_endpoint_changes() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let (a, _stop_a) = endpoint("a").await?;
    let (b, stop_b) = endpoint("b").await?;
    let catalog = Catalog::new();
    put_service(
        &catalog,
        "default",
        "echo",
        json!({}),
        json!({"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}),
    );
    put_endpoints(&catalog, "default", "echo", subsets(&[a, b]));
    let proxy = ServiceProxy::new(catalog.clone(), config());
    let mut redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    let to = listener_of(&mut redirects, "10.96.0.30", Protocol::Tcp).await?;

    // Round robin: every endpoint in turn.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(who(to).await?);
    }
    // (Which comes first depends on the endpoints' order, by port.)
    ensure!(
        seen[0] != seen[1] && seen[0] == seen[2] && seen[1] == seen[3],
        "{seen:?}"
    );

    // An endpoint that stopped answering (its pod died before its Endpoints changed) is
    // skipped: every connection is still served.
    stop_b.cancel();
    until("b's listener closed", || async {
        TcpStream::connect(b).await.is_err().then_some(())
    })
    .await?;
    for _ in 0..4 {
        ensure!(who(to).await? == "a");
    }

    // Endpoints changed: the next connection uses only what is listed.
    let (c, _stop_c) = endpoint("c").await?;
    put_endpoints(&catalog, "default", "echo", subsets(&[c]));
    for _ in 0..3 {
        ensure!(who(to).await? == "c");
    }
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn client_ip_affinity_keeps_a_client_on_one_endpoint() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let (a, _sa) = endpoint("a").await?;
    let (b, _sb) = endpoint("b").await?;
    let (c, _sc) = endpoint("c").await?;
    let catalog = Catalog::new();
    put_service(
        &catalog,
        "default",
        "sticky",
        json!({}),
        json!({"clusterIP": "10.96.0.31", "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}),
    );
    put_endpoints(&catalog, "default", "sticky", subsets(&[a, b, c]));
    let proxy = ServiceProxy::new(catalog, config());
    let mut redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    let to = listener_of(&mut redirects, "10.96.0.31", Protocol::Tcp).await?;
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        *count.entry(who(to).await?).or_default() += 1;
    }
    ensure!(count.len() == 1, "one client, one endpoint: {count:?}");
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn an_opted_out_service_gets_no_listener_until_the_label_goes() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let (a, _sa) = endpoint("a").await?;
    let catalog = Catalog::new();
    let spec = json!({"clusterIP": "10.96.0.32", "ports": [{"port": 80}]});
    put_service(
        &catalog,
        "default",
        "other",
        json!({SERVICE_PROXY_NAME: "istio"}),
        spec.clone(),
    );
    put_endpoints(&catalog, "default", "other", subsets(&[a]));
    // A second Service, so that the proxy has surely handled the catalog.
    put_service(
        &catalog,
        "default",
        "marker",
        json!({}),
        json!({"clusterIP": "10.96.0.33", "ports": [{"port": 80}]}),
    );
    let proxy = ServiceProxy::new(catalog.clone(), config());
    let mut redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    listener_of(&mut redirects, "10.96.0.33", Protocol::Tcp).await?;
    let ip: std::net::IpAddr = "10.96.0.32".parse()?;
    ensure!(
        !redirects.borrow().iter().any(|r| r.cluster_ip == ip),
        "the label is ignored"
    );

    put_service(&catalog, "default", "other", json!({}), spec);
    let to = listener_of(&mut redirects, "10.96.0.32", Protocol::Tcp).await?;
    ensure!(who(to).await? == "a");
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn udp_datagrams_reach_an_endpoint_and_answers_come_back() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let server = UdpSocket::bind("127.0.0.1:0").await?;
    let server_addr = server.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&reply, from).await;
        }
    });
    let catalog = Catalog::new();
    put_service(
        &catalog,
        "kube-system",
        "udp-echo",
        json!({}),
        json!({"clusterIP": "10.96.0.40", "ports": [{"name": "u", "port": 53, "protocol": "UDP"}]}),
    );
    put_endpoints(
        &catalog,
        "kube-system",
        "udp-echo",
        json!([{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "u", "port": server_addr.port(), "protocol": "UDP"}]}]),
    );
    let proxy = ServiceProxy::new(catalog, config());
    let mut redirects = proxy.redirects();
    tokio::spawn(proxy.run(cancel.clone()));
    let to = listener_of(&mut redirects, "10.96.0.40", Protocol::Udp).await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    for i in 0..3 {
        let msg = format!("hello {i}");
        client.send_to(msg.as_bytes(), to).await?;
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.recv_from(&mut buf),
        )
        .await??;
        ensure!(from == to, "the answer comes from the service's listener");
        ensure!(buf[..n] == *format!("echo:{msg}").as_bytes());
    }
    cancel.cancel();
    Ok(())
}
