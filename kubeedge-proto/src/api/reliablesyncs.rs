//! Reliable sync ledger types (`reliablesyncs.kubeedge.io/v1alpha1`, PROTOCOL.md §4.5).

use serde::{Deserialize, Serialize};

/// What object an ObjectSync tracks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSyncSpec {
    /// The object's apiVersion (upstream's key is `objectAPIVersion`).
    #[serde(
        rename = "objectAPIVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub object_api_version: String,
    /// The object's kind (upstream stores the lower-case resource type).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object_kind: String,
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object_name: String,
}

/// The resourceVersion the edge acked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSyncStatus {
    /// Acked resourceVersion.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object_resource_version: String,
}

mod namespaced {
    use super::{ObjectSyncSpec, ObjectSyncStatus};
    kube_object!(
        ObjectSync,
        ObjectSyncSpec,
        ObjectSyncStatus,
        group = "reliablesyncs.kubeedge.io",
        version = "v1alpha1",
        kind = "ObjectSync",
        plural = "objectsyncs",
        scope = NamespaceResourceScope
    );
}
mod cluster {
    use super::{ObjectSyncSpec, ObjectSyncStatus};
    kube_object!(
        ClusterObjectSync,
        ObjectSyncSpec,
        ObjectSyncStatus,
        group = "reliablesyncs.kubeedge.io",
        version = "v1alpha1",
        kind = "ClusterObjectSync",
        plural = "clusterobjectsyncs",
        scope = ClusterResourceScope
    );
}
pub use cluster::ClusterObjectSync;
pub use namespaced::ObjectSync;

/// Upstream's ObjectSync name: `<node>.<object uid>`.
pub fn object_sync_name(node: &str, uid: &str) -> String {
    format!("{node}.{uid}")
}
