//! Resending what an edge has not acked: on reconnect, periodically and after a restart, each
//! tracked object is looked up live and sent again (or its delete, when it is gone).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kubeedge_proto::{Content, Message, Operation, ResourceType};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ledger::Tracked;
use super::{Inner, Live};
use crate::hub::{CloudHub, TrySend};
use crate::object::newer;

pub(super) async fn resync_loop(inner: Arc<Inner>, hub: CloudHub, cancel: CancellationToken) {
    let period = inner.config.resync_period.max(Duration::from_millis(10));
    let mut next = tokio::time::Instant::now() + period;
    loop {
        let nodes: Vec<String> = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {
                next = tokio::time::Instant::now() + period;
                inner.ledger().nodes()
            }
            _ = inner.resync_wake.notified() => {
                let mut now = inner.resync_now.lock().unwrap_or_else(PoisonError::into_inner);
                std::mem::take(&mut *now)
            }
        };
        for node in nodes {
            // An offline node gets its resync when it connects.
            if !hub.is_connected(&node) {
                continue;
            }
            resync_node(&inner, &node).await;
        }
    }
}

pub(super) fn lookup(inner: &Inner, node: &str, t: &Tracked) -> Live {
    let sources = inner
        .sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for s in sources {
        match s.lookup(
            node,
            &t.api_version,
            &t.kind,
            t.namespace.as_deref(),
            &t.name,
        ) {
            Live::NotMine => continue,
            other => return other,
        }
    }
    Live::NotMine
}

pub(super) async fn resync_node(inner: &Inner, node: &str) {
    let rows = inner.ledger().rows(node);
    for (uid, e) in rows {
        let live = match lookup(inner, node, &e.object) {
            Live::NotMine => fetch(&inner.client, &e.object).await,
            other => other,
        };
        let msg = match live {
            Live::NotReady | Live::NotWanted | Live::NotMine => continue,
            Live::Gone => delete_message(&e.object, &uid),
            Live::Found { uid: live_uid, .. } if live_uid != uid => delete_message(&e.object, &uid),
            Live::Found {
                resource_version,
                push,
                ..
            } => {
                if !newer(&resource_version, &e.acked_rv) {
                    continue;
                }
                Some(*push)
            }
        };
        let Some(msg) = msg else { continue };
        debug!(%node, op = msg.route.operation_str(), resource = %msg.route.resource, "resync");
        match inner.down.try_send(node, msg) {
            Ok(_) | Err(TrySend::Full(_)) => {}
            Err(TrySend::Failed(e)) => debug!(%node, error = %e, "resync send failed"),
        }
    }
}

/// The delete upstream's synccontroller sends for a vanished object: name, namespace, UID.
fn delete_message(t: &Tracked, uid: &str) -> Option<Message> {
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), t.name.clone().into());
    if let Some(ns) = &t.namespace {
        meta.insert("namespace".into(), ns.clone().into());
    }
    meta.insert("uid".into(), uid.into());
    let obj = serde_json::json!({
        "apiVersion": t.api_version,
        "kind": kind_name(&t.kind),
        "metadata": meta,
    });
    let ns = t
        .namespace
        .as_deref()
        .unwrap_or(kubeedge_proto::NULL_SEGMENT);
    let resource =
        kubeedge_proto::ResourcePath::object(ns, ResourceType::from(t.kind.as_str()), &t.name);
    let route = kubeedge_proto::Route::new(
        kubeedge_proto::Source::EdgeController,
        kubeedge_proto::Group::Resource,
        Operation::Delete,
        resource.to_string(),
    );
    Content::json(&obj).ok().map(|c| Message::new(route, c))
}

/// A Kind from upstream's lower-case `objectKind`, for the kinds KubeEdge sends.
fn kind_name(kind: &str) -> String {
    match kind {
        "pod" => "Pod".into(),
        "configmap" => "ConfigMap".into(),
        "secret" => "Secret".into(),
        "service" => "Service".into(),
        "endpoints" => "Endpoints".into(),
        "node" => "Node".into(),
        "lease" => "Lease".into(),
        "device" => "Device".into(),
        "devicemodel" => "DeviceModel".into(),
        "persistentvolume" => "PersistentVolume".into(),
        "persistentvolumeclaim" => "PersistentVolumeClaim".into(),
        "volumeattachment" => "VolumeAttachment".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// Look an object up in the API (kinds no controller cache holds).
async fn fetch(client: &kube::Client, t: &Tracked) -> Live {
    let (group, version) = match t.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", t.api_version.as_str()),
    };
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind_name(&t.kind)));
    let api: Api<DynamicObject> = match &t.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    match api.get_opt(&t.name).await {
        Ok(None) => Live::Gone,
        Ok(Some(obj)) => {
            let uid = obj.metadata.uid.clone().unwrap_or_default();
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            let ns = t
                .namespace
                .as_deref()
                .unwrap_or(kubeedge_proto::NULL_SEGMENT);
            match crate::object::push(
                Operation::Update,
                ns,
                ResourceType::from(t.kind.as_str()),
                &t.name,
                &rv,
                &obj,
            ) {
                Ok(push) => Live::Found {
                    uid,
                    resource_version: rv,
                    push: Box::new(push),
                },
                Err(_) => Live::NotReady,
            }
        }
        Err(e) => {
            debug!(object = %t.name, error = %e, "resync lookup failed");
            Live::NotReady
        }
    }
}
