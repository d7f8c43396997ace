//! The link under stress: cuts with messages in flight, half-open links, cloud restarts,
//! certificate rotation, cipher policy and backpressure. Real TLS websockets on loopback with a
//! proxy in the path.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use kubeedge_bench::proxy::Proxy;
use kubeedge_cloud::certs::{FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::CloudHub;
use kubeedge_edge::hub::{self, CertFiles, ConnectionState};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn cut_with_acks_in_flight_delivers_every_message_exactly_once() -> Result<()> {
    trace();
    let cloud = cloud(fast()).await?;
    let proxy = Proxy::start(cloud.ws).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    let mut e = edge_via(proxy.addr, "edge-1", tls, None);
    within("connect", e.client.connected()).await??;

    const N: usize = 300;
    let down = cloud.down.clone();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            down.send("edge-1", pod(&format!("u{i}"), "1", "insert"))
                .await?;
        }
        anyhow::Ok(())
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cuts = 0;
    while seen.len() < N {
        let msg = within("all messages", e.inbound.recv())
            .await?
            .context("closed")?;
        let uid = msg.content.decode::<serde_json::Value>()?["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *seen
            .entry(format!("{uid}@{}", msg.header.resource_version))
            .or_default() += 1;
        e.client.send(msg.ack()).await?;
        // Break the link three times while acks and messages are in flight.
        if seen.len().is_multiple_of(80) && cuts < 3 {
            proxy.cut();
            cuts += 1;
        }
    }
    within("producer", producer).await???;
    assert_eq!(cuts, 3);
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    eventually("outbox drained", || cloud.down.queued("edge-1") == 0).await?;
    let sessions = *e.client.state().borrow();
    assert!(
        matches!(sessions, ConnectionState::Connected(n) if n >= 2),
        "{sessions:?}"
    );
    Ok(())
}

#[tokio::test]
async fn half_open_link_is_detected_within_two_heartbeats_on_both_sides() -> Result<()> {
    trace();
    let heartbeat = Duration::from_millis(300);
    let mut cfg = fast();
    // Upstream's defaults: keepaliveInterval 30 s = 2 x heartbeat 15 s.
    cfg.keepalive_interval = heartbeat * 2;
    let cloud = cloud(cfg).await?;
    let proxy = Proxy::start(cloud.ws).await?;
    let dir = tempfile::tempdir()?;
    let e = edge_via(
        proxy.addr,
        "edge-1",
        join(&cloud, "edge-1", dir.path()).await?,
        None,
    );
    within("connect", e.client.connected()).await??;
    eventually("cloud sees the node", || cloud.hub.connected() == 1).await?;

    proxy.blackhole(true);
    let cut_at = Instant::now();
    until_state(&e.client, "edge notices", disconnected).await?;
    let edge_took = cut_at.elapsed();
    eventually("cloud notices", || cloud.hub.connected() == 0).await?;
    let cloud_took = cut_at.elapsed();
    // Two heartbeats, plus one heartbeat tick of granularity and scheduling slack.
    let bound = heartbeat * 3 + Duration::from_millis(600);
    assert!(edge_took <= bound, "edge took {edge_took:?}");
    assert!(cloud_took <= bound, "cloud took {cloud_took:?}");

    proxy.blackhole(false);
    until_state(&e.client, "reconnect", session_at_least(2)).await?;
    Ok(())
}

#[tokio::test]
async fn edges_come_back_after_a_cloud_restart() -> Result<()> {
    trace();
    let dir = tempfile::tempdir()?;
    let store = FsCertStore::in_dir(dir.path());
    let pki = Arc::new(Pki::load_or_create(&store, PkiConfig::default())?);
    let ws_l = TcpListener::bind("127.0.0.1:0").await?;
    let https_l = TcpListener::bind("127.0.0.1:0").await?;
    let (ws, https) = (ws_l.local_addr()?, https_l.local_addr()?);
    let start = |ws_l: TcpListener, https_l: TcpListener| {
        let (hub, down, up) = CloudHub::new(pki.clone(), fast());
        let cancel = CancellationToken::new();
        let (h, c) = (hub.clone(), cancel.clone());
        let ws_task = tokio::spawn(async move { h.serve_websocket(ws_l, c).await });
        let (h, c) = (hub.clone(), cancel.clone());
        tokio::spawn(async move { h.serve_https(https_l, c).await });
        (hub, down, up, cancel, ws_task)
    };
    let (hub, _down, _up, cancel, ws_task) = start(ws_l, https_l);
    let mut edges = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..5 {
        let d = tempfile::tempdir()?;
        let tls = join_at(&pki, https, &format!("edge-{i}"), d.path()).await?;
        edges.push(edge_via(ws, &format!("edge-{i}"), tls, None));
        dirs.push(d);
    }
    for e in &edges {
        within("connect", e.client.connected()).await??;
    }
    eventually("all connected", || hub.connected() == 5).await?;

    // Stop the hub: every session ends. Start a new one on the same ports.
    cancel.cancel();
    within("hub stops", ws_task).await???;
    for e in &edges {
        until_state(&e.client, "edge sees the loss", disconnected).await?;
    }
    let restarted = Instant::now();
    let (hub2, _down2, _up2, cancel2, _t) = start(
        TcpListener::bind(ws).await?,
        TcpListener::bind(https).await?,
    );
    eventually("all back", || hub2.connected() == 5).await?;
    // Backoff is capped at 500 ms in these edges: all are back well within a few windows.
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "{:?}",
        restarted.elapsed()
    );
    cancel2.cancel();
    Ok(())
}

#[tokio::test]
async fn client_certificate_is_rotated_before_it_expires() -> Result<()> {
    trace();
    let mut pki_cfg = PkiConfig::default();
    pki_cfg.edge_cert_validity = Duration::from_secs(6);
    let cloud = cloud_with(fast(), pki_cfg).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    let (nb, na) = tls.validity().context("validity")?;
    let files = CertFiles::in_dir(dir.path());
    let before = std::fs::read(&files.cert)?;
    let rotation = hub::CertRotation::new(cloud.https.to_string(), files.clone());
    let e = edge_via(cloud.ws, "edge-1", tls, Some(rotation));
    until_state(&e.client, "rotated and reconnected", session_at_least(2)).await?;
    let after = std::fs::read(&files.cert)?;
    assert_ne!(before, after, "a new certificate was written");
    let renewed = hub::ClientTls::load(&files)?.context("files")?;
    assert_eq!(renewed.common_name().as_deref(), Some("system:node:edge-1"));
    let (nb2, na2) = renewed.validity().context("validity")?;
    assert!(na2 > na && nb2 >= nb);
    Ok(())
}

async fn tls12_handshake(
    cloud: &Cloud,
    files: &CertFiles,
    suite: rustls::SupportedCipherSuite,
) -> Result<Option<rustls::CipherSuite>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cloud.pki.ca_cert_der().to_vec()))?;
    let chain = vec![CertificateDer::from_pem_file(&files.cert)?];
    let key = PrivateKeyDer::from_pem_file(&files.key)?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let tcp = tokio::net::TcpStream::connect(cloud.ws).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    Ok(s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()))
}

#[tokio::test]
async fn tls12_only_with_the_upstream_cipher() -> Result<()> {
    trace();
    use rustls::crypto::ring::cipher_suite as cs;
    let cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    join(&cloud, "edge-1", dir.path()).await?;
    let files = CertFiles::in_dir(dir.path());
    let ok = within(
        "aes128-gcm",
        tls12_handshake(&cloud, &files, cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    )
    .await??;
    assert_eq!(
        ok,
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    let chacha = within(
        "chacha",
        tls12_handshake(
            &cloud,
            &files,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    )
    .await?;
    assert!(chacha.is_err(), "{chacha:?}");
    Ok(())
}

#[tokio::test]
async fn a_full_node_outbox_holds_back_only_its_producer() -> Result<()> {
    trace();
    let mut cfg = fast();
    cfg.outbox.capacity = 4;
    let mut cloud = cloud(cfg).await?;
    for i in 0..4 {
        cloud
            .down
            .send("slow", pod(&format!("u{i}"), "1", "insert"))
            .await?;
    }
    let down = cloud.down.clone();
    let mut blocked =
        tokio::spawn(async move { down.send("slow", pod("u9", "1", "insert")).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut blocked)
            .await
            .is_err(),
        "the fifth message waits for space"
    );
    // Another node is not affected.
    within(
        "other node",
        cloud.down.send("fast", pod("x", "1", "insert")),
    )
    .await??;
    // The slow node connects and acks: space frees and the producer proceeds.
    let dir = tempfile::tempdir()?;
    let mut e = edge(&cloud, "slow", join(&cloud, "slow", dir.path()).await?);
    for _ in 0..5 {
        let m = within("drain", e.inbound.recv()).await?.context("closed")?;
        e.client.send(m.ack()).await?;
    }
    within("unblocked", blocked).await???;
    eventually("drained", || cloud.down.queued("slow") == 0).await?;
    let _ = &mut cloud.up;
    Ok(())
}
