//! The twin as a tower service over twin messages, with no MQTT anywhere: readiness is room in
//! the twin's queue, and a membership push through the service comes out as the delta the
//! mapper would get and a stored device.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kubeedge_device::store::SqliteTwinStore;
use kubeedge_device::{twin_service, TwinConfig, TwinError, TwinOutputs};
use kubeedge_proto::{Content, Group, Message, Route};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

fn membership(device: &str) -> Result<Message> {
    let content = Content::json(&serde_json::json!({
        "event_id": "m1", "timestamp": 1,
        "added_devices": [{"id": device, "name": device, "twin": {"switch": {
            "expected": {"value": "ON", "metadata": {"timestamp": 1}},
            "optional": false, "metadata": {"type": "string"},
            "expected_version": {"cloud": 1, "edge": 0}}}}]
    }))?;
    Ok(Message::new(
        Route::new("devicecontroller", Group::Twin, "update", "membership"),
        content,
    ))
}

#[tokio::test]
async fn the_twin_is_a_service_whose_readiness_is_its_queue() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteTwinStore::open(&dir.path().join("twin.db"))?;
    let (cloud_tx, _cloud_rx) = tokio::sync::mpsc::channel(8);
    let (bus_tx, mut bus_rx) = tokio::sync::mpsc::channel(8);
    let mut config = TwinConfig::new("edge-1");
    config.queue = 1;
    let (mut twin, driver) = twin_service(store, config, TwinOutputs::new(cloud_tx, bus_tx))?;

    // The queue holds one message while the driver is not running yet.
    twin.ready()
        .await?
        .call(membership("thermometer-1")?)
        .await?;
    let mut ready = task::spawn(std::future::poll_fn(|cx| twin.poll_ready(cx)));
    assert_pending!(ready.poll());

    // The driver takes it: the waiting sender is woken, and the push is applied.
    let cancel = CancellationToken::new();
    let running = tokio::spawn(driver.run(cancel.clone()));
    let publish = tokio::time::timeout(Duration::from_secs(5), bus_rx.recv())
        .await?
        .context("a publish for the mapper")?;
    ensure!(
        publish.route.resource == "$hw/events/device/thermometer-1/twin/update/delta",
        "{}",
        publish.route.resource
    );
    ensure!(
        ready.is_woken(),
        "room in the queue wakes the waiting sender"
    );
    assert_ready_ok!(ready.poll());
    drop(ready);
    // The reserved room takes the next message.
    twin.call(membership("thermometer-2")?).await?;

    // Once the driver is gone, the service says so instead of waiting.
    cancel.cancel();
    running.await??;
    let err = twin
        .ready()
        .await
        .err()
        .context("ready after the driver stopped")?;
    ensure!(matches!(err, TwinError::Closed), "{err:?}");
    Ok(())
}
