//! `custom-mapper` against Debian's mosquitto, watched and driven as the edge's twin would.

use kubeedge_bench::devices::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::*;

const PREFIX: &str = "$hw/events/device/default/thermostat-1";

/// The next reported value of `property` on the device's `twin/update` topic.
async fn reported(events: &mut rumqttc::EventLoop, property: &str) -> Result<i64> {
    loop {
        if let Event::Incoming(Packet::Publish(p)) = events.poll().await? {
            if p.topic != format!("{PREFIX}/twin/update") {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&p.payload)?;
            if let Some(value) = v["twin"][property]["actual"]["value"].as_str() {
                return Ok(value.parse()?);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_mapper_reports_readings_and_applies_a_desired_setpoint() -> Result<()> {
    let broker = Mosquitto::start(kubeedge_bench::free_port()?)?;
    let mut options = MqttOptions::new("twin-under-test", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    client
        .subscribe(format!("{PREFIX}/#"), QoS::AtLeastOnce)
        .await?;
    while !matches!(events.poll().await?, Event::Incoming(Packet::SubAck(_))) {}

    let broker_addr = format!("127.0.0.1:{}", broker.port);
    let mut mapper = Running::start("custom-mapper", &["default/thermostat-1", &broker_addr])?;
    mapper.wait_line("start", |l| l == "mapper running")?;

    // Readings arrive and head for the initial setpoint of 18.
    let first = tokio::time::timeout(LIMIT, reported(&mut events, "temperature")).await??;
    ensure!((16..=18).contains(&first), "first reading {first}");

    // The cloud's desired setpoint arrives as a twin delta; the device heads for it.
    let delta = serde_json::json!({"event_id": "d1", "timestamp": 1, "delta": {"setpoint": "25"}});
    client
        .publish(
            format!("{PREFIX}/twin/update/delta"),
            QoS::AtLeastOnce,
            false,
            delta.to_string(),
        )
        .await?;
    tokio::time::timeout(LIMIT, async {
        while reported(&mut events, "temperature").await? < 25 {}
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("the temperature never reached the desired setpoint")??;
    Ok(())
}
