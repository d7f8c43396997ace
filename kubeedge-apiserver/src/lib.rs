//! A Kubernetes-compatible REST API server on SQLite or etcd.
//!
//! The protocol is a tower service, [`ApiService`], over a [`Store`] (the SQLite implementation
//! is [`SqliteStore`]: WAL, one writer thread with group commit, one monotonic revision across
//! all objects, compare-and-swap writes, a bounded in-memory history window for resuming
//! watches). With the `etcd` feature, `EtcdStore` keeps the objects in an etcd v3 cluster
//! instead, as kube-apiserver does (its key layout, etcd's mod revision as the
//! resourceVersion), so that several API servers share one state; [`AnyStore`] is either,
//! chosen at run time. It serves in-process (`kube::Client::new(service, "default")`, no socket), over
//! HTTPS with bearer-token and client-certificate authentication ([`serve`], [`Pki`],
//! [`write_kubeconfig`]), or over plain HTTP on loopback ([`serve_insecure`]).
//!
//! Served: discovery (aggregated v2 when asked, unaggregated otherwise), `/version`, health
//! endpoints, minimal OpenAPI documents, get/list/watch/create/update/patch/delete/
//! deletecollection, the `status`, `scale` and pod `binding` subresources, label and field
//! selectors, `as=Table`, the core and apps types kubeedge needs, and
//! CustomResourceDefinitions (validated against their structural schema).
//!
//! Authenticated requests are authorized as `--authorization-mode=Node,RBAC` with
//! NodeRestriction ([`authz`]): Kubernetes' default roles, the escalation check on RBAC writes,
//! the access reviews behind `kubectl auth can-i`, impersonation, and ServiceAccount tokens
//! (TokenRequest). In-process callers are trusted (and authorized when they impersonate).
//!
//! Not provided: controllers (a Deployment creates no pods here; the cloud's embedded control
//! plane runs those), admission
//! webhooks, aggregated API servers, protobuf responses (protobuf request bodies are decoded
//! for the kinds `kubectl create`/`expose` send: Namespace, ConfigMap, Secret, ServiceAccount,
//! Service and Deployment) and HTTP/2, `kubectl explain` schemas,
//! field-manager tracking of server-side apply (an apply patch is merged like a JSON merge
//! patch), CRD version conversion (versions share one stored form), consistent snapshots
//! across list pages, and watch resumption across a restart (older revisions get 410 Gone).
//!
//! # Example
//!
//! An API server on a SQLite file, driven in process by kube-rs (serve it to kubectl with
//! [`serve`] and a [`Pki`]):
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use kubeedge_apiserver::{ApiConfig, ApiService, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("state.db"))?;
//! let service = ApiService::new(store, ApiConfig::default()).await?;
//! let client = kube::Client::new(service, "default");
//!
//! let cms: Api<ConfigMap> = Api::default_namespaced(client);
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! cm.data = Some([("mode".to_string(), "edge".to_string())].into());
//! cms.create(&PostParams::default(), &cm).await?;
//!
//! let stored = cms.get("settings").await?;
//! assert!(stored.metadata.resource_version.is_some());
//! assert_eq!(stored.data.unwrap_or_default()["mode"], "edge");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod authz;
mod body;
mod discovery;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod nodeproxy;
mod objects;
mod patch;
mod protobuf;
mod registry;
mod schema;
mod selector;
mod serve;
mod service;
mod store;
mod table;
mod time;
pub mod validation;

pub use body::ResponseBody;
pub use error::{Error, Result, StoreError};
pub use nodeproxy::{
    NodeProxy, NodeProxyError, NodeProxyHandle, UpgradeKind, UpgradeResponse, UpgradedIo,
};
pub use serve::{
    serve, serve_insecure, write_kubeconfig, ClientCert, Pki, ServeConfig, ServerTls, UserInfo,
};
pub use service::{ApiConfig, ApiService};
pub use store::{
    AnyStore, Event, EventType, ListPage, ObjectKey, Scope, SqliteConfig, SqliteStore, Store,
    Stored, Subscription, WriteOp,
};
#[cfg(feature = "etcd")]
pub use store::{EtcdConfig, EtcdStore, EtcdTls};
pub use validation::{decode_json_object, DecodeError, Decoded, FieldValidation};
