//! The outbox figures of the hub's metrics, read from every node's outbox at scrape time.

use std::sync::{Arc, PoisonError};

use super::{Inner, NodeState};

/// The outbox figures, read from every node's outbox when scraped.
#[derive(Debug)]
pub(super) struct OutboxCollector(pub(super) std::sync::Weak<Inner>);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for OutboxCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let states: Vec<(String, Arc<NodeState>)> = inner
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut held: Vec<(String, usize, f64)> = states
            .into_iter()
            .filter_map(|(node, state)| {
                let outbox = state.outbox();
                let depth = outbox.len();
                let age = outbox
                    .oldest_timestamp()
                    .map(|t| (now_ms.saturating_sub(t).max(0)) as f64 / 1000.0)?;
                Some((node, depth, age))
            })
            .filter(|(_, depth, _)| *depth > 0)
            .collect();
        let total: usize = held.iter().map(|(_, d, _)| d).sum();
        let gauge = ConstGauge::new(i64::try_from(total).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "kubeedge_cloudhub_outbox_messages",
            "Messages held in the nodes' outboxes (pending, in flight and NO-ACK)",
            None,
            MetricType::Gauge,
        )?)?;
        held.sort_by_key(|h| std::cmp::Reverse(h.1));
        let mut family = encoder.encode_descriptor(
            "kubeedge_cloudhub_outbox_messages_top",
            "Messages held in the outbox of each of the deepest nodes (top 10)",
            None,
            MetricType::Gauge,
        )?;
        for (node, depth, _) in held.iter().take(crate::metrics::TOP_NODES) {
            let labels = [("node", node.as_str())];
            ConstGauge::new(i64::try_from(*depth).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        held.sort_by(|a, b| b.2.total_cmp(&a.2));
        let mut family = encoder.encode_descriptor(
            "kubeedge_cloudhub_outbox_oldest_message_age_seconds",
            "Age of the oldest message held for each of the nodes waiting longest (top 10)",
            None,
            MetricType::Gauge,
        )?;
        for (node, _, age) in held.iter().take(crate::metrics::TOP_NODES) {
            let labels = [("node", node.as_str())];
            ConstGauge::new(*age).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
