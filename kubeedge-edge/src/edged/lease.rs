//! The node Lease (`kube-node-lease/lease/<node>`), renewed as the kubelet's lease controller
//! renews it (`k8s.io/component-helpers/apimachinery/lease/controller.go`, and
//! `pkg/kubelet/kubelet.go` for the interval):
//!
//! - every quarter of `nodeLeaseDurationSeconds` (40 s by default, so every 10 s);
//! - from the last Lease the cloud answered with, so that every update carries its
//!   `metadata.resourceVersion` (a real API server refuses an unconditional Lease update with
//!   422, and a stale one with 409);
//! - `renewTime` is a MicroTime: RFC 3339 with exactly six fractional digits;
//! - a 409 (or no Lease in hand) reads the Lease again (`query`), a missing one is created
//!   (`insert`), and an update is tried at most five times per renewal;
//! - a refusal is logged at warn with the Lease that was refused.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kubeedge_proto::{Content, Operation};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::link::{edged_message, Link};

/// The namespace of node Leases.
pub(crate) const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Updates tried per renewal before waiting for the next one (the kubelet's
/// `maxUpdateRetries`).
const MAX_UPDATE_RETRIES: usize = 5;

/// How a Lease request went.
#[derive(Debug)]
enum Answer {
    /// The cloud's Lease.
    Lease(Box<Lease>),
    /// The cloud's error (`reason`, `message`).
    Refused(String, String),
    /// No answer (offline, timed out, or an answer that is not an `ObjectResp`).
    Lost(String),
}

impl Answer {
    fn reason(&self) -> &str {
        match self {
            Answer::Refused(r, _) => r,
            _ => "",
        }
    }
}

/// The renewal interval for a lease of `duration_secs`: a quarter of it, at least 1 s.
pub(crate) fn renew_interval(duration_secs: u32) -> Duration {
    Duration::from_millis((u64::from(duration_secs) * 1000 / 4).max(1000))
}

/// Keeps one node's Lease renewed.
#[derive(Debug)]
pub(crate) struct LeaseRenewer {
    node: String,
    duration_secs: u32,
    link: Link,
    timeout: Duration,
    /// The last Lease the cloud answered with (the base of the next update).
    latest: Option<Lease>,
}

impl LeaseRenewer {
    pub(crate) fn new(node: String, duration_secs: u32, link: Link) -> Self {
        Self {
            node,
            duration_secs: duration_secs.max(1),
            link,
            timeout: Duration::from_secs(10),
            latest: None,
        }
    }

    /// Renew on schedule while the cloud is reachable, until `cancel`.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let interval = renew_interval(self.duration_secs);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.link.connected() => {}
            }
            self.renew().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One renewal: a Lease to start from (the last answer, or read/created), then an
    /// update with a fresh `renewTime`, read again after a conflict.
    pub(crate) async fn renew(&mut self) -> bool {
        for _ in 0..MAX_UPDATE_RETRIES {
            let base = match self.latest.take() {
                Some(l) => l,
                None => match self.ensure().await {
                    Some((l, false)) => l,
                    // Just created with a fresh renewTime: nothing to update (as the kubelet).
                    Some((l, true)) => {
                        self.latest = Some(l);
                        return true;
                    }
                    None => return false,
                },
            };
            let lease = self.renewed(base);
            match self.send(Operation::Update, &lease).await {
                Answer::Lease(l) => {
                    self.latest = Some(*l);
                    return true;
                }
                Answer::Refused(reason, message) if reason == "Conflict" => {
                    debug!(node = %self.node, message, "lease changed meanwhile: reading it again");
                }
                Answer::Refused(reason, message) => {
                    warn!(node = %self.node, reason, message, lease = %json(&lease), "lease update refused");
                    return false;
                }
                Answer::Lost(why) => {
                    debug!(node = %self.node, why, "lease update not answered");
                    return false;
                }
            }
        }
        warn!(node = %self.node, retries = MAX_UPDATE_RETRIES, "lease not renewed: it kept changing");
        false
    }

    /// The Lease as the cloud has it, created when there is none (then `true`).
    async fn ensure(&mut self) -> Option<(Lease, bool)> {
        let query = edged_message(Operation::Query, self.resource(), Content::null());
        match self.answer(query).await {
            Answer::Lease(l) => return Some((*l, false)),
            a if a.reason() == "NotFound" => {}
            Answer::Refused(reason, message) => {
                warn!(node = %self.node, reason, message, "lease query refused");
                return None;
            }
            Answer::Lost(why) => {
                debug!(node = %self.node, why, "lease query not answered");
                return None;
            }
        }
        let lease = self.renewed(self.fresh());
        match self.send(Operation::Insert, &lease).await {
            // The next update starts from the created Lease.
            Answer::Lease(l) => Some((*l, true)),
            Answer::Refused(reason, message) => {
                warn!(node = %self.node, reason, message, lease = %json(&lease), "lease creation refused");
                None
            }
            Answer::Lost(why) => {
                debug!(node = %self.node, why, "lease creation not answered");
                None
            }
        }
    }

    fn resource(&self) -> String {
        format!("{LEASE_NAMESPACE}/lease/{}", self.node)
    }

    fn fresh(&self) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.node.clone()),
                namespace: Some(LEASE_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: None,
        }
    }

    /// `base` with this node as holder, the configured duration and `renewTime` now.
    fn renewed(&self, mut base: Lease) -> Lease {
        let spec = base.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.node.clone());
        spec.lease_duration_seconds = Some(i32::try_from(self.duration_secs).unwrap_or(i32::MAX));
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        base
    }

    async fn send(&self, op: Operation, lease: &Lease) -> Answer {
        let content = match Content::json(lease) {
            Ok(c) => c,
            Err(e) => return Answer::Lost(format!("lease not encodable: {e}")),
        };
        self.answer(edged_message(op, self.resource(), content))
            .await
    }

    async fn answer(&self, msg: kubeedge_proto::Message) -> Answer {
        match self.link.request(msg, self.timeout).await {
            Ok(reply) => object_resp(&reply),
            Err(e) => Answer::Lost(e.to_string()),
        }
    }
}

/// An `ObjectResp{Object, Err}` reply (PROTOCOL.md §4.2).
fn object_resp(reply: &kubeedge_proto::Message) -> Answer {
    if let Some((reason, message)) = crate::meta::refusal(reply) {
        return Answer::Refused(reason, message);
    }
    let v: Value = match reply.content.decode() {
        Ok(v) => v,
        Err(e) => return Answer::Lost(format!("reply is not JSON: {e}")),
    };
    match v
        .get("Object")
        .cloned()
        .map(serde_json::from_value::<Lease>)
    {
        Some(Ok(l)) => Answer::Lease(Box::new(l)),
        Some(Err(e)) => Answer::Lost(format!("reply's Object is not a Lease: {e}")),
        None => Answer::Lost("reply has no Object".into()),
    }
}

fn json(lease: &Lease) -> String {
    serde_json::to_string(lease).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_every_quarter_of_the_duration() {
        assert_eq!(renew_interval(40), Duration::from_secs(10));
        assert_eq!(renew_interval(4), Duration::from_secs(1));
        assert_eq!(renew_interval(1), Duration::from_secs(1));
    }

    #[test]
    fn renew_time_has_six_fractional_digits() {
        let l = Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let v = serde_json::to_value(&l).unwrap_or_default();
        let t = v["spec"]["renewTime"].as_str().unwrap_or_default();
        let frac = t.split('.').nth(1).unwrap_or_default();
        assert_eq!(frac.len(), 7, "{t}");
        assert!(frac.ends_with('Z'), "{t}");
    }

    #[test]
    fn object_resp_errors_and_leases() {
        let msg = |v: Value| {
            kubeedge_proto::Message::new(
                kubeedge_proto::Route::new("edgecontroller", "resource", "response", "x"),
                Content::json(&v).unwrap_or_default(),
            )
        };
        let conflict = msg(serde_json::json!({"Object": null, "Err": {"ErrStatus":
            {"status": "Failure", "reason": "Conflict", "message": "the object has been modified", "code": 409}}}));
        assert_eq!(object_resp(&conflict).reason(), "Conflict");
        let ok = msg(
            serde_json::json!({"Object": {"metadata": {"name": "n", "resourceVersion": "7"}}, "Err": null}),
        );
        match object_resp(&ok) {
            Answer::Lease(l) => assert_eq!(l.metadata.resource_version.as_deref(), Some("7")),
            other => panic!("{other:?}"),
        }
    }
}
