//! Shared test helpers: Services and Endpoints as the API serves them, waiting on a
//! condition with a deadline.

#![allow(dead_code)]

pub(crate) mod netns;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use kubeedge_mesh::catalog::{backends_of, service_of, Catalog, Change, FilterMode};
use serde_json::{json, Value};

/// Puts the Service `spec` (JSON) into `catalog`.
pub(crate) fn put_service(catalog: &Catalog, ns: &str, name: &str, labels: Value, spec: Value) {
    let svc: core::Service = serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": spec,
    }))
    .expect("a Service");
    let svc = service_of(&svc, FilterMode::default()).expect("converted");
    catalog.apply([Change::Service(svc)]);
}

/// Puts the Endpoints `subsets` (JSON) into `catalog`.
pub(crate) fn put_endpoints(catalog: &Catalog, ns: &str, name: &str, subsets: Value) {
    let ep: core::Endpoints = serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "subsets": subsets,
    }))
    .expect("Endpoints");
    let (key, backends) = backends_of(&ep).expect("converted");
    catalog.apply([Change::Endpoints(key, backends)]);
}

/// Waits (10 s at most) until `f` gives `Some`.
pub(crate) async fn until<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{what}: not within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
