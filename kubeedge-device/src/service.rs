//! The twin service: the I/O around [`TwinState`]. One task owns the state and the store; it
//! is fed beehive [`Message`]s (from the edge router: group `twin`; from the event bus: MQTT
//! publishes as `{source bus, group user, resource base64url(topic)}`), applies them, persists
//! changed devices on SQLite (off the async threads), and sends the effects on: MQTT publishes
//! to the event bus as `{source twin, group bus, op publish, resource <topic>}` messages, and
//! cloud-bound messages to the hub side.
//!
//! Bad input (malformed JSON, unknown devices, wrong value types, huge payloads) gets upstream's
//! error result from the state machine and one log line here; a device flooding the twin is
//! rate limited, with one log line per flood rather than one per dropped message.

use std::collections::{BTreeSet, HashMap};

use kubeedge_proto::twin::{MembershipGetResult, MembershipUpdate, TwinUpdate};
use kubeedge_proto::{
    now_millis, Content, DeviceEvent, Group, Message, MessageId, NodeEvent, Operation,
    ResourceKind, ResourcePath, Route, Source, TokenBucket, Topic, TwinEvent,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::{TwinStore, TwinStoreError};
use crate::twin::{Effect, Input, TwinState};

/// Twin service failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TwinError {
    /// The store failed.
    #[error("twin store")]
    Store(#[from] TwinStoreError),
    /// The store's worker thread is gone.
    #[error("twin store worker stopped")]
    StoreGone,
    /// The service is not running.
    #[error("twin service closed")]
    Closed,
}

/// Settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TwinConfig {
    /// This node's name (membership requests carry it).
    pub node: String,
    /// Updates a second one device may send before it is throttled.
    pub device_qps: u32,
    /// Burst of updates per device.
    pub device_burst: u32,
    /// Inbound queue length.
    pub queue: usize,
}

impl TwinConfig {
    /// Defaults for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            device_qps: 50,
            device_burst: 100,
            queue: 4096,
        }
    }
}

/// Where the service's effects go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TwinOutputs {
    /// Cloud-bound messages (`device/<id>/twin/edge_updated` reports should go through a
    /// durable outbox; the rest may be sent directly).
    pub cloud: mpsc::Sender<Message>,
    /// MQTT publishes for the event bus.
    pub bus: mpsc::Sender<Message>,
}

impl TwinOutputs {
    /// Both outputs.
    pub fn new(cloud: mpsc::Sender<Message>, bus: mpsc::Sender<Message>) -> Self {
        Self { cloud, bus }
    }
}

/// The handle: send messages to the twin. Cheap to clone.
///
/// It is a `tower::Service<Message>` over twin messages, whatever carried them (the edge
/// router's `twin` group, the event bus's MQTT publishes as `bus` messages, a test):
/// `poll_ready` reserves room in the twin's queue (pending while it is full, an error once
/// the driver is gone) and `call` enqueues into it.
#[derive(Debug, Clone)]
pub struct TwinService {
    tx: mpsc::Sender<Message>,
    sink: tokio_util::sync::PollSender<Message>,
}

impl TwinService {
    /// The inbound channel (plug it into the edge router's `twin` route and the event bus).
    pub fn sender(&self) -> mpsc::Sender<Message> {
        self.tx.clone()
    }

    /// Hand one message to the twin (waits while its queue is full).
    pub async fn send(&self, msg: Message) -> Result<(), TwinError> {
        self.tx.send(msg).await.map_err(|_| TwinError::Closed)
    }
}

impl tower::Service<Message> for TwinService {
    type Response = ();
    type Error = TwinError;
    type Future = std::future::Ready<Result<(), TwinError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), TwinError>> {
        self.sink.poll_reserve(cx).map_err(|_| TwinError::Closed)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        std::future::ready(self.sink.send_item(msg).map_err(|_| TwinError::Closed))
    }
}

/// The task that owns the twin; run it with [`TwinDriver::run`].
#[derive(Debug)]
pub struct TwinDriver<S> {
    state: TwinState,
    store: Option<S>,
    rx: mpsc::Receiver<Message>,
    out: TwinOutputs,
    config: TwinConfig,
    limits: HashMap<String, TokenBucket>,
    /// When each throttled device was last logged.
    flooding: HashMap<String, std::time::Instant>,
}

/// Load the twin from `store` and build its handle and driver.
pub fn twin_service<S: TwinStore>(
    store: S,
    config: TwinConfig,
    out: TwinOutputs,
) -> Result<(TwinService, TwinDriver<S>), TwinError> {
    let state = TwinState::from_devices(store.load()?);
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    Ok((
        TwinService {
            sink: tokio_util::sync::PollSender::new(tx.clone()),
            tx,
        },
        TwinDriver {
            state,
            store: Some(store),
            rx,
            out,
            config,
            limits: HashMap::new(),
            flooding: HashMap::new(),
        },
    ))
}

/// The connect event the edge sends modules when the cloud link comes up (upstream's
/// `cloud_connected` node-connection message).
pub fn connected_event() -> Message {
    Message::new(
        Route::new(
            Source::EdgeHub,
            Group::Twin,
            Operation::Connect,
            "node/connection",
        ),
        Content::string("cloud_connected"),
    )
}

/// The membership detail request the twin sends after (re)connecting (PROTOCOL.md §6.3).
pub fn membership_detail_request(node: &str) -> Message {
    let body = kubeedge_proto::twin::MembershipDetailRequest {
        event_type: "group_membership_event".into(),
        event_id: MessageId::random().to_string(),
        group_id: node.to_owned(),
        operation: "detail".into(),
        timestamp: now_millis(),
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    Message::new(
        Route::new(Source::Twin, Group::Resource, "get", "membership/detail"),
        Content::string(&text),
    )
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for upstream's `last_online`.
fn now_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How often a flooding device is logged.
const FLOOD_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What a message means to the twin.
enum Classified {
    Input(Input),
    Connected,
    Ignore(&'static str),
}

fn classify(msg: &Message, node: &str) -> Classified {
    let now_ms = now_millis();
    if msg.route.is_operation(&Operation::Connect) {
        return Classified::Connected;
    }
    // MQTT publishes from the event bus.
    if msg.route.group == Some(Group::User) || msg.route.source == Some(Source::Bus) {
        let Some(topic) = Topic::from_bus_resource(&msg.route.resource) else {
            return Classified::Ignore("not a twin topic");
        };
        let payload = msg.content.bytes().into_owned();
        return match topic {
            Topic::Device { device, event } => {
                let device = device.id();
                match event {
                    DeviceEvent::TwinUpdate => Classified::Input(Input::EdgeUpdate {
                        device,
                        payload,
                        now_ms,
                    }),
                    DeviceEvent::TwinGet => Classified::Input(Input::Get {
                        device,
                        payload,
                        now_ms,
                    }),
                    DeviceEvent::StateUpdate => Classified::Input(Input::StateUpdate {
                        device,
                        payload,
                        now_ms,
                        now_text: now_text(now_ms),
                    }),
                    // Desired values belong to the cloud: never taken from MQTT.
                    DeviceEvent::TwinCloudUpdated => {
                        Classified::Ignore("desired values are only taken from the cloud")
                    }
                    _ => Classified::Ignore("an edge-to-app topic"),
                }
            }
            Topic::Node {
                node: n,
                event: NodeEvent::MembershipGet,
            } if n == node => Classified::Input(Input::MembershipGet {
                node: n,
                payload,
                now_ms,
            }),
            _ => Classified::Ignore("not a twin request topic"),
        };
    }
    // Cloud pushes (group twin).
    match ResourcePath::parse(&msg.route.resource).kind().clone() {
        ResourceKind::Membership => match msg.content.decode::<MembershipUpdate>() {
            Ok(m) => Classified::Input(Input::Membership(m)),
            Err(_) => Classified::Ignore("malformed membership"),
        },
        ResourceKind::MembershipDetail => match msg.content.decode::<MembershipGetResult>() {
            Ok(m) => Classified::Input(Input::MembershipDetail(m.devices)),
            Err(_) => Classified::Ignore("malformed membership detail"),
        },
        ResourceKind::DeviceTwin {
            device,
            event: TwinEvent::CloudUpdated,
        } => match msg.content.decode::<TwinUpdate>() {
            Ok(update) => Classified::Input(Input::CloudUpdated {
                device: device.id(),
                update,
            }),
            Err(_) => Classified::Ignore("malformed desired twins"),
        },
        _ if msg.is_ok_response() => Classified::Ignore("ack"),
        _ => Classified::Ignore("not handled by the twin"),
    }
}

fn device_of(input: &Input) -> Option<&str> {
    match input {
        Input::EdgeUpdate { device, .. }
        | Input::Get { device, .. }
        | Input::StateUpdate { device, .. } => Some(device),
        _ => None,
    }
}

/// Error results among the effects (for the one log line).
fn refusal(effects: &[Effect]) -> Option<String> {
    effects.iter().find_map(|e| match e {
        Effect::Publish { payload, .. } => {
            let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
            let code = v.get("code")?.as_i64()?;
            let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
            Some(format!("{code} {reason}"))
        }
        _ => None,
    })
}

impl<S: TwinStore> TwinDriver<S> {
    /// The twin as loaded (for tests and diagnostics).
    pub fn state(&self) -> &TwinState {
        &self.state
    }

    /// Process messages until `cancel` fires or every sender is gone.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), TwinError> {
        info!(
            devices = self.state.devices().count(),
            "device twin running"
        );
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                n = self.rx.recv_many(&mut batch, 256) => if n == 0 { return Ok(()) },
            }
            let mut dirty = BTreeSet::new();
            let mut removed = BTreeSet::new();
            let mut sends = Vec::new();
            for msg in batch.drain(..) {
                self.handle(msg, &mut dirty, &mut removed, &mut sends);
            }
            // Persist before anything leaves: what the cloud or a mapper sees is stored.
            self.persist(dirty, removed).await?;
            for (to_cloud, msg) in sends {
                let tx = if to_cloud {
                    &self.out.cloud
                } else {
                    &self.out.bus
                };
                if tx.send(msg).await.is_err() {
                    debug!(to_cloud, "twin output closed");
                }
            }
        }
    }

    fn handle(
        &mut self,
        msg: Message,
        dirty: &mut BTreeSet<String>,
        removed: &mut BTreeSet<String>,
        sends: &mut Vec<(bool, Message)>,
    ) {
        let input = match classify(&msg, &self.config.node) {
            Classified::Input(i) => i,
            Classified::Connected => {
                info!("cloud connected: requesting membership detail");
                sends.push((true, membership_detail_request(&self.config.node)));
                return;
            }
            Classified::Ignore(why) => {
                if why.starts_with("malformed") {
                    warn!(msg_id = %msg.id(), resource = %msg.route.resource, "{why}: dropped");
                } else {
                    debug!(msg_id = %msg.id(), resource = %msg.route.resource, "{why}");
                }
                return;
            }
        };
        if let Some(device) = device_of(&input).map(str::to_owned) {
            let bucket = self.limits.entry(device.clone()).or_insert_with(|| {
                TokenBucket::new(self.config.device_qps, self.config.device_burst)
            });
            let now = std::time::Instant::now();
            if bucket.take(now).is_some() {
                // One line per flood (at most one a minute per device), not one per message.
                let quiet = self
                    .flooding
                    .get(&device)
                    .is_none_or(|t| now.duration_since(*t) > FLOOD_LOG_EVERY);
                if quiet {
                    warn!(device = %device, qps = self.config.device_qps, "device is flooding the twin: dropping its updates over the rate limit");
                    self.flooding.insert(device.clone(), now);
                }
                return;
            }
        }
        let device = device_of(&input).map(str::to_owned);
        let effects = self.state.apply(input);
        if let (Some(device), Some(why)) = (&device, refusal(&effects)) {
            warn!(device = %device, "twin request refused: {why}");
        }
        for e in effects {
            match e {
                Effect::Persist(id) => {
                    removed.remove(&id);
                    dirty.insert(id);
                }
                Effect::Remove(id) => {
                    dirty.remove(&id);
                    removed.insert(id);
                }
                Effect::Publish { topic, payload } => {
                    let text = String::from_utf8_lossy(&payload);
                    let msg = Message::new(
                        Route::new(Source::Twin, Group::Bus, "publish", topic.to_string()),
                        Content::string(&text),
                    );
                    sends.push((false, msg));
                }
                Effect::ToCloud(m) => sends.push((true, m)),
            }
        }
    }

    async fn persist(
        &mut self,
        dirty: BTreeSet<String>,
        removed: BTreeSet<String>,
    ) -> Result<(), TwinError> {
        if dirty.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let devices: Vec<_> = dirty
            .iter()
            .filter_map(|id| self.state.device(id).cloned())
            .collect();
        let Some(mut store) = self.store.take() else {
            return Err(TwinError::StoreGone);
        };
        let (store, result) = tokio::task::spawn_blocking(move || {
            let r = (|| {
                for d in &devices {
                    store.save(d)?;
                }
                for id in &removed {
                    store.remove(id)?;
                }
                Ok::<_, TwinStoreError>(())
            })();
            (store, r)
        })
        .await
        .map_err(|_| TwinError::StoreGone)?;
        self.store = Some(store);
        result.map_err(TwinError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_online_text() {
        assert_eq!(now_text(0), "1970-01-01 00:00:00");
        assert_eq!(now_text(1_700_000_000_000), "2023-11-14 22:13:20");
    }
}
