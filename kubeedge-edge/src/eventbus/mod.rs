//! EventBus: the edge's MQTT side (PROTOCOL.md §6.1).
//!
//! - `mqttMode` keeps upstream's meaning: 0 = the embedded broker ([`broker`]) only (the
//!   default here, on `127.0.0.1:1883`), 1 = both the embedded and an external broker, 2 = an external broker
//!   (`mqttServerExternal`, e.g. mosquitto) only.
//! - It subscribes to upstream's topics in both the v1.12 and the v1.17+ namespaced forms, plus
//!   every topic in `sub_topics`. Device and node topics go to the device twin as
//!   `{source bus, group user, op response, resource base64url(topic)}`; everything else goes
//!   to the cloud as `{source bus, group user, op upload, resource topic}`.
//! - From the cloud (group `user`, source `router_eventbus`) and from the twin it takes
//!   `subscribe` / `unsubscribe` (persisted in `sub_topics`), `publish`, `message` and
//!   `get_result` for `auth_info`.
//! - A broker that is down is retried with exponential backoff and jitter; the outage is logged
//!   once when it starts and once when it ends.

pub mod broker;
mod topics;
pub mod uplink;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kubeedge_proto::{
    edge_subscriptions, Content, Group, Message, Operation, Route, Source, Topic,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use broker::BrokerConfig;
pub use topics::SubTopics;
pub use uplink::connected_event;

/// EventBus failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventBusError {
    /// The embedded broker cannot listen.
    #[error("embedded mqtt broker cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `sub_topics` cannot be read or written.
    #[error("sub_topics store")]
    Store(#[from] rusqlite::Error),
    /// The event bus is not running.
    #[error("event bus closed")]
    Closed,
}

/// `mqttMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MqttMode {
    /// 0: the embedded broker.
    Internal,
    /// 1: the embedded and an external broker.
    Both,
    /// 2: an external broker.
    External,
}

/// A broker address, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl BrokerAddr {
    /// Parse `tcp://host:port` or `host:port`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("mqtt://"))
            .unwrap_or(s);
        let (host, port) = rest.rsplit_once(':')?;
        let port = port.trim_end_matches('/').parse().ok()?;
        (!host.is_empty()).then(|| Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Runtime settings (from `modules.eventBus`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventBusConfig {
    /// The mode.
    pub mode: MqttMode,
    /// The embedded broker's address.
    pub internal: BrokerAddr,
    /// The external broker's address.
    pub external: BrokerAddr,
    /// QoS of publishes (`mqttQOS`).
    pub qos: u8,
    /// Retain flag of publishes (`mqttRetain`).
    pub retain: bool,
    /// Client request queue (`mqttSessionQueueSize`).
    pub queue: usize,
    /// Client id (`mqttSubClientID`; generated when empty).
    pub client_id: String,
    /// Credentials for the external broker.
    pub credentials: Option<(String, String)>,
    /// This node (for `auth_info` results).
    pub node: String,
    /// Largest payload accepted from the broker.
    pub max_payload: usize,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

impl EventBusConfig {
    /// Defaults: embedded broker on `127.0.0.1:1883`.
    pub fn new(node: impl Into<String>) -> Self {
        let local = BrokerAddr {
            host: "127.0.0.1".into(),
            port: 1883,
        };
        Self {
            mode: MqttMode::Internal,
            internal: local.clone(),
            external: local,
            qos: 0,
            retain: false,
            queue: 100,
            client_id: String::new(),
            credentials: None,
            node: node.into(),
            max_payload: 256 * 1024,
            max_backoff: Duration::from_secs(30),
        }
    }

    /// The brokers to connect to.
    fn brokers(&self) -> Vec<BrokerAddr> {
        match self.mode {
            MqttMode::Internal => vec![self.internal.clone()],
            MqttMode::Both => vec![self.internal.clone(), self.external.clone()],
            MqttMode::External => vec![self.external.clone()],
        }
    }
}

/// Where the event bus sends what it receives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventBusOutputs {
    /// Device and node topics: the device twin (`None` = twin disabled, dropped).
    pub twin: Option<mpsc::Sender<Message>>,
    /// Other topics: the cloud.
    pub cloud: mpsc::Sender<Message>,
}

impl EventBusOutputs {
    /// Both outputs.
    pub fn new(twin: Option<mpsc::Sender<Message>>, cloud: mpsc::Sender<Message>) -> Self {
        Self { twin, cloud }
    }
}

/// Send messages (from the cloud or the twin) to the event bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: mpsc::Sender<Message>,
}

impl EventBus {
    /// The inbound channel (the router's `eventbus` route, the twin's bus output).
    pub fn sender(&self) -> mpsc::Sender<Message> {
        self.tx.clone()
    }
}

/// Runs the MQTT connections; see [`EventBusDriver::run`].
#[derive(Debug)]
pub struct EventBusDriver {
    config: EventBusConfig,
    rx: mpsc::Receiver<Message>,
    out: EventBusOutputs,
    store: SubTopics,
    topics: Arc<Mutex<BTreeSet<String>>>,
}

/// Build the event bus. Start the embedded broker first ([`broker::Broker`]) in modes 0 and 1.
pub fn eventbus(
    config: EventBusConfig,
    store: SubTopics,
    out: EventBusOutputs,
) -> Result<(EventBus, EventBusDriver), EventBusError> {
    let topics = store.load()?;
    let (tx, rx) = mpsc::channel(1024);
    Ok((
        EventBus { tx },
        EventBusDriver {
            config,
            rx,
            out,
            store,
            topics: Arc::new(Mutex::new(topics)),
        },
    ))
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Every filter the bus subscribes to.
fn filters(extra: &BTreeSet<String>) -> BTreeSet<String> {
    edge_subscriptions(false)
        .iter()
        .chain(edge_subscriptions(true))
        .map(|s| (*s).to_owned())
        .chain(extra.iter().cloned())
        .collect()
}

/// A publish from the broker as the beehive message upstream's eventbus builds.
pub fn bus_message(topic: &str, payload: &[u8]) -> Option<(bool, Message)> {
    let parsed = Topic::parse(topic).ok()?;
    let text = String::from_utf8_lossy(payload);
    let to_twin = parsed.is_for_twin();
    let (op, resource) = if to_twin {
        (Operation::Response, parsed.to_bus_resource())
    } else {
        (Operation::Upload, topic.to_owned())
    };
    Some((
        to_twin,
        Message::new(
            Route::new(Source::Bus, Group::User, op, resource),
            Content::string(&text),
        ),
    ))
}

struct Link {
    addr: BrokerAddr,
    client: AsyncClient,
    events: EventLoop,
}

impl EventBusDriver {
    fn link(&self, addr: &BrokerAddr, n: usize) -> Link {
        let id = if self.config.client_id.is_empty() {
            format!("hub-client-sub-{:010}", fastrand::u64(..10_000_000_000))
        } else if n == 0 {
            self.config.client_id.clone()
        } else {
            format!("{}-{n}", self.config.client_id)
        };
        let mut opts = MqttOptions::new(id, addr.host.clone(), addr.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        let max = self.config.max_payload + 1024;
        opts.set_max_packet_size(max, max);
        if let Some((u, p)) = &self.config.credentials {
            opts.set_credentials(u.clone(), p.clone());
        }
        let (client, events) = AsyncClient::new(opts, self.config.queue.max(10));
        Link {
            addr: addr.clone(),
            client,
            events,
        }
    }

    /// Run every broker connection and the dispatcher until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), EventBusError> {
        let links: Vec<Link> = self
            .config
            .brokers()
            .iter()
            .enumerate()
            .map(|(n, a)| self.link(a, n))
            .collect();
        let clients: Vec<AsyncClient> = links.iter().map(|l| l.client.clone()).collect();
        let loops = futures_util::future::join_all(links.into_iter().map(|l| {
            run_link(
                l,
                self.topics.clone(),
                self.out.clone(),
                self.config.max_backoff,
                cancel.clone(),
            )
        }));
        let dispatch = async {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => break,
                    m = self.rx.recv() => match m { Some(m) => m, None => break },
                };
                self.dispatch(&clients, msg).await;
            }
            for c in &clients {
                let _ = c.try_disconnect();
            }
        };
        tokio::join!(loops, dispatch);
        Ok(())
    }

    fn publish(&self, clients: &[AsyncClient], topic: &str, payload: Vec<u8>) {
        if payload.len() > self.config.max_payload {
            warn!(
                topic,
                size = payload.len(),
                "publish over the payload limit dropped"
            );
            return;
        }
        for c in clients {
            if let Err(e) = c.try_publish(
                topic,
                qos(self.config.qos),
                self.config.retain,
                payload.clone(),
            ) {
                debug!(topic, error = %e, "publish dropped: mqtt queue full or broker away");
            }
        }
    }

    async fn dispatch(&mut self, clients: &[AsyncClient], msg: Message) {
        let op = msg.route.operation_str().to_owned();
        let resource = msg.route.resource.clone();
        match op.as_str() {
            "subscribe" | "unsubscribe" => {
                let sub = op == "subscribe";
                if resource.is_empty() {
                    warn!(msg_id = %msg.id(), "{op} without a topic dropped");
                    return;
                }
                let changed = {
                    let mut t = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
                    if sub {
                        t.insert(resource.clone())
                    } else {
                        t.remove(&resource)
                    }
                };
                let store = self.store.clone();
                let r2 = resource.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    if sub {
                        store.add(&r2)
                    } else {
                        store.remove(&r2)
                    }
                })
                .await;
                if !matches!(saved, Ok(Ok(()))) {
                    warn!(topic = %resource, "cannot persist sub_topics change");
                }
                if changed {
                    for c in clients {
                        let r = if sub {
                            c.try_subscribe(resource.clone(), QoS::AtLeastOnce)
                        } else {
                            c.try_unsubscribe(resource.clone())
                        };
                        if let Err(e) = r {
                            debug!(topic = %resource, error = %e, "(un)subscribe deferred to reconnect");
                        }
                    }
                    info!(topic = %resource, "{op}d");
                }
            }
            "publish" => self.publish(clients, &resource, msg.content.bytes().into_owned()),
            "message" => {
                // `{"message":{"topic":"…",…}}`: publish the JSON of `message`.
                let v: serde_json::Value = msg.content.decode().unwrap_or_default();
                match (
                    v.get("message"),
                    v.pointer("/message/topic").and_then(|t| t.as_str()),
                ) {
                    (Some(m), Some(topic)) => {
                        let payload = serde_json::to_vec(m).unwrap_or_default();
                        self.publish(clients, topic, payload);
                    }
                    _ => warn!(msg_id = %msg.id(), "message without message.topic dropped"),
                }
            }
            "get_result" if resource == "auth_info" => {
                let topic = Topic::AuthInfoResult {
                    node: self.config.node.clone(),
                }
                .to_string();
                self.publish(clients, &topic, msg.content.bytes().into_owned());
            }
            _ => debug!(msg_id = %msg.id(), op = %op, "event bus ignores operation"),
        }
    }
}

async fn run_link(
    mut link: Link,
    topics: Arc<Mutex<BTreeSet<String>>>,
    out: EventBusOutputs,
    max_backoff: Duration,
    cancel: CancellationToken,
) {
    let base = Duration::from_millis(500).min(max_backoff);
    let mut backoff = base;
    let mut down = false;
    let mut ever_up = false;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = link.events.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if down || !ever_up {
                    info!(broker = %link.addr, "mqtt broker connected");
                }
                down = false;
                ever_up = true;
                backoff = base;
                let extra = topics
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                for f in filters(&extra) {
                    if let Err(e) = link.client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        warn!(topic = %f, error = %e, "cannot subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some((to_twin, msg)) = bus_message(&p.topic, &p.payload) else {
                    debug!(topic = %p.topic, "publish on an invalid topic ignored");
                    continue;
                };
                let tx = if to_twin {
                    match &out.twin {
                        Some(t) => t,
                        None => continue,
                    }
                } else {
                    &out.cloud
                };
                // Backpressure: a slow consumer slows the broker connection, nothing is lost.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = tx.send(msg) => if r.is_err() { return },
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !down {
                    warn!(broker = %link.addr, error = %e, "mqtt broker unreachable; retrying with backoff");
                    down = true;
                } else {
                    debug!(broker = %link.addr, error = %e, retry_in = ?backoff, "mqtt broker still unreachable");
                }
                let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_messages() {
        assert_eq!(
            BrokerAddr::parse("tcp://127.0.0.1:1884"),
            Some(BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1884
            })
        );
        assert_eq!(BrokerAddr::parse("localhost:1").map(|a| a.port), Some(1));
        assert!(BrokerAddr::parse("tcp://nohost").is_none());
        let (twin, m) = bus_message("$hw/events/device/d1/twin/update", b"{}").unwrap();
        assert!(twin);
        assert_eq!(m.route.operation_str(), "response");
        assert_eq!(
            Topic::from_bus_resource(&m.route.resource).map(|t| t.to_string()),
            Some("$hw/events/device/d1/twin/update".to_owned())
        );
        let (twin, m) = bus_message("a/user/b", b"x").unwrap();
        assert!(!twin);
        assert_eq!(m.route.operation_str(), "upload");
        assert_eq!(m.route.resource, "a/user/b");
        assert!(filters(&BTreeSet::new()).contains("$hw/events/device/+/+/twin/+"));
    }
}
