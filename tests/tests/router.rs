//! The Router and ServiceBus as a user runs them: `keadm init` with `modules.router.enable`,
//! `keadm join` with `modules.serviceBus.enable`, a Rule applied with the stock kubectl, and
//! `curl` on the cloud's Router reaching an HTTP app on the edge host, with a ServiceAccount
//! token that RBAC allows to call the Rule.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

#[path = "../../kubeedge-apiserver/tests/common/etcd.rs"]
#[allow(dead_code, unreachable_pub)]
mod etcd;

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{output_text, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);

/// An HTTP app on 127.0.0.1 answering `edge app: <method> <path> <body>`.
fn app() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(&conn);
                let mut head = String::new();
                if r.read_line(&mut head).is_err() {
                    return;
                }
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() || line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut parts = head.split_whitespace();
                let text = format!(
                    "edge app: {} {} {}",
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    String::from_utf8_lossy(&body)
                );
                let _ = (&conn).write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    Ok(port)
}

/// An HTTP service on 127.0.0.1 that answers 200 and hands over each request's head and body.
fn collector() -> Result<(u16, std::sync::mpsc::Receiver<(String, String)>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(&conn);
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head += &line;
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = (&conn)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    Ok((port, rx))
}

/// Publishes `payload` to `topic` on the MQTT broker at 127.0.0.1:`port` (QoS 1).
fn publish(port: u16, topic: &str, payload: &str) -> Result<()> {
    let mut opts = rumqttc::MqttOptions::new(
        format!("router-test-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(opts, 10);
    client.publish(
        topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        payload.as_bytes().to_vec(),
    )?;
    for ev in conn.iter().take(20) {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            break;
        }
        ev?;
    }
    let _ = client.disconnect();
    Ok(())
}

/// `examples/router-rules.yaml`, with this test's app port.
fn rules(app_port: u16) -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/router-rules.yaml");
    let yaml = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    ensure!(
        yaml.contains("service_port: \"8080\""),
        "the example's port moved"
    );
    Ok(yaml.replace(
        "service_port: \"8080\"",
        &format!("service_port: \"{app_port}\""),
    ))
}

fn curl(cluster: &Cluster, url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let ca = cluster.root().join("etc/kubeedge/ca/rootCA.crt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .args(["-w", "\n%{http_code}", "-X", "POST", "--data", "ping"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    ensure!(out.status.success(), "curl: {}", output_text(&out));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// A call to `url` without a token is refused (401); with `token` the edge app answers it
/// (waited for as `what`; `cluster`'s CA and logs).
fn refused_then_answered(cluster: &Cluster, url: &str, token: &str, what: &str) -> Result<()> {
    let (code, _) = curl(cluster, url, None)?;
    ensure!(code == 401, "no token: {code}");
    let mut last = (0, String::new());
    wait_for(what, LIMIT, || {
        last = curl(cluster, url, Some(token))?;
        Ok(last.0 == 200)
    })
    .with_context(|| format!("last answer: {last:?}\n{}", cluster.logs_tail(30)))?;
    ensure!(last.1 == "edge app: POST /hello/x?y=1 ping", "{last:?}");
    Ok(())
}

#[test]
fn curl_on_the_cloud_router_reaches_an_app_on_the_edge() -> Result<()> {
    let node = "router-edge";
    let router_port = kubeedge_bench::free_port()?;
    let mut cluster = Cluster::init_with(&[
        "modules.router.enable=true",
        "modules.router.address=127.0.0.1",
        &format!("modules.router.port={router_port}"),
    ])?;
    cluster
        .join_sets
        .push("modules.serviceBus.enable=true".into());
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    let port = app()?;
    let (sink, received) = collector()?;
    let yaml = rules(port)?
        .replace("node_name: edge-node", &format!("node_name: {node}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{sink}"));
    wait_for("rules applied", LIMIT, || Ok(cluster.apply(&yaml).is_ok()))?;
    let token = cluster.kubectl(&["create", "token", "caller"])?;
    let token = token.trim();
    let url = format!("https://127.0.0.1:{router_port}/{node}/default/api/x?y=1");

    refused_then_answered(&cluster, &url, token, "the app answers through the router")?;
    let counted = cluster.kubectl(&[
        "get",
        "rule",
        "to-app",
        "-o",
        "jsonpath={.status.successMessages}",
    ])?;
    ensure!(!counted.trim().is_empty(), "rule status not counted");

    // eventbus -> rest: a publish on the edge's broker reaches the service beside the cloud
    // (the subscription reaches the edge first; publish until it has).
    let mut got = None;
    wait_for("the publish POSTed to the cloud service", LIMIT, || {
        publish(cluster.mqtt_port, "default/alerts", "disk almost full")?;
        got = received.recv_timeout(Duration::from_millis(500)).ok();
        Ok(got.is_some())
    })
    .with_context(|| cluster.logs_tail(30))?;
    let (head, body) = got.context("nothing received")?;
    ensure!(body == "disk almost full", "{body:?}");
    ensure!(head.starts_with("POST /alerts "), "{head}");
    ensure!(
        head.to_ascii_lowercase()
            .contains(&format!("nodename: {node}")),
        "{head}"
    );
    wait_for("the eventbus rule counted", LIMIT, || {
        Ok(!cluster
            .kubectl(&[
                "get",
                "rule",
                "alerts-to-cloud",
                "-o",
                "jsonpath={.status.successMessages}",
            ])?
            .trim()
            .is_empty())
    })?;
    Ok(())
}

/// Two cloudcores on one etcd, each with its Router; the edge is on B, the call goes to A's
/// Router, which authorizes it and passes it on to B's with its replica certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_one_replica_reaches_an_edge_on_the_other() -> Result<()> {
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let router = |port: u16| {
        [
            "modules.router.enable=true".to_owned(),
            "modules.router.address=127.0.0.1".to_owned(),
            format!("modules.router.port={port}"),
        ]
    };
    let (ra, rb) = (kubeedge_bench::free_port()?, kubeedge_bench::free_port()?);
    let sets_a = router(ra);
    let sets_b = router(rb);
    let a = Cluster::init_with_flags(
        &[&servers],
        &sets_a.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let mut b = Cluster::init_with_flags(
        &[&servers],
        &sets_b.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    b.join_sets.push("modules.serviceBus.enable=true".into());
    let node = "router-ha-edge";
    let ws = b.ws;
    b.join(node, ws)?;
    wait_for("node Ready", LIMIT, || a.node_ready(node)).with_context(|| b.logs_tail(30))?;
    let port = app()?;
    let yaml = rules(port)?;
    wait_for("rules applied", LIMIT, || Ok(a.apply(&yaml).is_ok()))?;
    let token = a.kubectl(&["create", "token", "caller"])?;
    let token = token.trim();
    let url = format!("https://127.0.0.1:{ra}/{node}/default/api/x?y=1");

    // No token: refused by A itself, never passed on.
    refused_then_answered(&b, &url, token, "the app answers through A and B")?;
    Ok(())
}
