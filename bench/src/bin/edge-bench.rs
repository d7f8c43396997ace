//! `edge-bench`: the edge's footprint and MetaManager throughput.
//!
//! ```sh
//! cargo build --release -p edgecore && cargo run --release -p kubeedge-bench --bin edge-bench
//! ```
//!
//! Prints edgecore's idle RSS (a real edgecore process joined to a CloudHub, no pods), its RSS
//! with 100 cached pods, pushes persisted and acked per second, and the stripped binary size.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kubeedge_bench::{pod, rss_kb, wait_until, TestCloud};
use kubeedge_cloud::hub::HubConfig;

fn edgecore_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let bin = dir.join("edgecore");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p edgecore` first",
            bin.display()
        );
    }
    Ok(bin)
}

fn stripped_size(bin: &Path) -> Option<u64> {
    let tmp = std::env::temp_dir().join(format!("edgecore-stripped-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(bin)
        .status()
        .ok()?
        .success();
    let size = ok
        .then(|| std::fs::metadata(&tmp).ok().map(|m| m.len()))
        .flatten();
    let _ = std::fs::remove_file(&tmp);
    size
}

/// How many of the functions in edgecore's text-order list the binary has, and how many the
/// list names (`nm` reads the binary's symbols); `None` without `nm` or the list.
fn text_order_found(bin: &Path) -> Option<(usize, usize)> {
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bins/edgecore/text-order.txt"
    ))
    .ok()?;
    let out = Command::new("nm").arg(bin).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let symbols: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let listed: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let found = listed.iter().filter(|s| symbols.contains(*s)).count();
    Some((found, listed.len()))
}

/// `GET /api/v1/pods` on MetaServer; returns the body size.
async fn metaserver_list(port: u16) -> Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /api/v1/pods HTTP/1.1\r\nHost: metaserver\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") || text.matches("\"kind\":\"Pod\"").count() < 100 {
        bail!(
            "metaserver list: {}",
            text.lines().next().unwrap_or_default()
        );
    }
    Ok(out.len())
}

#[tokio::main]
async fn main() -> Result<()> {
    let smoke = std::env::args().len() < 2 && std::env::var_os("EDGE_BENCH_FULL").is_none();
    let bin = edgecore_binary()?;
    let mut cfg = HubConfig::default();
    cfg.outbox.capacity = 100_000;
    cfg.outbox.window = 256;
    let cloud = TestCloud::start(cfg).await?;
    let (hub, down) = (cloud.hub.clone(), cloud.down.clone());
    let (config, _db) = cloud.edge_config()?;
    // MetaServer on: a free loopback port (picked here, so the bench can query it).
    let ms_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // EventBus (embedded broker on a free port) and DeviceTwin on too.
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut text = std::fs::read_to_string(&config)?.replace(
        "  eventBus:\n    enable: false\n",
        &format!("  eventBus:\n    enable: true\n    mqttMode: 0\n    mqttServerInternal: tcp://127.0.0.1:{mqtt_port}\n  deviceTwin:\n    enable: true\n"),
    );
    text.push_str(&format!(
        "  metaManager:\n    metaServer:\n      enable: true\n      server: 127.0.0.1:{ms_port}\n"
    ));
    std::fs::write(&config, text)?;
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .spawn()?;
    let pid = child.id();
    wait_until("edgecore connects", Duration::from_secs(30), || {
        hub.connected() == 1
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 5 })).await;
    println!(
        "edgecore idle RSS        {:.1} MiB (hub, meta, MetaServer, eventbus + broker, twin; joined, no pods)",
        rss_kb(pid) as f64 / 1024.0
    );
    if std::env::var_os("EDGE_BENCH_SMAPS").is_some() {
        // Where the idle RSS lives: file-backed (the binary's pages) versus anonymous (heap,
        // stacks), and the largest mappings.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        if let Some(t) = status.lines().find(|l| l.starts_with("Threads")) {
            println!("  {t}");
        }
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        for l in rollup.lines().filter(|l| {
            [
                "Rss",
                "Anonymous",
                "Shared_Clean",
                "Private_Clean",
                "Private_Dirty",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        }) {
            println!("  {l}");
        }
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
        let mut maps: Vec<(u64, String)> = Vec::new();
        let mut name = String::new();
        for l in smaps.lines() {
            if l.split_whitespace().next().is_some_and(|f| f.contains('-')) {
                name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            } else if let Some(v) = l.strip_prefix("Rss:") {
                let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                maps.push((kb, name.clone()));
            }
        }
        maps.sort_by_key(|m| std::cmp::Reverse(m.0));
        for (kb, n) in maps.iter().take(12) {
            println!("  {kb:>6} kB {n}");
        }
    }

    // 100 cached pods.
    for i in 0..100 {
        down.send(
            "edge-1",
            pod(&format!("p{i}"), &format!("u{i}"), "insert", 1500),
        )
        .await?;
    }
    wait_until("100 acked", Duration::from_secs(30), || {
        down.queued("edge-1") == 0
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 3 })).await;
    println!(
        "edgecore RSS, 100 pods   {:.1} MiB",
        rss_kb(pid) as f64 / 1024.0
    );
    let listed = metaserver_list(ms_port).await?;
    println!(
        "edgecore RSS, 100 pods listed through MetaServer ({} KB) {:.1} MiB",
        listed / 1024,
        rss_kb(pid) as f64 / 1024.0
    );

    // Throughput: pushes persisted (SQLite, group commit) and acked.
    let n = if smoke { 2_000 } else { 20_000 };
    let start = Instant::now();
    let d = down.clone();
    let producer = tokio::spawn(async move {
        for i in 100..100 + n {
            d.send(
                "edge-1",
                pod(&format!("p{i}"), &format!("u{i}"), "insert", 1500),
            )
            .await?;
        }
        anyhow::Ok(())
    });
    wait_until("all acked", Duration::from_secs(300), || {
        producer.is_finished() && down.queued("edge-1") == 0
    })
    .await?;
    producer.await??;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pushes persisted+acked   {n} in {secs:.2} s: {:.0}/s (~3 KB pods, one edgecore)",
        n as f64 / secs
    );
    println!(
        "edgecore RSS after burst {:.1} MiB ({} pods stored)",
        rss_kb(pid) as f64 / 1024.0,
        n + 100
    );

    // Soak: `edge-bench --soak <minutes>` churns pods (create 200, delete 200) and samples RSS
    // every minute; RSS should stay flat within 10 % after the first minute.
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--soak") {
        let minutes: u64 = args.get(pos + 1).and_then(|m| m.parse().ok()).unwrap_or(30);
        let start = Instant::now();
        let mut samples = Vec::new();
        let mut next_sample = start + Duration::from_secs(60);
        let mut round = 0usize;
        while start.elapsed() < Duration::from_secs(minutes * 60) {
            let base = 1_000_000 + (round % 10) * 1000;
            for i in base..base + 200 {
                down.send(
                    "edge-1",
                    pod(&format!("c{i}"), &format!("c{i}"), "insert", 0),
                )
                .await?;
            }
            for i in base..base + 200 {
                down.send(
                    "edge-1",
                    pod(&format!("c{i}"), &format!("c{i}"), "delete", 0),
                )
                .await?;
            }
            wait_until("churn acked", Duration::from_secs(60), || {
                down.queued("edge-1") == 0
            })
            .await?;
            round += 1;
            if Instant::now() >= next_sample {
                let rss = rss_kb(pid);
                println!(
                    "soak minute {:>3}         RSS {:.1} MiB after {round} rounds",
                    samples.len() + 1,
                    rss as f64 / 1024.0
                );
                samples.push(rss);
                next_sample += Duration::from_secs(60);
            }
        }
        if let (Some(first), Some(max)) = (samples.first(), samples.iter().max()) {
            println!(
                "soak                     RSS grew {:.1} % from minute 1 to the peak",
                (*max as f64 / *first as f64 - 1.0) * 100.0
            );
        }
    }

    let size = std::fs::metadata(&bin)?.len();
    match stripped_size(&bin) {
        Some(s) => println!(
            "edgecore binary          {:.1} MB stripped ({:.1} MB as built)",
            s as f64 / 1e6,
            size as f64 / 1e6
        ),
        None => println!(
            "edgecore binary          {:.1} MB as built (strip not found)",
            size as f64 / 1e6
        ),
    }
    if let Some((found, listed)) = text_order_found(&bin) {
        println!(
            "text order               {found} of the {listed} functions in bins/edgecore/text-order.txt are in the binary (fewer: the list is stale, run scripts/edge-text-order.sh)"
        );
    }
    Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()?;
    let _ = child.wait();
    Ok(())
}
