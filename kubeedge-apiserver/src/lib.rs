//! A Kubernetes-compatible REST API server on SQLite.
//!
//! The protocol is a tower service, [`ApiService`], over a [`Store`] (the SQLite
//! implementation is [`SqliteStore`]). It serves in-process (`kube::Client::new(service, ..)`)
//! or over HTTPS with bearer-token and client-certificate authentication ([`serve`]).
//!
//! Non-goals: controllers (a Deployment creates no pods here), admission webhooks, aggregated
//! API servers, protobuf encoding, server-side field validation against schemas.

mod body;
mod discovery;
mod error;
mod objects;
mod patch;
mod registry;
mod schema;
mod selector;
mod serve;
mod service;
mod store;
mod table;
mod time;

pub use body::ResponseBody;
pub use error::{Error, Result, StoreError};
pub use serve::{
    serve, serve_insecure, write_kubeconfig, ClientCert, Pki, ServeConfig, ServerTls, UserInfo,
};
pub use service::{ApiConfig, ApiService};
pub use store::{
    Event, EventType, ListPage, ObjectKey, Scope, SqliteConfig, SqliteStore, Store, Stored,
    Subscription, WriteOp,
};
