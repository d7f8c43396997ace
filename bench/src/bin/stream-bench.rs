//! `stream-bench`: kubectl's stream paths through the CloudStream tunnel, timed beside the
//! container runtime's own, in one run. `keadm init` and `keadm join` on this machine (real
//! Docker), one busybox pod, then:
//! - exec throughput: `kubectl exec pod -- dd if=/dev/zero bs=64k count=N` into /dev/null,
//!   against `docker exec <container> dd …` of the same bytes (MB/s each and the ratio);
//! - `logs -f` latency: the pod prints a line every 50 ms; `kubectl logs -f --timestamps`
//!   shows each with the runtime's receive time, and the latency is its arrival at kubectl's
//!   stdout minus that time (p50/p99/max, same clock);
//! - sessions: `sessions` concurrent `exec -i cat` sessions (WebSocket `v5.channel.k8s.io`,
//!   an in-process client), each echoing a line, then held open and idle: edgecore's and
//!   cloudcore's RSS growth per idle session.
//!
//! ```sh
//! cargo build --release -p cloudcore -p keadm -p kubeedge-bench && cargo build --release -p edgecore
//! target/release/stream-bench          # MiB through exec (default 256), sessions (default 100)
//! target/release/stream-bench 512 100
//! ```

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context as _, Result};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_bench::{rss_kb, BUSYBOX_IMAGE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(120);

fn pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: bench, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done"]
"#
    )
}

/// Seconds to run `cmd` with its stdout into /dev/null.
fn timed(cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    ensure!(st.success(), "{cmd:?}: {st}");
    Ok(start.elapsed().as_secs_f64())
}

fn container_id(node: &str) -> Result<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.kubeedge-rs.node={node}"),
            "--filter",
            "label=io.kubernetes.container.name=c",
        ])
        .output()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        !id.is_empty() && !id.contains('\n'),
        "container of the bench pod: {id:?}"
    );
    Ok(id)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// `logs -f --timestamps` for `lines` lines: each line's latency in ms.
fn logs_latency(cluster: &Cluster, lines: usize) -> Result<Vec<f64>> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["logs", "-f", "--timestamps", "--tail=0", "bench"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lat = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let arrived = SystemTime::now();
        let line = line?;
        let stamp = line.split_whitespace().next().unwrap_or_default();
        let Ok(t) = stamp.parse::<jiff::Timestamp>() else {
            continue;
        };
        let sent = SystemTime::from(t);
        if let Ok(d) = arrived.duration_since(sent) {
            lat.push(d.as_secs_f64() * 1000.0);
        }
        if lat.len() >= lines {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// TLS settings and address of the API from the admin kubeconfig.
fn api_tls(cluster: &Cluster) -> Result<(Arc<rustls::ClientConfig>, String)> {
    let kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&cluster.kubeconfig)?)?;
    let b64 = |path: &[&str]| -> Result<Vec<u8>> {
        let mut v = &kc;
        for p in path {
            v = if let Ok(i) = p.parse::<usize>() {
                &v[i]
            } else {
                &v[*p]
            };
        }
        let s = v.as_str().with_context(|| format!("kubeconfig {path:?}"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
    };
    let ca = b64(&["clusters", "0", "cluster", "certificate-authority-data"])?;
    let cert = b64(&["users", "0", "user", "client-certificate-data"])?;
    let key = b64(&["users", "0", "user", "client-key-data"])?;
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("server")?
        .trim_start_matches("https://")
        .to_owned();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&ca)? {
        roots.add(c)?;
    }
    let key = rustls_pki_types::PrivateKeyDer::try_from(pem::parse(&key)?.contents().to_vec())
        .map_err(|e| anyhow::anyhow!("client key: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(rustls_pemfile_certs(&cert)?, key)?;
    Ok((Arc::new(config), server))
}

fn rustls_pemfile_certs(
    pem_bytes: &[u8],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    Ok(pem::parse_many(pem_bytes)?
        .into_iter()
        .map(|p| rustls_pki_types::CertificateDer::from(p.contents().to_vec()))
        .collect())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// One `exec -i cat` session over WebSocket v5 that has echoed a line.
async fn cat_session(tls: Arc<rustls::ClientConfig>, server: &str) -> Result<Ws> {
    let tcp = tokio::net::TcpStream::connect(server).await?;
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let mut req = format!(
        "wss://{server}/api/v1/namespaces/default/pods/bench/exec?command=cat&container=c&stdin=true&stdout=true"
    )
    .into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    let mut msg = vec![0u8];
    msg.extend_from_slice(b"ping\n");
    ws.send(Message::Binary(msg.into())).await?;
    let mut got = Vec::new();
    while !got.ends_with(b"ping\n") {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => got.extend_from_slice(&b[1..]),
            Some(Ok(_)) => {}
            other => anyhow::bail!("session ended: {other:?}"),
        }
    }
    Ok(ws)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let sessions: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(kubeedge_bench::ensure_busybox_image())?;
    let node = "stream-bench";
    let mut cluster = Cluster::init()?;
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))?;
    cluster.apply(&pod(node))?;
    wait_for("pod Running", LIMIT, || {
        Ok(
            cluster.kubectl(&["get", "pod", "bench", "-o", "jsonpath={.status.phase}"])?
                == "Running",
        )
    })?;
    let id = container_id(node)?;
    let count = (mib * 16).to_string();
    let dd = ["dd", "if=/dev/zero", "bs=64k", &format!("count={count}")];

    println!(
        "stream-bench: {mib} MiB through exec, {sessions} sessions (Docker {})",
        docker_version()
    );
    // Exec throughput, three rounds each, alternating.
    let (mut tunnel, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let mut k = Command::new("kubectl");
        k.arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["exec", "bench", "--"])
            .args(dd);
        tunnel.push(mib as f64 / timed(&mut k)?);
        let mut d = Command::new("docker");
        d.args(["exec", &id]).args(dd);
        direct.push(mib as f64 / timed(&mut d)?);
    }
    tunnel.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    let (t, d) = (tunnel[1], direct[1]);
    println!("exec stdout throughput (median of 3):");
    println!(
        "  {:<34} {:>9.1} MB/s",
        "kubectl exec through the tunnel", t
    );
    println!("  {:<34} {:>9.1} MB/s", "docker exec on the node", d);
    println!(
        "  {:<34} {:>9.0} %   (goal >= 50 %)",
        "tunnel / docker",
        100.0 * t / d
    );

    let lat = logs_latency(&cluster, 200)?;
    println!(
        "logs -f latency, runtime receive -> kubectl stdout ({} lines):",
        lat.len()
    );
    println!(
        "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   (goal p99 <= 50 ms)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );

    // Sessions held open.
    let (edge_pid, cloud_pid) = (
        cluster.pid("edgecore").context("edgecore pid")?,
        cluster.pid("cloudcore").context("cloudcore pid")?,
    );
    let (tls, server) = api_tls(&cluster)?;
    let (edge0, cloud0) = (rss_kb(edge_pid), rss_kb(cloud_pid));
    let started = Instant::now();
    let held = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..sessions {
            let (tls, server) = (tls.clone(), server.clone());
            tasks.spawn(async move { cat_session(tls, &server).await });
        }
        let mut held = Vec::new();
        while let Some(r) = tasks.join_next().await {
            held.push(r??);
        }
        Ok::<_, anyhow::Error>(held)
    })?;
    let opened = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (edge1, cloud1) = (rss_kb(edge_pid), rss_kb(cloud_pid));
    println!(
        "{} concurrent exec -i sessions, each echoed a line, opened in {:.2} s, then idle:",
        held.len(),
        opened.as_secs_f64()
    );
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / held.len().max(1) as f64;
    println!(
        "  edgecore  RSS {:>6} -> {:>6} KiB   {:>6.1} KiB per idle session",
        edge0,
        edge1,
        per(edge0, edge1)
    );
    println!(
        "  cloudcore RSS {:>6} -> {:>6} KiB   {:>6.1} KiB per idle session   (goal <= 64 KiB)",
        cloud0,
        cloud1,
        per(cloud0, cloud1)
    );
    drop(held);
    Ok(())
}

fn docker_version() -> String {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
