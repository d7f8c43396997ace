//! The cluster DNS over real UDP and TCP sockets on loopback: the Kubernetes DNS names, NXDOMAIN
//! at once for a name the zone does not have, forwarding to the node's resolver (a second
//! server here), catalog changes seen at the next query, and garbage that crashes nothing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use common::{put_endpoints, put_service};
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use kubeedge_mesh::catalog::Catalog;
use kubeedge_mesh::dns::ClusterDns;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// A running DNS server: its address (UDP and TCP share it).
async fn start(dns: ClusterDns, cancel: &CancellationToken) -> anyhow::Result<SocketAddr> {
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let udp = UdpSocket::bind(addr).await?;
    tokio::spawn(dns.serve(udp, tcp, cancel.clone()));
    Ok(addr)
}

fn query_bytes(name: &str, qtype: RecordType, id: u16) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, qtype));
    Ok(m.to_vec()?)
}

async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> anyhow::Result<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let id = fastrand::u16(..);
    socket
        .send_to(&query_bytes(name, qtype, id)?, server)
        .await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .context("no DNS answer within 5 s")??;
    let m = Message::from_vec(&buf[..n])?;
    ensure!(m.metadata.id == id, "answer to another query");
    Ok(m)
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> anyhow::Result<Message> {
    let mut s = TcpStream::connect(server).await?;
    let q = query_bytes(name, qtype, 7)?;
    s.write_all(&u16::try_from(q.len())?.to_be_bytes()).await?;
    s.write_all(&q).await?;
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}

fn ips(m: &Message) -> Vec<IpAddr> {
    addresses(&m.answers)
}

fn addresses(records: &[Record]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn catalog() -> Catalog {
    let c = Catalog::new();
    put_service(
        &c,
        "default",
        "nginx-svc",
        json!({}),
        json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 8080, "targetPort": 80}]}),
    );
    put_service(
        &c,
        "default",
        "web",
        json!({}),
        json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
    );
    put_endpoints(
        &c,
        "default",
        "web",
        json!([{"addresses": [{"ip": "10.244.1.5", "hostname": "web-0"}, {"ip": "10.244.2.6"}],
                "notReadyAddresses": [{"ip": "10.244.3.7", "hostname": "web-2"}],
                "ports": [{"name": "http", "port": 8080}]}]),
    );
    put_service(
        &c,
        "default",
        "db",
        json!({}),
        json!({"type": "ExternalName", "externalName": "db.example.test"}),
    );
    c
}

#[tokio::test]
async fn the_cluster_zone_answers_the_kubernetes_dns_names() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let catalog = catalog();
    let server = start(
        ClusterDns::new(catalog.clone(), "cluster.local", vec![])?,
        &cancel,
    )
    .await?;

    let a = ask(
        server,
        "nginx-svc.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(a.metadata.response_code == ResponseCode::NoError && a.metadata.authoritative);
    ensure!(ips(&a) == vec!["10.96.0.20".parse::<IpAddr>()?], "{a:?}");
    ensure!(a.answers[0].ttl == 5);

    // Upper case is the same name.
    let upper = ask(
        server,
        "NGINX-SVC.Default.SVC.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(ips(&upper) == ips(&a));

    let srv = ask(
        server,
        "_http._tcp.nginx-svc.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await?;
    let RData::SRV(s) = &srv.answers.first().context("no SRV")?.data else {
        anyhow::bail!("not an SRV: {srv:?}");
    };
    ensure!(s.port == 8080 && s.target.to_ascii() == "nginx-svc.default.svc.cluster.local.");
    ensure!(addresses(&srv.additionals) == ips(&a));

    // Headless: the ready endpoints, each by its hostname or dashed IP; not the unready one.
    let web = ask(server, "web.default.svc.cluster.local.", RecordType::A).await?;
    ensure!(ips(&web) == vec!["10.244.1.5".parse::<IpAddr>()?, "10.244.2.6".parse()?]);
    let web0 = ask(
        server,
        "web-0.web.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(ips(&web0) == vec!["10.244.1.5".parse::<IpAddr>()?]);
    let dashed = ask(
        server,
        "10-244-2-6.web.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(ips(&dashed) == vec!["10.244.2.6".parse::<IpAddr>()?]);
    let unready = ask(
        server,
        "web-2.web.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(unready.metadata.response_code == ResponseCode::NXDomain);
    let web_srv = ask(
        server,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await?;
    ensure!(
        web_srv.answers.len() == 2 && web_srv.additionals.len() == 2,
        "{web_srv:?}"
    );

    let cname = ask(server, "db.default.svc.cluster.local.", RecordType::A).await?;
    ensure!(
        matches!(&cname.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "db.example.test.")
    );

    let ptr = ask(server, "20.0.96.10.in-addr.arpa.", RecordType::PTR).await?;
    ensure!(
        matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "nginx-svc.default.svc.cluster.local.")
    );
    let ptr_pod = ask(server, "5.1.244.10.in-addr.arpa.", RecordType::PTR).await?;
    ensure!(
        matches!(&ptr_pod.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web-0.web.default.svc.cluster.local.")
    );

    let pod = ask(
        server,
        "10-244-9-9.default.pod.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(ips(&pod) == vec!["10.244.9.9".parse::<IpAddr>()?]);

    // A name that exists without AAAA: NOERROR, no answer, the zone's SOA.
    let nodata = ask(
        server,
        "nginx-svc.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await?;
    ensure!(nodata.metadata.response_code == ResponseCode::NoError && nodata.answers.is_empty());
    ensure!(matches!(
        nodata.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));

    // Over TCP too.
    let tcp = ask_tcp(
        server,
        "nginx-svc.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(ips(&tcp) == ips(&a));

    // A new Service answers at the next query.
    put_service(
        &catalog,
        "shop",
        "cart",
        json!({}),
        json!({"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}),
    );
    let cart = ask(server, "cart.shop.svc.cluster.local.", RecordType::A).await?;
    ensure!(ips(&cart) == vec!["10.96.5.5".parse::<IpAddr>()?]);
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn a_missing_name_is_nxdomain_at_once_and_others_are_forwarded() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    // The node's resolver: another server, authoritative for example.test.
    let upstream_catalog = Catalog::new();
    put_service(
        &upstream_catalog,
        "x",
        "api",
        json!({}),
        json!({"clusterIP": "192.0.2.10", "ports": [{"port": 443}]}),
    );
    let upstream = start(
        ClusterDns::new(upstream_catalog, "example.test", vec![])?,
        &cancel,
    )
    .await?;
    // A dead resolver first: the next one answers.
    let dead = UdpSocket::bind("127.0.0.1:0").await?;
    let dead_addr = dead.local_addr()?;
    drop(dead);
    let server = start(
        ClusterDns::new(catalog(), "cluster.local", vec![dead_addr, upstream])?,
        &cancel,
    )
    .await?;

    let started = Instant::now();
    let missing = ask(server, "nope.default.svc.cluster.local.", RecordType::A).await?;
    let took = started.elapsed();
    ensure!(missing.metadata.response_code == ResponseCode::NXDomain);
    ensure!(matches!(
        missing.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));
    ensure!(
        took < Duration::from_secs(1),
        "NXDOMAIN took {took:?}: it was forwarded"
    );

    let forwarded = ask(server, "api.x.svc.example.test.", RecordType::A).await?;
    ensure!(
        ips(&forwarded) == vec!["192.0.2.10".parse::<IpAddr>()?],
        "{forwarded:?}"
    );
    ensure!(forwarded.metadata.recursion_available);
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn garbage_packets_crash_nothing() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let server = start(
        ClusterDns::new(catalog(), "cluster.local", vec![])?,
        &cancel,
    )
    .await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let valid = query_bytes("nginx-svc.default.svc.cluster.local.", RecordType::A, 1)?;
    for i in 0..500 {
        let packet: Vec<u8> = match i % 3 {
            // Random bytes.
            0 => (0..fastrand::usize(0..600))
                .map(|_| fastrand::u8(..))
                .collect(),
            // A valid query with bytes flipped.
            1 => valid
                .iter()
                .map(|b| {
                    if fastrand::u8(..8) == 0 {
                        fastrand::u8(..)
                    } else {
                        *b
                    }
                })
                .collect(),
            // A valid query cut short.
            _ => valid[..fastrand::usize(0..valid.len())].to_vec(),
        };
        socket.send_to(&packet, server).await?;
    }
    // Still answering.
    let a = ask(
        server,
        "nginx-svc.default.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    ensure!(ips(&a) == vec!["10.96.0.20".parse::<IpAddr>()?]);
    cancel.cancel();
    Ok(())
}
