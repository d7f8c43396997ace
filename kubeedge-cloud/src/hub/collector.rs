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
        use crate::metrics::{gauge, node_gauges, TOP_NODES};
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
        // (node, messages held, age of the oldest in seconds) for every node holding some.
        let mut held: Vec<(String, usize, f64)> = states
            .into_iter()
            .filter_map(|(node, state)| {
                let outbox = state.outbox();
                let oldest = outbox.oldest_timestamp()?;
                let age = now_ms.saturating_sub(oldest).max(0) as f64 / 1000.0;
                Some((node, outbox.len(), age))
            })
            .collect();
        gauge(
            &mut encoder,
            "kubeedge_cloudhub_outbox_messages",
            "Messages held in the nodes' outboxes (pending, in flight and NO-ACK)",
            held.iter().map(|(_, d, _)| d).sum(),
        )?;
        held.sort_by_key(|h| std::cmp::Reverse(h.1));
        node_gauges(
            &mut encoder,
            "kubeedge_cloudhub_outbox_messages_top",
            "Messages held in the outbox of each of the deepest nodes (top 10)",
            held.iter()
                .take(TOP_NODES)
                .map(|(n, d, _)| (n.as_str(), i64::try_from(*d).unwrap_or(i64::MAX))),
        )?;
        held.sort_by(|a, b| b.2.total_cmp(&a.2));
        node_gauges(
            &mut encoder,
            "kubeedge_cloudhub_outbox_oldest_message_age_seconds",
            "Age of the oldest message held for each of the nodes waiting longest (top 10)",
            held.iter()
                .take(TOP_NODES)
                .map(|(n, _, a)| (n.as_str(), *a)),
        )
    }
}
