//! KubeEdge API types as serde structs: devices (`devices.kubeedge.io` v1beta1, and v1alpha2 as
//! v1.12 uses it) and reliable sync (`reliablesyncs.kubeedge.io/v1alpha1`). With the `kube`
//! feature they implement `kube_core::Resource`, so `kube::Api<Device>` works.
//!
//! Protocol-specific blocks that KubeEdge itself never interprets (`configData`, protocol
//! configs, visitors, push methods) stay as JSON values so that every field a user wrote
//! survives a round trip.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// Implements the type/object metadata plumbing (and `kube_core::Resource` with the feature).
macro_rules! kube_object {
    ($ty:ident, $spec:ty, $status:ty, group = $group:literal, version = $version:literal,
     kind = $kind:literal, plural = $plural:literal, scope = $scope:ident) => {
        #[doc = concat!("`", $group, "/", $version, "` `", $kind, "`.")]
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $ty {
            /// `apiVersion`.
            #[serde(default = "api_version_default")]
            pub api_version: String,
            /// `kind`.
            #[serde(default = "kind_default")]
            pub kind: String,
            /// Standard object metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// The spec.
            #[serde(default)]
            pub spec: $spec,
            /// The status.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        fn api_version_default() -> String {
            concat!($group, "/", $version).to_owned()
        }

        fn kind_default() -> String {
            $kind.to_owned()
        }

        impl $ty {
            /// API group.
            pub const GROUP: &'static str = $group;
            /// API version.
            pub const VERSION: &'static str = $version;
            /// Kind.
            pub const KIND: &'static str = $kind;
            /// Plural resource name.
            pub const PLURAL: &'static str = $plural;

            /// A new object with the given name and spec.
            pub fn new(name: &str, spec: $spec) -> Self {
                Self {
                    api_version: api_version_default(),
                    kind: kind_default(),
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec,
                    status: None,
                }
            }
        }

        #[cfg(feature = "kube")]
        impl kube_core::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::$scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `{"name": …}` reference to a DeviceModel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelRef {
    /// DeviceModel name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A desired or reported twin value in a Device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwinProperty {
    /// The value.
    #[serde(default)]
    pub value: String,
    /// Metadata such as `type` and `timestamp`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The CustomResourceDefinitions of these types, as one multi-document YAML (Device and
/// DeviceModel in v1alpha2 and v1beta1, ObjectSync and ClusterObjectSync), with open schemas:
/// what cloudcore installs in its embedded control plane and `keadm init` applies to a cluster.
pub const CRDS: &str = include_str!("../manifests/crds.yaml");

/// Reliable sync ledger types (`reliablesyncs.kubeedge.io/v1alpha1`, PROTOCOL.md §4.5).
pub mod reliablesyncs {
    use super::*;

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
        use super::*;
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
        use super::*;
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
}

/// `devices.kubeedge.io/v1beta1` (KubeEdge v1.15 and later).
pub mod v1beta1 {
    use super::*;
    use serde_json::Value;

    /// Device spec.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceSpec {
        /// The model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub device_model_ref: Option<ModelRef>,
        /// The node the device is bound to.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub node_name: String,
        /// Properties with desired values and visitors.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub properties: Vec<DeviceProperty>,
        /// Protocol config.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<ProtocolConfig>,
        /// Device methods.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub methods: Option<Vec<Value>>,
        /// State reporting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub state_report: Option<Value>,
    }

    /// `{protocolName, configData}`.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ProtocolConfig {
        /// Protocol name (`modbus`, `virtual`, …).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub protocol_name: String,
        /// Free-form protocol configuration.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub config_data: Option<Value>,
    }

    /// One property of a Device.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceProperty {
        /// Property name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub name: String,
        /// Desired value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub desired: Option<TwinProperty>,
        /// How to read the property.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub visitors: Option<ProtocolConfig>,
        /// Report cycle, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub report_cycle: Option<i64>,
        /// Collect cycle, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub collect_cycle: Option<i64>,
        /// Whether reported values go to the cloud.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub report_to_cloud: Option<bool>,
        /// Push method (http, mqtt, otel, dbMethod).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub push_method: Option<Value>,
    }

    /// Observed twin of one property.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Twin {
        /// Property name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub property_name: String,
        /// Reported value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reported: Option<TwinProperty>,
        /// The desired value the device last saw.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub observed_desired: Option<TwinProperty>,
    }

    /// Device status.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceStatus {
        /// Twins.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub twins: Vec<Twin>,
        /// Device state.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub state: String,
        /// Last time online.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub last_online_time: String,
        /// Report to cloud.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub report_to_cloud: Option<bool>,
        /// Report cycle.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub report_cycle: Option<i64>,
    }

    /// One property of a DeviceModel.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ModelProperty {
        /// Name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub name: String,
        /// Description.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub description: String,
        /// `INT`, `FLOAT`, `DOUBLE`, `STRING`, `BOOLEAN`, `BYTES`, `STREAM`.
        #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
        pub value_type: String,
        /// `ReadWrite` or `ReadOnly`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub access_mode: String,
        /// Minimum.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub minimum: String,
        /// Maximum.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub maximum: String,
        /// Unit.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub unit: String,
    }

    /// DeviceModel spec.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceModelSpec {
        /// Properties.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub properties: Vec<ModelProperty>,
        /// Protocol name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub protocol: String,
        /// Protocol config data (upstream HEAD).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol_config_data: Option<Value>,
    }

    /// DeviceModel has no status; this empty struct stands in for it.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct NoStatus {}

    mod device {
        use super::*;
        kube_object!(
            Device,
            DeviceSpec,
            DeviceStatus,
            group = "devices.kubeedge.io",
            version = "v1beta1",
            kind = "Device",
            plural = "devices",
            scope = NamespaceResourceScope
        );
    }
    mod model {
        use super::*;
        kube_object!(
            DeviceModel,
            DeviceModelSpec,
            NoStatus,
            group = "devices.kubeedge.io",
            version = "v1beta1",
            kind = "DeviceModel",
            plural = "devicemodels",
            scope = NamespaceResourceScope
        );
    }
    pub use device::Device;
    pub use model::DeviceModel;
}

/// `devices.kubeedge.io/v1alpha2` as KubeEdge v1.12 uses it.
pub mod v1alpha2 {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSelector;
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// Device spec.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceSpec {
        /// The model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub device_model_ref: Option<ModelRef>,
        /// Protocol (`opcua`, `modbus`, `bluetooth`, `common`, `customizedProtocol`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<Value>,
        /// How to read each property.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub property_visitors: Vec<PropertyVisitor>,
        /// Data section (always emitted by upstream).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub data: Option<Value>,
        /// Where the device is bound.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub node_selector: Option<NodeSelector>,
    }

    impl DeviceSpec {
        /// Upstream's target node rule:
        /// `nodeSelectorTerms[0].matchExpressions[0].values[0]`.
        pub fn node_name(&self) -> Option<&str> {
            self.node_selector
                .as_ref()?
                .node_selector_terms
                .first()?
                .match_expressions
                .as_ref()?
                .first()?
                .values
                .as_ref()?
                .first()
                .map(String::as_str)
        }
    }

    /// One property visitor; the protocol-specific block stays as JSON.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PropertyVisitor {
        /// The property.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub property_name: String,
        /// Report cycle.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub report_cycle: Option<i64>,
        /// Collect cycle.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub collect_cycle: Option<i64>,
        /// Custom values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub customized_values: Option<Value>,
        /// `opcua`, `modbus`, `bluetooth` or `customizedProtocol` blocks.
        #[serde(flatten)]
        pub protocol: BTreeMap<String, Value>,
    }

    /// Twin of one property.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Twin {
        /// Property name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub property_name: String,
        /// Desired value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub desired: Option<TwinProperty>,
        /// Reported value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reported: Option<TwinProperty>,
    }

    /// Device status.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceStatus {
        /// Twins.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub twins: Vec<Twin>,
    }

    /// One property of a DeviceModel.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ModelProperty {
        /// Name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub name: String,
        /// Description.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub description: String,
        /// `{"int": {...}}`, `{"string": {...}}`, …
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        pub value_type: Option<Value>,
    }

    /// DeviceModel spec.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DeviceModelSpec {
        /// Protocol name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub protocol: String,
        /// Properties.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub properties: Vec<ModelProperty>,
    }

    /// DeviceModel has no status; this empty struct stands in for it.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct NoStatus {}

    mod device {
        use super::*;
        kube_object!(
            Device,
            DeviceSpec,
            DeviceStatus,
            group = "devices.kubeedge.io",
            version = "v1alpha2",
            kind = "Device",
            plural = "devices",
            scope = NamespaceResourceScope
        );
    }
    mod model {
        use super::*;
        kube_object!(
            DeviceModel,
            DeviceModelSpec,
            NoStatus,
            group = "devices.kubeedge.io",
            version = "v1alpha2",
            kind = "DeviceModel",
            plural = "devicemodels",
            scope = NamespaceResourceScope
        );
    }
    pub use device::Device;
    pub use model::DeviceModel;
}

#[cfg(all(test, feature = "kube"))]
mod tests {
    use super::*;
    use kube_core::Resource;

    #[test]
    fn kube_resource_paths() {
        assert_eq!(
            v1beta1::Device::url_path(&(), Some("default")),
            "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices"
        );
        assert_eq!(
            v1alpha2::DeviceModel::url_path(&(), Some("ns")),
            "/apis/devices.kubeedge.io/v1alpha2/namespaces/ns/devicemodels"
        );
        assert_eq!(
            reliablesyncs::ClusterObjectSync::url_path(&(), None),
            "/apis/reliablesyncs.kubeedge.io/v1alpha1/clusterobjectsyncs"
        );
        let mut d = v1beta1::Device::new("t1", v1beta1::DeviceSpec::default());
        d.meta_mut().namespace = Some("default".into());
        assert_eq!(d.meta().name.as_deref(), Some("t1"));
        assert_eq!(
            v1beta1::Device::api_version(&()),
            "devices.kubeedge.io/v1beta1"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["kind"], "Device");
        assert_eq!(reliablesyncs::object_sync_name("edge-1", "u"), "edge-1.u");
    }
}
