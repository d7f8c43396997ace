//! Device twin load: N devices (default 1,000) each reporting once a second over MQTT to a
//! real edgecore process (embedded broker + twin), through CloudHub and the DeviceController
//! into the Device status of an in-process Kubernetes API. Prints the report -> status latency
//! (p50/p99/max) and edgecore's RSS, idle (event bus + twin on, no devices) and under load.
//!
//! ```text
//! cargo build --release -p edgecore && cargo run --release -p kubeedge-bench --bin device-bench -- [devices] [seconds]
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt as _;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kubeedge_bench::devices::{free_port, DeviceCloud};
use kubeedge_bench::{rss_kb, wait_until};
use kubeedge_cloud::devicecontroller::DeviceControllerConfig;
use kubeedge_cloud::hub::HubConfig;
use kubeedge_proto::api::v1beta1::Device;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

fn edgecore_binary() -> Result<PathBuf> {
    let bin = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("edgecore");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p edgecore` first",
            bin.display()
        );
    }
    Ok(bin)
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let secs: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let bin = edgecore_binary()?;

    let mut hub = HubConfig::default();
    hub.outbox.capacity = 100_000;
    let mut ctl = DeviceControllerConfig::default();
    ctl.push_objects = false;
    ctl.status_concurrency = 64;
    let dc = DeviceCloud::start(hub, ctl).await?;
    let port = free_port()?;
    let (config, db) = dc.edge_config(0, &format!("tcp://127.0.0.1:{port}"))?;
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let h = dc.cloud.hub.clone();
    wait_until("edgecore connects", Duration::from_secs(30), || {
        h.connected() == 1
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kb(pid);
    println!(
        "edgecore idle RSS          {:.1} MiB (hub + meta + event bus with embedded broker + twin, no devices)",
        idle as f64 / 1024.0
    );

    // The devices.
    let api: Api<Device> = Api::namespaced(dc.client.clone(), "default");
    for i in 0..n {
        let d: Device = serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": format!("dev-{i}"), "namespace": "default"},
            "spec": {"nodeName": "edge-1", "properties": [{"name": "t"}]}
        }))?;
        api.create(&PostParams::default(), &d).await?;
    }
    wait_until(
        "the twin has every device",
        Duration::from_secs(120),
        || {
            rusqlite::Connection::open(&db)
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM device", [], |r| r.get::<_, i64>(0))
                })
                .map(|c| c as usize == n)
                .unwrap_or(false)
        },
    )
    .await?;

    // Status watch: each reported value carries its send time.
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (lat, seen, rec) = (lat.clone(), seen.clone(), recording.clone());
        let stream = watcher::watcher(Api::<Device>::all(dc.client.clone()), Default::default());
        tokio::spawn(async move {
            tokio::pin!(stream);
            while let Some(ev) = stream.next().await {
                let Ok(watcher::Event::Apply(d)) = ev else {
                    continue;
                };
                let now = now_us();
                let name = d.metadata.name.clone().unwrap_or_default();
                let Some(v) = d
                    .status
                    .and_then(|s| s.twins.into_iter().find(|t| t.property_name == "t"))
                    .and_then(|t| t.reported)
                    .map(|r| r.value)
                else {
                    continue;
                };
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                if s.get(&name) == Some(&v) {
                    continue;
                }
                s.insert(name, v.clone());
                if rec.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(sent) = v.parse::<i64>() {
                        lat.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((now - sent) as f64 / 1000.0);
                    }
                }
            }
        });
    }

    // Publishers: 10 MQTT connections, each device once a second, spread over the second.
    let clients = 10.min(n.max(1));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut opts = MqttOptions::new(format!("bench-{c}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 1024);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        let devs: Vec<usize> = (0..n).filter(|i| i % clients == c).collect();
        let (stop, sent) = (stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let gap = Duration::from_secs(1) / devs.len().max(1) as u32;
            let mut tick = tokio::time::interval(gap);
            let mut k = 0usize;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let i = devs[k % devs.len()];
                k += 1;
                let t = now_us();
                let body = format!(
                    r#"{{"event_id":"","timestamp":{},"twin":{{"t":{{"actual":{{"value":"{t}","metadata":{{"timestamp":{}}}}},"metadata":{{"type":"string"}}}}}}}}"#,
                    t / 1000,
                    t / 1000
                );
                if client
                    .try_publish(
                        format!("$hw/events/device/default/dev-{i}/twin/update"),
                        QoS::AtMostOnce,
                        false,
                        body,
                    )
                    .is_ok()
                {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up
    recording.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent0 = sent.load(std::sync::atomic::Ordering::Relaxed);
    let mut peak = 0;
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kb(pid));
    }
    recording.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent_n = sent.load(std::sync::atomic::Ordering::Relaxed) - sent0;
    stop.cancel();
    let mut l = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort_by(|a, b| a.total_cmp(b));
    println!(
        "load                       {n} devices x 1 report/s for {secs} s: {sent_n} reports sent, {} status updates seen",
        l.len()
    );
    println!(
        "MQTT report -> Device status latency  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (goal p99 <= 50 ms)",
        pct(&l, 0.5),
        pct(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "edgecore RSS under load    {:.1} MiB peak",
        peak as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
