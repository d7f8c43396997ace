//! A Kubernetes-compatible REST API server on SQLite.
//!
//! The protocol is a tower service, [`ApiService`], over a [`Store`] (the SQLite
//! implementation is [`SqliteStore`]). It serves in-process (`kube::Client::new(service, ..)`)
//! or over HTTPS with bearer-token and client-certificate authentication ([`serve`]).
//!
//! Non-goals: controllers (deployments create no pods here), admission webhooks, aggregated
//! API servers, protobuf encoding.

mod error;
mod store;

pub use error::{Error, Result, StoreError};
pub use store::{
    Event, EventType, ListPage, ObjectKey, Scope, SqliteConfig, SqliteStore, Store, Stored,
    Subscription, WriteOp,
};
