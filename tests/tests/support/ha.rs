//! What the HA tests share: HAProxy in front of the replicas, and the Leases and pods as
//! kubectl reads them.
#![allow(dead_code)]

use anyhow::Result;
use kubeedge_bench::cluster::Cluster;

pub(crate) use kubeedge_bench::haproxy::Haproxy;

/// The holder of the Lease `kubeedge/<name>`, as `cluster`'s API tells it.
pub(crate) fn lease_holder(cluster: &Cluster, name: &str) -> Result<String> {
    Ok(cluster
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kubeedge",
            name,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?
        .trim()
        .to_owned())
}

/// The holder of the leader Lease kubeedge/cloudcore.
pub(crate) fn holder(cluster: &Cluster) -> Result<String> {
    lease_holder(cluster, "cloudcore")
}

/// The replica that holds `node`, from its record (empty when none or unreadable).
pub(crate) fn record_holder(cluster: &Cluster, node: &str) -> String {
    lease_holder(cluster, &format!("node-{node}")).unwrap_or_default()
}

pub(crate) fn busybox_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n",
        kubeedge_bench::BUSYBOX_IMAGE
    )
}

pub(crate) fn phase(cluster: &Cluster, pod: &str) -> String {
    cluster
        .kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
        .map(|p| p.trim().to_owned())
        .unwrap_or_default()
}
