//! CloudStream's tunnel server against hand-driven edges (real TLS on 127.0.0.1, node
//! certificates from a real bootstrap): sessions carry the kubelet URL and the edge's bytes,
//! an edge's refusal keeps its status, and hostile input (another node's certificate, frames
//! of unknown or foreign sessions, an oversize frame, a link cut) is refused while every other
//! session goes on.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use common::{cloud, eventually, fast, join, within};
use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_cloud::stream::{CloudStream, StreamConfig, StreamError};
use kubeedge_edge::hub::ClientTls;
use kubeedge_proto::{StreamConnect, TunnelFrame, TunnelMessageType};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

struct Tunnel {
    stream: CloudStream,
    addr: std::net::SocketAddr,
    cloud: common::Cloud,
    a: ClientTls,
    b: ClientTls,
    cancel: CancellationToken,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn tunnel() -> Result<Tunnel> {
    let cloud = cloud(fast()).await?;
    let a = join(&cloud, "edge-a", &cloud.dir.path().join("a")).await?;
    let b = join(&cloud, "edge-b", &cloud.dir.path().join("b")).await?;
    let mut cfg = StreamConfig::default();
    cfg.idle_timeout = Duration::from_secs(3);
    let stream = CloudStream::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let (s, pki, c) = (stream.clone(), cloud.pki.clone(), cancel.clone());
    tokio::spawn(async move { s.serve_tunnel(listener, pki, c).await });
    Ok(Tunnel {
        stream,
        addr,
        cloud,
        a,
        b,
        cancel,
    })
}

/// Dial the tunnel as `node` with `tls`; the HTTP status on refusal.
async fn dial(t: &Tunnel, tls: &ClientTls, node: &str) -> Result<std::result::Result<Ws, u16>> {
    let tcp = tokio::net::TcpStream::connect(t.addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let stream = tokio_rustls::TlsConnector::from(tls.client_config()?)
        .connect(name, tcp)
        .await?;
    let mut req = format!("wss://{}/v1/kubeedge/connect", t.addr).into_client_request()?;
    req.headers_mut()
        .insert("SessionHostNameOverride", node.parse()?);
    req.headers_mut()
        .insert("SessionInternalIP", "127.0.0.1".parse()?);
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Ok(Err(r.status().as_u16())),
        Err(e) => Err(e.into()),
    }
}

/// The next tunnel frame the cloud sent.
async fn next_frame(ws: &mut Ws) -> Result<TunnelFrame> {
    loop {
        let m = within("a tunnel frame", ws.next())
            .await?
            .context("tunnel closed")??;
        match m {
            WsMessage::Text(t) => return Ok(TunnelFrame::decode(t.as_bytes())?),
            WsMessage::Binary(b) => return Ok(TunnelFrame::decode(&b)?),
            _ => continue,
        }
    }
}

/// The edge's whole answer to session `id`: `data`, then `REMOVE_CONNECT`.
async fn answer(ws: &mut Ws, id: u64, data: Vec<u8>) -> Result<()> {
    send(ws, TunnelFrame::new(id, TunnelMessageType::Data, data)).await?;
    send(
        ws,
        TunnelFrame::new(id, TunnelMessageType::RemoveConnect, Vec::new()),
    )
    .await
}

async fn send(ws: &mut Ws, f: TunnelFrame) -> Result<()> {
    ws.send(WsMessage::Binary(f.encode().into())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_sessions_carry_the_url_and_the_edge_bytes() -> Result<()> {
    let t = tunnel().await?;
    let mut ws = dial(&t, &t.a, "edge-a")
        .await?
        .map_err(|c| anyhow::anyhow!("refused {c}"))?;
    eventually("edge-a registered", || t.stream.is_connected("edge-a")).await?;

    let s = t.stream.clone();
    let logs = tokio::spawn(async move {
        let body = s
            .logs(
                "edge-a",
                "/containerLogs/default/p/c?follow=true&tailLines=5",
            )
            .await?;
        Ok::<_, StreamError>(body.collect::<Vec<_>>().await)
    });
    let connect = next_frame(&mut ws).await?;
    ensure!(
        connect.message_type == TunnelMessageType::LogsConnect,
        "{connect:?}"
    );
    let c = StreamConnect::decode(&connect.data)?;
    ensure!(c.mess_id == connect.connect_id, "{c:?}");
    ensure!(c.url.path == "/containerLogs/default/p/c", "{:?}", c.url);
    ensure!(c.url.raw_query == "follow=true&tailLines=5", "{:?}", c.url);
    ensure!(
        c.url.host == "127.0.0.1:10350" && c.url.scheme == "http",
        "{:?}",
        c.url
    );
    let id = connect.connect_id;
    // A frame for a session that does not exist is dropped; this one goes on.
    send(
        &mut ws,
        TunnelFrame::new(id + 1000, TunnelMessageType::Data, b"stray".to_vec()),
    )
    .await?;
    send(
        &mut ws,
        TunnelFrame::new(id, TunnelMessageType::Data, b"hello ".to_vec()),
    )
    .await?;
    send(
        &mut ws,
        TunnelFrame::new(id, TunnelMessageType::Data, b"world".to_vec()),
    )
    .await?;
    send(
        &mut ws,
        TunnelFrame::new(id, TunnelMessageType::RemoveConnect, Vec::new()),
    )
    .await?;
    let chunks = within("the log body", logs).await???;
    ensure!(chunks.concat() == b"hello world", "{chunks:?}");
    eventually("the session is gone", || t.stream.sessions("edge-a") == 0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_refusal_keeps_its_status_and_a_drop_removes_the_session() -> Result<()> {
    let t = tunnel().await?;
    let mut ws = dial(&t, &t.a, "edge-a")
        .await?
        .map_err(|c| anyhow::anyhow!("refused {c}"))?;
    eventually("edge-a registered", || t.stream.is_connected("edge-a")).await?;

    let s = t.stream.clone();
    let refused = tokio::spawn(async move {
        s.logs("edge-a", "/containerLogs/default/p/c")
            .await
            .map(|_| ())
    });
    let connect = next_frame(&mut ws).await?;
    let status = serde_json::json!({"kind": "Status", "code": 400, "reason": "BadRequest",
        "message": "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"});
    send(
        &mut ws,
        TunnelFrame::new(
            connect.connect_id,
            TunnelMessageType::CloseConnect,
            serde_json::to_vec(&status)?,
        ),
    )
    .await?;
    match within("the refusal", refused).await?? {
        Err(StreamError::Refused {
            code: 400, message, ..
        }) => {
            ensure!(
                message.contains("waiting to start: ContainerCreating"),
                "{message}"
            )
        }
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }

    // The API side goes away: the edge is told with REMOVE_CONNECT.
    let body = t
        .stream
        .logs("edge-a", "/containerLogs/default/p/c?follow=true")
        .await?;
    let connect = next_frame(&mut ws).await?;
    drop(body);
    let remove = next_frame(&mut ws).await?;
    ensure!(
        remove.message_type == TunnelMessageType::RemoveConnect
            && remove.connect_id == connect.connect_id,
        "{remove:?}"
    );
    ensure!(t.stream.sessions("edge-a") == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tunnels_are_refused_and_others_go_on() -> Result<()> {
    let t = tunnel().await?;
    // edge-b's certificate cannot open edge-a's tunnel.
    match dial(&t, &t.b, "edge-a").await? {
        Err(403) => {}
        Err(c) => anyhow::bail!("expected 403, got {c}"),
        Ok(_) => anyhow::bail!("edge-b opened edge-a's tunnel"),
    }
    ensure!(!t.stream.is_connected("edge-a"));
    // No node name: 400.
    ensure!(matches!(dial(&t, &t.a, "").await?, Err(400)));

    let mut a = dial(&t, &t.a, "edge-a")
        .await?
        .map_err(|c| anyhow::anyhow!("refused {c}"))?;
    let mut b = dial(&t, &t.b, "edge-b")
        .await?
        .map_err(|c| anyhow::anyhow!("refused {c}"))?;
    eventually("both registered", || t.stream.connected() == 2).await?;

    // A session on edge-a; edge-b writes into its id: dropped, edge-a's bytes arrive alone.
    let s = t.stream.clone();
    let logs = tokio::spawn(async move {
        let body = s.logs("edge-a", "/containerLogs/default/p/c").await?;
        Ok::<_, StreamError>(body.collect::<Vec<_>>().await)
    });
    let connect = next_frame(&mut a).await?;
    let id = connect.connect_id;
    send(
        &mut b,
        TunnelFrame::new(id, TunnelMessageType::Data, b"forged".to_vec()),
    )
    .await?;
    // An edge may not open sessions itself.
    send(
        &mut b,
        TunnelFrame::new(77, TunnelMessageType::ExecConnect, b"{}".to_vec()),
    )
    .await?;
    send(
        &mut a,
        TunnelFrame::new(id, TunnelMessageType::Data, b"genuine".to_vec()),
    )
    .await?;
    send(
        &mut a,
        TunnelFrame::new(id, TunnelMessageType::RemoveConnect, Vec::new()),
    )
    .await?;
    let chunks = within("edge-a's body", logs).await???;
    ensure!(chunks.concat() == b"genuine", "{chunks:?}");

    // An oversize frame ends edge-b's tunnel only.
    let huge = vec![b'x'; kubeedge_proto::MAX_TUNNEL_FRAME + 1024];
    let _ = b.send(WsMessage::Binary(huge.into())).await;
    eventually("edge-b dropped", || !t.stream.is_connected("edge-b")).await?;
    ensure!(t.stream.is_connected("edge-a"));

    // The tunnel as a tower service with a layer of the caller's own: one session opened
    // through a concurrency limit, the edge sees its connect.
    let svc = t.stream.service("edge-a")?;
    let mut limited = tower::ServiceBuilder::new()
        .concurrency_limit(1)
        .service(svc.clone());
    let req = kubeedge_cloud::stream::StreamRequest::new(
        TunnelMessageType::MetricConnect,
        "/stats/summary",
    );
    let ready = tower::ServiceExt::ready(&mut limited).await?;
    let session = tower::Service::call(ready, req);
    let connect = next_frame(&mut a).await?;
    ensure!(
        connect.message_type == TunnelMessageType::MetricConnect,
        "{connect:?}"
    );
    send(
        &mut a,
        TunnelFrame::new(
            connect.connect_id,
            TunnelMessageType::RemoveConnect,
            Vec::new(),
        ),
    )
    .await?;
    drop(within("the metrics session", session).await??);

    // A link cut mid-stream: the body ends, the session is released.
    let body = t
        .stream
        .logs("edge-a", "/containerLogs/default/p/c?follow=true")
        .await?;
    let _ = next_frame(&mut a).await?;
    drop(a);
    let rest: Vec<_> = within("the body ends after the cut", body.collect()).await?;
    ensure!(rest.is_empty(), "{rest:?}");
    eventually("edge-a dropped", || !t.stream.is_connected("edge-a")).await?;
    // A service made for the old tunnel is not ready any more.
    let mut old = svc;
    ensure!(matches!(
        within("readiness", tower::ServiceExt::ready(&mut old)).await?,
        Err(StreamError::TunnelClosed(_))
    ));
    match t.stream.logs("edge-a", "/containerLogs/default/p/c").await {
        Err(StreamError::NoTunnel(n)) if n == "edge-a" => {}
        other => anyhow::bail!("expected NoTunnel, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

/// A CA and a client certificate it signed, as a cluster's CA and kube-apiserver's
/// `--kubelet-client-certificate`: (CA PEM, client chain, client key).
fn apiserver_client(
    cn: &str,
) -> Result<(
    String,
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((
        ca_cert.pem(),
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    ))
}

/// GET `path` from the stream server as a client presenting `identity`: (status, body).
async fn kubelet_get(
    addr: std::net::SocketAddr,
    ca_der: &[u8],
    identity: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
    path: &str,
) -> Result<(u16, Vec<u8>)> {
    use http_body_util::BodyExt as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))?;
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("Host", "127.0.0.1:10350")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_server_serves_only_the_api_server_and_passes_requests_through() -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let t = tunnel().await?;
    let mut ws = dial(&t, &t.a, "edge-a")
        .await?
        .map_err(|c| anyhow::anyhow!("refused {c}"))?;
    eventually("edge-a registered", || t.stream.is_connected("edge-a")).await?;
    let (_dir, client) = common::controlled::api().await?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "edge-a", "containers": [{"name": "c", "image": "i"}]},
    }))?;
    kube::Api::<Pod>::namespaced(client.clone(), "default")
        .create(&Default::default(), &pod)
        .await?;
    let (ca_pem, chain, key) = apiserver_client("kube-apiserver-kubelet-client")?;
    let (chain_srv, key_srv) = t.cloud.pki.server_identity();
    let tls = kubeedge_cloud::stream::kubelet_api_tls(chain_srv, key_srv, ca_pem.as_bytes())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (s, c, cancel) = (t.stream.clone(), client.clone(), t.cancel.clone());
    tokio::spawn(async move { s.serve_kubelet_api(listener, tls, c, cancel).await });
    let ca_der = t.cloud.pki.ca_cert_der().to_vec();

    // Logs: the pod's node gets the kubelet URL; its bytes are the body.
    let get = kubelet_get(
        addr,
        &ca_der,
        Some((chain.clone(), key.clone_key())),
        "/containerLogs/default/p/c?tailLines=1",
    );
    let edge = async {
        let connect = next_frame(&mut ws).await?;
        ensure!(
            connect.message_type == TunnelMessageType::LogsConnect,
            "{connect:?}"
        );
        let c = StreamConnect::decode(&connect.data)?;
        ensure!(
            c.url.path == "/containerLogs/default/p/c" && c.url.raw_query == "tailLines=1",
            "{:?}",
            c.url
        );
        answer(&mut ws, connect.connect_id, b"a log line\n".to_vec()).await?;
        Ok(())
    };
    let (got, edge) = within("logs through the stream server", async {
        tokio::join!(get, edge)
    })
    .await?;
    edge?;
    let (status, body) = got?;
    ensure!(
        status == 200 && body == b"a log line\n",
        "{status} {body:?}"
    );

    // Stats: the node is the one whose tunnel announced the Host's IP.
    let get = kubelet_get(
        addr,
        &ca_der,
        Some((chain, key.clone_key())),
        "/stats/summary",
    );
    let edge = async {
        let connect = next_frame(&mut ws).await?;
        ensure!(
            connect.message_type == TunnelMessageType::MetricConnect,
            "{connect:?}"
        );
        answer(&mut ws, connect.connect_id, b"{}".to_vec()).await?;
        Ok(())
    };
    let (got, edge) = within("stats through the stream server", async {
        tokio::join!(get, edge)
    })
    .await?;
    edge?;
    ensure!(got? == (200, b"{}".to_vec()));

    // Anyone else is refused at the handshake: no certificate, or one of another CA.
    let (_, other_chain, other_key) = apiserver_client("kube-apiserver-kubelet-client")?;
    for identity in [None, Some((other_chain, other_key))] {
        let r = kubelet_get(addr, &ca_der, identity, "/containerLogs/default/p/c").await;
        ensure!(r.is_err(), "served an unverified caller: {r:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_ports_are_negotiated_per_replica_and_written_on_connect() -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Node};
    use kubeedge_cloud::stream::{negotiate_tunnel_port, set_kubelet_port, TUNNEL_PORT_ANNOTATION};
    let (_dir, client) = common::controlled::api().await?;
    // Two replicas get 10351 and 10352; asking again gives the same port.
    ensure!(negotiate_tunnel_port(&client, "10.0.0.1").await? == 10351);
    ensure!(negotiate_tunnel_port(&client, "10.0.0.2").await? == 10352);
    ensure!(negotiate_tunnel_port(&client, "10.0.0.1").await? == 10351);
    let cm = kube::Api::<ConfigMap>::namespaced(client.clone(), "kubeedge")
        .get("tunnelport")
        .await?;
    let record: serde_json::Value = serde_json::from_str(
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TUNNEL_PORT_ANNOTATION))
            .context("annotation")?,
    )?;
    ensure!(
        record
            == serde_json::json!({"ipTunnelPort": {"10.0.0.1": 10351, "10.0.0.2": 10352},
                                     "port": {"10351": true, "10352": true}}),
        "{record}"
    );
    // A tunnel connecting is announced; the node's kubelet port is written.
    let nodes = kube::Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "edge-a"}}))?;
    nodes.create(&Default::default(), &node).await?;
    let t = tunnel().await?;
    let mut conns = t.stream.connections();
    let _ws = dial(&t, &t.a, "edge-a")
        .await?
        .map_err(|c| anyhow::anyhow!("refused {c}"))?;
    let connected = within("the connection event", conns.recv()).await??;
    ensure!(connected == "edge-a");
    set_kubelet_port(
        &client,
        &connected,
        10351,
        Duration::from_millis(50),
        Duration::from_secs(5),
    )
    .await?;
    let got = nodes.get("edge-a").await?;
    let port = got
        .status
        .and_then(|s| s.daemon_endpoints)
        .and_then(|d| d.kubelet_endpoint)
        .map(|k| k.port);
    ensure!(port == Some(10351), "{port:?}");
    Ok(())
}

/// A network namespace of this test's own, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("kers-{tag}-{}", std::process::id());
        let st = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()?;
        ensure!(st.success(), "ip netns add {name}");
        Ok(Self(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[tokio::test]
async fn the_iptables_manager_keeps_one_dnat_rule_per_replica() -> Result<()> {
    use kubeedge_cloud::stream::iptables::{Iptables, CHAIN};
    use kubeedge_cloud::stream::TunnelPortRecord;
    let ns = Netns::new("ipt")?;
    let ipt = Iptables::with_command(
        ["ip", "netns", "exec", &ns.0, "iptables"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    );
    let rules = || -> Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "iptables", "-t", "nat", "-S"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut record = TunnelPortRecord::default();
    record.ip_tunnel_port.insert("10.0.0.1".into(), 10351);
    record.ip_tunnel_port.insert("10.0.0.2".into(), 10352);
    ipt.reconcile(&record, 10003).await?;
    // Twice: nothing is added the second time.
    ipt.reconcile(&record, 10003).await?;
    let got = rules()?;
    for want in [
        format!("-A OUTPUT -m comment --comment \"kubeedge tunnel port\" -j {CHAIN}"),
        format!("-A PREROUTING -m comment --comment \"kubeedge tunnel port\" -j {CHAIN}"),
        format!("-A {CHAIN} -p tcp -m tcp --dport 10351 -j DNAT --to-destination 10.0.0.1:10003"),
        format!("-A {CHAIN} -p tcp -m tcp --dport 10352 -j DNAT --to-destination 10.0.0.2:10003"),
    ] {
        ensure!(
            got.matches(&want).count() == 1,
            "{want:?} not once in:\n{got}"
        );
    }
    // A replica gone from the record loses its rule.
    record.ip_tunnel_port.remove("10.0.0.1");
    ipt.reconcile(&record, 10003).await?;
    let got = rules()?;
    ensure!(
        !got.contains("10.0.0.1") && got.contains("10.0.0.2:10003"),
        "{got}"
    );
    Ok(())
}
