//! Interception in network namespaces the test makes (a node and a pod behind a veth pair):
//! the mesh's nftables table sends `clusterIP:port` to the proxy's listeners on `edgemesh0`,
//! from processes on the node (output) and from a pod (prerouting), ahead of another NAT table
//! that claims the same cluster IP at kube-proxy's priority; removing the table removes every
//! redirect. Needs root, `ip` and `nft` (Debian's iproute2 and nftables).

mod common;

use common::netns::{join, run, Netns};

use std::net::SocketAddr;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use common::{put_endpoints, put_service, until};
use kubeedge_mesh::catalog::Catalog;
use kubeedge_mesh::dns::MESH_DNS_IP;
use kubeedge_mesh::intercept::{ensure_interface, remove_interface, Interceptor};
use kubeedge_mesh::proxy::{ProxyConfig, ServiceProxy};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

async fn who(to: SocketAddr) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(to)).await??;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

/// A TCP server on `addr` that writes `name` to each connection.
async fn named(addr: &str, name: &'static str) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    Ok(a)
}

#[test]
fn cluster_ips_reach_the_proxy_from_the_node_and_from_a_pod() -> anyhow::Result<()> {
    scenario(false)
}

/// The same through the iptables chain (a node without `nft`): the other table is left out,
/// iptables has no priorities to order them by.
#[test]
fn the_iptables_chain_does_the_same() -> anyhow::Result<()> {
    scenario(true)
}

fn scenario(with_iptables: bool) -> anyhow::Result<()> {
    let node = Netns::new("node")?;
    let pod = Netns::new("pod")?;
    // The pod's veth: 10.244.0.2 in the pod, 10.244.0.1 on the node, the node its gateway.
    let veth = format!("kv{}", fastrand::u32(..100_000));
    node.exec(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
    ])?;
    node.exec(&["ip", "addr", "add", "10.244.0.1/24", "dev", &veth])?;
    node.exec(&["ip", "link", "set", &veth, "up"])?;
    pod.exec(&["ip", "addr", "add", "10.244.0.2/24", "dev", "eth0"])?;
    pod.exec(&["ip", "link", "set", "eth0", "up"])?;
    pod.exec(&["ip", "route", "add", "default", "via", "10.244.0.1"])?;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let node_side = node.run(move || async move {
        ensure_interface("edgemesh0", MESH_DNS_IP).await?;
        // Cluster IPs are routed like any other address (a node has a default route).
        run(&["ip", "route", "add", "default", "dev", "edgemesh0"])?;
        let pod_a = named("127.0.0.1:0", "a").await?;
        let decoy = named("127.0.0.1:0", "decoy").await?;
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let udp_addr = udp.local_addr()?;
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&buf[..n], from).await;
            }
        });
        // Another NAT table claims the cluster IP at kube-proxy's priority: the mesh's runs
        // first, whichever was made first.
        let other = format!(
            "table ip other {{\n  chain out {{\n    type nat hook output priority -100;\n    \
             ip daddr 10.96.0.30 tcp dport 80 dnat to 127.0.0.1:{}\n  }}\n}}\n",
            decoy.port()
        );
        let file = std::env::temp_dir().join(format!("kem-other-{}.nft", fastrand::u64(..)));
        std::fs::write(&file, other)?;
        if !with_iptables {
            let applied = run(&["nft", "-f", &file.to_string_lossy()]);
            let _ = std::fs::remove_file(&file);
            applied?;
        }

        let catalog = Catalog::new();
        put_service(
            &catalog,
            "default",
            "web",
            json!({}),
            json!({"clusterIP": "10.96.0.30", "ports": [
                {"name": "http", "port": 80},
                {"name": "echo", "port": 5353, "protocol": "UDP"}]}),
        );
        put_endpoints(
            &catalog,
            "default",
            "web",
            json!([{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": pod_a.port()}]},
                   {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "echo", "port": udp_addr.port(), "protocol": "UDP"}]}]),
        );
        let mut config = ProxyConfig::default();
        config.listen_ip = MESH_DNS_IP.into();
        let proxy = ServiceProxy::new(catalog, config);
        let redirects = proxy.redirects();
        let cancel = CancellationToken::new();
        tokio::spawn(proxy.run(cancel.clone()));
        let r = redirects.clone();
        let table = until("both redirects", || {
            let r = r.clone();
            async move { (r.borrow().len() == 2).then(|| r.borrow().clone()) }
        })
        .await?;
        let interceptor = if with_iptables {
            Interceptor::iptables("KUBEEDGE-MESH-TEST")
        } else {
            Interceptor::new("kubeedge-mesh-test")
        };
        interceptor.apply(&table).await?;

        // A process on the node.
        let got = who("10.96.0.30:80".parse()?).await.context("from the node")?;
        ensure!(got == "a", "the node reached {got}");
        let client = UdpSocket::bind("0.0.0.0:0").await?;
        client.send_to(b"udp through the mesh", "10.96.0.30:5353").await?;
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
            .await
            .context("UDP from the node")??;
        ensure!(&buf[..n] == b"udp through the mesh");
        ensure!(from == "10.96.0.30:5353".parse()?, "the answer comes from the cluster IP: {from}");

        // The pod asks now; the node waits for its answer.
        ready_tx.send(())?;
        done_rx.await?;

        // Without the mesh's rules the other table takes the address again (or, with no
        // other table, nothing answers).
        interceptor.remove().await?;
        if with_iptables {
            ensure!(who("10.96.0.30:80".parse()?).await.is_err(), "still redirected");
        } else {
            let got = who("10.96.0.30:80".parse()?)
                .await
                .context("without the mesh")?;
            ensure!(got == "decoy", "without the mesh's table: {got}");
        }
        interceptor.remove().await?; // twice is fine
        remove_interface("edgemesh0").await?;
        cancel.cancel();
        Ok(())
    });

    let pod_side = pod.run(move || async move {
        ready_rx.recv_timeout(Duration::from_secs(30))?;
        let got = who("10.96.0.30:80".parse()?).await.context("from the pod");
        let _ = done_tx.send(());
        ensure!(got? == "a", "the pod reached another endpoint");
        Ok(())
    });
    let pod_result = join(pod_side);
    join(node_side)?;
    pod_result?;
    Ok(())
}
