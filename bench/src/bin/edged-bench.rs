//! `edged-bench`: pod create → Running latency, and edgecore's RSS with running pods.
//!
//! ```sh
//! cargo build --release -p edgecore && cargo run --release -p kubeedge-bench --bin edged-bench
//! edged-bench --runtime containerd --endpoint unix:///run/kubeedge-rs-containerd/containerd.sock
//! edged-bench --burst   # all pods pushed at once (containers of different pods start in parallel)
//! EDGECORE_LOG=debug EDGECORE_LOG_FILE=/tmp/edgecore.log edged-bench   # edgecore's log kept
//! ```
//!
//! A real edgecore process (edged on the local Docker engine, or on containerd through the CRI
//! with `--runtime containerd`; `--endpoint` names the socket) joins a CloudHub on loopback.
//! Pods are pushed one at a time; each latency runs from the push at the cloud to the first
//! podpatch saying Running that reaches the cloud (so it covers the hub, MetaManager's
//! persist-then-ack, edged, Docker and the status report). With all pods running, the edgecore
//! process's RSS is read from /proc (the runtime's own processes are not counted). The image is
//! a local busybox import; nothing is pulled (on containerd it must be in its `k8s.io`
//! namespace already, as scripts/test.sh imports it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kubeedge_bench::{
    ensure_busybox_image, remove_node_containers, rss_kb, wait_until, TestCloud, BUSYBOX_IMAGE,
};
use kubeedge_cloud::dynamiccontroller::application_response;
use kubeedge_cloud::hub::HubConfig;
use kubeedge_proto::{Application, Content, Message, Route};
use serde_json::{json, Value};

fn edgecore_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("edgecore");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p edgecore` first",
            bin.display()
        );
    }
    Ok(bin)
}

struct Child(std::process::Child, String, Option<String>);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        match &self.2 {
            None => remove_node_containers(&self.1),
            Some(endpoint) => remove_cri_node_containers(endpoint, &self.1),
        }
    }
}

/// Remove every sandbox and container of `node` from the CRI runtime at `endpoint`.
fn remove_cri_node_containers(endpoint: &str, node: &str) {
    use kubeedge_edge::edged::runtime::LABEL_NODE;
    use kubeedge_edge::edged::{ContainerRuntime, CriRuntime};
    let (endpoint, node) = (endpoint.to_owned(), node.to_owned());
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let cri = CriRuntime::new(endpoint, std::env::temp_dir());
            for c in cri
                .list_containers(&[(LABEL_NODE, &node)])
                .await
                .unwrap_or_default()
            {
                let _ = cri.remove_container(&c.id).await;
            }
        });
    })
    .join();
}

/// The value after `--name`, if given.
fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let pods: usize = arg("--pods").and_then(|v| v.parse().ok()).unwrap_or(50);
    let burst = std::env::args().any(|a| a == "--burst");
    let cri_endpoint = match arg("--runtime").as_deref() {
        None | Some("docker") => None,
        Some("containerd") => Some(
            arg("--endpoint")
                .unwrap_or_else(|| kubeedge_edge::edged::DEFAULT_CRI_ENDPOINT.to_owned()),
        ),
        Some(other) => bail!("--runtime {other}: docker or containerd"),
    };
    let mut edged = "    nodeIP: 127.0.0.1\n    podSyncFrequencyMs: 1000\n".to_owned();
    let runtime = match &cri_endpoint {
        None => {
            ensure_busybox_image().await?;
            "Docker"
        }
        Some(endpoint) => {
            edged.push_str(&format!(
                "    tailoredKubeletConfig:\n      containerRuntimeEndpoint: {endpoint}\n      podLogsDir: {}\n",
                std::env::temp_dir().join("edged-bench-pods").display()
            ));
            "containerd"
        }
    };
    let bin = edgecore_binary()?;
    let mut cloud = TestCloud::start(HubConfig::default()).await?;
    let node = format!("edged-bench-{}", std::process::id());
    let (config, _db) = cloud.edge_config_for(&node, &edged)?;
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let registered = Arc::new(Mutex::new(false));
    let (r2, reg2, down) = (running.clone(), registered.clone(), cloud.down.clone());
    cloud.answer_edged(move |u| {
        // edged lists the Services of a pod's namespace for its containers' environment
        // through the DynamicController: answer as a cloud without Services does (a cloud
        // that never answers costs the first container edged's 5 s list timeout).
        if u.msg.route.group_str() == "dynamiccontroller" {
            if let Ok(app) = u.msg.content.decode::<Application>() {
                let empty = br#"{"kind":"ServiceList","apiVersion":"v1","items":[]}"#.to_vec();
                if let Ok(reply) = application_response(&u.msg, &app.approved(Some(empty))) {
                    let (down, node) = (down.clone(), u.node.clone());
                    tokio::spawn(async move { down.send(&node, reply).await });
                }
            }
        }
        let res = &u.msg.route.resource;
        if res.contains("/node/") {
            *reg2.lock().unwrap_or_else(|e| e.into_inner()) = true;
        }
        if let Some(name) = res.strip_prefix("default/podpatch/") {
            let v: Value = serde_json::from_slice(&u.msg.content.bytes()).unwrap_or_default();
            if v["status"]["phase"] == "Running" {
                r2.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name.to_owned())
                    .or_insert_with(Instant::now);
            }
        }
    });
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("EDGECORE_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(match std::env::var_os("EDGECORE_LOG_FILE") {
            Some(path) => std::process::Stdio::from(std::fs::File::create(path)?),
            None => std::process::Stdio::null(),
        })
        .spawn()?;
    let pid = child.id();
    let _child = Child(child, node.clone(), cri_endpoint);
    wait_until("node registered", Duration::from_secs(30), || {
        *registered.lock().unwrap_or_else(|e| e.into_inner())
    })
    .await?;

    let mut latencies = Vec::with_capacity(pods);
    let mut sent = Vec::with_capacity(pods);
    let started = Instant::now();
    for i in 0..pods {
        let name = format!("bench-{i}");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("{node}-{i}"), "resourceVersion": "1"},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "86400"]}]},
        });
        let msg = Message::new(
            Route::new(
                "edgecontroller",
                "resource",
                "insert",
                format!("default/pod/{name}"),
            ),
            Content::json(&pod)?,
        )
        .with_resource_version("1");
        sent.push((name.clone(), Instant::now()));
        cloud.down.send(&node, msg).await?;
        if !burst {
            wait_running(&running, &name).await?;
        }
    }
    for (name, t0) in &sent {
        wait_running(&running, name).await?;
        let at = running.lock().unwrap_or_else(|e| e.into_inner())[name];
        latencies.push(at - *t0);
    }
    let all = started.elapsed();
    if let Some(first) = latencies.first() {
        println!("first pod: {first:?} (the start of edged's pod handling is in it)");
    }
    // Let the pods settle (probes none, statuses sent) before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kb(pid);
    latencies.sort();
    let how = if burst {
        "pushed at once"
    } else {
        "created one at a time"
    };
    println!("edged-bench: {pods} pods on {runtime}, local image, {how} (all Running in {all:?})");
    println!(
        "create -> Running latency: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "edgecore RSS with {pods} running pods: {:.1} MiB ({} kB; {runtime} not counted)",
        rss as f64 / 1024.0,
        rss
    );
    Ok(())
}

async fn wait_running(running: &Mutex<HashMap<String, Instant>>, name: &str) -> Result<()> {
    wait_until(&format!("{name} Running"), Duration::from_secs(60), || {
        running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    })
    .await?;
    Ok(())
}
