//! Typed names used on the wire: message groups, operations, module (source) names and
//! resource-type tokens. Each has an `Unknown(String)` fallback so that nothing a peer sends is
//! lost: `as_str` always gives back the exact text that was parsed.

use std::fmt;
use std::str::FromStr;

macro_rules! wire_name {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// Any other text, kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// The exact wire text.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Unknown(s) => s.as_str(),
                }
            }

            /// Every known variant, for tests and strategies.
            pub const KNOWN: &'static [&'static str] = &[ $( $text ),+ ];
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => Self::$variant, )+
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $( $text => Self::$variant, )+
                    _ => Self::Unknown(s),
                }
            }
        }

        impl FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::from(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}

pub(crate) use wire_name;

wire_name! {
    /// `route.group`: the module group a message is for on the receiving side (PROTOCOL.md §1.6).
    Group {
        /// `resource`: Kubernetes objects (edge: meta manager).
        Resource => "resource",
        /// `twin`: device twin.
        Twin => "twin",
        /// `func`: functions (routed like `resource` on the edge).
        Func => "func",
        /// `user`: event bus / service bus / router traffic.
        User => "user",
        /// `meta`: the edge meta manager.
        Meta => "meta",
        /// `hub`: the edge hub itself.
        Hub => "hub",
        /// `edged`.
        Edged => "edged",
        /// `bus`: event bus and service bus.
        Bus => "bus",
        /// `edgestream`.
        EdgeStream => "edgestream",
        /// `dynamiccontroller`: MetaServer Application requests.
        DynamicController => "dynamiccontroller",
        /// `nodeupgradejobcontroller`.
        NodeUpgradeJobController => "nodeupgradejobcontroller",
        /// `cloudhub`.
        CloudHub => "cloudhub",
        /// `taskmanager` (upstream HEAD).
        TaskManager => "taskmanager",
    }
}

wire_name! {
    /// `route.operation` (PROTOCOL.md §1.4).
    Operation {
        /// `insert`.
        Insert => "insert",
        /// `delete`.
        Delete => "delete",
        /// `query`.
        Query => "query",
        /// `update`.
        Update => "update",
        /// `patch`.
        Patch => "patch",
        /// `upload`.
        Upload => "upload",
        /// `response`: a reply or an ack.
        Response => "response",
        /// `error`: an error reply.
        Error => "error",
        /// `connect` (edge internal).
        Connect => "connect",
        /// `subscribe`.
        Subscribe => "subscribe",
        /// `unsubscribe`.
        Unsubscribe => "unsubscribe",
        /// `message`.
        Message => "message",
        /// `publish`.
        Publish => "publish",
        /// `get_result`.
        GetResult => "get_result",
        /// `keepalive`: the edge heartbeat.
        Keepalive => "keepalive",
        /// `get`.
        Get => "get",
        /// `list`.
        List => "list",
        /// `detail`.
        Detail => "detail",
        /// `delta`.
        Delta => "delta",
        /// `document`.
        Document => "document",
        /// `updated`.
        Updated => "updated",
        /// `deleted`.
        Deleted => "deleted",
        /// `connected` (cloud internal connection event).
        Connected => "connected",
        /// `disconnected`.
        Disconnected => "disconnected",
        /// `applicationResponse`: dynamic controller reply to a MetaServer Application.
        ApplicationResponse => "applicationResponse",
        /// `upgrade`: node upgrade job.
        Upgrade => "upgrade",
        /// `unhold-upgrade` (upstream HEAD).
        UnholdUpgrade => "unhold-upgrade",
        /// `start`: service bus listener control.
        Start => "start",
        /// `stop`: service bus listener control.
        Stop => "stop",
        /// `action`.
        Action => "action",
        /// `action_result`.
        ActionResult => "action_result",
        /// CSI `createvolume`.
        CreateVolume => "createvolume",
        /// CSI `deletevolume`.
        DeleteVolume => "deletevolume",
        /// CSI `controllerpublishvolume`.
        ControllerPublishVolume => "controllerpublishvolume",
        /// CSI `controllerunpublishvolume`.
        ControllerUnpublishVolume => "controllerunpublishvolume",
        /// Viaduct control `header` (never a real operation).
        ViaductHeader => "header",
        /// Viaduct control `config` (never a real operation).
        ViaductConfig => "config",
        /// Viaduct control `ping` (never a real operation).
        ViaductPing => "ping",
        /// Viaduct control `pong` (never a real operation).
        ViaductPong => "pong",
    }
}

impl Operation {
    /// A CSI volume operation (NO-ACK, routed to the CSI path).
    pub fn is_volume(&self) -> bool {
        matches!(
            self,
            Self::CreateVolume
                | Self::DeleteVolume
                | Self::ControllerPublishVolume
                | Self::ControllerUnpublishVolume
        )
    }

    /// A viaduct control operation that the receiving connection answers with `ack` itself
    /// (PROTOCOL.md §2.2).
    pub fn is_viaduct_control(&self) -> bool {
        matches!(
            self,
            Self::ViaductHeader | Self::ViaductConfig | Self::ViaductPing | Self::ViaductPong
        )
    }
}

wire_name! {
    /// `route.source`: the sending module's name (PROTOCOL.md §1.6).
    Source {
        /// `websocket`: the edge hub (also the keepalive source).
        EdgeHubWebsocket => "websocket",
        /// `edgehub`: edge-internal connection events.
        EdgeHub => "edgehub",
        /// `metamanager`.
        MetaManager => "metamanager",
        /// `meta`: source of the ack to device-controller inserts/deletes (upstream quirk).
        Meta => "meta",
        /// `edged`.
        Edged => "edged",
        /// `twin`: the edge device twin.
        Twin => "twin",
        /// `eventbus`.
        EventBus => "eventbus",
        /// `servicebus`.
        ServiceBus => "servicebus",
        /// `bus`: MQTT to twin.
        Bus => "bus",
        /// `edgestream`.
        EdgeStream => "edgestream",
        /// `metaserver`: Application requests.
        MetaServer => "metaserver",
        /// `taskmanager` (upstream HEAD).
        TaskManager => "taskmanager",
        /// `cloudhub`.
        CloudHub => "cloudhub",
        /// `edgemgr`.
        EdgeMgr => "edgemgr",
        /// `edgecontroller`.
        EdgeController => "edgecontroller",
        /// `devicecontroller`.
        DeviceController => "devicecontroller",
        /// `nodeupgradejobcontroller`.
        NodeUpgradeJobController => "nodeupgradejobcontroller",
        /// `synccontroller`.
        SyncController => "synccontroller",
        /// `dynamiccontroller`.
        DynamicController => "dynamiccontroller",
        /// `cloudStream` (capital S, as upstream spells it).
        CloudStream => "cloudStream",
        /// `router`.
        Router => "router",
        /// `router_eventbus`.
        RouterEventBus => "router_eventbus",
        /// `router_servicebus`.
        RouterServiceBus => "router_servicebus",
        /// `resource`: used as a source by cloudhub's connect-failure notice (upstream quirk).
        Resource => "resource",
    }
}

wire_name! {
    /// A resource-type token inside a resource path (PROTOCOL.md §1.5).
    ResourceType {
        /// `pod`.
        Pod => "pod",
        /// `configmap`.
        ConfigMap => "configmap",
        /// `serviceaccounttoken`.
        ServiceAccountToken => "serviceaccounttoken",
        /// `secret`.
        Secret => "secret",
        /// `node`.
        Node => "node",
        /// `podlist`.
        PodList => "podlist",
        /// `podstatus`.
        PodStatus => "podstatus",
        /// `podpatch`.
        PodPatch => "podpatch",
        /// `nodestatus`.
        NodeStatus => "nodestatus",
        /// `nodepatch`.
        NodePatch => "nodepatch",
        /// `rule`.
        Rule => "rule",
        /// `ruleendpoint`.
        RuleEndpoint => "ruleendpoint",
        /// `rulestatus`.
        RuleStatus => "rulestatus",
        /// `lease`.
        Lease => "lease",
        /// `service`.
        Service => "service",
        /// `endpoints`.
        Endpoints => "endpoints",
        /// `persistentvolume`.
        PersistentVolume => "persistentvolume",
        /// `persistentvolumeclaim`.
        PersistentVolumeClaim => "persistentvolumeclaim",
        /// `volumeattachment`.
        VolumeAttachment => "volumeattachment",
        /// `volume`.
        Volume => "volume",
        /// `device`.
        Device => "device",
        /// `devicemodel`.
        DeviceModel => "devicemodel",
        /// `event` (upstream HEAD).
        Event => "event",
        /// `serviceaccountaccess` (upstream HEAD).
        ServiceAccountAccess => "serviceaccountaccess",
        /// `certificatesigningrequest` (upstream HEAD).
        CertificateSigningRequest => "certificatesigningrequest",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_round_trip() {
        for s in Operation::KNOWN {
            assert_eq!(Operation::from(*s).as_str(), *s);
            assert!(!matches!(Operation::from(*s), Operation::Unknown(_)));
        }
        assert_eq!(Operation::from("GET"), Operation::Unknown("GET".into()));
        assert_eq!(Source::from("cloudStream"), Source::CloudStream);
        assert_eq!(Group::from("resource").to_string(), "resource");
        assert!(Operation::CreateVolume.is_volume());
        assert!(Operation::ViaductPing.is_viaduct_control());
    }
}
