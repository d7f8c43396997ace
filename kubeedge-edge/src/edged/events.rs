//! Pod events as the kubelet records them (reasons from `pkg/kubelet/events/event.go`), sent
//! upstream through the durable outbox: one entry per pod and reason, the latest wins.

use k8s_openapi::api::core::v1::Pod;
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

/// Record a `Warning` or `Normal` event about `pod` from the kubelet on `node`.
pub(crate) async fn record(
    link: &Link,
    node: &str,
    pod: &Pod,
    subject: Subject<'_>,
    (kind, reason, message): (&str, &str, &str),
) {
    let m = &pod.metadata;
    let ns = m.namespace.as_deref().unwrap_or("default");
    let name = m.name.as_deref().unwrap_or_default();
    let t = status::now();
    let mut involved = json!({"kind": "Pod", "namespace": ns, "name": name, "uid": m.uid,
                              "apiVersion": "v1"});
    if let Subject::Container(c) = subject {
        involved["fieldPath"] = json!(field_path(pod, c));
    }
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", fastrand::u64(..)), "namespace": ns},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": kind,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
        "reportingComponent": "kubelet", "reportingInstance": node,
    });
    let msg = edged_message(
        Operation::Insert,
        format!("{ns}/event/{name}.{reason}"),
        Content::json(&ev).unwrap_or_default(),
    );
    if let Err(e) = link.report(msg).await {
        debug!(pod = %name, error = %e, "event not recorded");
    }
}
