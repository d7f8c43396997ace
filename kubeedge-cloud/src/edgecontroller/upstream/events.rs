//! Events from edges, as upstream's edge controller handles them (`processEvent` in
//! `cloud/pkg/edgecontroller/controller/upstream.go`): an `insert` creates the Event, an
//! `update` (the same event again, its count up) replaces it. The reporting node is the
//! sender. Unlike upstream, the edge gets the usual `ObjectResp` reply: our edges' durable
//! outbox waits for an answer before it sends what follows.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kubeedge_proto::{Message, StatusError};

use super::{decode, object_resp, reply, rv_of, status_error, Ctx};

/// Create or replace the Event in `msg` (namespace `ns`, name from the object or `name`).
pub(super) async fn event(ctx: &Ctx, node: &str, msg: &Message, ns: &str, name: &str) -> Message {
    let mut ev: Event = match decode(msg) {
        Ok(e) => e,
        Err(e) => {
            let err = StatusError::failure(400, "BadRequest", e);
            return reply(msg, object_resp::<Event>(None, Some(&err)), "");
        }
    };
    ev.metadata.namespace = Some(ns.to_owned());
    let name = ev
        .metadata
        .name
        .get_or_insert_with(|| name.to_owned())
        .clone();
    if let Some(src) = ev.source.as_mut() {
        src.host = Some(node.to_owned());
    }
    if ev.reporting_instance.is_some() {
        ev.reporting_instance = Some(node.to_owned());
    }
    ev.metadata.resource_version = None;
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams::default();
    let done = match api.get_opt(&name).await {
        Ok(Some(old)) => {
            ev.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &pp, &ev).await
        }
        Ok(None) => api.create(&pp, &ev).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(e) => reply(msg, object_resp(Some(&e), None), &rv_of(&e.metadata)),
        Err(e) => reply(msg, object_resp::<Event>(None, Some(&status_error(&e))), ""),
    }
}
