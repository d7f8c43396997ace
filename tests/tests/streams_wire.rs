//! Our EdgeStream against a cloud that speaks exactly as upstream's cloudstream does: the
//! tunnel frames in WebSocket text messages, the connect payload as Go's `encoding/json`
//! writes `EdgedExecConnection` (a `net/url.URL` with every field, canonical header names),
//! and the exec itself in SPDY/3.1, as a kube-apiserver sends it through upstream's stream
//! server. The test plays that cloud; the edge is a real keadm-joined edgecore on Docker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_bench::BUSYBOX_IMAGE;
use kubeedge_proto::spdy::{Frame, SpdyCodec};
use kubeedge_proto::ws::{Role, WsCodec, WsMessage};
use kubeedge_proto::{TunnelFrame, TunnelMessageType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::codec::Framed;

const LIMIT: Duration = Duration::from_secs(90);

/// cloudcore's own server certificate and key, from its secret (what upstream's tunnel
/// server presents).
fn server_tls(cluster: &Cluster) -> Result<Arc<rustls::ServerConfig>> {
    use base64::Engine as _;
    let field = |key: &str| -> Result<Vec<u8>> {
        let b64 = cluster.kubectl(&[
            "get",
            "secret",
            "-n",
            "kubeedge",
            "cloudcoresecret",
            "-o",
            &format!("jsonpath={{.data.{key}}}"),
        ])?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64.trim())?)
    };
    let der = |bytes: Vec<u8>| -> Result<(String, Vec<u8>)> {
        if bytes.starts_with(b"-----BEGIN") {
            let p = pem::parse(bytes)?;
            Ok((p.tag().to_owned(), p.contents().to_vec()))
        } else {
            Ok((String::new(), bytes))
        }
    };
    let (_, cert) = der(field("cloudcoredata")?)?;
    let (tag, key) = der(field("cloudcorekeydata")?)?;
    let key = match tag.as_str() {
        "PRIVATE KEY" => rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
        _ => rustls_pki_types::PrivateKeyDer::Sec1(key.into()),
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![rustls_pki_types::CertificateDer::from(cert)], key)?;
    Ok(Arc::new(config))
}

type Tunnel = Framed<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, WsCodec>;

/// Accept the edge's tunnel as upstream's tunnel server does (the upgrade answered by hand).
async fn accept_tunnel(
    listener: &tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> Result<(Tunnel, String)> {
    let (tcp, _) = listener.accept().await?;
    let mut tls = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tls.read_u8().await?;
        head.push(b);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&head)?;
    ensure!(req.path == Some("/v1/kubeedge/connect"), "{:?}", req.path);
    let h = |n: &str| {
        req.headers
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(n))
            .map(|x| String::from_utf8_lossy(x.value).into_owned())
            .unwrap_or_default()
    };
    let node = h("SessionHostNameOverride");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
        h("Sec-WebSocket-Key").as_bytes(),
    );
    tls.write_all(
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes(),
    )
    .await?;
    Ok((Framed::new(tls, WsCodec::new(Role::Server, 2 << 20)), node))
}

/// The next tunnel frame, answering pings on the way.
async fn next(ws: &mut Tunnel) -> Result<TunnelFrame> {
    loop {
        match tokio::time::timeout(LIMIT, ws.next())
            .await?
            .context("tunnel closed")??
        {
            WsMessage::Text(d) | WsMessage::Binary(d) => return Ok(TunnelFrame::decode(&d)?),
            WsMessage::Ping(p) => ws.send(WsMessage::Pong(p)).await?,
            _ => {}
        }
    }
}

#[test]
fn our_edge_serves_an_upstream_cloudstream_exec_over_spdy() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(kubeedge_bench::ensure_busybox_image())?;
    let node = "streams-wire";
    let mut cluster = Cluster::init()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    cluster.join_sets.push(format!(
        "modules.edgeStream.server={}",
        listener.local_addr()?
    ));
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))?;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: chatty, namespace: default}}\nspec:\n  nodeName: {node}\n  containers:\n  - {{name: talker, image: {BUSYBOX_IMAGE}, command: [\"sleep\", \"3600\"]}}\n"
    ))?;
    wait_for("pod Running", LIMIT, || {
        Ok(
            cluster.kubectl(&["get", "pod", "chatty", "-o", "jsonpath={.status.phase}"])?
                == "Running",
        )
    })?;
    let tls = server_tls(&cluster)?;
    rt.block_on(async {
        let (mut tunnel, from) = accept_tunnel(&listener, tls).await?;
        ensure!(from == node, "SessionHostNameOverride {from:?}");
        // EdgedExecConnection as Go's encoding/json writes it.
        let connect = serde_json::json!({
            "MessID": 7,
            "url": {"Scheme": "http", "Opaque": "", "User": null, "Host": "127.0.0.1:10350",
                    "Path": "/exec/default/chatty/talker", "RawPath": "", "OmitHost": false,
                    "ForceQuery": false,
                    "RawQuery": "command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+3&error=1&output=1",
                    "Fragment": "", "RawFragment": ""},
            "header": {"Connection": ["Upgrade"], "Upgrade": ["SPDY/3.1"],
                       "X-Stream-Protocol-Version": ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]},
            "method": "POST",
        });
        let frame = TunnelFrame::new(7, TunnelMessageType::ExecConnect, serde_json::to_vec(&connect)?);
        tunnel.send(WsMessage::Text(frame.encode())).await?;
        // The edge answers the upgrade itself.
        let mut bytes = BytesMut::new();
        loop {
            let f = next(&mut tunnel).await?;
            ensure!(f.connect_id == 7 && f.message_type == TunnelMessageType::Data, "{f:?}");
            bytes.extend_from_slice(&f.data);
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                ensure!(head.starts_with("HTTP/1.1 101") && head.contains("X-Stream-Protocol-Version: v4.channel.k8s.io"), "{head}");
                let _ = bytes.split_to(end + 4);
                break;
            }
        }
        // kube-apiserver's side of the SPDY session: error, stdout and stderr streams.
        let (mut enc, mut dec) = (SpdyCodec::new(1 << 20), SpdyCodec::new(1 << 20));
        let mut out = BytesMut::new();
        for (id, kind) in [(1u32, "error"), (3, "stdout"), (5, "stderr")] {
            let syn = Frame::SynStream { stream_id: id, associated: 0, priority: 0, fin: false, headers: vec![("streamtype".into(), kind.into())] };
            enc.encode(&syn, &mut out)?;
        }
        let data = TunnelFrame::new(7, TunnelMessageType::Data, out.to_vec());
        tunnel.send(WsMessage::Text(data.encode())).await?;
        let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), Vec::new());
        let mut goaway = false;
        while !goaway {
            let f = next(&mut tunnel).await?;
            if f.message_type == TunnelMessageType::RemoveConnect {
                break;
            }
            bytes.extend_from_slice(&f.data);
            while let Some(frame) = dec.decode(&mut bytes)? {
                match frame {
                    Frame::Data { stream_id: 1, data, .. } => status.extend(data),
                    Frame::Data { stream_id: 3, data, .. } => stdout.extend(data),
                    Frame::Data { stream_id: 5, data, .. } => stderr.extend(data),
                    Frame::GoAway { .. } => goaway = true,
                    _ => {}
                }
            }
        }
        ensure!(stdout == b"out\n" && stderr == b"err\n", "{stdout:?} {stderr:?}");
        let status: serde_json::Value = serde_json::from_slice(&status)?;
        ensure!(
            status["reason"] == "NonZeroExitCode" && status["details"]["causes"][0]["message"] == "3",
            "{status}"
        );
        Ok(())
    })
}
