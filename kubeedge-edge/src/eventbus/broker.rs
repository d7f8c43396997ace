//! The embedded MQTT 3.1.1 broker, so that mappers need no separate mosquitto.
//!
//! Why not rumqttd: it refuses every subscription whose filter starts with `$` and never
//! matches `$` topics, and all of KubeEdge's device topics are `$hw/events/…`. This broker is
//! small and runs on edgecore's own runtime (no extra threads): MQTT 3.1.1 on rumqttc's packet
//! codec, QoS 0 and 1 (QoS 2 is acknowledged and delivered once), retained messages, last
//! wills, a takeover of a duplicate client id, and MQTT's `$` rule (a filter starting with a
//! wildcard does not match a topic starting with `$`). Sessions are clean: nothing is queued
//! for a client that is not connected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as PacketError;
use rumqttc::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::EventBusError;

/// Embedded broker settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Where it listens (`127.0.0.1:1883` by default).
    pub listen: SocketAddr,
    /// Largest publish payload; a bigger packet closes the sender's connection.
    pub max_payload: usize,
    /// Concurrent MQTT connections.
    pub max_connections: usize,
    /// Publishes queued for one slow subscriber before new ones are dropped for it.
    pub client_queue: usize,
}

impl BrokerConfig {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_payload: 256 * 1024,
            max_connections: 1024,
            client_queue: 1024,
        }
    }
}

/// Does `filter` match `topic` (MQTT 3.1.1 §4.7)?
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
            && (!l.contains('+') || *l == "+")
    })
}

fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

struct Client {
    filters: Vec<(String, QoS)>,
    tx: mpsc::Sender<Publish>,
    client_id: String,
    kick: CancellationToken,
}

#[derive(Default)]
struct Router {
    clients: HashMap<usize, Client>,
    retained: HashMap<String, Publish>,
}

impl Router {
    fn route(&mut self, p: &Publish) {
        if p.retain {
            if p.payload.is_empty() {
                self.retained.remove(&p.topic);
            } else {
                let mut r = p.clone();
                r.dup = false;
                self.retained.insert(p.topic.clone(), r);
            }
        }
        for c in self.clients.values() {
            let best = c
                .filters
                .iter()
                .filter(|(f, _)| filter_matches(f, &p.topic))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8);
            if let Some(q) = best {
                let mut out = p.clone();
                out.qos = if (q as u8) < (p.qos as u8) { q } else { p.qos };
                out.retain = false;
                out.dup = false;
                if c.tx.try_send(out).is_err() {
                    debug!(client = %c.client_id, topic = %p.topic, "subscriber queue full: publish dropped for it");
                }
            }
        }
    }
}

/// A running broker.
#[derive(Clone)]
pub struct Broker {
    config: BrokerConfig,
    router: Arc<Mutex<Router>>,
    next_id: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    published: Arc<std::sync::atomic::AtomicU64>,
}

/// Live figures of a [`Broker`], for metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BrokerStats {
    connections: Arc<AtomicUsize>,
    published: Arc<std::sync::atomic::AtomicU64>,
}

impl BrokerStats {
    /// MQTT connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// PUBLISH packets routed since start (the broker's own wills included).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("listen", &self.config.listen)
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .finish()
    }
}

/// Bind the broker's address (so that a busy port is a start-up error).
pub async fn bind(config: &BrokerConfig) -> Result<TcpListener, EventBusError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| EventBusError::Listen {
            addr: config.listen,
            source,
        })
}

impl Broker {
    /// A broker.
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            config,
            router: Arc::new(Mutex::new(Router::default())),
            next_id: Arc::new(AtomicUsize::new(1)),
            connections: Arc::new(AtomicUsize::new(0)),
            published: Arc::default(),
        }
    }

    /// The broker's live figures.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            connections: self.connections.clone(),
            published: self.published.clone(),
        }
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serve connections on `listener` until `cancel`.
    pub async fn serve(self, listener: TcpListener, cancel: CancellationToken) {
        if let Ok(a) = listener.local_addr() {
            info!(addr = %a, "embedded mqtt broker listening");
        }
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "mqtt accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let b = self.clone();
            let c = cancel.child_token();
            tokio::spawn(async move {
                b.connections.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = b.connection(stream, c).await {
                    debug!(peer = %peer, error = %e, "mqtt connection closed");
                }
                b.connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// One client's session on `stream`, from its CONNECT to its end.
    pub(crate) async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        cancel: CancellationToken,
    ) -> Result<(), ConnError> {
        let max = self.config.max_payload + 64 * 1024;
        let mut buf = BytesMut::with_capacity(4096);
        let connect = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match Packet::read(&mut buf, max) {
                    Ok(Packet::Connect(c)) => return Ok(c),
                    Ok(_) => return Err(ConnError::Protocol("first packet is not CONNECT")),
                    Err(PacketError::InsufficientBytes(_)) => {
                        if stream.read_buf(&mut buf).await? == 0 {
                            return Err(ConnError::Closed);
                        }
                    }
                    Err(e) => return Err(ConnError::Packet(e)),
                }
            }
        })
        .await
        .map_err(|_| ConnError::Protocol("no CONNECT in time"))??;
        let mut out = BytesMut::new();
        if self.connections.load(Ordering::Relaxed) > self.config.max_connections {
            write(
                &mut stream,
                &mut out,
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::ServiceUnavailable, false)),
                max,
            )
            .await?;
            return Err(ConnError::Protocol("too many connections"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = if connect.client_id.is_empty() {
            format!("auto-{id}")
        } else {
            connect.client_id.clone()
        };
        let (tx, mut rx) = mpsc::channel(self.config.client_queue.max(1));
        let kick = cancel.child_token();
        {
            let mut r = self.router();
            // MQTT: a new connection with the same client id takes the session over.
            for c in r.clients.values() {
                if c.client_id == client_id {
                    c.kick.cancel();
                }
            }
            r.clients.insert(
                id,
                Client {
                    filters: Vec::new(),
                    tx,
                    client_id: client_id.clone(),
                    kick: kick.clone(),
                },
            );
        }
        let will = connect.last_will.clone();
        let keep_alive = Duration::from_secs(u64::from(connect.keep_alive).max(1)) * 3 / 2;
        let result = async {
            write(
                &mut stream,
                &mut out,
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
                max,
            )
            .await?;
            let mut pkid: u16 = 0;
            loop {
                // Whole packets already buffered first.
                loop {
                    match Packet::read(&mut buf, max) {
                        Ok(p) => {
                            if !self.handle(id, p, &mut stream, &mut out, max).await? {
                                return Ok(true);
                            }
                        }
                        Err(PacketError::InsufficientBytes(_)) => break,
                        Err(e) => return Err(ConnError::Packet(e)),
                    }
                }
                tokio::select! {
                    _ = kick.cancelled() => return Ok(false),
                    r = tokio::time::timeout(keep_alive, stream.read_buf(&mut buf)) => match r {
                        Err(_) => return Err(ConnError::Protocol("keep-alive expired")),
                        Ok(Ok(0)) => return Err(ConnError::Closed),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(ConnError::Io(e)),
                    },
                    p = rx.recv() => {
                        let Some(mut p) = p else { return Ok(false) };
                        if p.qos != QoS::AtMostOnce {
                            pkid = pkid.wrapping_add(1).max(1);
                            p.pkid = pkid;
                        }
                        write(&mut stream, &mut out, Packet::Publish(p), max).await?;
                    }
                }
            }
        }
        .await;
        self.router().clients.remove(&id);
        // A clean DISCONNECT discards the will; anything else publishes it.
        if !matches!(result, Ok(true)) {
            if let Some(w) = will {
                self.publish_will(w);
            }
        }
        result.map(|_| ())
    }

    fn publish_will(&self, w: LastWill) {
        if !valid_topic(&w.topic) {
            return;
        }
        let mut p = Publish::new(w.topic, w.qos, w.message.to_vec());
        p.retain = w.retain;
        self.published.fetch_add(1, Ordering::Relaxed);
        self.router().route(&p);
    }

    /// One packet from a client; `false` ends the connection cleanly.
    async fn handle<S: AsyncWrite + Unpin>(
        &self,
        id: usize,
        p: Packet,
        stream: &mut S,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<bool, ConnError> {
        match p {
            Packet::Publish(p) => {
                if !valid_topic(&p.topic) {
                    return Err(ConnError::Protocol("invalid publish topic"));
                }
                if p.payload.len() > self.config.max_payload {
                    warn!(topic = %p.topic, size = p.payload.len(), "mqtt publish over the payload limit: client disconnected");
                    return Err(ConnError::Protocol("payload too large"));
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        write(stream, out, Packet::PubAck(PubAck::new(p.pkid)), max).await?
                    }
                    QoS::ExactlyOnce => {
                        write(stream, out, Packet::PubRec(PubRec::new(p.pkid)), max).await?
                    }
                }
                self.published.fetch_add(1, Ordering::Relaxed);
                self.router().route(&p);
            }
            Packet::PubRel(r) => {
                write(stream, out, Packet::PubComp(PubComp::new(r.pkid)), max).await?
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                let mut retained = Vec::new();
                {
                    let mut r = self.router();
                    let matches: Vec<Publish> = r.retained.values().cloned().collect();
                    if let Some(c) = r.clients.get_mut(&id) {
                        for f in s.filters {
                            if !valid_filter(&f.path) {
                                codes.push(SubscribeReasonCode::Failure);
                                continue;
                            }
                            let qos = if f.qos == QoS::ExactlyOnce {
                                QoS::AtLeastOnce
                            } else {
                                f.qos
                            };
                            retained.extend(
                                matches
                                    .iter()
                                    .filter(|p| filter_matches(&f.path, &p.topic))
                                    .cloned(),
                            );
                            c.filters.retain(|(have, _)| *have != f.path);
                            c.filters.push((f.path, qos));
                            codes.push(SubscribeReasonCode::Success(qos));
                        }
                    }
                }
                write(stream, out, Packet::SubAck(SubAck::new(s.pkid, codes)), max).await?;
                for mut p in retained {
                    p.qos = QoS::AtMostOnce;
                    p.retain = true;
                    write(stream, out, Packet::Publish(p), max).await?;
                }
            }
            Packet::Unsubscribe(u) => {
                if let Some(c) = self.router().clients.get_mut(&id) {
                    c.filters.retain(|(f, _)| !u.topics.contains(f));
                }
                write(stream, out, Packet::UnsubAck(UnsubAck::new(u.pkid)), max).await?;
            }
            Packet::PingReq => write(stream, out, Packet::PingResp, max).await?,
            Packet::Disconnect => return Ok(false),
            Packet::Connect(_) => return Err(ConnError::Protocol("second CONNECT")),
            // Acks of our QoS 1 deliveries: nothing is kept for redelivery (clean sessions).
            _ => {}
        }
        Ok(true)
    }
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    p: Packet,
    max: usize,
) -> Result<(), ConnError> {
    out.clear();
    p.write(out, max).map_err(ConnError::Packet)?;
    stream.write_all(out).await?;
    Ok(())
}

/// Why a session ended other than by a clean DISCONNECT.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("socket")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Packet(PacketError),
    #[error("{0}")]
    Protocol(&'static str),
    #[error("closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(filter_matches(
            "$hw/events/device/+/twin/+",
            "$hw/events/device/d/twin/update"
        ));
        assert!(!filter_matches(
            "$hw/events/device/+/twin/+",
            "$hw/events/device/d/twin/update/result"
        ));
        assert!(filter_matches(
            "$hw/events/upload/#",
            "$hw/events/upload/a/b"
        ));
        assert!(
            !filter_matches("+/user/#", "$hw/user/x"),
            "wildcards skip $ topics"
        );
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(filter_matches("+/user/#", "a/user/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(valid_filter("a/+/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a+/b"));
        assert!(!valid_topic("a/+"));
    }
}
