//! The embedded MQTT broker (rumqttd), so that mappers need no separate mosquitto. It runs on
//! its own threads (rumqttd's design) and lives as long as the process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::info;

use super::EventBusError;

/// Embedded broker settings, kept small: RSS and start-up time matter on edge nodes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Where it listens (`127.0.0.1:1883` by default).
    pub listen: SocketAddr,
    /// Largest publish payload; bigger ones close the sender's connection.
    pub max_payload: usize,
    /// Concurrent MQTT connections.
    pub max_connections: usize,
}

impl BrokerConfig {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_payload: 256 * 1024,
            max_connections: 1024,
        }
    }
}

fn rumqttd_config(cfg: &BrokerConfig) -> Config {
    let server = ServerSettings {
        name: "eventbus".into(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: cfg.max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 200,
            // Twin traffic is small: a short log per filter keeps memory bounded.
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

/// Start the broker and wait (bounded) until it accepts connections.
pub fn start(cfg: &BrokerConfig) -> Result<SocketAddr, EventBusError> {
    // rumqttd logs a bind failure and returns; check the address first for a clear error.
    drop(
        TcpListener::bind(cfg.listen).map_err(|source| EventBusError::Listen {
            addr: cfg.listen,
            source,
        })?,
    );
    let mut broker = Broker::new(rumqttd_config(cfg));
    let thread = std::thread::Builder::new()
        .name("eventbus-broker".into())
        .spawn(move || broker.start())
        .map_err(|source| EventBusError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&cfg.listen, Duration::from_millis(200)).is_ok() {
            info!(addr = %cfg.listen, "embedded mqtt broker listening");
            return Ok(cfg.listen);
        }
        if thread.is_finished() || Instant::now() > deadline {
            return Err(EventBusError::Listen {
                addr: cfg.listen,
                source: std::io::Error::other("embedded broker did not start"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
