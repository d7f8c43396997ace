//! Edgecore's metrics at MetaServer's `/metrics`, scraped while a real edgecore works: the hub
//! link (up, then a reconnect after the cloud drops it), the metadata store's writes and size,
//! the embedded MQTT broker's clients and messages, and MetaServer's own API requests.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::*;
use kubeedge_edge::config::EdgeCoreConfig;
use kubeedge_proto::{Content, Message, Route};

#[tokio::test]
async fn edge_metrics_move_with_what_the_edge_does() -> Result<()> {
    let cloud = cloud(fast()).await?;
    let (path, _db) = cloud.edge_config()?;
    let mqtt = kubeedge_bench::free_port()?;
    let mut text = std::fs::read_to_string(&path)?.replace(
        "  eventBus:\n    enable: false\n",
        &format!("  eventBus:\n    enable: true\n    mqttMode: 0\n    mqttServerInternal: tcp://127.0.0.1:{mqtt}\n"),
    );
    text.push_str(
        "  metaManager:\n    metaServer:\n      enable: true\n      server: 127.0.0.1:0\n",
    );
    let running = kubeedge_edge::start(EdgeCoreConfig::from_yaml(&text)?).await?;
    let addr = running.metaserver.context("metaserver")?;

    // The link comes up; no reconnect yet. The event bus is the broker's first client.
    let body = until_sample(addr, "kubeedge_edgehub_connected", |v| v == 1.0).await?;
    ensure!(
        sample(&body, "kubeedge_edgehub_reconnects_total") == Some(0.0),
        "{body}"
    );
    until_sample(addr, "kubeedge_eventbus_mqtt_clients", |v| v >= 1.0).await?;

    // A push is stored: a write, and a store on disk.
    let node = "edge-1".to_owned();
    let cm = Content::json(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default", "uid": "u-c", "resourceVersion": "3"}}))?;
    let push = Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            "insert",
            "default/configmap/c",
        ),
        cm,
    )
    .with_resource_version("3");
    cloud.down.send(&node, push).await?;
    let body = until_sample(addr, "kubeedge_meta_writes_total", |v| v >= 1.0).await?;
    ensure!(
        sample(&body, "kubeedge_meta_store_bytes").is_some_and(|b| b > 0.0),
        "{body}"
    );

    // An MQTT publish through the embedded broker is counted.
    let before = sample(&body, "kubeedge_eventbus_mqtt_messages_total").context("messages")?;
    let mut opts = rumqttc::MqttOptions::new("metrics-test", "127.0.0.1", mqtt);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
    client
        .publish("sensors/t", rumqttc::QoS::AtLeastOnce, false, "21")
        .await?;
    within("puback", async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = events.poll().await? {
                return Ok::<_, anyhow::Error>(());
            }
        }
    })
    .await??;
    until_sample(addr, "kubeedge_eventbus_mqtt_messages_total", |v| {
        v > before
    })
    .await?;

    // MetaServer's own API requests are counted by verb and resource.
    let (status, _) = http_get(addr, "/api/v1/namespaces/default/configmaps").await?;
    ensure!(status == 200);
    until_sample(
        addr,
        r#"kubeedge_apiserver_requests_total{verb="list",group="",resource="configmaps",subresource="",code="200"}"#,
        |v| v >= 1.0,
    )
    .await?;

    // The cloud drops the link: the edge reconnects, and says so.
    cloud.hub.disconnect(&node).await;
    let body = until_sample(addr, "kubeedge_edgehub_reconnects_total", |v| v >= 1.0).await?;
    ensure!(
        sample(&body, "kubeedge_edgehub_connected").is_some(),
        "{body}"
    );
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
