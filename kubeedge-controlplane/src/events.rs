//! Core v1 Events (what `kubectl describe` and `kubectl get events` show), with repeats of the
//! same reason and message about the same object folded into one Event whose count grows.
//!
//! Publishing never waits for the API: events go to a bounded queue that one writer drains
//! (as client-go's broadcaster does), so a burst of bindings is not slowed by its Scheduled
//! events. When the queue is full, new events are dropped: they are best effort.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

/// How many distinct (object, reason, message) series are remembered for folding.
const SERIES_LIMIT: usize = 4096;

/// Events waiting for the writer.
const QUEUE: usize = 4096;

/// One event to write.
struct Job {
    component: String,
    about: ObjectReference,
    type_: String,
    reason: String,
    message: String,
    at: Time,
}

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

/// Queues Events for the [`Writer`]; clones share its queue.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: tokio::sync::mpsc::Sender<Job>,
}

/// Writes the queued Events, folding repeats.
pub(crate) struct Writer {
    client: Client,
    rx: tokio::sync::mpsc::Receiver<Job>,
    series: HashMap<SeriesKey, Series>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
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
    /// A recorder and the writer that must run for its events to be written.
    pub(crate) fn new(client: Client) -> (Self, Writer) {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        (
            Self { tx },
            Writer {
                client,
                rx,
                series: HashMap::new(),
            },
        )
    }

    /// Records an event from `component` about `about`, stamped now. Never waits: when the
    /// queue is full the event is dropped (events are best effort).
    pub(crate) async fn publish(
        &self,
        component: &str,
        about: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let job = Job {
            component: component.to_owned(),
            about,
            type_: type_.to_owned(),
            reason: reason.to_owned(),
            message,
            at: Time(Timestamp::now()),
        };
        if self.tx.try_send(job).is_err() {
            tracing::debug!(reason, "event queue full or closed: event dropped");
        }
    }
}

impl Writer {
    /// Writes queued events until `cancel` fires or every recorder is gone.
    pub(crate) async fn run(mut self, cancel: tokio_util::sync::CancellationToken) {
        loop {
            let job = tokio::select! {
                () = cancel.cancelled() => return,
                j = self.rx.recv() => match j { Some(j) => j, None => return },
            };
            self.write(job).await;
        }
    }

    async fn write(&mut self, job: Job) {
        let Job {
            component,
            about,
            type_,
            reason,
            message,
            at: now,
        } = job;
        let (component, type_, reason) = (component.as_str(), type_.as_str(), reason.as_str());
        let uid = about.uid.clone().unwrap_or_default();
        let series_key = (uid, reason.to_owned(), message.clone());
        let known = self.series.get(&series_key).cloned();
        if let Some(mut s) = known {
            s.count += 1;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &s.namespace);
            let patch = json!({"count": s.count, "lastTimestamp": now});
            match api
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.series.insert(series_key, s);
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
                if self.series.len() >= SERIES_LIMIT {
                    self.series.clear();
                }
                self.series.insert(
                    series_key,
                    Series {
                        namespace,
                        name,
                        count: 1,
                    },
                );
            }
            Err(e) => tracing::debug!(error = %e, reason, "event not recorded"),
        }
    }
}
