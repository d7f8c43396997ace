//! The catalog fed in process from a [`kubeedge_apiserver::Store`]: edgecore's MetaServer
//! view, read without HTTP, JSON re-encoding or a Kubernetes client (what keeps the mesh small
//! inside edgecore). A list at one revision, then every event after it; a watch that falls
//! behind lists again.

use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use kubeedge_apiserver::{Event, EventType, Scope, Store, Stored};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{backends_of, service_of, Catalog, Change, FilterMode};

const SERVICES: &str = "core/services";
const ENDPOINTS: &str = "core/endpoints";

/// Keeps `catalog` filled from `store` until `cancel`.
pub async fn run<S: Store>(
    store: S,
    catalog: Catalog,
    filter: FilterMode,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            r = follow(&store, &catalog, filter) => {
                if let Err(e) = r {
                    warn!(error = %e, "catalog: the store cannot be read; trying again");
                }
            }
            () = cancel.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// One list and the watch after it; returns when the watch must start over.
async fn follow<S: Store>(
    store: &S,
    catalog: &Catalog,
    filter: FilterMode,
) -> Result<(), kubeedge_apiserver::StoreError> {
    let rev = store.revision();
    let services = list(store, SERVICES).await?;
    let endpoints = list(store, ENDPOINTS).await?;
    catalog.apply([
        Change::AllServices(
            services
                .iter()
                .filter_map(parse::<core::Service>)
                .filter_map(|s| service_of(&s, filter))
                .collect(),
        ),
        Change::AllEndpoints(
            endpoints
                .iter()
                .filter_map(parse::<core::Endpoints>)
                .filter_map(|e| backends_of(&e))
                .collect(),
        ),
    ]);
    debug!(
        services = services.len(),
        endpoints = endpoints.len(),
        "catalog listed from the store"
    );
    let mut sub = store.subscribe(Some(rev))?;
    catalog.apply(sub.backlog.iter().filter_map(|e| change(e, filter)));
    loop {
        match sub.live.recv().await {
            Ok(e) => catalog.apply(change(&e, filter)),
            Err(RecvError::Lagged(_)) => return Ok(()),
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

async fn list<S: Store>(
    store: &S,
    resource: &str,
) -> Result<Vec<Stored>, kubeedge_apiserver::StoreError> {
    let scope = Scope {
        resource: resource.to_owned(),
        namespace: None,
    };
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(scope.clone(), after, Some(500)).await?;
        out.extend(page.items);
        match page.more_after {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(s: &Stored) -> Option<T> {
    serde_json::from_slice(&s.raw).ok()
}

/// The catalog change of one store event (none for other resources).
fn change(e: &Event, filter: FilterMode) -> Option<Change> {
    let key = &e.object.key;
    let gone = e.kind == EventType::Deleted;
    let id = (key.namespace.clone(), key.name.clone());
    match key.resource.as_str() {
        SERVICES if gone => Some(Change::ServiceGone(id)),
        SERVICES => service_of(&parse(&e.object)?, filter).map(Change::Service),
        ENDPOINTS if gone => Some(Change::EndpointsGone(id)),
        ENDPOINTS => backends_of(&parse(&e.object)?).map(|(k, b)| Change::Endpoints(k, b)),
        _ => None,
    }
}
