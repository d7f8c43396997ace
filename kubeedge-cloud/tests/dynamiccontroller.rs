//! The DynamicController as upstream edges drive it: a real kubeedge-apiserver, CloudHub and
//! controllers, and an edge (hub client and meta manager on SQLite) sending the frames an
//! upstream edge's MetaServer sends.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use common::controlled::*;
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kubeedge_proto::{
    Application, ApplicationStatus, ApplicationVerb, Content, Message, Route, GO_ZERO_TIME,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const NODE: &str = "edge-1";

/// An Application as an upstream (v1.15 and later) edge sends it: `metaserver.NewApplication`
/// with the verb's options as `Option`, the zero `Timestamp`, and `Status` `InApplying` set by
/// the agent's `doApply` (`pkg/metaserver/application.go`,
/// `edge/pkg/metamanager/metaserver/agent/agent.go`).
fn upstream_app(key: &str, verb: ApplicationVerb, option: &Value) -> Result<Application> {
    let mut app = Application::new(key, verb, NODE);
    app.set_option(option)?;
    app.status = ApplicationStatus::InApplying;
    app.timestamp = Some(GO_ZERO_TIME.to_owned());
    Ok(app.with_identifier())
}

/// What the API answers a plain GET of `path`.
async fn api_get(client: &kube::Client, path: &str) -> Result<String> {
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json, */*")
        .body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_health_gets_pass_through_to_the_api() -> Result<()> {
    trace();
    let c = controlled().await?;
    edge_node(&c.client, NODE).await?;
    let em = edge_meta(&c.cloud, NODE).await?;
    // The keys upstream edges send for non-resource GETs: the bare path (KeyFuncReq in
    // pkg/metaserver/key.go), with `GetOptions{}` as Option (storage.go, PassThrough).
    // v1.15: /version; v1.17-v1.22: + /healthz /livez /readyz; v1.23: + discovery, openapi.
    for path in [
        "/version",
        "/healthz",
        "/livez",
        "/readyz",
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/openapi/v2",
        "/openapi/v3",
    ] {
        let app = upstream_app(path, ApplicationVerb::Get, &json!({}))?;
        let got = apply(&em.edge, app.clone()).await?;
        assert_eq!(
            got.status,
            ApplicationStatus::Approved,
            "{path}: {}",
            got.reason
        );
        assert_eq!(got.id, app.id, "{path}");
        assert_eq!(got.key, path);
        assert_eq!(got.timestamp.as_deref(), Some(GO_ZERO_TIME), "{path}");
        // The body as the API server wrote it (upstream relays RESTClient's Raw()).
        let body = String::from_utf8(got.resp_body.clone().unwrap_or_default())?;
        assert_eq!(body, api_get(&c.client, path).await?, "{path}");
    }
    let version: Value = apply(
        &em.edge,
        upstream_app("/version", ApplicationVerb::Get, &json!({}))?,
    )
    .await?
    .resp_body_json()?
    .context("version body")?;
    assert!(version["gitVersion"].is_string(), "{version}");
    // A missing group: the API's Status, as for any other GET.
    let got = apply(
        &em.edge,
        upstream_app("/apis/no.such.group", ApplicationVerb::Get, &json!({}))?,
    )
    .await?;
    assert_eq!(got.status, ApplicationStatus::Rejected);
    assert_eq!(got.error.err_status.code, 404);
    Ok(())
}

/// The `watchapp/sync` message of an upstream edge (`syncWatchApplications` in
/// edge/pkg/metamanager/metaserver/agent/agent.go): resource `watchapp/sync`, operation
/// `null`, content the map of its live watch Applications by ID.
fn watch_sync(apps: &[&Application]) -> Result<Message> {
    let map: BTreeMap<&str, &Application> = apps.iter().map(|a| (a.id.as_str(), *a)).collect();
    Ok(Message::new(
        Route::new("metaserver", "dynamiccontroller", "null", "watchapp/sync"),
        Content::json(&map)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sync_stops_unlisted_watches_and_answers_with_the_failed_map() -> Result<()> {
    trace();
    let c = controlled().await?;
    edge_node(&c.client, NODE).await?;
    let em = edge_meta(&c.cloud, NODE).await?;
    let watch = |key: &str, selector: &str| {
        upstream_app(
            key,
            ApplicationVerb::Watch,
            &json!({"labelSelector": selector}),
        )
    };
    // Two live watches; the edge then ends the secrets one.
    let kept = watch("/core/v1/configmaps/default/null", "app=kept")?;
    let ended = watch("/core/v1/secrets/default/null", "app=ended")?;
    for app in [&kept, &ended] {
        let got = apply(&em.edge, app.clone()).await?;
        assert_eq!(got.status, ApplicationStatus::Approved, "{}", got.reason);
    }
    // The edge's list as it holds it: the approved watch, one the cloud never saw (after a
    // cloudcore restart), and one the cloud cannot run.
    let mut listed = kept.clone();
    listed.status = ApplicationStatus::Approved;
    let unseen = watch("/core/v1/configmaps/default/null", "app=unseen")?;
    let broken = watch("/core/v1/configmaps", "")?;
    let req = watch_sync(&[&listed, &unseen, &broken])?;
    let reply = em.edge.client.request(req.clone(), T).await?;
    // Upstream ProcessWatchSync's envelope: the request's resource, applicationResponse.
    assert_eq!(reply.parent_id(), Some(req.id()));
    assert_eq!(reply.route.source_str(), "dynamiccontroller");
    assert_eq!(reply.route.group_str(), "resource");
    assert_eq!(reply.route.operation_str(), "applicationResponse");
    assert_eq!(reply.route.resource, "watchapp/sync");
    // The content is the map of the watches that failed (what the edge unmarshals).
    let failed: BTreeMap<String, Application> = reply.content.decode()?;
    assert_eq!(failed.keys().collect::<Vec<_>>(), [&broken.id]);
    let f = &failed[&broken.id];
    assert_eq!(f.status, ApplicationStatus::Rejected);
    assert_eq!(f.key, broken.key);
    assert!(!f.reason.is_empty());

    // The ended watch no longer pushes; the kept and the unseen ones do.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s", "labels": {"app": "ended"}}, "data": {"k": "MQ=="}
    }))?;
    Api::<Secret>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await?;
    let configmaps = Api::<ConfigMap>::namespaced(c.client.clone(), "default");
    for (name, app) in [("u", "unseen"), ("k", "kept")] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "1"}
        }))?;
        configmaps.create(&PostParams::default(), &cm).await?;
    }
    until_stored(&em.db, "default/configmap/u", |_| true).await?;
    until_stored(&em.db, "default/configmap/k", |_| true).await?;
    assert_eq!(
        stored(&em.db, "default/secret/s").await?,
        None,
        "a watch the edge ended still pushes"
    );

    // An empty list ends them all.
    let reply = em.edge.client.request(watch_sync(&[])?, T).await?;
    assert_eq!(reply.content.raw_json(), "{}");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "k2", "labels": {"app": "kept"}}, "data": {"k": "1"}
    }))?;
    configmaps.create(&PostParams::default(), &cm).await?;
    // A push that still arrives would follow the secret's: give it the same ordering check.
    let marker = watch("/core/v1/configmaps/default/null", "app=marker")?;
    let got = apply(&em.edge, marker).await?;
    assert_eq!(got.status, ApplicationStatus::Approved);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "m", "labels": {"app": "marker"}}, "data": {"k": "1"}
    }))?;
    configmaps.create(&PostParams::default(), &cm).await?;
    until_stored(&em.db, "default/configmap/m", |_| true).await?;
    assert_eq!(stored(&em.db, "default/configmap/k2").await?, None);
    Ok(())
}

/// An edge that acks every push (as upstream's meta manager does) and hands it on.
async fn acking_edge(
    cloud: &Cloud,
    dir: &std::path::Path,
) -> Result<(Edge, mpsc::UnboundedReceiver<Message>)> {
    let tls = join(cloud, NODE, dir).await?;
    let mut e = edge(cloud, NODE, tls);
    within("connect", e.client.connected()).await??;
    let (tx, rx) = mpsc::unbounded_channel();
    let acker = e.client.clone();
    let mut inbound = std::mem::replace(&mut e.inbound, mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(m) = inbound.recv().await {
            if acker.send(m.ack()).await.is_err() || tx.send(m).is_err() {
                break;
            }
        }
    });
    Ok((e, rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_a_watching_upstream_edge_once() -> Result<()> {
    trace();
    let c = controlled().await?;
    edge_node(&c.client, NODE).await?;
    let dir = tempfile::tempdir()?;
    let (e, mut pushed) = acking_edge(&c.cloud, dir.path()).await?;
    let pods = Api::<Pod>::namespaced(c.client.clone(), "default");
    let pod = |name: &str, node: Option<&str>| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]}
        }))?)
    };
    // A pod bound to the node (the edge controller sends it) and a pending one.
    pods.create(&PostParams::default(), &pod("bound", Some(NODE))?)
        .await?;
    pods.create(&PostParams::default(), &pod("pending", None)?)
        .await?;
    // `kubectl get pods -w` through an upstream edge's MetaServer, twice (two clients, or a
    // re-watch from another resourceVersion): two watch Applications of the node.
    for rv in ["1", "2"] {
        let w = upstream_app(
            "/core/v1/pods/default/null",
            ApplicationVerb::Watch,
            &json!({"watch": true, "resourceVersion": rv}),
        )?;
        assert_eq!(apply(&e, w).await?.status, ApplicationStatus::Approved);
    }
    let now = DeleteParams::default().grace_period(0);
    pods.delete("bound", &now).await?;
    pods.delete("pending", &now).await?;
    // Each watch saw the deletions before these markers: once both markers are in, every
    // push of the deletions is too.
    let mut log: Vec<Message> = Vec::new();
    for marker in ["marker-1", "marker-2"] {
        pods.create(&PostParams::default(), &pod(marker, None)?)
            .await?;
        let resource = format!("default/pod/{marker}");
        within(marker, async {
            loop {
                let m = pushed.recv().await.context("edge closed")?;
                let done = m.route.resource == resource;
                log.push(m);
                if done {
                    return anyhow::Ok(());
                }
            }
        })
        .await??;
    }
    let deletes = |name: &str| -> Vec<String> {
        log.iter()
            .filter(|m| {
                m.route.operation_str() == "delete"
                    && m.route.resource == format!("default/pod/{name}")
            })
            .map(|m| m.route.source_str().to_owned())
            .collect()
    };
    // Upstream's edge turns every delete message into a DELETED watch event.
    assert_eq!(deletes("bound"), ["edgecontroller"]);
    assert_eq!(deletes("pending"), ["dynamiccontroller"]);
    Ok(())
}
