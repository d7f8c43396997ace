//! The catalog fed in process from a kubeedge-apiserver store (as edgecore feeds it from its
//! MetaServer view): a listed Service, Endpoints created, narrowed and deleted, and a Service
//! deleted, each seen by the catalog.

mod common;

use common::until;
use kubeedge_apiserver::{ObjectKey, SqliteConfig, SqliteStore, Store, WriteOp};
use kubeedge_mesh::catalog::{store_feed, Catalog, FilterMode};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn key(resource: &str, name: &str) -> ObjectKey {
    ObjectKey::new(resource, "default", name)
}

#[tokio::test]
async fn the_catalog_follows_a_store_in_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open_with(dir.path().join("state.db"), SqliteConfig::default())?;
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}});
    store
        .write(WriteOp::Create {
            key: key("core/services", "web"),
            value: svc,
        })
        .await?;
    let catalog = Catalog::new();
    let cancel = CancellationToken::new();
    tokio::spawn(store_feed::run(
        store.clone(),
        catalog.clone(),
        FilterMode::default(),
        cancel.clone(),
    ));
    until("the listed Service", || async {
        catalog.snapshot().service("default", "web").map(|_| ())
    })
    .await?;

    let ep = |ips: &[&str]| {
        let addrs: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!({"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": "web", "namespace": "default"},
               "subsets": [{"addresses": addrs, "ports": [{"port": 8080}]}]})
    };
    store
        .write(WriteOp::Create {
            key: key("core/endpoints", "web"),
            value: ep(&["10.244.1.5", "10.244.2.6"]),
        })
        .await?;
    until("two backends", || async {
        (catalog.snapshot().backends("default", "web").len() == 2).then_some(())
    })
    .await?;
    store
        .write(WriteOp::Update {
            key: key("core/endpoints", "web"),
            value: ep(&["10.244.2.6"]),
            expected_rv: None,
        })
        .await?;
    until("one backend", || async {
        (catalog.snapshot().backends("default", "web").len() == 1).then_some(())
    })
    .await?;
    store
        .write(WriteOp::Delete {
            key: key("core/services", "web"),
            expected_rv: None,
        })
        .await?;
    until("the Service gone", || async {
        catalog
            .snapshot()
            .service("default", "web")
            .is_none()
            .then_some(())
    })
    .await?;
    cancel.cancel();
    Ok(())
}
