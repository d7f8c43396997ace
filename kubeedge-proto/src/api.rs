//! KubeEdge API types as serde structs: devices (`devices.kubeedge.io` v1beta1, and v1alpha2 as
//! v1.12 uses it) and reliable sync (`reliablesyncs.kubeedge.io/v1alpha1`). With the `kube`
//! feature they implement `kube_core::Resource`, so `kube::Api<Device>` works.
//!
//! Protocol-specific blocks that KubeEdge itself never interprets (`configData`, protocol
//! configs, visitors, push methods) stay as JSON values so that every field a user wrote
//! survives a round trip.

use serde::{Deserialize, Serialize};

/// Implements the type/object metadata plumbing (and `kube_core::Resource` with the feature).
macro_rules! kube_object {
    ($ty:ident, $spec:ty, $status:ty, group = $group:literal, version = $version:literal,
     kind = $kind:literal, plural = $plural:literal, scope = $scope:ident) => {
        #[doc = concat!("`", $group, "/", $version, "` `", $kind, "`.")]
        #[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
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
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
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
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(name.to_owned()),
                        ..k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta::default()
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
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// Declares a `devices.kubeedge.io` version's `Device` (over that version's `DeviceSpec` and
/// `DeviceStatus`) and `DeviceModel` (over its `DeviceModelSpec` and [`NoStatus`]).
macro_rules! device_kinds {
    ($version:literal) => {
        mod device {
            use super::{DeviceSpec, DeviceStatus};
            kube_object!(
                Device,
                DeviceSpec,
                DeviceStatus,
                group = "devices.kubeedge.io",
                version = $version,
                kind = "Device",
                plural = "devices",
                scope = NamespaceResourceScope
            );
        }
        mod model {
            use super::{DeviceModelSpec, NoStatus};
            kube_object!(
                DeviceModel,
                DeviceModelSpec,
                NoStatus,
                group = "devices.kubeedge.io",
                version = $version,
                kind = "DeviceModel",
                plural = "devicemodels",
                scope = NamespaceResourceScope
            );
        }
        pub use device::Device;
        pub use model::DeviceModel;
    };
}

// The types below are the same on the wire in v1beta1 and v1alpha2 (same JSON keys, same
// meaning), so both versions use them; each version module re-exports them under its own path.

/// DeviceModel has no status; this empty struct stands in for it (both versions).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoStatus {}

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
/// DeviceModel in v1alpha2 and v1beta1, ObjectSync and ClusterObjectSync, and the Router's
/// `rules.kubeedge.io/v1` RuleEndpoint and Rule):
/// what cloudcore installs in its embedded control plane and `keadm init` applies to a cluster.
pub const CRDS: &str = include_str!("../manifests/crds.yaml");

pub mod reliablesyncs;
pub mod v1alpha2;
pub mod v1beta1;

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
