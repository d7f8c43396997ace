//! CloudHub and the edge hub client over real TLS websockets on 127.0.0.1.

mod common;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::*;
use futures_util::{SinkExt, StreamExt};
use kubeedge_cloud::certs::{unix_now, FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::Pushed;
use kubeedge_edge::hub::{self, CertFiles, ClientTls};
use kubeedge_edge::BootstrapError;
use kubeedge_proto::{Content, JoinToken, Message, Route};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn join_connect_deliver_ack_and_upstream() -> Result<()> {
    trace();
    let mut cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    assert_eq!(tls.common_name().as_deref(), Some("system:node:edge-1"));
    // The files upstream edgecore expects, the key private.
    let files = CertFiles::in_dir(dir.path());
    assert!(ClientTls::load(&files)?.is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&files.key)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let mut e = edge(&cloud, "edge-1", tls);
    within("connect", e.client.connected()).await??;
    eventually("hub sees the node", || cloud.hub.connected() == 1).await?;

    // Downstream: delivered, acked by the consumer, then gone from the outbox.
    assert_eq!(
        cloud.down.send("edge-1", pod("u1", "10", "insert")).await?,
        Pushed::Queued
    );
    let got = within("pod insert", e.inbound.recv())
        .await?
        .context("inbound closed")?;
    assert_eq!(got.route.resource, "default/pod/p");
    assert_eq!(got.header.resource_version, "10");
    e.client.send(got.ack()).await?;
    eventually("outbox drained", || cloud.down.queued("edge-1") == 0).await?;

    // Upstream: tagged with the node from the connection.
    let status = Message::new(
        Route::new("edged", "meta", "patch", "default/podpatch/p"),
        Content::string("{\"status\":{}}"),
    );
    e.client.send(status.clone()).await?;
    let up = loop {
        let up = within("upstream", cloud.up.recv())
            .await?
            .context("closed")?;
        if up.msg.id() == status.id() {
            break up;
        }
    };
    assert_eq!(up.node, "edge-1");
    assert_eq!(up.msg.content, status.content);

    e.cancel.cancel();
    within("driver stops", e.task).await???;
    eventually("hub sees the node gone", || cloud.hub.connected() == 0).await?;
    Ok(())
}

#[tokio::test]
async fn unacked_message_survives_a_reconnect_and_is_delivered_once() -> Result<()> {
    trace();
    let cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    let mut first = edge(&cloud, "edge-1", tls.clone());
    within("connect", first.client.connected()).await??;
    cloud.down.send("edge-1", pod("u1", "10", "insert")).await?;
    let got = within("first delivery", first.inbound.recv())
        .await?
        .context("closed")?;
    // The resend (same msg_id) reaches the same edge but is not delivered twice.
    let dup = tokio::time::timeout(Duration::from_millis(700), first.inbound.recv()).await;
    assert!(
        dup.is_err(),
        "a resend must not be delivered twice: {dup:?}"
    );
    // The link dies before the ack.
    first.cancel.cancel();
    within("first driver stops", first.task).await???;
    // A newer version arrives while the node is offline: coalesced behind the in-flight one.
    cloud.down.send("edge-1", pod("u1", "11", "update")).await?;

    let mut second = edge(&cloud, "edge-1", tls);
    within("reconnect", second.client.connected()).await??;
    let again = within("redelivery", second.inbound.recv())
        .await?
        .context("closed")?;
    assert_eq!(
        again.id(),
        got.id(),
        "the in-flight message is resent with its msg_id"
    );
    second.client.send(again.ack()).await?;
    let newer = within("newer version", second.inbound.recv())
        .await?
        .context("closed")?;
    assert_eq!(newer.header.resource_version, "11");
    second.client.send(newer.ack()).await?;
    eventually("outbox drained", || cloud.down.queued("edge-1") == 0).await?;
    let extra = tokio::time::timeout(Duration::from_millis(500), second.inbound.recv()).await;
    assert!(extra.is_err(), "nothing else: {extra:?}");
    Ok(())
}

#[tokio::test]
async fn request_reply_by_parent_id() -> Result<()> {
    trace();
    let mut cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let e = edge(&cloud, "edge-1", join(&cloud, "edge-1", dir.path()).await?);
    within("connect", e.client.connected()).await??;
    let query = Message::new(
        Route::new("edged", "meta", "query", "default/configmap/cm"),
        Content::null(),
    );
    let client = e.client.clone();
    let q = query.clone();
    let req = tokio::spawn(async move { client.request(q, DEADLINE).await });
    let up = within("query upstream", cloud.up.recv())
        .await?
        .context("closed")?;
    assert_eq!(up.msg.id(), query.id());
    let reply = up
        .msg
        .reply(Content::json(
            &serde_json::json!({"kind":"ConfigMap","metadata":{"uid":"c1","resourceVersion":"3"}}),
        )?)
        .with_resource_version("3");
    cloud.down.send("edge-1", reply.clone()).await?;
    let got = within("reply", req).await???;
    assert_eq!(got.id(), reply.id());
    Ok(())
}

#[tokio::test]
async fn bootstrap_refuses_bad_tokens() -> Result<()> {
    trace();
    let cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let files = CertFiles::in_dir(dir.path());
    let https = cloud.https.to_string();
    let good = cloud.pki.issue_token(unix_now())?;
    let hash = good.ca_hash().to_owned();

    // Expired.
    let expired = cloud.pki.issue_token(unix_now() - 3 * 24 * 3600)?;
    match hub::bootstrap(&https, &expired, "edge-1", &files, DEADLINE).await {
        Err(BootstrapError::Refused {
            status: 401,
            message,
            ..
        }) => assert!(message.contains("expired"), "{message}"),
        other => bail!("expired token: {other:?}"),
    }
    // Tampered signature.
    let text = good.to_string();
    let tampered: JoinToken = format!("{}A", &text[..text.len() - 1]).parse()?;
    let tampered = if tampered.to_string() == text {
        format!("{}B", &text[..text.len() - 1]).parse()?
    } else {
        tampered
    };
    match hub::bootstrap(&https, &tampered, "edge-1", &files, DEADLINE).await {
        Err(BootstrapError::Refused { status: 401, .. }) => {}
        other => bail!("tampered token: {other:?}"),
    }
    // Signed by another CA.
    let other_dir = tempfile::tempdir()?;
    let other = Pki::load_or_create(&FsCertStore::in_dir(other_dir.path()), PkiConfig::default())?;
    let foreign: JoinToken = format!("{hash}.{}", other.issue_token(unix_now())?.jwt()).parse()?;
    match hub::bootstrap(&https, &foreign, "edge-1", &files, DEADLINE).await {
        Err(BootstrapError::Refused { status: 401, .. }) => {}
        other => bail!("foreign token: {other:?}"),
    }
    // CA hash mismatch: the other CA's token against our cloud.
    match hub::bootstrap(
        &https,
        &other.issue_token(unix_now())?,
        "edge-1",
        &files,
        DEADLINE,
    )
    .await
    {
        Err(BootstrapError::Token(kubeedge_proto::TokenError::CaHashMismatch { .. })) => {}
        other => bail!("hash mismatch: {other:?}"),
    }
    assert!(!files.cert.exists(), "nothing written on failure");
    // And the good one works.
    hub::bootstrap(&https, &good, "edge-1", &files, DEADLINE).await?;
    Ok(())
}

#[tokio::test]
async fn identity_limits_and_bad_clients_are_refused() -> Result<()> {
    trace();
    let mut cfg = fast();
    cfg.node_limit = 1;
    let cloud = cloud(cfg).await?;
    let d1 = tempfile::tempdir()?;
    let tls1 = join(&cloud, "edge-1", d1.path()).await?;
    let d2 = tempfile::tempdir()?;
    let tls2 = join(&cloud, "edge-2", d2.path()).await?;

    // Node A's certificate claiming node B.
    let err = raw_dial(&cloud, Some(&tls1), &[("node_id", "edge-2")])
        .await
        .err()
        .context("must be refused")?;
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    // No client certificate at all: the TLS handshake fails.
    assert!(raw_dial(&cloud, None, &[("node_id", "edge-1")])
        .await
        .is_err());
    // Missing node_id.
    let err = raw_dial(&cloud, Some(&tls1), &[])
        .await
        .err()
        .context("must be refused")?;
    assert!(format!("{err:#}").contains("400"), "{err:#}");
    // Headers are case-insensitive, as Go canonicalises them.
    let _first = raw_dial(
        &cloud,
        Some(&tls1),
        &[
            ("Node_id", "edge-1"),
            ("Project_id", "p"),
            ("Connectionuse", "msg"),
        ],
    )
    .await?;
    eventually("one node", || cloud.hub.connected() == 1).await?;
    // nodeLimit 1: a second node is refused before the upgrade.
    let err = raw_dial(&cloud, Some(&tls2), &[("node_id", "edge-2")])
        .await
        .err()
        .context("limit")?;
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    // Plain TCP to the TLS port: refused without harm.
    let mut tcp = tokio::net::TcpStream::connect(cloud.ws).await?;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = [0u8; 64];
    let n = within(
        "plain tcp closed",
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await?
    .unwrap_or(0);
    assert!(n == 0 || !buf[..n].starts_with(b"HTTP/1.1 101"));
    // Plain HTTP to the bootstrap port: no certificate comes back.
    let mut tcp = tokio::net::TcpStream::connect(cloud.https).await?;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /ca.crt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let n = within(
        "plain http closed",
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await?
    .unwrap_or(0);
    assert!(n == 0 || !buf[..n].starts_with(b"HTTP/1.1 200"));
    // A slow handshake (connect and say nothing) is dropped after handshake_timeout.
    let mut idle = tokio::net::TcpStream::connect(cloud.ws).await?;
    let n = within(
        "slow handshake dropped",
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await?
    .unwrap_or(0);
    assert_eq!(n, 0);
    Ok(())
}

#[tokio::test]
async fn garbage_frames_get_an_error_reply_and_keepalive_is_enforced() -> Result<()> {
    trace();
    let mut cfg = fast();
    cfg.keepalive_interval = Duration::from_millis(800);
    let mut cloud = cloud(cfg).await?;
    let d = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", d.path()).await?;
    let mut ws = raw_dial(&cloud, Some(&tls), &[("node_id", "edge-1")]).await?;
    ws.send(WsMessage::text("{not json")).await?;
    ws.send(WsMessage::binary(vec![0xff, 0x00, 0x13])).await?;
    for _ in 0..2 {
        let reply = within("error reply", ws.next())
            .await?
            .context("closed")??;
        let msg = Message::from_json(reply.into_data().as_ref())?;
        assert_eq!(msg.route.operation_str(), "error");
        assert!(
            msg.content
                .as_str()
                .unwrap_or_default()
                .starts_with("invalid frame"),
            "{:?}",
            msg.content
        );
    }
    // The session goes on: an upstream message still arrives.
    let m = Message::new(
        Route::new("edged", "meta", "update", "default/podstatus/p"),
        Content::null(),
    );
    ws.send(WsMessage::text(String::from_utf8(m.to_json())?))
        .await?;
    let up = within("upstream after garbage", cloud.up.recv())
        .await?
        .context("closed")?;
    assert_eq!(up.msg.id(), m.id());
    // An ack for an unknown message is ignored.
    let ack = m.ack();
    ws.send(WsMessage::text(String::from_utf8(ack.to_json())?))
        .await?;
    // No keepalive: the hub closes the session after keepalive_interval.
    let closed = within("keepalive timeout closes", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    closed?;
    eventually("session gone", || cloud.hub.connected() == 0).await?;
    Ok(())
}

#[tokio::test]
async fn captured_handshake_and_keepalive_replay() -> Result<()> {
    trace();
    let mut cfg = fast();
    cfg.keepalive_interval = Duration::from_millis(600);
    let cloud = cloud(cfg).await?;
    let d = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-node-1", d.path()).await?;
    // Headers exactly as captured from upstream v1.12.1 (Go-canonicalised names).
    let capture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/captures/v1.12.1/03-ws-handshake.json"
    ))?)?;
    let headers: Vec<(String, String)> = capture["request"]["headers"]
        .as_array()
        .context("headers")?
        .iter()
        .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
        .filter(|(k, _)| matches!(k.as_str(), "Node_id" | "Project_id" | "Connectionuse"))
        .collect();
    let hdr: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut ws = raw_dial(&cloud, Some(&tls), &hdr).await?;
    let keepalive: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/captures/v1.12.1/04-keepalive.json"
    ))?)?;
    let frame = format!("{}\n", serde_json::to_string(&keepalive["message"])?);
    // Keepalives every 200 ms keep the session alive past several keepalive intervals.
    for _ in 0..10 {
        ws.send(WsMessage::text(frame.clone())).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cloud.hub.connected(), 1, "keepalives keep the session");
    Ok(())
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_session() -> Result<()> {
    trace();
    let cloud = cloud(fast()).await?;
    let d = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", d.path()).await?;
    let mut old = raw_dial(&cloud, Some(&tls), &[("node_id", "edge-1")]).await?;
    eventually("first session", || cloud.hub.connected() == 1).await?;
    let mut e = edge(&cloud, "edge-1", tls);
    within("second connects", e.client.connected()).await??;
    // The old socket is closed by the hub.
    within("old closed", async {
        loop {
            match old.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await?;
    assert_eq!(cloud.hub.connected(), 1);
    cloud.down.send("edge-1", pod("u1", "1", "insert")).await?;
    let got = within("delivery to the new session", e.inbound.recv())
        .await?
        .context("closed")?;
    assert_eq!(got.header.resource_version, "1");
    Ok(())
}

#[tokio::test]
async fn node_sender_poll_ready_tells_the_truth() -> Result<()> {
    use tower::{Service, ServiceExt};
    trace();
    let mut cfg = fast();
    cfg.outbox.capacity = 2;
    let cloud = cloud(cfg).await?;
    let mut svc = cloud.down.to_node("edge-1")?;
    for i in 0..2 {
        let pushed = svc
            .ready()
            .await?
            .call(pod(&format!("u{i}"), "1", "insert"))
            .await?;
        assert_eq!(pushed, Pushed::Queued);
    }
    // Full: not ready.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), svc.ready())
            .await
            .is_err()
    );
    // call() without poll_ready is refused, not queued.
    let mut fresh = cloud.down.to_node("edge-1")?;
    assert!(matches!(
        fresh.call(pod("x", "1", "insert")).await,
        Err(kubeedge_cloud::HubError::NotReady)
    ));
    // The node connects and acks: ready again.
    let dir = tempfile::tempdir()?;
    let mut e = edge(&cloud, "edge-1", join(&cloud, "edge-1", dir.path()).await?);
    let m = within("delivery", e.inbound.recv())
        .await?
        .context("closed")?;
    e.client.send(m.ack()).await?;
    within("ready again", svc.ready()).await??;
    Ok(())
}

#[tokio::test]
async fn foreign_certificates_oversize_frames_and_floods() -> Result<()> {
    trace();
    let mut cfg = fast();
    cfg.max_frame_size = 64 * 1024;
    cfg.node_upstream_qps = 200;
    cfg.node_upstream_burst = 200;
    cfg.upstream_capacity = 64;
    let mut cloud = cloud(cfg).await?;
    // A certificate from another CA, for the right node name.
    let other = common::cloud(fast()).await?;
    let d0 = tempfile::tempdir()?;
    join(&other, "edge-1", d0.path()).await?;
    let files0 = CertFiles::in_dir(d0.path());
    {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        // Trusts our CA (so only the server's check can fail), presents the foreign cert.
        let foreign = ClientTls::new(
            cloud.pki.ca_cert_der().to_vec(),
            CertificateDer::from_pem_file(&files0.cert)?.to_vec(),
            PrivateKeyDer::from_pem_file(&files0.key)?,
        );
        let err = raw_dial(&cloud, Some(&foreign), &[("node_id", "edge-1")])
            .await
            .err()
            .context("foreign cert accepted")?;
        assert!(!format!("{err:#}").contains("timed out"), "{err:#}");
    }

    // An oversize frame ends that session only.
    let d1 = tempfile::tempdir()?;
    let tls1 = join(&cloud, "edge-1", d1.path()).await?;
    let d2 = tempfile::tempdir()?;
    let tls2 = join(&cloud, "edge-2", d2.path()).await?;
    let mut big = raw_dial(&cloud, Some(&tls1), &[("node_id", "edge-1")]).await?;
    let good = edge(&cloud, "edge-2", tls2);
    within("edge-2 up", good.client.connected()).await??;
    eventually("both", || cloud.hub.connected() == 2).await?;
    let _ = big.send(WsMessage::text("x".repeat(200 * 1024))).await;
    within("oversize closes the session", async {
        loop {
            match big.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await?;
    eventually("one left", || cloud.hub.connected() == 1).await?;

    // A flood from one node does not crowd out another.
    let mut flooder = edge(&cloud, "edge-1", join(&cloud, "edge-1", d1.path()).await?);
    within("flooder up", flooder.client.connected()).await??;
    let client = flooder.client.clone();
    let flood = tokio::spawn(async move {
        for _ in 0..5000 {
            let m = Message::new(
                Route::new("edged", "meta", "update", "default/podstatus/p"),
                Content::null(),
            );
            if client.send(m).await.is_err() {
                break;
            }
        }
    });
    let probe = Message::new(
        Route::new("edged", "meta", "update", "default/podstatus/q"),
        Content::null(),
    );
    good.client.send(probe.clone()).await?;
    let mut from_flooder = 0;
    within("the other node's message gets through", async {
        while let Some(up) = cloud.up.recv().await {
            if up.msg.id() == probe.id() {
                assert_eq!(up.node, "edge-2");
                break;
            }
            from_flooder += 1;
        }
    })
    .await?;
    assert!(
        from_flooder < 1000,
        "the probe overtook the flood ({from_flooder} before it)"
    );
    flood.abort();
    let _ = flooder.inbound.try_recv();
    Ok(())
}

#[tokio::test]
async fn legacy_mode_accepts_any_certificate_of_the_ca() -> Result<()> {
    trace();
    let mut cfg = fast();
    cfg.enforce_node_identity = false;
    let cloud = cloud(cfg).await?;
    let d = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", d.path()).await?;
    // As upstream v1.12 does: the CA chain is checked, not the name.
    let _ws = raw_dial(&cloud, Some(&tls), &[("node_id", "edge-7")]).await?;
    eventually("accepted", || cloud.hub.connected() == 1).await?;
    Ok(())
}
