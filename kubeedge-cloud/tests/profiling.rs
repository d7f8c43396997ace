//! `enableProfiling` on the monitor server: a CPU profile taken while a thread spins is served
//! in pprof's protobuf format and names the spinning function; one profile runs at a time, and
//! without profiling the path is not served.
#![cfg(feature = "profiling")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};
use pprof::protos::Message as _;
use tokio_util::sync::CancellationToken;

#[inline(never)]
fn spin_for_the_profile(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    x
}

async fn monitor(profiling: bool, cancel: &CancellationToken) -> Result<std::net::SocketAddr> {
    let registry = prometheus_client::registry::Registry::default();
    let (_ready, ready_rx) = tokio::sync::watch::channel(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut m = kubeedge_cloud::monitor::Monitor::new(Arc::new(registry), ready_rx);
    if profiling {
        m = m.with_profiling();
    }
    tokio::spawn(m.serve(listener, cancel.clone()));
    Ok(addr)
}

/// curl's status, content type and body (bytes) for `url`.
async fn get(url: &str) -> Result<(u16, String, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("body");
    let run = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code} %{content_type}", url])
        .kill_on_drop(true)
        .output();
    let done = tokio::time::timeout(std::time::Duration::from_secs(40), run).await??;
    let text = String::from_utf8_lossy(&done.stdout).into_owned();
    let (code, kind) = text.split_once(' ').unwrap_or((&text, ""));
    Ok((
        code.parse().unwrap_or(0),
        kind.to_owned(),
        std::fs::read(&out).unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_profile_is_served_in_pprofs_format() -> Result<()> {
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let addr = monitor(true, &cancel).await?;
    let plain = monitor(false, &cancel).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || spin_for_the_profile(&stop))
    };
    // Two at once: one profiles, the other is refused, as Go's handler does.
    let url = format!("http://{addr}/debug/pprof/profile?seconds=2");
    let (a, b) = tokio::join!(get(&url), get(&url));
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    let (a, b) = (a?, b?);
    let (taken, refused) = if a.0 == 200 { (a, b) } else { (b, a) };

    let (code, kind, body) = taken;
    ensure!(
        code == 200 && kind == "application/octet-stream",
        "{code} {kind}"
    );
    let profile = pprof::protos::Profile::decode(body.as_slice())?;
    ensure!(!profile.sample.is_empty(), "no samples");
    ensure!(
        profile
            .string_table
            .iter()
            .any(|s| s.contains("spin_for_the_profile")),
        "the spinning function is not in the profile"
    );
    let (code, _, body) = refused;
    ensure!(
        code == 500 && String::from_utf8_lossy(&body).contains("Could not enable CPU profiling"),
        "a second profile at once: {code} {}",
        String::from_utf8_lossy(&body)
    );

    let (code, _, body) = get(&format!("http://{addr}/debug/pprof/heap")).await?;
    ensure!(code == 404, "heap: {code}");
    ensure!(String::from_utf8_lossy(&body).contains("no equivalent"));
    let (code, _, body) = get(&format!("http://{addr}/debug/pprof/cmdline")).await?;
    ensure!(code == 200 && !body.is_empty(), "cmdline: {code}");
    let (code, _, _) = get(&format!("http://{addr}/debug/pprof/profile?seconds=x")).await?;
    ensure!(code == 400, "bad seconds: {code}");
    let (code, _, _) = get(&format!("http://{plain}/debug/pprof/profile?seconds=1")).await?;
    ensure!(code == 404, "without profiling: {code}");
    Ok(())
}
