//! CloudHub's Prometheus metrics (`prometheus-client`). The hub records into [`HubMetrics`] as
//! messages pass (one atomic add each); the per-node figures (outbox depth and age) are read
//! from the outboxes at scrape time, and only for the top [`TOP_NODES`] nodes, so that the
//! label cardinality stays bounded however many nodes connect.
//!
//! Names follow Prometheus' conventions (`kubeedge_cloudhub_…_total`, `…_seconds`), beside
//! upstream's one metric, `KubeEdge_CloudHub_connected_nodes`, kept under its own name so that
//! existing dashboards work.

use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Nodes listed by the per-node (top-N) gauges.
pub const TOP_NODES: usize = 10;

/// The operations counted under their own label; any other is counted as `other`.
const OPERATIONS: [&str; 13] = [
    "insert",
    "update",
    "patch",
    "delete",
    "query",
    "response",
    "error",
    "upload",
    "keepalive",
    "get",
    "list",
    "watch",
    "other",
];

type OpFamily = Family<[(&'static str, &'static str); 1], Counter>;

/// Counters for messages by operation, resolved once so that counting is one atomic add.
#[derive(Debug, Clone)]
struct ByOperation {
    family: OpFamily,
    counters: Vec<Counter>,
}

impl ByOperation {
    fn new() -> Self {
        let family = OpFamily::default();
        let counters = OPERATIONS
            .iter()
            .map(|op| family.get_or_create(&[("operation", *op)]).clone())
            .collect();
        Self { family, counters }
    }

    fn inc(&self, operation: &str) {
        let i = OPERATIONS
            .iter()
            .position(|o| *o == operation)
            .unwrap_or(OPERATIONS.len() - 1);
        if let Some(c) = self.counters.get(i) {
            c.inc();
        }
    }
}

/// What CloudHub counts. Cheap to clone; clones share the figures.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    connected: Gauge,
    connected_upstream: Gauge,
    sessions: Counter,
    received: ByOperation,
    sent: ByOperation,
    resent: Counter,
    ack_latency: Histogram,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self {
            connected: Gauge::default(),
            connected_upstream: Gauge::default(),
            sessions: Counter::default(),
            received: ByOperation::new(),
            sent: ByOperation::new(),
            resent: Counter::default(),
            // 0.5 ms to about 16 s.
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }
}

impl HubMetrics {
    /// Register the figures in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubeedge_cloudhub_connected_nodes",
            "Edge nodes with a session on this CloudHub",
            self.connected.clone(),
        );
        registry.register(
            "KubeEdge_CloudHub_connected_nodes",
            "Number of nodes that connected to the cloudHub instance (upstream's name)",
            self.connected_upstream.clone(),
        );
        registry.register(
            "kubeedge_cloudhub_sessions",
            "Edge sessions accepted",
            self.sessions.clone(),
        );
        registry.register(
            "kubeedge_cloudhub_messages_received",
            "Messages received from edge nodes, by operation",
            self.received.family.clone(),
        );
        registry.register(
            "kubeedge_cloudhub_messages_sent",
            "Messages written to edge nodes (resends included), by operation",
            self.sent.family.clone(),
        );
        registry.register(
            "kubeedge_cloudhub_messages_resent",
            "ACK-mode messages written again because no ack came in time",
            self.resent.clone(),
        );
        registry.register(
            "kubeedge_cloudhub_ack_latency_seconds",
            "From the first write of an ACK-mode message to the edge's ack",
            self.ack_latency.clone(),
        );
    }

    pub(crate) fn session_started(&self, connected: usize) {
        self.sessions.inc();
        self.set_connected(connected);
    }

    pub(crate) fn set_connected(&self, connected: usize) {
        let n = i64::try_from(connected).unwrap_or(i64::MAX);
        self.connected.set(n);
        self.connected_upstream.set(n);
    }

    pub(crate) fn received(&self, operation: &str) {
        self.received.inc(operation);
    }

    pub(crate) fn sent(&self, operation: &str) {
        self.sent.inc(operation);
    }

    pub(crate) fn resent(&self, n: u64) {
        if n > 0 {
            self.resent.inc_by(n);
        }
    }

    pub(crate) fn acked_after(&self, latency: std::time::Duration) {
        self.ack_latency.observe(latency.as_secs_f64());
    }
}

/// The sync controller's figures, read when scraped: the ObjectSync ledger's rows and the
/// ObjectSync writes still waiting for the API (the backlog). Register it before the
/// controllers start and pass it in [`crate::ControllersConfig::metrics`]; until they run it
/// shows nothing.
#[derive(Debug, Clone, Default)]
pub struct SyncMetrics(std::sync::Arc<std::sync::OnceLock<crate::synccontroller::SyncHandle>>);

impl SyncMetrics {
    /// Register the figures in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    pub(crate) fn set(&self, handle: crate::synccontroller::SyncHandle) {
        let _ = self.0.set(handle);
    }
}

impl prometheus_client::collector::Collector for SyncMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(sync) = self.0.get() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "kubeedge_synccontroller_objectsyncs",
            "Objects acked by edge nodes and tracked for resync (ObjectSync rows)",
            sync.len(),
        )?;
        gauge(
            &mut encoder,
            "kubeedge_synccontroller_pending_writes",
            "ObjectSync writes waiting to reach the API (the backlog)",
            sync.pending_writes(),
        )
    }
}

/// Encode one gauge read at scrape time.
pub(crate) fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Encode a gauge family with one sample per node (`node` label), read at scrape time.
pub(crate) fn node_gauges<'a, N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (&'a str, N)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (node, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&[("node", node)])?)?;
    }
    Ok(())
}
