//! `EdgeCore`: the modules wired together from an [`EdgeCoreConfig`]. The store opens first, so
//! that an edge with no cloud still has its pods; the hub connects (and bootstraps its
//! certificates from the token) in the background, with backoff, until the link is up.

use std::time::Duration;

use kubeedge_proto::{JoinToken, Message};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{ConfigError, EdgeCoreConfig};
use crate::edged;
use crate::hub::{self, ClientTls};
use crate::meta::{MetaDb, MetaLayer, Outputs, SqliteStore, StoreError};
use crate::metaserver::{self, MetaServer, MetaView};
use crate::router::{self, Routes};
use tower::ServiceBuilder;

/// Why edgecore cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeCoreError {
    /// The configuration is invalid.
    #[error("configuration")]
    Config(#[from] ConfigError),
    /// The metadata store cannot be opened.
    #[error("metadata store")]
    Store(#[from] StoreError),
    /// No certificates and no usable token.
    #[error("no client certificate at {path} and no valid edgeHub.token to get one")]
    NoCredentials {
        /// The expected certificate file.
        path: String,
    },
    /// Certificate files exist but are unusable.
    #[error("client certificate files")]
    Tls(#[source] crate::error::HubError),
    /// MetaServer could not start.
    #[error("metaserver")]
    MetaServer(#[from] crate::metaserver::MetaServerError),
    /// The event bus cannot start.
    #[error("event bus")]
    EventBus(#[from] crate::eventbus::EventBusError),
    /// MetaServer's address cannot be bound.
    #[error("cannot listen on metaServer.server {addr}")]
    Listen {
        /// The configured address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running edgecore.
#[derive(Debug)]
pub struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// The metadata store.
    pub db: MetaDb,
    /// Pods found in the store at start (handed to edged when it runs).
    pub stored_pods: usize,
    /// Where MetaServer listens, when it is enabled.
    pub metaserver: Option<std::net::SocketAddr>,
    /// MetaServer itself, when it is enabled: its view of the store, for readers in process
    /// (EdgeMesh), and its watch registration with the cloud.
    pub meta_server: Option<MetaServer>,
}

impl Running {
    /// Stop every module and wait for them (bounded by `grace`): the websocket is closed and
    /// every acknowledged write is already committed.
    pub async fn shutdown(self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(?grace, "modules did not stop in time");
        }
    }
}

/// Modules that live in crates this one does not depend on (the device twin), plugged in by
/// the binary as message channels.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Plugins {
    /// The twin's inbound channel: router group `twin`, the event bus's device topics, device
    /// objects from MetaManager, and a `connect` event each time the cloud link comes up.
    pub twin: Option<mpsc::Sender<Message>>,
    /// The twin's cloud-bound messages. Reports (`…/twin/edge_updated`) are sent as requests
    /// and kept in the durable upstream outbox while the cloud is away or does not answer.
    pub twin_cloud: Option<mpsc::Receiver<Message>>,
    /// The twin's MQTT publishes, for the event bus.
    pub twin_bus: Option<mpsc::Receiver<Message>>,
}

impl Plugins {
    /// The device twin's three channels.
    pub fn twin(
        twin: mpsc::Sender<Message>,
        cloud: mpsc::Receiver<Message>,
        bus: mpsc::Receiver<Message>,
    ) -> Self {
        Self {
            twin: Some(twin),
            twin_cloud: Some(cloud),
            twin_bus: Some(bus),
        }
    }
}

/// Start edgecore's modules.
pub async fn start(config: EdgeCoreConfig) -> Result<Running, EdgeCoreError> {
    start_with(config, Plugins::default()).await
}

/// Start edgecore's modules with plugged-in modules.
pub async fn start_with(
    config: EdgeCoreConfig,
    plugins: Plugins,
) -> Result<Running, EdgeCoreError> {
    let hub_cfg = config.hub()?;
    let bus_cfg = config.event_bus()?;
    let (store, warning) = SqliteStore::open(&config.database.data_source)?;
    if let Some(w) = warning {
        error!(error = %w, "metadata store recovered");
    }
    let db = MetaDb::spawn(store);
    let stored_pods = db.list("pod").await?.len();
    info!(pods = stored_pods, db = %config.database.data_source.display(), "metadata store open");

    let files = config.cert_files();
    let tls = ClientTls::load(&files).map_err(EdgeCoreError::Tls)?;
    let token: Option<JoinToken> = config.modules.edge_hub.token.parse().ok();
    if tls.is_none() && token.is_none() {
        return Err(EdgeCoreError::NoCredentials {
            path: files.cert.display().to_string(),
        });
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Edged starts now, with the stored pods, whether or not the cloud is reachable.
    let (cloud_tx, cloud_rx) = watch::channel(None);
    let edged = config.modules.edged.enable.then(|| {
        edged::spawn(
            &tracker,
            cancel.child_token(),
            &config.modules.edged,
            db.clone(),
            cloud_rx,
        )
    });
    let (edged_tx, started) = edged.unzip();
    let pod_statuses = started.as_ref().map(|s| s.handle().statuses());
    // EdgeStream starts once the node certificate is at hand (from disk or the bootstrap).
    let (stream_tls, stream_tls_rx) = watch::channel(None);
    if let (Some(started), true) = (started, config.modules.edge_stream.enable) {
        let es = &config.modules.edge_stream;
        let ip = match config.modules.edged.node_ip.as_str() {
            "" => edged::detect_ip().unwrap_or_default(),
            ip => ip.to_owned(),
        };
        let mut cfg = crate::stream::EdgeStreamConfig::new(&es.server, config.node_name(), ip);
        cfg.handshake_timeout = Duration::from_secs(es.handshake_timeout.max(1));
        tracker.spawn(crate::stream::run_when_ready(
            cfg,
            stream_tls_rx,
            started,
            cancel.child_token(),
        ));
    }
    let bus = match bus_cfg {
        Some(b) => Some(
            start_eventbus(
                b,
                &config,
                plugins.twin.clone(),
                plugins.twin_bus,
                &cancel,
                &tracker,
            )
            .await?,
        ),
        None => None,
    };
    let (bus_tx, bus_cloud, broker) = match bus {
        Some((tx, rx, broker)) => (Some(tx), Some(rx), broker),
        None => (None, None, None),
    };
    // MetaServer, with edgecore's metrics at /metrics.
    let node = config.node_name().to_owned();
    let (metaserver, metaserver_addr) = if config.modules.meta_manager.meta_server.enable {
        let mut registry = prometheus_client::registry::Registry::default();
        let path = config.database.data_source.clone();
        tracker.spawn(crate::metrics::register_store(
            &mut registry,
            &db,
            path,
            cancel.child_token(),
        ));
        if let Some(stats) = broker {
            crate::metrics::register_broker(&mut registry, stats);
        }
        if let Some(statuses) = pod_statuses {
            crate::metrics::register_pods(&mut registry, statuses);
        }
        let (server, addr) =
            start_metaserver(&config, &db, &node, registry, &cancel, &tracker).await?;
        (Some(server), Some(addr))
    } else {
        (None, None)
    };
    let metaserver_handle = metaserver.clone();
    let twin_tx = plugins.twin;
    let twin_cloud = plugins.twin_cloud;
    let https = config.modules.edge_hub.http_server.clone();
    let remote_timeout = config.remote_query_timeout();
    let service_bus = config.modules.service_bus.enable;
    let db2 = db.clone();
    let c = cancel.clone();
    let t2 = tracker.clone();
    tracker.spawn(async move {
        // Certificates: from disk, or bootstrapped with the token, retrying while the cloud
        // is unreachable (the store keeps serving meanwhile).
        let tls = match tls {
            Some(t) => t,
            None => {
                let Some(token) = token else { return };
                let mut delay = Duration::from_secs(1);
                loop {
                    let attempt = hub::bootstrap(&https, &token, &node, &files, Duration::from_secs(30));
                    tokio::select! {
                        _ = c.cancelled() => return,
                        r = attempt => match r {
                            Ok(t) => break t,
                            Err(e) => warn!(error = %e, retry_in = ?delay, "certificate bootstrap failed"),
                        },
                    }
                    tokio::select! {
                        _ = c.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        match tls.client_config() {
            Ok(c) => {
                let _ = stream_tls.send(Some(c));
            }
            Err(e) => warn!(error = %e, "no tls config for the stream tunnel"),
        }
        let (client, inbound, driver) = hub::connect(hub_cfg, tls);
        if let Some(m) = &metaserver {
            m.set_hub(client.clone());
        }
        // The meta cache over the hub transport.
        let meta = ServiceBuilder::new()
            .layer(MetaLayer::new(db2, Outputs { edged: edged_tx, twin: twin_tx.clone() }).with_remote_timeout(remote_timeout))
            .service(client.clone());
        let _ = cloud_tx.send(Some(edged::Cloud { meta: meta.clone(), hub: client.clone() }));
        t2.spawn(meta.clone().run_outbox(c.child_token()));
        if let Some(rx) = bus_cloud {
            t2.spawn(crate::eventbus::uplink::uploads(rx, client.clone(), c.child_token()));
        }
        if let Some(tx) = &twin_tx {
            t2.spawn(crate::eventbus::uplink::connect_events(client.clone(), tx.clone(), c.child_token()));
        }
        if let Some(rx) = twin_cloud {
            t2.spawn(crate::eventbus::uplink::twin_reports(rx, client.clone(), meta.clone(), t2.clone(), c.child_token()));
        }
        let routes = Routes {
            meta: Some(meta),
            twin: twin_tx.map(router::channel_handler),
            eventbus: bus_tx.map(router::channel_handler),
            servicebus: service_bus.then(|| router::handler(crate::servicebus::ServiceBus::new(client.clone()))),
        };
        t2.spawn(driver.run(c.child_token()));
        t2.spawn(router::run(inbound, client, routes, c.child_token()));
    });
    Ok(Running {
        cancel,
        tracker,
        db,
        stored_pods,
        metaserver: metaserver_addr,
        meta_server: metaserver_handle,
    })
}

/// The embedded broker (modes 0 and 1) and the event bus, which runs whether or not the cloud
/// is reachable. Returns its inbound channel and its cloud-bound uploads.
async fn start_eventbus(
    cfg: crate::eventbus::EventBusConfig,
    config: &EdgeCoreConfig,
    twin: Option<mpsc::Sender<Message>>,
    twin_bus: Option<mpsc::Receiver<Message>>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<EventBusParts, EdgeCoreError> {
    use crate::eventbus::{
        self, BrokerConfig, EventBusError, EventBusOutputs, MqttMode, SubTopics,
    };
    let mut stats = None;
    if cfg.mode != MqttMode::External {
        let addr = tokio::net::lookup_host((cfg.internal.host.as_str(), cfg.internal.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| EventBusError::Listen {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], cfg.internal.port)),
                source: std::io::Error::other(format!("cannot resolve {}", cfg.internal.host)),
            })?;
        let mut b = BrokerConfig::new(addr);
        b.max_payload = cfg.max_payload;
        let listener = eventbus::broker::bind(&b).await?;
        let broker = eventbus::broker::Broker::new(b);
        stats = Some(broker.stats());
        tracker.spawn(broker.serve(listener, cancel.child_token()));
    }
    let store = SubTopics::open(&config.database.data_source)?;
    let (up_tx, up_rx) = mpsc::channel(1024);
    let (bus, driver) = eventbus::eventbus(cfg, store, EventBusOutputs::new(twin, up_tx))?;
    let c = cancel.child_token();
    tracker.spawn(async move {
        if let Err(e) = driver.run(c).await {
            error!(error = %e, "event bus stopped");
        }
    });
    if let Some(mut rx) = twin_bus {
        let tx = bus.sender();
        let c = cancel.child_token();
        tracker.spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = c.cancelled() => return,
                    m = rx.recv() => match m { Some(m) => m, None => return },
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok((bus.sender(), up_rx, stats))
}

/// The event bus's inbound channel, its cloud-bound uploads, and the embedded broker's figures.
type EventBusParts = (
    mpsc::Sender<Message>,
    mpsc::Receiver<Message>,
    Option<crate::eventbus::broker::BrokerStats>,
);

/// MetaServer on `metaServer.server`, serving the store from the start (the cloud may be away).
async fn start_metaserver(
    config: &EdgeCoreConfig,
    db: &MetaDb,
    node: &str,
    registry: prometheus_client::registry::Registry,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(MetaServer, std::net::SocketAddr), EdgeCoreError> {
    let addr = config.modules.meta_manager.meta_server.server.clone();
    let listen_err = |source| EdgeCoreError::Listen {
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let view = MetaView::load(db.clone(), cancel.child_token())
        .await
        .map_err(crate::metaserver::MetaServerError::from)?;
    let server = MetaServer::new(view, node).await?.with_metrics(registry);
    let c = cancel.clone();
    let s = server.clone();
    tracker.spawn(async move {
        if let Err(e) = metaserver::serve(listener, s, c.cancelled()).await {
            error!(error = %e, "metaserver stopped");
        }
    });
    info!(addr = %local, "metaserver listening");
    Ok((server, local))
}
