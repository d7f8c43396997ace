//! Three cloudcores on one etcd behind HAProxy, a real edgecore with Docker and 50 simulated
//! edges (the hub client of kubeedge-edge, acking what it gets). `kill -9` of the replica that
//! holds the real edge and 25 of the simulated ones: they all reconnect through HAProxy to the
//! others, every pod version reaches each edge exactly once (counted after the edge's hub
//! layers, as the reliability tests count), and a pod applied during the failover runs.

#[path = "../../kubeedge-apiserver/tests/common/etcd.rs"]
#[allow(dead_code, unreachable_pub)]
mod etcd;
#[path = "support/ha.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_edge::hub::{self, CertFiles};
use support::{busybox_pod, holder, phase, record_holder, Haproxy};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(90);
const SIMS: usize = 50;

/// Deliveries per (node, pod uid @ resourceVersion), counted after the edge's hub layers.
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<HashMap<(String, String), usize>>>);

impl Deliveries {
    fn note(&self, node: &str, uid: &str, rv: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((node.to_owned(), format!("{uid}@{rv}")))
            .or_default() += 1;
    }

    fn has(&self, node: &str, uid: &str, rv: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&(node.to_owned(), format!("{uid}@{rv}")))
    }

    fn more_than_once(&self) -> Vec<((String, String), usize)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }
}

/// A simulated edge: joins with the token through `https`, holds its link through `ws`, acks
/// every message and counts the pods it gets.
async fn sim(
    node: String,
    https: SocketAddr,
    ws: SocketAddr,
    token: kubeedge_proto::JoinToken,
    dir: std::path::PathBuf,
    seen: Deliveries,
    cancel: CancellationToken,
) -> Result<()> {
    let files = CertFiles::in_dir(&dir);
    let tls = hub::bootstrap(
        &https.to_string(),
        &token,
        &node,
        &files,
        Duration::from_secs(30),
    )
    .await?;
    let mut cfg = hub::HubConfig::default();
    cfg.server = ws.to_string();
    cfg.node_name = node.clone();
    cfg.heartbeat = Duration::from_secs(1);
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(500);
    let (client, mut inbound, driver) = hub::connect(cfg, tls);
    tokio::spawn(driver.run(cancel.clone()));
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            m = inbound.recv() => match m {
                Some(m) => m,
                None if cancel.is_cancelled() => return Ok(()),
                None => anyhow::bail!("hub closed"),
            },
        };
        if msg.route.resource.contains("/pod/") {
            let head = msg.content.decode::<serde_json::Value>()?;
            let uid = head["metadata"]["uid"].as_str().unwrap_or_default();
            seen.note(&node, uid, &msg.header.resource_version);
        }
        client.send(msg.ack()).await?;
    }
}

fn sim_pod(name: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))?)
}

/// The replicas holding the sims' records, counted by holder.
fn holders(cluster: &Cluster) -> Result<HashMap<String, usize>> {
    let out = cluster.kubectl(&[
        "get",
        "lease",
        "-n",
        "kubeedge",
        "-l",
        "kubeedge.io/owner-record=node",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.holderIdentity}{\"\\n\"}{end}",
    ])?;
    let mut by = HashMap::new();
    for line in out.lines().filter(|l| l.starts_with("node-sim-")) {
        if let Some((_, h)) = line.split_once(' ') {
            *by.entry(h.trim().to_owned()).or_default() += 1;
        }
    }
    Ok(by)
}

/// Every pod of the sims, as the API has it now, is on its node in that version.
async fn all_delivered(pods: &Api<Pod>, seen: &Deliveries) -> Result<bool> {
    for p in pods.list(&Default::default()).await? {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if !node.starts_with("sim-") {
            continue;
        }
        let uid = p.metadata.uid.unwrap_or_default();
        let rv = p.metadata.resource_version.unwrap_or_default();
        if !seen.has(&node, &uid, &rv) {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if cond().await? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_edges_and_a_real_one_get_every_message_once_when_their_replica_dies() -> Result<()> {
    kubeedge_bench::ensure_busybox_image().await?;
    let members = etcd::EtcdCluster::start(3).await?;
    let servers = format!("--etcd-servers={}", members.endpoints().join(","));
    let mut a = Cluster::init_with_flags(&[&servers], &[])?;
    wait_for("A leads", LIMIT, || Ok(!holder(&a)?.is_empty()))?;
    let b = Cluster::init_with_flags(&[&servers], &[])?;
    let c = Cluster::init_with_flags(&[&servers], &[])?;
    // `balance first`: A takes the real edge and 25 simulated ones, B 13, C the rest.
    let (ws, https) = (kubeedge_bench::free_port()?, kubeedge_bench::free_port()?);
    let _lb = Haproxy::balanced(
        "first",
        &[
            (
                ws,
                vec![
                    (a.ws.port(), Some(26)),
                    (b.ws.port(), Some(13)),
                    (c.ws.port(), None),
                ],
            ),
            (
                https,
                vec![
                    (a.https_port, None),
                    (b.https_port, None),
                    (c.https_port, None),
                ],
            ),
        ],
    )?;
    let (lb_ws, lb_https) = (
        SocketAddr::from(([127, 0, 0, 1], ws)),
        SocketAddr::from(([127, 0, 0, 1], https)),
    );

    // The real edge first, through the balancer: it lands on A.
    let real = "ha-real";
    a.https_port = https;
    a.join_sets.push("modules.edgeHub.heartbeat=2".into());
    a.join(real, lb_ws)?;
    wait_for("real edge Ready", LIMIT, || a.node_ready(real)).with_context(|| a.logs_tail(30))?;
    let on_a = record_holder(&a, real);
    ensure!(!on_a.is_empty(), "no record for the real edge");

    // 50 simulated edges.
    let client = a.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let token: kubeedge_proto::JoinToken = a.token()?.parse()?;
    let seen = Deliveries::default();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let dirs = tempfile::tempdir()?;
    let mut sims = Vec::new();
    for i in 0..SIMS {
        let node = format!("sim-{i}");
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": node, "labels": {"node-role.kubernetes.io/edge": ""}}
        }))?;
        nodes.create(&PostParams::default(), &n).await?;
        sims.push(tokio::spawn(sim(
            node.clone(),
            lb_https,
            lb_ws,
            token.clone(),
            dirs.path().join(&node),
            seen.clone(),
            cancel.clone(),
        )));
    }
    until("the sims spread over the replicas", async || {
        let by = holders(&a)?;
        Ok(by.values().sum::<usize>() == SIMS && by.get(&on_a) == Some(&25))
    })
    .await
    .with_context(|| format!("{:?}", holders(&a)))?;
    for i in 0..SIMS {
        for j in 0..2 {
            let name = format!("sim-{i}-p{j}");
            pods.create(
                &PostParams::default(),
                &sim_pod(&name, &format!("sim-{i}"))?,
            )
            .await?;
        }
    }
    until("the first pods on every sim", async || {
        all_delivered(&pods, &seen).await
    })
    .await?;

    // kill -9 of A. Meanwhile a pod for the real edge, a new pod and an update for each sim.
    a.kill9("cloudcore")?;
    let killed = Instant::now();
    let b_client = b.client().await?;
    let pods: Api<Pod> = Api::namespaced(b_client, "default");
    b.apply(&busybox_pod("during", real))?;
    for i in 0..SIMS {
        pods.create(
            &PostParams::default(),
            &sim_pod(&format!("sim-{i}-p2"), &format!("sim-{i}"))?,
        )
        .await?;
        let patch = serde_json::json!({"metadata": {"labels": {"failover": "yes"}}});
        pods.patch(
            &format!("sim-{i}-p0"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    until("every pod version on every sim", async || {
        all_delivered(&pods, &seen).await
    })
    .await
    .with_context(|| b.logs_tail(20))?;
    let delivered = killed.elapsed();
    wait_for("the pod applied during the failover Running", LIMIT, || {
        Ok(phase(&b, "during") == "Running")
    })
    .with_context(|| b.logs_tail(30))?;
    let running = killed.elapsed();
    let by = holders(&b)?;
    ensure!(
        !by.contains_key(&on_a),
        "records still on the dead replica: {by:?}"
    );
    ensure!(
        record_holder(&b, real) != on_a,
        "the real edge's record stayed on A"
    );
    let dups = seen.more_than_once();
    ensure!(dups.is_empty(), "delivered more than once: {dups:?}");
    println!(
        "kill -9 of the replica holding 26 edges: every pod version on all {SIMS} simulated edges after {:.1} s (records now {by:?}); the real edge's new pod Running after {:.1} s",
        delivered.as_secs_f64(),
        running.as_secs_f64()
    );
    cancel.cancel();
    for s in sims {
        if let Ok(Err(e)) = s.await {
            return Err(e.context("a simulated edge failed"));
        }
    }
    Ok(())
}
