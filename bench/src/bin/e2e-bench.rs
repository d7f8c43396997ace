//! `e2e-bench`: the user's path, timed. `keadm init` (embedded control plane) and `keadm
//! join` on this machine, on each container runtime in turn (the real Docker engine, and
//! containerd through the CRI at `/run/kubeedge-rs-containerd/containerd.sock` when it runs;
//! `E2E_BENCH_RUNTIMES=docker` or `=containerd` picks one), then:
//! - join time: from running `keadm join` with a token to the node Ready in the API;
//! - apply -> Running: `kubectl apply` of a Deployment of `pods` replicas (local busybox
//!   image), and for each pod the time until the API shows it Running and Ready (p50/p99/max);
//!   then `pods` single Pods applied one at a time, each timed the same way.
//!
//! ```sh
//! cargo build --release -p cloudcore -p keadm -p kubeedge-bench && cargo build --release -p edgecore
//! target/release/e2e-bench 20     # pods (default 20); repeats: E2E_BENCH_ROUNDS (default 3)
//! ```
//!
//! The figures of both runtimes come from the same run and are printed side by side.
//!
//! The times come from a watch on the API (kube-runtime), not from polling.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt as _};
use kubeedge_bench::cluster::Cluster;
use kubeedge_bench::BUSYBOX_IMAGE;

/// The test containerd (`scripts/lib.sh` starts it, with the busybox image imported).
const CRI_SOCKET: &str = "/run/kubeedge-rs-containerd/containerd.sock";

/// How far a pod has got, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Stage {
    Created,
    Bound,
    Reported,
    Running,
}

fn ready(conds: Option<&Vec<k8s_openapi::api::core::v1::NodeCondition>>) -> bool {
    conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Join time, apply -> Running of `pods` at once, and of `pods` applied one at a time.
async fn round(pods: usize, runtime: &str) -> Result<(Duration, Vec<Duration>, Vec<Duration>)> {
    let mut cluster = Cluster::init()?;
    if runtime == "containerd" {
        cluster.join_flags = vec![format!("--remote-runtime-endpoint=unix://{CRI_SOCKET}")];
    } else {
        cluster.join_flags = vec!["--runtimetype=docker".into()];
    }
    let client = cluster.client().await?;
    let node = format!("bench-{}", std::process::id());

    // Join: a watch on the node is running before keadm starts.
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node.clone();
    let joined = tokio::spawn(async move {
        let mut s = watcher(nodes, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(n)) = s.next().await {
            if n.metadata.name.as_deref() == Some(name.as_str())
                && ready(n.status.as_ref().and_then(|s| s.conditions.as_ref()))
            {
                return Some(Instant::now());
            }
        }
        None
    });
    let token = cluster.token()?;
    let start = Instant::now();
    let ws = cluster.ws;
    cluster.join_with_token(&node, ws, &token)?;
    let ready_at = tokio::time::timeout(Duration::from_secs(60), joined)
        .await
        .context("node Ready within 60 s")??
        .context("node watch ended")?;
    let join = ready_at - start;

    // apply -> Running, all at once.
    let api: Api<Pod> = Api::namespaced(client, "default");
    let (watch, mut rx) = watch_pods(api.clone(), "app=bench");
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bench, namespace: default}}\nspec:\n  replicas: {pods}\n  selector: {{matchLabels: {{app: bench}}}}\n  template:\n    metadata: {{labels: {{app: bench}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: app\n        image: {BUSYBOX_IMAGE}\n        command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    );
    let applied = Instant::now();
    cluster.apply(&yaml)?;
    // Per pod, when the watch first saw it at each stage.
    let mut seen: HashMap<String, HashMap<Stage, Instant>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let running = |seen: &HashMap<String, HashMap<Stage, Instant>>| {
        seen.values()
            .filter(|s| s.contains_key(&Stage::Running))
            .count()
    };
    while running(&seen) < pods {
        let (name, stage, at) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("pods Running within 120 s")?
            .context("pod watch ended")?;
        seen.entry(name).or_default().entry(stage).or_insert(at);
    }
    watch.abort();

    // apply -> Running, one pod at a time (each waits for the one before).
    let (seq_watch, mut seq_rx) = watch_pods(api, "app=bench-seq");
    let mut one_by_one = Vec::new();
    for i in 0..pods {
        let name = format!("seq-{i}");
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: bench-seq}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {BUSYBOX_IMAGE}\n    command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
        );
        let t0 = Instant::now();
        cluster.apply(&yaml)?;
        loop {
            let (n, st, at) = tokio::time::timeout(Duration::from_secs(60), seq_rx.recv())
                .await
                .context("pod Running within 60 s")?
                .context("pod watch ended")?;
            if n == name && st == Stage::Running {
                one_by_one.push(at - t0);
                break;
            }
        }
    }
    seq_watch.abort();
    one_by_one.sort();

    let stage = |st: Stage| {
        let mut v: Vec<Duration> = seen
            .values()
            .filter_map(|s| s.get(&st).map(|t| *t - applied))
            .collect();
        v.sort();
        v
    };
    if std::env::var_os("E2E_BENCH_STAGES").is_some() {
        for st in [Stage::Created, Stage::Bound, Stage::Reported] {
            let v = stage(st);
            println!(
                "  {st:?}: {} pods seen, p50 {} p99 {}",
                v.len(),
                ms(pct(&v, 0.5)),
                ms(pct(&v, 0.99))
            );
        }
    }
    Ok((join, stage(Stage::Running), one_by_one))
}

/// A watch on the pods labelled `label`, sending (name, stage, when seen).
fn watch_pods(
    api: Api<Pod>,
    label: &str,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<(String, Stage, Instant)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config = watcher::Config::default().labels(label);
    let task = tokio::spawn(async move {
        let mut s = watcher(api, config).applied_objects().boxed();
        while let Some(Ok(p)) = s.next().await {
            let stage = if pod_running(&p) {
                Stage::Running
            } else if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.container_statuses.is_some())
            {
                Stage::Reported
            } else if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                Stage::Bound
            } else {
                Stage::Created
            };
            let _ = tx.send((p.metadata.name.unwrap_or_default(), stage, Instant::now()));
        }
    });
    (task, rx)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let pods: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let rounds: usize = std::env::var("E2E_BENCH_ROUNDS")
        .ok()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(3);
    let runtimes: Vec<String> = std::env::var("E2E_BENCH_RUNTIMES")
        .unwrap_or_else(|_| "docker,containerd".into())
        .split(',')
        .filter(|r| *r != "containerd" || std::path::Path::new(CRI_SOCKET).exists())
        .map(str::to_owned)
        .collect();
    kubeedge_bench::ensure_busybox_image().await?;
    println!(
        "e2e-bench: keadm init + join on this machine, {pods} pods from one apply, {rounds} rounds, runtimes {runtimes:?}"
    );
    // Per runtime: join, at-once p50, p99, one-at-a-time p50, p99 of every round.
    let mut figures: Vec<(String, Vec<[Duration; 5]>)> =
        runtimes.iter().map(|r| (r.clone(), Vec::new())).collect();
    for r in 1..=rounds {
        for (runtime, rows) in &mut figures {
            let (join, lat, seq) = round(pods, runtime).await?;
            println!(
                "round {r} {runtime}: join (token -> Ready) {}; apply -> Running, {pods} at once: p50 {} p99 {} max {}; one at a time: p50 {} p99 {} max {}",
                ms(join),
                ms(pct(&lat, 0.50)),
                ms(pct(&lat, 0.99)),
                ms(lat.last().copied().unwrap_or_default()),
                ms(pct(&seq, 0.50)),
                ms(pct(&seq, 0.99)),
                ms(seq.last().copied().unwrap_or_default()),
            );
            rows.push([
                join,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                pct(&seq, 0.5),
                pct(&seq, 0.99),
            ]);
        }
    }
    println!(
        "\n| figure (min-max over {rounds} rounds) | {} |",
        runtimes.join(" | ")
    );
    println!("|---|{}", "---|".repeat(runtimes.len()));
    let labels = [
        "join: token -> node Ready".to_string(),
        format!("{pods}-replica Deployment, apply -> each pod Running+Ready, p50"),
        format!("{pods}-replica Deployment, apply -> each pod Running+Ready, p99"),
        "one Pod at a time, apply -> Running+Ready, p50".to_string(),
        "one Pod at a time, apply -> Running+Ready, p99".to_string(),
    ];
    for (i, label) in labels.iter().enumerate() {
        let cells: Vec<String> = figures
            .iter()
            .map(|(_, rows)| {
                let lo = rows.iter().map(|r| r[i]).min().unwrap_or_default();
                let hi = rows.iter().map(|r| r[i]).max().unwrap_or_default();
                format!("{}-{}", ms(lo).trim_end_matches(" ms"), ms(hi))
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
    Ok(())
}
