//! The per-node outbox, sans-IO: what to write to a node's socket, and when.
//!
//! - ACK-mode messages (PROTOCOL.md §2.4) are resent (same msg_id) until the edge acks them by
//!   parent_msg_id. Each object (keyed by its metadata.uid) holds at most one pending message: a
//!   newer resourceVersion replaces an older one and a delete always wins. Up to `window` ACK
//!   messages are in flight at once; upstream edges ack every message independently.
//! - NO-ACK messages are written once, in order.
//! - The outbox outlives sessions: what was in flight when a link broke is resent first on the
//!   next session, so nothing is lost on a reconnect.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use kubeedge_proto::{AckMode, Message, MessageId, Operation};
use serde::Deserialize;
use tokio::time::Instant;

/// Outbox limits.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// ACK-mode messages in flight at once.
    pub window: usize,
    /// Resend an unacked message after this long (upstream: 5 s).
    pub resend_after: Duration,
    /// Most messages held for one node (pending + in flight + NO-ACK).
    pub capacity: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            window: 64,
            resend_after: Duration::from_secs(5),
            capacity: 4096,
        }
    }
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued as a new entry (uses one unit of capacity).
    Queued,
    /// Replaced an older pending message for the same object (no capacity used).
    Replaced,
    /// Dropped: older than what is already queued or acked, or superseded by a delete.
    Stale,
    /// Refused: the outbox is full.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Uid(String),
    Id(MessageId),
}

#[derive(Debug)]
struct InFlight {
    msg: Message,
    due: Option<Instant>,
    /// The first write (for the ack latency).
    first_sent: Instant,
}

#[derive(Debug, Default)]
struct Slot {
    inflight: Option<InFlight>,
    pending: Option<Message>,
    queued: bool,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ObjectHead {
    #[serde(default)]
    metadata: Meta,
}

fn head(msg: &Message) -> ObjectHead {
    if msg.content.is_null() {
        return ObjectHead::default();
    }
    msg.content.decode().unwrap_or_default()
}

/// Upstream `isDeleteMessage`: operation delete, or an object with a deletionTimestamp.
fn is_delete(msg: &Message, head: &ObjectHead) -> bool {
    msg.route.is_operation(&Operation::Delete) || head.metadata.deletion_timestamp.is_some()
}

fn is_delete_msg(msg: &Message) -> bool {
    is_delete(msg, &head(msg))
}

/// Compare resourceVersions: numerically when both are numbers, else "different means newer".
fn newer(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => a != b,
    }
}

/// The outbox of one node.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    slots: HashMap<Key, Slot>,
    /// Keys with a pending message, in arrival order.
    queue: VecDeque<Key>,
    inflight_ids: HashMap<MessageId, Key>,
    inflight: usize,
    noack: VecDeque<Message>,
    /// Last acked resourceVersion per object, to drop stale re-deliveries.
    acked_rv: HashMap<String, String>,
    /// Resends written since [`Outbox::take_resends`] last asked.
    resends: u64,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Self {
        Self {
            config,
            slots: HashMap::new(),
            queue: VecDeque::new(),
            inflight_ids: HashMap::new(),
            inflight: 0,
            noack: VecDeque::new(),
            acked_rv: HashMap::new(),
            resends: 0,
        }
    }

    /// Messages held (pending, in flight and NO-ACK).
    pub fn len(&self) -> usize {
        self.slots
            .values()
            .map(|s| usize::from(s.inflight.is_some()) + usize::from(s.pending.is_some()))
            .sum::<usize>()
            + self.noack.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// ACK-mode messages in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight
    }

    /// Add a message.
    pub fn push(&mut self, msg: Message, mode: AckMode) -> Pushed {
        if mode == AckMode::NoAck {
            if self.len() >= self.config.capacity {
                return Pushed::Full;
            }
            self.noack.push_back(msg);
            return Pushed::Queued;
        }
        let head = head(&msg);
        let delete = is_delete(&msg, &head);
        // Replies to edge queries are answers to one request each: never coalesced.
        let key = match head.metadata.uid.filter(|u| !u.is_empty()) {
            Some(uid) if !msg.route.is_operation(&Operation::Response) => Key::Uid(uid),
            _ => Key::Id(msg.id().clone()),
        };
        let rv = msg.header.resource_version.clone();
        if let Key::Uid(uid) = &key {
            // Upstream: an ACK message must carry a resourceVersion unless it is a delete.
            if rv.is_empty() && !delete {
                return Pushed::Stale;
            }
            if let Some(acked) = self.acked_rv.get(uid) {
                if !delete && !newer(&rv, acked) {
                    return Pushed::Stale;
                }
            }
        }
        let full = self.len() >= self.config.capacity;
        let slot = self.slots.entry(key.clone()).or_default();
        if let Some(pending) = &slot.pending {
            let pending_delete = is_delete_msg(pending);
            let replace =
                delete || (!pending_delete && newer(&rv, &pending.header.resource_version));
            if !replace {
                return Pushed::Stale;
            }
            slot.pending = Some(msg);
            return Pushed::Replaced;
        }
        if let Some(f) = &slot.inflight {
            if !delete && (is_delete_msg(&f.msg) || !newer(&rv, &f.msg.header.resource_version)) {
                return Pushed::Stale;
            }
        }
        if full {
            if slot.inflight.is_none() {
                self.slots.remove(&key);
            }
            return Pushed::Full;
        }
        slot.pending = Some(msg);
        if !slot.queued {
            slot.queued = true;
            self.queue.push_back(key);
        }
        Pushed::Queued
    }

    /// Drops every message held (the node is served elsewhere); returns how many there were,
    /// the capacity they held. What the node acked through this outbox is remembered.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.slots.clear();
        self.queue.clear();
        self.inflight_ids.clear();
        self.inflight = 0;
        self.noack.clear();
        n
    }

    /// Drops the NO-ACK messages and keeps the ACK-mode ones (the node is served elsewhere:
    /// those leave as [`Outbox::acked_elsewhere`] learns the node acked them there, and what
    /// remains is sent should the node come back). Returns how many were dropped.
    pub fn clear_no_ack(&mut self) -> usize {
        let n = self.noack.len();
        self.noack.clear();
        n
    }

    /// The node acked version `rv` of object `uid` through another replica (`None`: its
    /// delete). Drops what is held for the object and is not newer; returns how many entries
    /// were dropped.
    pub fn acked_elsewhere(&mut self, uid: &str, rv: Option<&str>) -> usize {
        match rv {
            Some(rv) => {
                let known = self.acked_rv.get(uid).is_some_and(|a| !newer(rv, a));
                if !known {
                    self.acked_rv.insert(uid.to_owned(), rv.to_owned());
                }
            }
            None => {
                self.acked_rv.remove(uid);
            }
        }
        let key = Key::Uid(uid.to_owned());
        let Some(slot) = self.slots.get_mut(&key) else {
            return 0;
        };
        // A version the node holds (or, after its delete, anything of the object) is done.
        let done = |m: &Message| match rv {
            Some(rv) => !is_delete_msg(m) && !newer(&m.header.resource_version, rv),
            None => true,
        };
        let mut dropped = 0;
        if slot.inflight.as_ref().is_some_and(|f| done(&f.msg)) {
            if let Some(f) = slot.inflight.take() {
                self.inflight_ids.remove(f.msg.id());
                self.inflight = self.inflight.saturating_sub(1);
                dropped += 1;
            }
        }
        if slot.pending.as_ref().is_some_and(done) {
            slot.pending = None;
            dropped += 1;
        }
        if slot.inflight.is_none() && slot.pending.is_none() {
            self.slots.remove(&key);
        }
        dropped
    }

    /// The edge acked `parent`; returns true when it matched an in-flight message.
    pub fn ack(&mut self, parent: &MessageId) -> bool {
        self.take_acked(parent).is_some()
    }

    /// The edge acked `parent`: the in-flight message it matched, now done.
    pub fn take_acked(&mut self, parent: &MessageId) -> Option<Message> {
        let key = self.inflight_ids.remove(parent)?;
        self.inflight = self.inflight.saturating_sub(1);
        let mut acked = None;
        let remove = if let Some(slot) = self.slots.get_mut(&key) {
            if let Some(f) = slot.inflight.take() {
                if let Key::Uid(uid) = &key {
                    if is_delete_msg(&f.msg) {
                        self.acked_rv.remove(uid);
                    } else {
                        self.acked_rv
                            .insert(uid.clone(), f.msg.header.resource_version.clone());
                    }
                }
                acked = Some(f.msg);
            }
            slot.pending.is_none()
        } else {
            false
        };
        if remove {
            self.slots.remove(&key);
        }
        acked
    }

    /// A new session starts: everything in flight is due again at once (same msg_id).
    pub fn reset_inflight(&mut self) {
        for slot in self.slots.values_mut() {
            if let Some(f) = slot.inflight.as_mut() {
                f.due = None;
            }
        }
    }

    /// Messages to write now: due resends, then NO-ACK messages, then new ACK messages up to
    /// the window. Returns how many entries were released (NO-ACK messages written).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<Message>) -> usize {
        let resend_after = self.config.resend_after;
        for slot in self.slots.values_mut() {
            if let Some(f) = slot.inflight.as_mut() {
                if f.due.is_none_or(|d| d <= now) {
                    f.due = Some(now + resend_after);
                    out.push(f.msg.clone());
                    self.resends += 1;
                }
            }
        }
        let released = self.noack.len();
        out.extend(self.noack.drain(..));
        // One pass over the queue: objects whose older version is still in flight keep their
        // place for a later pass.
        for _ in 0..self.queue.len() {
            if self.inflight >= self.config.window {
                break;
            }
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if slot.inflight.is_some() {
                self.queue.push_back(key);
                continue;
            }
            slot.queued = false;
            let Some(msg) = slot.pending.take() else {
                continue;
            };
            self.inflight_ids.insert(msg.id().clone(), key);
            self.inflight += 1;
            out.push(msg.clone());
            slot.inflight = Some(InFlight {
                msg,
                due: Some(now + resend_after),
                first_sent: now,
            });
        }
        released
    }

    /// When the in-flight message `parent` was first written.
    pub fn sent_at(&self, parent: &MessageId) -> Option<Instant> {
        let key = self.inflight_ids.get(parent)?;
        self.slots.get(key)?.inflight.as_ref().map(|f| f.first_sent)
    }

    /// Resends written since the last call (a new session's rewrites included).
    pub fn take_resends(&mut self) -> u64 {
        std::mem::take(&mut self.resends)
    }

    /// The `timestamp` (ms since the epoch) of the oldest message held.
    pub fn oldest_timestamp(&self) -> Option<i64> {
        self.slots
            .values()
            .flat_map(|s| [s.inflight.as_ref().map(|f| &f.msg), s.pending.as_ref()])
            .flatten()
            .chain(self.noack.iter())
            .map(|m| m.header.timestamp)
            .min()
    }

    /// When the next resend is due, if anything is in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter_map(|s| s.inflight.as_ref().and_then(|f| f.due))
            .min()
    }

    /// True when [`Outbox::poll_transmit`] would write something new right now.
    pub fn has_ready(&self) -> bool {
        !self.noack.is_empty()
            || (self.inflight < self.config.window
                && self
                    .queue
                    .iter()
                    .any(|k| self.slots.get(k).is_some_and(|s| s.inflight.is_none())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeedge_proto::{Content, Route};

    fn obj(uid: &str, rv: &str, op: &str) -> Message {
        let content = Content::json(
            &serde_json::json!({"kind":"Pod","metadata":{"uid":uid,"resourceVersion":rv}}),
        )
        .unwrap();
        Message::new(
            Route::new("edgecontroller", "resource", op, "default/pod/p"),
            content,
        )
        .with_resource_version(rv)
    }

    fn drain(o: &mut Outbox, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        o.poll_transmit(now, &mut out);
        out
    }

    #[test]
    fn resend_until_acked_with_same_id() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t0 = Instant::now();
        assert_eq!(
            o.push(obj("u1", "5", "insert"), AckMode::Ack),
            Pushed::Queued
        );
        let sent = drain(&mut o, t0);
        assert_eq!(sent.len(), 1);
        assert!(drain(&mut o, t0 + Duration::from_secs(1)).is_empty());
        let again = drain(&mut o, t0 + Duration::from_secs(5));
        assert_eq!(again[0].id(), sent[0].id());
        assert!(o.ack(sent[0].id()));
        assert!(!o.ack(sent[0].id()), "a second ack is unknown");
        assert!(o.is_empty());
        assert!(drain(&mut o, t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn coalesces_per_object_and_delete_wins() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t0 = Instant::now();
        o.push(obj("u1", "5", "insert"), AckMode::Ack);
        assert_eq!(
            o.push(obj("u1", "7", "update"), AckMode::Ack),
            Pushed::Replaced
        );
        assert_eq!(
            o.push(obj("u1", "6", "update"), AckMode::Ack),
            Pushed::Stale
        );
        assert_eq!(
            o.push(obj("u1", "8", "delete"), AckMode::Ack),
            Pushed::Replaced
        );
        assert_eq!(
            o.push(obj("u1", "9", "update"), AckMode::Ack),
            Pushed::Stale
        );
        let sent = drain(&mut o, t0);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].route.operation_str(), "delete");
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn newer_version_waits_for_inflight_ack() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t0 = Instant::now();
        o.push(obj("u1", "5", "insert"), AckMode::Ack);
        let first = drain(&mut o, t0);
        assert_eq!(
            o.push(obj("u1", "6", "update"), AckMode::Ack),
            Pushed::Queued
        );
        assert!(
            drain(&mut o, t0).is_empty(),
            "one version per object on the wire"
        );
        o.ack(first[0].id());
        let second = drain(&mut o, t0);
        assert_eq!(second[0].header.resource_version, "6");
        o.ack(second[0].id());
        assert_eq!(
            o.push(obj("u1", "6", "update"), AckMode::Ack),
            Pushed::Stale,
            "already acked"
        );
    }

    #[test]
    fn window_capacity_and_noack() {
        let cfg = OutboxConfig {
            window: 2,
            capacity: 3,
            ..OutboxConfig::default()
        };
        let mut o = Outbox::new(cfg);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                o.push(obj(&format!("u{i}"), "1", "insert"), AckMode::Ack),
                Pushed::Queued
            );
        }
        assert_eq!(o.push(obj("u9", "1", "insert"), AckMode::Ack), Pushed::Full);
        let n = Message::new(
            Route::new("devicecontroller", "twin", "update", "membership"),
            Content::null(),
        );
        assert_eq!(o.push(n, AckMode::NoAck), Pushed::Full);
        let sent = drain(&mut o, t0);
        assert_eq!(sent.len(), 2, "window of two");
        assert_eq!(o.in_flight(), 2);
        o.ack(sent[0].id());
        let n = Message::new(
            Route::new("devicecontroller", "twin", "update", "membership"),
            Content::null(),
        );
        assert_eq!(o.push(n, AckMode::NoAck), Pushed::Queued);
        let next = drain(&mut o, t0);
        assert_eq!(next.len(), 2, "the NO-ACK message and the third object");
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn what_the_node_acked_elsewhere_leaves() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t0 = Instant::now();
        o.push(obj("u1", "5", "insert"), AckMode::Ack);
        drain(&mut o, t0);
        o.push(obj("u1", "6", "update"), AckMode::Ack);
        o.push(obj("u2", "3", "insert"), AckMode::Ack);
        o.push(obj("u3", "4", "insert"), AckMode::NoAck);
        assert_eq!(o.len(), 4);
        // The in-flight version 5 is done; the pending 6 is newer and stays.
        assert_eq!(o.acked_elsewhere("u1", Some("5")), 1);
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.acked_elsewhere("u1", Some("6")), 1);
        assert_eq!(o.acked_elsewhere("u1", Some("6")), 0);
        assert_eq!(
            o.push(obj("u1", "6", "update"), AckMode::Ack),
            Pushed::Stale,
            "the node holds it"
        );
        assert_eq!(
            o.push(obj("u1", "7", "update"), AckMode::Ack),
            Pushed::Queued
        );
        assert_eq!(
            o.acked_elsewhere("u1", None),
            1,
            "after its delete nothing is left"
        );
        assert_eq!(o.acked_elsewhere("unknown", Some("1")), 0);
        assert_eq!(o.clear_no_ack(), 1);
        let rest = drain(&mut o, t0);
        assert_eq!(rest.len(), 1, "only u2 is still owed: {rest:?}");
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn reconnect_resends_inflight_first() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t0 = Instant::now();
        o.push(obj("u1", "5", "insert"), AckMode::Ack);
        let sent = drain(&mut o, t0);
        o.reset_inflight();
        let again = drain(&mut o, t0);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id(), sent[0].id());
    }

    #[test]
    fn non_numeric_resource_versions_do_not_panic() {
        let mut o = Outbox::new(OutboxConfig::default());
        assert_eq!(
            o.push(obj("u1", "abc", "insert"), AckMode::Ack),
            Pushed::Queued
        );
        assert_eq!(
            o.push(obj("u1", "abd", "update"), AckMode::Ack),
            Pushed::Replaced
        );
    }
}
