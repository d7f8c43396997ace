//! The mapper runtime: one device, one driver, one MQTT connection to the edge's broker.
//!
//! - On (re)connect it subscribes to the device's `twin/update/delta` and `twin/get/result`,
//!   and asks for the twin (`twin/get`) so that desired values set while it was away apply.
//! - Each property is read at its collect cycle; a changed value is published on
//!   `twin/update` (upstream's payload shape).
//! - A desired value (delta or get result) is written through the driver, then read back and
//!   reported.
//! - The device state (`online`/`offline`) is published on `state/update` when it changes.
//! - A broker or device that is down is retried with backoff, logged once per outage.

use std::collections::HashMap;
use std::time::Duration;

use kubeedge_proto::twin::{TwinDelta, TwinUpdate};
use kubeedge_proto::{now_millis, DeviceEvent, DeviceRef, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{DeviceDriver, DeviceHealth, DriverError, MapperDevice};

/// Mapper failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapperError {
    /// The MQTT client's request queue is closed.
    #[error("mqtt client closed")]
    Mqtt(#[from] rumqttc::ClientError),
}

/// Mapper settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MapperConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// How often the device state is re-checked.
    pub health_interval: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

impl MapperConfig {
    /// A broker at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: format!("mapper-{}", uuid::Uuid::new_v4().simple()),
            health_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A running mapper for one device.
#[derive(Debug)]
pub struct Mapper<D> {
    device: MapperDevice,
    driver: D,
    config: MapperConfig,
}

fn topic(id: &str, event: DeviceEvent) -> String {
    Topic::Device {
        device: DeviceRef::from_id(id),
        event,
    }
    .to_string()
}

struct State {
    reported: HashMap<String, String>,
    applied: HashMap<String, String>,
    due: Vec<Instant>,
    health: Option<DeviceHealth>,
    device_down: bool,
    connected: bool,
}

impl<D: DeviceDriver> Mapper<D> {
    /// A mapper for `device` through `driver`.
    pub fn new(device: MapperDevice, driver: D, config: MapperConfig) -> Self {
        Self {
            device,
            driver,
            config,
        }
    }

    /// Run until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), MapperError> {
        let mut opts = MqttOptions::new(
            self.config.client_id.clone(),
            self.config.host.clone(),
            self.config.port,
        );
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut events) = AsyncClient::new(opts, 64);
        let now = Instant::now();
        let mut st = State {
            reported: HashMap::new(),
            applied: HashMap::new(),
            due: vec![now; self.device.properties.len()],
            health: None,
            device_down: false,
            connected: false,
        };
        let mut backoff = Duration::from_millis(200);
        let mut next_health = now;
        if let Err(e) = self.driver.connect().await {
            debug!(device = %self.device.id, error = %e, "device not reachable yet");
        }
        loop {
            let next = st
                .due
                .iter()
                .copied()
                .min()
                .unwrap_or(now + Duration::from_secs(3600))
                .min(next_health);
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = client.try_disconnect();
                    return Ok(());
                }
                ev = events.poll() => match ev {
                    Ok(ev) => {
                        backoff = Duration::from_millis(200);
                        self.on_event(&client, ev, &mut st).await?;
                    }
                    Err(e) => {
                        if st.connected || backoff == Duration::from_millis(200) {
                            warn!(device = %self.device.id, error = %e, "mqtt broker unreachable; retrying with backoff");
                        }
                        st.connected = false;
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.config.max_backoff);
                    }
                },
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    if now >= next_health {
                        next_health = now + self.config.health_interval;
                        self.check_health(&client, &mut st).await;
                    }
                    for i in 0..self.device.properties.len() {
                        if st.due[i] <= now {
                            st.due[i] = now + self.device.properties[i].collect_cycle;
                            self.collect(&client, i, &mut st).await;
                        }
                    }
                }
            }
        }
    }

    async fn on_event(
        &mut self,
        client: &AsyncClient,
        ev: Event,
        st: &mut State,
    ) -> Result<(), MapperError> {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                info!(device = %self.device.id, "mapper connected to the broker");
                st.connected = true;
                let id = &self.device.id;
                client
                    .subscribe(topic(id, DeviceEvent::TwinUpdateDelta), QoS::AtLeastOnce)
                    .await?;
                client
                    .subscribe(topic(id, DeviceEvent::TwinGetResult), QoS::AtLeastOnce)
                    .await?;
                let get = serde_json::json!({"event_id": uuid::Uuid::new_v4().to_string(), "timestamp": now_millis()});
                client
                    .publish(
                        topic(id, DeviceEvent::TwinGet),
                        QoS::AtLeastOnce,
                        false,
                        get.to_string(),
                    )
                    .await?;
                // Report everything again after an outage: the twin ignores repeats.
                st.reported.clear();
                st.health = None;
            }
            Event::Incoming(Packet::Publish(p)) => {
                let desired = if p.topic.ends_with("/twin/update/delta") {
                    serde_json::from_slice::<TwinDelta>(&p.payload)
                        .map(|d| d.delta)
                        .ok()
                } else if p.topic.ends_with("/twin/get/result") {
                    serde_json::from_slice::<TwinUpdate>(&p.payload)
                        .ok()
                        .map(|u| {
                            u.twin
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|(k, t)| {
                                    let t = t?;
                                    let want = t.expected?.value?;
                                    let have = t.actual.and_then(|a| a.value);
                                    (have.as_deref() != Some(want.as_str())).then_some((k, want))
                                })
                                .collect()
                        })
                } else {
                    None
                };
                let Some(desired) = desired else {
                    debug!(topic = %p.topic, "ignored publish");
                    return Ok(());
                };
                for (name, value) in desired {
                    self.apply(client, &name, &value, st).await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn apply(&mut self, client: &AsyncClient, name: &str, value: &str, st: &mut State) {
        let Some(i) = self.device.properties.iter().position(|p| p.name == name) else {
            debug!(device = %self.device.id, property = name, "desired value for an unknown property");
            return;
        };
        if st.applied.get(name).map(String::as_str) == Some(value)
            && st.reported.get(name).map(String::as_str) == Some(value)
        {
            return;
        }
        let prop = self.device.properties[i].clone();
        match self.driver.write(&prop, value).await {
            Ok(()) => {
                info!(device = %self.device.id, property = name, value, "desired value written");
                st.applied.insert(name.to_owned(), value.to_owned());
                self.collect(client, i, st).await;
            }
            Err(e) => {
                warn!(device = %self.device.id, property = name, value, error = %e, "cannot write desired value");
                if e.is_retryable() {
                    let _ = self.driver.connect().await;
                }
            }
        }
    }

    async fn collect(&mut self, client: &AsyncClient, i: usize, st: &mut State) {
        let prop = self.device.properties[i].clone();
        let value = match self.driver.read(&prop).await {
            Ok(v) => {
                st.device_down = false;
                v
            }
            Err(e) => {
                self.device_error(e, st).await;
                return;
            }
        };
        if st.reported.get(&prop.name) == Some(&value) {
            return;
        }
        let ms = now_millis();
        let body = serde_json::json!({
            "event_id": "",
            "timestamp": ms,
            "twin": {prop.name.clone(): {
                "actual": {"value": value, "metadata": {"timestamp": ms}},
                "metadata": {"type": prop.value_type.as_str()},
            }},
        });
        let t = topic(&self.device.id, DeviceEvent::TwinUpdate);
        // Never block the loop on a full queue: the next cycle reports again.
        if client
            .try_publish(t, QoS::AtLeastOnce, false, body.to_string())
            .is_ok()
        {
            st.reported.insert(prop.name, value);
        }
    }

    async fn device_error(&mut self, e: DriverError, st: &mut State) {
        if !st.device_down {
            warn!(device = %self.device.id, error = %e, "device read failed");
        }
        st.device_down = true;
        if e.is_retryable() {
            let _ = self.driver.connect().await;
        }
    }

    async fn check_health(&mut self, client: &AsyncClient, st: &mut State) {
        let h = if st.device_down {
            // A failed read already said so; try to come back.
            if self.driver.connect().await.is_ok() {
                st.device_down = false;
                DeviceHealth::Online
            } else {
                DeviceHealth::Offline
            }
        } else {
            self.driver.health().await
        };
        if st.health == Some(h) {
            return;
        }
        let body =
            serde_json::json!({"event_id": "", "timestamp": now_millis(), "state": h.as_str()});
        if client
            .try_publish(
                topic(&self.device.id, DeviceEvent::StateUpdate),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .is_ok()
        {
            st.health = Some(h);
        }
    }
}
