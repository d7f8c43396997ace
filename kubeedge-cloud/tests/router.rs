//! The Router and ServiceBus end to end: a REST call on the cloud's Router goes by a
//! `rules.kubeedge.io/v1` Rule (rest → servicebus) through the hub to a real HTTP app on the
//! edge, and the app's answer comes back. Real kubeedge-apiserver (with the rules CRDs),
//! CloudHub, controllers, an edge hub client with its router and ServiceBus, and a hyper app
//! on 127.0.0.1.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use common::controlled::*;
use common::*;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kubeedge_cloud::router::{Router, RouterConfig};
use kubeedge_edge::router::{self as edge_router, Routes};
use kubeedge_edge::servicebus::ServiceBus;
use serde_json::json;
use tower::ServiceExt as _;

const NODE: &str = "edge-1";

/// An app that answers `<method> <path?query> <body>` with 201 and `X-App: yes`, and never
/// answers on `/app/slow`.
async fn app() -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let what = format!("{} {}", req.method(), req.uri());
                        if req.uri().path() == "/app/slow" {
                            std::future::pending::<()>().await;
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut r = http::Response::new(Full::new(Bytes::from(format!(
                            "{what} {}",
                            String::from_utf8_lossy(&body)
                        ))));
                        *r.status_mut() = http::StatusCode::CREATED;
                        r.headers_mut()
                            .insert("x-app", http::HeaderValue::from_static("yes"));
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rules.kubeedge.io", "v1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

async fn create(api: &Api<DynamicObject>, v: serde_json::Value) -> Result<()> {
    let obj: DynamicObject = serde_json::from_value(v)?;
    // The CRDs are installed as the controllers start.
    within("create rule object", async {
        loop {
            if api.create(&PostParams::default(), &obj).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: &'static str,
) -> Result<(u16, String, Option<String>)> {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let resp = router.clone().oneshot(req).await?;
    let code = resp.status().as_u16();
    let app = resp
        .headers()
        .get("x-app")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&text).into_owned(), app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_call_reaches_an_app_on_the_edge_and_its_answer_comes_back() -> Result<()> {
    trace();
    let (_dir, client) = common::controlled::api().await?;
    let mut cloud = cloud(fast()).await?;
    let mut config = RouterConfig::default();
    config.rest_timeout = Duration::from_secs(1);
    let router = Router::new(
        client.clone(),
        cloud.hub.clone(),
        cloud.down.clone(),
        config,
    );
    let mut controllers = controllers();
    controllers.router = Some(router.clone());
    let (cancel, _task) = start_controllers_with(&mut cloud, &client, controllers);
    let _stop = cancel.drop_guard();

    // The edge: hub client, router, ServiceBus.
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, NODE, dir.path()).await?;
    let mut e = edge(&cloud, NODE, tls);
    within("connect", e.client.connected()).await??;
    let inbound = std::mem::replace(&mut e.inbound, tokio::sync::mpsc::channel(1).1);
    let (bus_tx, mut bus_rx) = tokio::sync::mpsc::channel(8);
    let routes = Routes {
        servicebus: Some(edge_router::handler(ServiceBus::new(e.client.clone()))),
        eventbus: Some(edge_router::channel_handler(bus_tx)),
        ..Routes::default()
    };
    tokio::spawn(edge_router::run(
        inbound,
        e.client.clone(),
        routes,
        e.cancel.clone(),
    ));
    let port = app().await?;

    let eps = api(&client, "RuleEndpoint", "ruleendpoints");
    create(
        &eps,
        json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
        "metadata": {"name": "rest-ep"}, "spec": {"ruleEndpointType": "rest"}}),
    )
    .await?;
    create(
        &eps,
        json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
        "metadata": {"name": "sb-ep"}, "spec": {"ruleEndpointType": "servicebus",
        "properties": {"service_port": port.to_string()}}}),
    )
    .await?;
    let rules = api(&client, "Rule", "rules");
    create(&rules, json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
        "metadata": {"name": "to-app"}, "spec": {"source": "rest-ep", "sourceResource": {"path": "/api"},
        "target": "sb-ep", "targetResource": {"path": "/app"}}})).await?;

    // The call, its path and query, its body, and the app's status, header and body.
    let (code, body, app) =
        call(&router, "POST", "/edge-1/default/api/items/7?x=1", "hello").await?;
    ensure!(code == 201, "{code} {body}");
    ensure!(body == "POST /app/items/7?x=1 hello", "{body}");
    ensure!(app.as_deref() == Some("yes"));

    // No rule for the path; a node that is not connected; an app that hangs.
    let (code, _, _) = call(&router, "GET", "/edge-1/default/nothing", "").await?;
    ensure!(code == 404, "{code}");
    let (code, body, _) = call(&router, "GET", "/edge-9/default/api", "").await?;
    ensure!(code == 503 && body.contains("edge-9"), "{code} {body}");
    let (code, body, _) = call(&router, "GET", "/edge-1/default/api/slow", "").await?;
    ensure!(
        code == 408 && body == "wait to get response time out",
        "{code} {body}"
    );
    ensure!(router.waiting() == 0, "a timed-out call left its waiter");

    // rest → eventbus: a publish on the target topic (plus the rest of the path), answered
    // once queued.
    create(
        &eps,
        json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
        "metadata": {"name": "bus-ep"}, "spec": {"ruleEndpointType": "eventbus"}}),
    )
    .await?;
    create(&rules, json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
        "metadata": {"name": "to-bus"}, "spec": {"source": "rest-ep", "sourceResource": {"path": "/bus"},
        "target": "bus-ep", "targetResource": {"topic": "topic-test"}}})).await?;
    let (code, body, _) = call(&router, "PUT", "/edge-1/default/bus/lamp", "on").await?;
    ensure!(code == 200 && body == "message delivered", "{code} {body}");
    let published = within("publish reaches the edge", bus_rx.recv()).await?;
    let published = published.ok_or_else(|| anyhow::anyhow!("eventbus channel closed"))?;
    ensure!(
        published.route.operation_str() == "publish",
        "{:?}",
        published.route
    );
    ensure!(published.route.source_str() == "router_eventbus");
    ensure!(
        published.route.resource == "topic-test/lamp",
        "{}",
        published.route.resource
    );
    ensure!(published.content.as_str().as_deref() == Some("on"));

    // The Rule's status counts both.
    let counted = within("rule status", async {
        loop {
            if let Ok(r) = rules.get("to-app").await {
                let s = &r.data["status"];
                if s["successMessages"] == 1 && s["failMessages"] == 2 {
                    return r.data["status"].clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    ensure!(
        counted["errors"][0] == "wait to get response time out",
        "{counted}"
    );
    Ok(())
}
