//! `cri-floor`: what the container runtime itself takes to start `n` pods at once, with no
//! edged, cloud or API in the way: `n` concurrent RunPodSandbox + CreateContainer +
//! StartContainer through the CRI (the same `CriRuntime` edged drives), timed from the first
//! call to the last container started. It is the floor under e2e-bench's "20-replica
//! Deployment" figure on containerd, as `docker run -d` in parallel is on Docker.
//!
//! ```sh
//! cargo build --release -p kubeedge-bench && target/release/cri-floor 20 [unix:///run/kubeedge-rs-containerd/containerd.sock]
//! CRI_FLOOR_HOST_NETWORK=1 target/release/cri-floor 20   # sandboxes on the node's network: no CNI
//! ```

use std::time::{Duration, Instant};

use anyhow::Result;
use kubeedge_edge::edged::runtime::{
    ContainerConfig, ContainerRuntime, NetworkMode, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, SANDBOX,
};
use kubeedge_edge::edged::CriRuntime;

const IMAGE: &str = "docker.io/kubeedge-rs-test/busybox:2";
const NODE: &str = "cri-floor";

/// One pod: its sandbox, then one container in it, started. Returns the sandbox id and when
/// the container was started.
async fn pod(rt: &CriRuntime, i: usize, run: &str, host: bool) -> Result<(String, Instant)> {
    let name = format!("floor-{i}");
    let uid = format!("{run}-{i}");
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(LABEL_POD_UID.to_owned(), uid.clone());
    labels.insert(LABEL_POD_NAME.to_owned(), name.clone());
    labels.insert(LABEL_POD_NAMESPACE.to_owned(), "default".to_owned());
    labels.insert(LABEL_NODE.to_owned(), NODE.to_owned());
    let mut sandbox = ContainerConfig::default();
    sandbox.name = name.clone();
    sandbox.labels = labels.clone();
    if host {
        sandbox.network = NetworkMode::Host;
    } else {
        sandbox.hostname = Some(name.clone());
    }
    sandbox
        .labels
        .insert(LABEL_CONTAINER.to_owned(), SANDBOX.to_owned());
    let sandbox_id = rt.create_container(sandbox).await?;

    let mut app = ContainerConfig::default();
    app.name = "app".into();
    app.image = IMAGE.into();
    app.args = Some(vec!["sleep".into(), "3600".into()]);
    app.labels = labels;
    app.labels
        .insert(LABEL_CONTAINER.to_owned(), "app".to_owned());
    app.network = NetworkMode::Container(sandbox_id.clone());
    app.share_with = Some(sandbox_id.clone());
    let id = rt.create_container(app).await?;
    rt.start_container(&id).await?;
    Ok((sandbox_id, Instant::now()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "unix:///run/kubeedge-rs-containerd/containerd.sock".into());
    let host = std::env::var_os("CRI_FLOOR_HOST_NETWORK").is_some();
    let logs = tempfile::tempdir()?;
    let rt = CriRuntime::new(endpoint.clone(), logs.path());
    let version = rt.version().await?;
    println!(
        "cri-floor: {n} pods at once on {} {} at {endpoint}",
        version.name, version.version
    );
    for round in 1..=3 {
        let run = format!("r{round}-{}", std::process::id());
        let start = Instant::now();
        let results = futures_util::future::join_all((0..n).map(|i| pod(&rt, i, &run, host))).await;
        let mut done: Vec<Duration> = Vec::new();
        let mut sandboxes = Vec::new();
        for r in results {
            let (sandbox, at) = r?;
            done.push(at - start);
            sandboxes.push(sandbox);
        }
        done.sort();
        let p50 = done[done.len() / 2];
        let last = done.last().copied().unwrap_or_default();
        println!(
            "round {round}: {n} pods started, p50 {:.0} ms, all {:.0} ms",
            p50.as_secs_f64() * 1000.0,
            last.as_secs_f64() * 1000.0
        );
        futures_util::future::join_all(sandboxes.iter().map(|s| rt.remove_container(s))).await;
    }
    Ok(())
}
