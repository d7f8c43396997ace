//! The event bus against a real broker (the embedded one): device topics to the twin, other
//! topics to the cloud, cloud subscriptions persisted in `sub_topics`, publishes out.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kubeedge_edge::eventbus::broker::{self, Broker, BrokerConfig};
use kubeedge_edge::eventbus::{
    eventbus, BrokerAddr, EventBusConfig, EventBusOutputs, MqttMode, SubTopics,
};
use kubeedge_proto::{Content, Message, Route, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

async fn embedded(cancel: &CancellationToken) -> Result<std::net::SocketAddr> {
    let cfg = BrokerConfig::new("127.0.0.1:0".parse()?);
    let listener = broker::bind(&cfg).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(Broker::new(cfg).serve(listener, cancel.child_token()));
    Ok(addr)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_bridged_and_subscriptions_persist() -> Result<()> {
    let cancel = CancellationToken::new();
    let addr = embedded(&cancel).await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("edgecore.db");
    let (twin_tx, mut twin_rx) = mpsc::channel(16);
    let (cloud_tx, mut cloud_rx) = mpsc::channel(16);
    let (bus, driver) = eventbus(
        config(addr, MqttMode::Internal),
        SubTopics::open(&db)?,
        EventBusOutputs::new(Some(twin_tx), cloud_tx),
    )?;
    tokio::spawn(driver.run(cancel.clone()));

    // A mapper-side client.
    let mut opts = MqttOptions::new("app", "127.0.0.1", addr.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let (got_tx, mut got_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let _ = got_tx.send((p.topic.clone(), p.payload.to_vec()));
            }
        }
    });
    client
        .subscribe("$hw/events/device/+/twin/update/delta", QoS::AtLeastOnce)
        .await?;

    // The cloud subscribes the bus to a user topic: persisted, and bridged upstream.
    let sub = Message::new(
        Route::new("router_eventbus", "user", "subscribe", "factory/line-1"),
        Content::string(""),
    );
    bus.sender().send(sub).await?;
    wait("persisted", || {
        SubTopics::open(&db)
            .and_then(|s| s.load())
            .map(|t| t.contains("factory/line-1"))
            .unwrap_or(false)
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let up = loop {
        client
            .publish("factory/line-1", QoS::AtLeastOnce, false, "42")
            .await?;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), cloud_rx.recv()).await
        {
            break m;
        }
        anyhow::ensure!(Instant::now() < deadline, "upload never arrived");
    };
    assert_eq!(up.route.operation_str(), "upload");
    assert_eq!(up.route.resource, "factory/line-1");
    assert_eq!(up.content.as_str().as_deref(), Some("42"));

    // Device topics go to the twin, as base64url resources, in both id forms.
    for topic in [
        "$hw/events/device/d1/twin/update",
        "$hw/events/device/ns/d2/state/update",
    ] {
        client.publish(topic, QoS::AtLeastOnce, false, "{}").await?;
        let m = tokio::time::timeout(Duration::from_secs(10), twin_rx.recv())
            .await?
            .context("twin channel")?;
        assert_eq!(m.route.operation_str(), "response");
        assert_eq!(
            Topic::from_bus_resource(&m.route.resource)
                .map(|t| t.to_string())
                .as_deref(),
            Some(topic)
        );
    }

    // The twin's publishes reach MQTT subscribers.
    let delta = Message::new(
        Route::new(
            "twin",
            "bus",
            "publish",
            "$hw/events/device/d1/twin/update/delta",
        ),
        Content::string(r#"{"delta":{"x":"1"}}"#),
    );
    bus.sender().send(delta).await?;
    let (t, payload) = tokio::time::timeout(Duration::from_secs(10), got_rx.recv())
        .await?
        .context("publish")?;
    assert_eq!(t, "$hw/events/device/d1/twin/update/delta");
    assert_eq!(payload, br#"{"delta":{"x":"1"}}"#);

    // Unsubscribe forgets the topic.
    let unsub = Message::new(
        Route::new("router_eventbus", "user", "unsubscribe", "factory/line-1"),
        Content::string(""),
    );
    bus.sender().send(unsub).await?;
    wait("forgotten", || {
        SubTopics::open(&db)
            .and_then(|s| s.load())
            .map(|t| t.is_empty())
            .unwrap_or(false)
    })
    .await?;
    cancel.cancel();
    Ok(())
}
