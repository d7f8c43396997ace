//! Core v1 Events (what `kubectl describe` and `kubectl get events` show), with repeats of the
//! same reason and message about the same object folded into one Event whose count grows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

/// How many distinct (object, reason, message) series are remembered for folding.
const SERIES_LIMIT: usize = 4096;

/// Event type `Normal`.
pub(crate) const NORMAL: &str = "Normal";
/// Event type `Warning`.
pub(crate) const WARNING: &str = "Warning";

/// (object uid, reason, message).
type SeriesKey = (String, String, String);

#[derive(Clone)]
struct Series {
    namespace: String,
    name: String,
    count: i32,
}

/// Writes Events; clones share the folding memory.
#[derive(Clone)]
pub(crate) struct Recorder {
    client: Client,
    series: Arc<Mutex<HashMap<SeriesKey, Series>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// The reference an Event makes to an object.
pub(crate) fn reference<K: Resource<DynamicType = ()>>(o: &K) -> ObjectReference {
    let m = o.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            series: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Records an event from `component` about `about`. Failures are logged, never returned:
    /// events are best effort.
    pub(crate) async fn publish(
        &self,
        component: &str,
        about: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let uid = about.uid.clone().unwrap_or_default();
        let series_key = (uid, reason.to_owned(), message.clone());
        let now = Time(Timestamp::now());
        let known = self
            .series
            .lock()
            .ok()
            .and_then(|s| s.get(&series_key).cloned());
        if let Some(mut s) = known {
            s.count += 1;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &s.namespace);
            let patch = json!({"count": s.count, "lastTimestamp": now});
            match api
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Ok(mut m) = self.series.lock() {
                        m.insert(series_key, s);
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "event update failed; writing a new one");
                }
            }
        }
        // Cluster-scoped objects (nodes) have their events in `default`, as upstream does.
        let namespace = about
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let nanos = now.0.as_nanosecond();
        let name = format!(
            "{}.{:x}",
            about.name.clone().unwrap_or_default(),
            u128::try_from(nanos).unwrap_or_default()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: about,
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(type_.to_owned()),
            source: Some(EventSource {
                component: Some(component.to_owned()),
                host: None,
            }),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            reporting_component: Some(component.to_owned()),
            reporting_instance: Some(component.to_owned()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                if let Ok(mut m) = self.series.lock() {
                    if m.len() >= SERIES_LIMIT {
                        m.clear();
                    }
                    m.insert(
                        series_key,
                        Series {
                            namespace,
                            name,
                            count: 1,
                        },
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, reason, "event not recorded"),
        }
    }
}
