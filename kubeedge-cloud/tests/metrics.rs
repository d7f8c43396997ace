//! CloudHub's metrics through the monitor server, scraped as Prometheus does: each figure moves
//! when the test causes it (a node connects and leaves, keepalives arrive, a push is acked or
//! waits in the outbox), and `/readyz` follows readiness.

mod common;

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn hub_metrics_move_with_what_the_hub_does() -> Result<()> {
    let cloud = cloud(fast()).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    cloud.hub.register_metrics(&mut registry);
    let (ready, ready_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let monitor = kubeedge_cloud::monitor::Monitor::new(Arc::new(registry), ready_rx);
    let server = tokio::spawn(monitor.serve(listener, cancel.clone()));

    // Probes.
    ensure!(http_get(addr, "/healthz").await?.0 == 200);
    ensure!(
        http_get(addr, "/readyz").await?.0 == 503,
        "ready before being told"
    );
    ready.send(true)?;
    ensure!(http_get(addr, "/readyz").await?.0 == 200);
    ensure!(http_get(addr, "/nothing").await?.0 == 404);

    // Nothing connected: both names of the gauge say 0.
    let (status, body) = http_get(addr, "/metrics").await?;
    ensure!(status == 200);
    ensure!(
        sample(&body, "kubeedge_cloudhub_connected_nodes") == Some(0.0),
        "{body}"
    );
    ensure!(
        sample(&body, "KubeEdge_CloudHub_connected_nodes") == Some(0.0),
        "{body}"
    );
    ensure!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    // A node connects: the gauges, the session count, and its keepalives.
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-m", dir.path()).await?;
    let mut e = edge(&cloud, "edge-m", tls);
    within("connect", e.client.connected()).await??;
    let body = until_sample(addr, "kubeedge_cloudhub_connected_nodes", |v| v == 1.0).await?;
    ensure!(sample(&body, "KubeEdge_CloudHub_connected_nodes") == Some(1.0));
    ensure!(
        sample(&body, "kubeedge_cloudhub_sessions_total") == Some(1.0),
        "{body}"
    );
    until_sample(
        addr,
        "kubeedge_cloudhub_messages_received_total{operation=\"keepalive\"}",
        |v| v >= 1.0,
    )
    .await?;

    // A push is written and acked: counted as sent, and its ack latency observed.
    cloud.down.send("edge-m", pod("u1", "10", "insert")).await?;
    let got = within("delivery", e.inbound.recv())
        .await?
        .context("closed")?;
    e.client.send(got.ack()).await?;
    let body = until_sample(addr, "kubeedge_cloudhub_ack_latency_seconds_count", |v| {
        v == 1.0
    })
    .await?;
    ensure!(
        sample(
            &body,
            "kubeedge_cloudhub_messages_sent_total{operation=\"insert\"}"
        ) == Some(1.0),
        "{body}"
    );
    ensure!(
        sample(&body, "kubeedge_cloudhub_outbox_messages") == Some(0.0),
        "{body}"
    );

    // A push the edge does not ack waits in the outbox (and is resent): the node shows in the
    // top-N gauges with the age of its oldest message.
    cloud.down.send("edge-m", pod("u2", "20", "update")).await?;
    let _ = within("second delivery", e.inbound.recv()).await?;
    let body = until_sample(addr, "kubeedge_cloudhub_messages_resent_total", |v| {
        v >= 1.0
    })
    .await?;
    ensure!(
        sample(&body, "kubeedge_cloudhub_outbox_messages") == Some(1.0),
        "{body}"
    );
    ensure!(
        sample(
            &body,
            "kubeedge_cloudhub_outbox_messages_top{node=\"edge-m\"}"
        ) == Some(1.0),
        "{body}"
    );
    let age = sample(
        &body,
        "kubeedge_cloudhub_outbox_oldest_message_age_seconds{node=\"edge-m\"}",
    )
    .context("age of the oldest message")?;
    ensure!((0.0..60.0).contains(&age), "age {age}");

    // The node leaves: back to 0.
    e.cancel.cancel();
    until_sample(addr, "kubeedge_cloudhub_connected_nodes", |v| v == 0.0).await?;
    cancel.cancel();
    within("monitor stops", server).await??;
    Ok(())
}

#[tokio::test]
async fn the_monitor_refuses_writes_and_unknown_paths() -> Result<()> {
    let registry = prometheus_client::registry::Registry::default();
    let (_ready, ready_rx) = tokio::sync::watch::channel(true);
    let monitor = kubeedge_cloud::monitor::Monitor::new(Arc::new(registry), ready_rx);
    let post = http::Request::post("/metrics").body(())?;
    ensure!(monitor.handle(&post).status() == 405);
    let get = http::Request::get("/metrics/../x").body(())?;
    ensure!(monitor.handle(&get).status() == 404);
    let empty = http::Request::get("/metrics").body(())?;
    ensure!(monitor.handle(&empty).status() == 200);
    Ok(())
}
