//! The bounded window of recent events a store keeps so that watches can resume.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Event;
use crate::error::StoreError;

/// Recent events in revision order, and the revision before which resumes are Gone.
#[derive(Debug)]
pub(crate) struct History {
    events: VecDeque<Arc<Event>>,
    /// Every event after this revision is in `events` (or still to come).
    compacted: u64,
    capacity: usize,
}

impl History {
    /// An empty window of `capacity` events, starting after `revision`.
    pub(crate) fn new(capacity: usize, revision: u64) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(65_536)),
            compacted: revision,
            capacity: capacity.max(1),
        }
    }

    /// Appends a committed event, forgetting the oldest one when full.
    pub(crate) fn push(&mut self, ev: Arc<Event>) {
        if self.events.len() >= self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.compacted = old.object.rv;
            }
        }
        self.events.push_back(ev);
    }

    /// The events after `from` (none without one); `Gone` when `from` is before the window.
    pub(crate) fn after(&self, from: Option<u64>) -> Result<Vec<Arc<Event>>, StoreError> {
        match from {
            None => Ok(Vec::new()),
            Some(from) if from < self.compacted => Err(StoreError::Gone {
                requested: from,
                oldest: self.compacted,
            }),
            Some(from) => {
                // Events are ordered by revision: skip the prefix at or before `from`.
                let start = self.events.partition_point(|e| e.object.rv <= from);
                Ok(self.events.iter().skip(start).cloned().collect())
            }
        }
    }

    /// Forgets every event: resumes from before `revision` are Gone.
    #[cfg(feature = "etcd")]
    pub(crate) fn reset(&mut self, revision: u64) {
        self.events.clear();
        self.compacted = revision;
    }
}
