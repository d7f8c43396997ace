//! The catalog fed from an API: a `kube` watcher each on Services and Endpoints.
//!
//! On an edge node the client points at the node's MetaServer (`http://127.0.0.1:10550`),
//! which answers from the node's own store, so the catalog is filled (and kept) with the cloud
//! offline; on a cloud node it points at the API server. A lost watch re-lists (the
//! watcher's backoff), and a re-list replaces what the catalog held.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1 as core;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{backends_of, service_of, Catalog, Change, FilterMode, Key};

/// A kind the catalog follows: how one object, its deletion and a whole list become changes.
trait Followed:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static
{
    fn changed(&self, filter: FilterMode) -> Option<Change>;
    fn gone(&self) -> Option<Change>;
    fn all(list: Vec<Self>, filter: FilterMode) -> Change;
}

fn key_of<K: Resource>(k: &K) -> Option<Key> {
    Some((k.meta().namespace.clone()?, k.meta().name.clone()?))
}

impl Followed for core::Service {
    fn changed(&self, filter: FilterMode) -> Option<Change> {
        service_of(self, filter).map(Change::Service)
    }
    fn gone(&self) -> Option<Change> {
        key_of(self).map(Change::ServiceGone)
    }
    fn all(list: Vec<Self>, filter: FilterMode) -> Change {
        Change::AllServices(list.iter().filter_map(|s| service_of(s, filter)).collect())
    }
}

impl Followed for core::Endpoints {
    fn changed(&self, _: FilterMode) -> Option<Change> {
        backends_of(self).map(|(k, b)| Change::Endpoints(k, b))
    }
    fn gone(&self) -> Option<Change> {
        key_of(self).map(Change::EndpointsGone)
    }
    fn all(list: Vec<Self>, _: FilterMode) -> Change {
        Change::AllEndpoints(list.iter().filter_map(backends_of).collect())
    }
}

/// Keeps `catalog` filled from `client` until `cancel`: every Service and Endpoints in every
/// namespace. Services are proxied or not by `filter`.
pub async fn run(client: Client, catalog: Catalog, filter: FilterMode, cancel: CancellationToken) {
    tokio::select! {
        () = follow::<core::Service>(client.clone(), catalog.clone(), filter) => {}
        () = follow::<core::Endpoints>(client, catalog, filter) => {}
        () = cancel.cancelled() => {}
    }
}

/// One kind's watch loop: a list replaces, each later event changes one object.
async fn follow<K: Followed>(client: Client, catalog: Catalog, filter: FilterMode) {
    let api: Api<K> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<K>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Vec::new()),
            Ok(Event::InitApply(obj)) => listing.get_or_insert_with(Vec::new).push(obj),
            Ok(Event::InitDone) => {
                let list = listing.take().unwrap_or_default();
                debug!(kind = %K::kind(&()), count = list.len(), "catalog listed");
                catalog.apply([K::all(list, filter)]);
            }
            Ok(Event::Apply(obj)) => catalog.apply(obj.changed(filter)),
            Ok(Event::Delete(obj)) => catalog.apply(obj.gone()),
            Err(e) => warn!(kind = %K::kind(&()), error = %e, "catalog watch failed; retrying"),
        }
    }
}
