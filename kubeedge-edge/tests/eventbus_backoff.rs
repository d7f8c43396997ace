//! A broker that is down is retried with backoff and logged once, not once per attempt. (Alone
//! in its binary: it captures logs with a thread-local subscriber.)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kubeedge_edge::eventbus::broker::{self, Broker, BrokerConfig};
use kubeedge_edge::eventbus::{
    eventbus, BrokerAddr, EventBusConfig, EventBusOutputs, MqttMode, SubTopics,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let l = logs.clone();
    let sub = tracing_subscriber::fmt()
        .with_env_filter("kubeedge_edge=debug")
        .with_ansi(false)
        .with_writer(move || l.clone())
        .finish();
    (logs, tracing::subscriber::set_default(sub))
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn config(addr: std::net::SocketAddr, mode: MqttMode) -> EventBusConfig {
    let mut c = EventBusConfig::new("edge-1");
    c.mode = mode;
    let a = BrokerAddr {
        host: "127.0.0.1".into(),
        port: addr.port(),
    };
    c.internal = a.clone();
    c.external = a;
    c
}

#[tokio::test]
async fn broker_down_warns_once_and_reconnects() -> Result<()> {
    let (logs, _g) = capture();
    let cancel = CancellationToken::new();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cfg = config(addr, MqttMode::External);
    cfg.max_backoff = Duration::from_millis(20);
    let (cloud, _cloud_rx) = mpsc::channel(16);
    let (_bus, driver) = eventbus(
        cfg,
        SubTopics::in_memory(),
        EventBusOutputs::new(None, cloud),
    )?;
    tokio::spawn(driver.run(cancel.clone()));
    wait("several retries", || {
        logs.text().matches("still unreachable").count() >= 5
    })
    .await?;
    assert_eq!(
        logs.text().matches("mqtt broker unreachable").count(),
        1,
        "{}",
        logs.text()
    );

    // The broker comes up on that port: connected, still one warning.
    let listener = broker::bind(&BrokerConfig::new(addr)).await?;
    tokio::spawn(Broker::new(BrokerConfig::new(addr)).serve(listener, cancel.child_token()));
    wait("connected", || {
        logs.text().contains("mqtt broker connected")
    })
    .await
    .with_context(|| logs.text())?;
    assert_eq!(logs.text().matches("mqtt broker unreachable").count(), 1);
    cancel.cancel();
    Ok(())
}
