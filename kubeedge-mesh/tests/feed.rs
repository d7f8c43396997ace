//! The catalog fed by its `kube` watchers from a real API server (kubeedge-apiserver on SQLite
//! in a temp dir, the server edge MetaServers and the embedded control plane run): Services
//! and Endpoints created, changed and deleted through the API reach the catalog.

mod common;

use common::until;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use kubeedge_apiserver::{ApiConfig, ApiService, SqliteConfig, SqliteStore};
use kubeedge_mesh::catalog::{feed, Catalog, FilterMode, SERVICE_PROXY_NAME};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn services_and_endpoints_written_to_the_api_reach_the_catalog() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open_with(dir.path().join("state.db"), SqliteConfig::default())?;
    let client = Client::new(
        ApiService::new(store, ApiConfig::default()).await?,
        "default",
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    // One before the watch starts (listed), one after (watched).
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "nginx-svc"},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 8080, "targetPort": 80}]}
            }))?,
        )
        .await?;
    let catalog = Catalog::new();
    let cancel = CancellationToken::new();
    tokio::spawn(feed::run(
        client,
        catalog.clone(),
        FilterMode::default(),
        cancel.clone(),
    ));
    until("the listed Service", || async {
        catalog
            .snapshot()
            .service("default", "nginx-svc")
            .map(|_| ())
    })
    .await?;

    endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "nginx-svc"},
                "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "edge-1"},
                                           {"ip": "10.244.2.6", "nodeName": "edge-2"}],
                             "ports": [{"port": 80, "protocol": "TCP"}]}]
            }))?,
        )
        .await?;
    until("two backends", || async {
        (catalog.snapshot().backends("default", "nginx-svc").len() == 2).then_some(())
    })
    .await?;

    // edge-2's pod goes: its address leaves the Endpoints.
    let mut ep = endpoints.get("nginx-svc").await?;
    if let Some(subsets) = ep.subsets.as_mut() {
        if let Some(addrs) = subsets[0].addresses.as_mut() {
            addrs.retain(|a| a.node_name.as_deref() != Some("edge-2"));
        }
    }
    endpoints
        .replace("nginx-svc", &PostParams::default(), &ep)
        .await?;
    until("one backend", || async {
        let snap = catalog.snapshot();
        let b = snap.backends("default", "nginx-svc");
        (b.len() == 1 && b[0].node.as_deref() == Some("edge-1")).then_some(())
    })
    .await?;

    // The opt-out label, added later, is seen.
    let mut svc = services.get("nginx-svc").await?;
    svc.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(SERVICE_PROXY_NAME.into(), "other".into());
    services
        .replace("nginx-svc", &PostParams::default(), &svc)
        .await?;
    until("opted out", || async {
        let snap = catalog.snapshot();
        snap.service("default", "nginx-svc")
            .filter(|s| !s.proxied)
            .map(|_| ())
    })
    .await?;

    services
        .delete("nginx-svc", &DeleteParams::default())
        .await?;
    endpoints
        .delete("nginx-svc", &DeleteParams::default())
        .await?;
    until("gone", || async {
        let snap = catalog.snapshot();
        (snap.service("default", "nginx-svc").is_none()
            && snap.backends("default", "nginx-svc").is_empty())
        .then_some(())
    })
    .await?;
    cancel.cancel();
    Ok(())
}
