//! Pod events as the kubelet records them (reasons from `pkg/kubelet/events/event.go`), sent
//! upstream through the durable outbox as `<ns>/event/<name>` insert (then update) messages,
//! as upstream's edged sends them.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubeedge_proto::{Content, Operation};
use serde_json::json;
use tracing::debug;

use super::link::{edged_message, Link};
use super::status;

/// A container could not be created or started (`FailedToCreateContainer`,
/// `FailedToStartContainer`).
pub(crate) const FAILED: &str = "Failed";
/// The pod sandbox could not be created.
pub(crate) const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";

/// What an event is about: the pod, or one of its containers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    /// The pod.
    Pod,
    /// A container of the pod, by name.
    Container(&'a str),
}

/// The `involvedObject.fieldPath` the kubelet gives a container's events.
fn field_path(pod: &Pod, container: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == container));
    let list = if init { "initContainers" } else { "containers" };
    format!("spec.{list}{{{container}}}")
}

/// One event already sent: repeats of it bump its count, as the kubelet's event correlator
/// does for identical events.
#[derive(Debug)]
struct Sent {
    name: String,
    count: u32,
    first: Option<Time>,
}

/// A pod's events: identical ones (same subject, type, reason and message) are one Event
/// whose `count` and `lastTimestamp` go up.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    sent: HashMap<(String, String, String, String), Sent>,
}

impl Recorder {
    /// Record a `Warning` or `Normal` event about `pod` from the kubelet on `node`.
    pub(crate) async fn record(
        &mut self,
        link: &Link,
        node: &str,
        pod: &Pod,
        subject: Subject<'_>,
        (kind, reason, message): (&str, &str, &str),
    ) {
        let m = &pod.metadata;
        let ns = m.namespace.as_deref().unwrap_or("default");
        let pod_name = m.name.as_deref().unwrap_or_default();
        let path = match subject {
            Subject::Pod => String::new(),
            Subject::Container(c) => field_path(pod, c),
        };
        let now = status::now();
        let key = (
            path.clone(),
            kind.to_owned(),
            reason.to_owned(),
            message.to_owned(),
        );
        let sent = self.sent.entry(key).or_insert_with(|| Sent {
            name: format!("{pod_name}.{:016x}", fastrand::u64(..)),
            count: 0,
            first: now.clone(),
        });
        sent.count += 1;
        let mut involved = json!({"kind": "Pod", "namespace": ns, "name": pod_name, "uid": m.uid,
                                  "apiVersion": "v1"});
        if !path.is_empty() {
            involved["fieldPath"] = json!(path);
        }
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": sent.name, "namespace": ns},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": kind,
            "source": {"component": "kubelet", "host": node},
            "firstTimestamp": sent.first, "lastTimestamp": now, "count": sent.count,
            "reportingComponent": "kubelet", "reportingInstance": node,
        });
        let op = if sent.count == 1 {
            Operation::Insert
        } else {
            Operation::Update
        };
        let msg = edged_message(
            op,
            format!("{ns}/event/{}", sent.name),
            Content::json(&ev).unwrap_or_default(),
        );
        if let Err(e) = link.report(msg).await {
            debug!(pod = %pod_name, error = %e, "event not recorded");
        }
    }
}
