//! Edgecore's Prometheus metrics. MetaServer serves them at `/metrics` on its loopback
//! address (`modules.metaManager.metaServer.server`, 127.0.0.1:10550 by default), as the
//! kubelet serves its own beside its API. Most figures are read when scraped, so the modules
//! pay nothing for them; the meta writes are counted from the store's change feed.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::hub::{self, ConnectionState};
use crate::meta::MetaDb;

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

/// The hub link as MetaServer sees it (the client is set once the node has its certificate).
/// The session count is the highest seen, so that it never goes down while the link is away.
#[derive(Debug)]
pub(crate) struct HubCollector {
    pub(crate) hub: Arc<OnceLock<hub::Client>>,
    pub(crate) sessions: std::sync::atomic::AtomicU64,
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering;
        let state = self
            .hub
            .get()
            .map_or(ConnectionState::Disconnected, |c| *c.state().borrow());
        let up = match state {
            ConnectionState::Connected(n) => {
                self.sessions.fetch_max(n, Ordering::Relaxed);
                1
            }
            ConnectionState::Disconnected => 0,
        };
        let sessions = self.sessions.load(Ordering::Relaxed);
        gauge(
            &mut encoder,
            "kubeedge_edgehub_connected",
            "1 while the websocket to CloudHub is up",
            up,
        )?;
        counter(
            &mut encoder,
            "kubeedge_edgehub_reconnects",
            "Sessions to CloudHub after the first",
            sessions.saturating_sub(1),
        )
    }
}

/// Register the metadata store's figures: its size on disk and its writes. Returns the task
/// that counts the writes; spawn it.
pub fn register_store(
    registry: &mut Registry,
    db: &MetaDb,
    db_path: PathBuf,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    registry.register_collector(Box::new(StoreSize(db_path)));
    let writes = Counter::<u64>::default();
    registry.register(
        "kubeedge_meta_writes",
        "Rows written to the metadata store (pushes, reports, deletions)",
        writes.clone(),
    );
    let mut changes = db.changes();
    async move {
        loop {
            let n = tokio::select! {
                () = cancel.cancelled() => return,
                c = changes.recv() => match c {
                    Ok(_) => 1,
                    Err(RecvError::Lagged(n)) => n,
                    Err(RecvError::Closed) => return,
                },
            };
            writes.inc_by(n);
        }
    }
}

/// The store's files (the database and its write-ahead log), read when scraped.
#[derive(Debug)]
struct StoreSize(PathBuf);

impl Collector for StoreSize {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.0.clone().into_os_string();
        wal.push("-wal");
        let bytes = size(&self.0) + size(std::path::Path::new(&wal));
        gauge(
            &mut encoder,
            "kubeedge_meta_store_bytes",
            "Size of the metadata store on disk (database and write-ahead log)",
            i64::try_from(bytes).unwrap_or(i64::MAX),
        )
    }
}

/// Register edged's pods by phase, read from its latest statuses when scraped.
#[cfg(feature = "edged")]
pub fn register_pods(
    registry: &mut Registry,
    statuses: tokio::sync::watch::Receiver<
        std::collections::BTreeMap<String, k8s_openapi::api::core::v1::PodStatus>,
    >,
) {
    registry.register_collector(Box::new(Pods(statuses)));
}

/// The pod phases, always all exposed so that each series exists from the start.
#[cfg(feature = "edged")]
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

#[cfg(feature = "edged")]
#[derive(Debug)]
struct Pods(
    tokio::sync::watch::Receiver<
        std::collections::BTreeMap<String, k8s_openapi::api::core::v1::PodStatus>,
    >,
);

#[cfg(feature = "edged")]
impl Collector for Pods {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut counts = [0i64; PHASES.len()];
        for status in self.0.borrow().values() {
            let phase = status.phase.as_deref().unwrap_or("Unknown");
            let i = PHASES
                .iter()
                .position(|p| *p == phase)
                .unwrap_or(PHASES.len() - 1);
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "kubeedge_edged_pods",
            "Pods edged runs, by phase",
            None,
            MetricType::Gauge,
        )?;
        for (phase, n) in PHASES.iter().zip(counts) {
            ConstGauge::new(n).encode(family.encode_family(&[("phase", *phase)])?)?;
        }
        Ok(())
    }
}

/// Register the embedded MQTT broker's figures: its clients and the messages it routed.
#[cfg(feature = "eventbus")]
pub fn register_broker(registry: &mut Registry, stats: crate::eventbus::broker::BrokerStats) {
    registry.register_collector(Box::new(Broker(stats)));
}

#[cfg(feature = "eventbus")]
#[derive(Debug)]
struct Broker(crate::eventbus::broker::BrokerStats);

#[cfg(feature = "eventbus")]
impl Collector for Broker {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "kubeedge_eventbus_mqtt_clients",
            "MQTT connections to the embedded broker",
            i64::try_from(self.0.connections()).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut encoder,
            "kubeedge_eventbus_mqtt_messages",
            "PUBLISH packets the embedded broker routed",
            self.0.published(),
        )
    }
}

/// `/metrics`: the registry in the OpenMetrics text format Prometheus scrapes.
pub(crate) fn render(registry: &Registry) -> http::Response<kubeedge_apiserver::ResponseBody> {
    let mut text = String::new();
    let (status, body, kind) = match prometheus_client::encoding::text::encode(&mut text, registry)
    {
        Ok(()) => (
            http::StatusCode::OK,
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Err(_) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics\n".to_owned(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut resp = http::Response::new(kubeedge_apiserver::ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    resp
}
