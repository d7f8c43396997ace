//! Endpoints on other nodes, reached straight where pod addresses route between nodes: three
//! network namespaces on one LAN bridge (a fourth namespace), each "pod" an address of its
//! node. A node that goes away (its link cut, its Endpoints not changed yet) costs one
//! connection the connect timeout; the next ones go to the endpoint that is left at once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use common::netns::{join, Netns};
use common::{put_endpoints, put_service, until};
use kubeedge_mesh::catalog::{Catalog, Protocol};
use kubeedge_mesh::proxy::{ProxyConfig, ServiceProxy};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Serves `name` on `addr` inside `ns` until `stop` fires.
fn pod(
    ns: &Netns,
    addr: &'static str,
    name: &'static str,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    ns.run(move || async move {
        let l = TcpListener::bind(addr).await?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        let _ = stop.await;
        Ok(())
    })
}

async fn who(to: SocketAddr) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await??;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn endpoints_on_other_nodes_and_a_node_that_goes_away() -> anyhow::Result<()> {
    let lan = Netns::new("lan")?;
    lan.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
    lan.exec(&["ip", "link", "set", "br0", "up"])?;
    let mut nodes = Vec::new();
    for i in 1..=3u8 {
        let ns = Netns::new(&format!("n{i}"))?;
        let port = format!("p{i}-{}", fastrand::u16(..));
        lan.exec(&[
            "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ])?;
        lan.exec(&["ip", "link", "set", &port, "master", "br0"])?;
        lan.exec(&["ip", "link", "set", &port, "up"])?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("192.168.50.{i}/24"),
            "dev",
            "eth0",
        ])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        // The node's pods: 10.244.<i>.0/24, this one at .5; the others' through their node.
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.244.{i}.5/32"),
            "dev",
            "lo",
        ])?;
        for j in (1..=3u8).filter(|j| *j != i) {
            ns.exec(&[
                "ip",
                "route",
                "add",
                &format!("10.244.{j}.0/24"),
                "via",
                &format!("192.168.50.{j}"),
            ])?;
        }
        nodes.push((ns, port));
    }
    let (stop2, rx2) = tokio::sync::oneshot::channel();
    let (stop3, rx3) = tokio::sync::oneshot::channel();
    let pod2 = pod(&nodes[1].0, "10.244.2.5:80", "on-node-2", rx2);
    let pod3 = pod(&nodes[2].0, "10.244.3.5:80", "on-node-3", rx3);

    let (cut_tx, cut_rx) = std::sync::mpsc::channel::<()>();
    let (cut_done_tx, cut_done_rx) = tokio::sync::oneshot::channel::<()>();
    let node1 = nodes[0].0.run(move || async move {
        let catalog = Catalog::new();
        put_service(&catalog, "default", "web", json!({}),
            json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}));
        put_endpoints(&catalog, "default", "web", json!([{
            "addresses": [{"ip": "10.244.2.5", "nodeName": "node-2"}, {"ip": "10.244.3.5", "nodeName": "node-3"}],
            "ports": [{"port": 80}]}]));
        let mut config = ProxyConfig::default();
        config.listen_ip = [127, 0, 0, 1].into();
        config.connect_timeout = Duration::from_secs(1);
        let proxy = ServiceProxy::new(catalog, config);
        let redirects = proxy.redirects();
        let cancel = CancellationToken::new();
        tokio::spawn(proxy.run(cancel.clone()));
        let to = until("the listener", || {
            let r = redirects.clone();
            async move { r.borrow().iter().find(|r| r.protocol == Protocol::Tcp).map(|r| r.to) }
        })
        .await?;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            seen.insert(who(to).await?);
        }
        ensure!(seen.len() == 2, "both nodes' endpoints serve: {seen:?}");

        // Node 3 goes away; its address is still in the Endpoints.
        cut_tx.send(())?;
        cut_done_rx.await?;
        // Of the next two, one starts at node 3 (round robin) and waits for it.
        let first = Instant::now();
        for _ in 0..2 {
            ensure!(who(to).await? == "on-node-2");
        }
        let first = first.elapsed();
        let rest = Instant::now();
        for _ in 0..6 {
            ensure!(who(to).await? == "on-node-2");
        }
        let rest = rest.elapsed();
        // One connection waited for the lost node (1 s); the six after it did not.
        ensure!(rest < Duration::from_secs(1), "the lost node was tried again: {rest:?} (first {first:?})");
        cancel.cancel();
        Ok(())
    });
    cut_rx.recv_timeout(Duration::from_secs(30))?;
    lan.exec(&["ip", "link", "set", &nodes[2].1, "down"])?;
    let _ = cut_done_tx.send(());
    let result = join(node1);
    let _ = stop2.send(());
    let _ = stop3.send(());
    join(pod2)?;
    join(pod3)?;
    result
}
