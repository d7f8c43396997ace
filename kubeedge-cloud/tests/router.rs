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
    // The edge sees the link before the hub has registered the session.
    eventually("the hub has the session", || cloud.hub.is_connected(NODE)).await?;
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

    // A body over the limit; a Rule whose target endpoint is missing.
    let big = http::Request::builder()
        .method("POST")
        .uri("/edge-1/default/api/big")
        .body(Full::new(Bytes::from(vec![b'x'; 13 << 20])))?;
    let resp = router.clone().oneshot(big).await?;
    ensure!(resp.status() == 413, "{}", resp.status());
    create(&rules, json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
        "metadata": {"name": "dangling"}, "spec": {"source": "rest-ep", "sourceResource": {"path": "/dangling"},
        "target": "gone-ep", "targetResource": {"path": "/x"}}})).await?;
    let (code, body, _) = call(&router, "GET", "/edge-1/default/dangling", "").await?;
    ensure!(
        code == 500
            && body == "rule \"dangling\": its target RuleEndpoint \"gone-ep\" does not exist",
        "{code} {body}"
    );

    // No rule for the path; a node that is not connected; an app that hangs.
    let (code, _, _) = call(&router, "GET", "/edge-1/default/nothing", "").await?;
    ensure!(code == 404, "{code}");
    let (code, body, _) = call(&router, "GET", "/edge-9/default/api", "").await?;
    ensure!(code == 503 && body.contains("edge-9"), "{code} {body}");
    // A node without ServiceBus refuses at once.
    let dir2 = tempfile::tempdir()?;
    let tls2 = join(&cloud, "edge-2", dir2.path()).await?;
    let mut e2 = edge(&cloud, "edge-2", tls2);
    within("connect", e2.client.connected()).await??;
    eventually("the hub has edge-2", || cloud.hub.is_connected("edge-2")).await?;
    let inbound2 = std::mem::replace(&mut e2.inbound, tokio::sync::mpsc::channel(1).1);
    tokio::spawn(edge_router::run(
        inbound2,
        e2.client.clone(),
        Routes::default(),
        e2.cancel.clone(),
    ));
    let (code, body, _) = call(&router, "GET", "/edge-2/default/api", "").await?;
    ensure!(
        code == 502 && body.contains("no edge module handles"),
        "{code} {body}"
    );
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
                if s["successMessages"] == 1 && s["failMessages"] == 3 {
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

/// curl's status code and body for a call to the served Router.
async fn curl(url: &str, ca: &std::path::Path, token: Option<&str>) -> Result<(u16, String)> {
    curl_with(url, ca, token, &[]).await
}

/// [`curl`] with more arguments (a client certificate, a header).
async fn curl_with(
    url: &str,
    ca: &std::path::Path,
    token: Option<&str>,
    more: &[&str],
) -> Result<(u16, String)> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}", "-X", "POST", "--data", "ping"])
        .args(more);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = within("curl", cmd.arg(url).kill_on_drop(true).output()).await??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// The Router served over TLS, each call authorized by the API with the caller's token: no
/// token is 401, a token without the right is 403, and a ServiceAccount bound to a Role that
/// allows `create` on `rules/proxy` gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_router_takes_only_callers_the_api_allows() -> Result<()> {
    trace();
    // The API, in process for the controllers and over HTTPS for the Router's reviews.
    let dir = tempfile::tempdir()?;
    let store = kubeedge_apiserver::SqliteStore::open(dir.path().join("state.db"))?;
    let service = kubeedge_apiserver::ApiService::new(store, Default::default()).await?;
    let client = kube::Client::new(service.clone(), "default");
    let api_pki = kubeedge_apiserver::Pki::generate(&[])?;
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api_listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_api = stop.clone().drop_guard();
    tokio::spawn(kubeedge_apiserver::serve(
        api_listener,
        service,
        api_pki.server_tls()?,
        kubeedge_apiserver::ServeConfig::default(),
        stop.clone().cancelled_owned(),
    ));
    let kc = dir.path().join("router.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &kc,
        &format!("https://{api_addr}"),
        &api_pki.ca_pem(),
        None,
        Some("none"),
    )?;
    let base = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kc)?,
        &Default::default(),
    )
    .await?;

    let mut cloud = cloud(fast()).await?;
    let client_cas = base.root_cert.clone().unwrap_or_default();
    let mut config = RouterConfig::default();
    config.auth = kubeedge_cloud::router::RouterAuth::Token(Box::new(base));
    let router = Router::new(
        client.clone(),
        cloud.hub.clone(),
        cloud.down.clone(),
        config,
    );
    let mut controllers = controllers();
    controllers.router = Some(router.clone());
    let (cancel, _task) = start_controllers_with(&mut cloud, &client, controllers);
    let _stop = cancel.clone().drop_guard();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!(
        "https://127.0.0.1:{}/edge-1/default/api/x",
        listener.local_addr()?.port()
    );
    let tls = kubeedge_cloud::router::RouterTls::new(&cloud.pki, &client_cas)?;
    tokio::spawn(router.clone().serve(listener, Some(tls), cancel.clone()));
    let ca = dir.path().join("kubeedge-ca.pem");
    std::fs::write(&ca, pem_of(cloud.pki.ca_cert_der()))?;

    let edir = tempfile::tempdir()?;
    let tls = join(&cloud, NODE, edir.path()).await?;
    let mut e = edge(&cloud, NODE, tls);
    within("connect", e.client.connected()).await??;
    // The edge sees the link before the hub has registered the session.
    eventually("the hub has the session", || cloud.hub.is_connected(NODE)).await?;
    let inbound = std::mem::replace(&mut e.inbound, tokio::sync::mpsc::channel(1).1);
    let routes = Routes {
        servicebus: Some(edge_router::handler(ServiceBus::new(e.client.clone()))),
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
    create(&api(&client, "Rule", "rules"), json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
        "metadata": {"name": "to-app"}, "spec": {"source": "rest-ep", "sourceResource": {"path": "/api"},
        "target": "sb-ep", "targetResource": {"path": "/app"}}})).await?;

    // A ServiceAccount token (TokenRequest, as `kubectl create token`).
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::default_namespaced(client.clone());
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "caller"}}))?,
    )
    .await?;
    let token = sas
        .create_token_request("caller", &PostParams::default(), &TokenRequest::default())
        .await?
        .status
        .map(|s| s.token)
        .unwrap_or_default();

    let (code, _) = curl(&url, &ca, None).await?;
    ensure!(code == 401, "no token: {code}");
    let (code, _) = curl(&url, &ca, Some("not-a-token")).await?;
    ensure!(code == 401, "bad token: {code}");
    let (code, body) = curl(&url, &ca, Some(&token)).await?;
    ensure!(
        code == 403 && body.contains("cannot create resource \"rules/proxy\" in API group \"rules.kubeedge.io\" in the namespace \"default\""),
        "{code} {body}"
    );
    let rbac = |kind: &str, plural: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
            plural,
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), "default", &ar)
    };
    create(&rbac("Role", "roles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "call-app"}, "rules": [{"verbs": ["create"], "apiGroups": ["rules.kubeedge.io"],
        "resources": ["rules/proxy"], "resourceNames": ["to-app"]}]})).await?;
    create(
        &rbac("RoleBinding", "rolebindings"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "caller-call-app"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "call-app"},
        "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": "default"}]}),
    )
    .await?;
    let (code, body) = curl(&url, &ca, Some(&token)).await?;
    ensure!(code == 201 && body == "POST /app/x ping", "{code} {body}");

    // Client certificates. One of the API's CA is a user, reviewed as that user and its
    // groups; one of the KubeEdge CA is nobody unless it is a replica passing a call on.
    let cert = |name: &str, pem: (String, String)| -> Result<Vec<String>> {
        let (c, k) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, pem.0)?;
        std::fs::write(&k, pem.1)?;
        Ok(vec![
            "--cert".into(),
            c.display().to_string(),
            "--key".into(),
            k.display().to_string(),
        ])
    };
    let user = |name: &str, group: Option<&str>| -> Result<Vec<String>> {
        let c = api_pki.issue_client_cert(name, group)?;
        cert(name, (c.cert_pem, c.key_pem))
    };
    let kubeedge = |cn: &str| -> Result<Vec<String>> {
        let (chain, key) = cloud.pki.issue_client_cert(cn)?;
        let key_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
            pem_of(key.secret_der())
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
        cert(&cn.replace(':', "_"), (pem_of(&chain[0]), key_pem))
    };
    let carol = user("carol", None)?;
    let (code, body) = curl_with(&url, &ca, None, &args(&carol)).await?;
    ensure!(
        code == 403 && body.contains("User \"carol\" cannot create resource \"rules/proxy\""),
        "carol: {code} {body}"
    );
    create(
        &rbac("RoleBinding", "rolebindings"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "callers-call-app"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "call-app"},
        "subjects": [{"kind": "Group", "name": "router-callers", "apiGroup": "rbac.authorization.k8s.io"}]}),
    )
    .await?;
    let dave = user("dave", Some("router-callers"))?;
    let (code, body) = curl_with(&url, &ca, None, &args(&dave)).await?;
    ensure!(
        code == 201 && body == "POST /app/x ping",
        "dave: {code} {body}"
    );
    // The certificate decides before the token, as kube-apiserver's order.
    let (code, _) = curl_with(&url, &ca, Some(&token), &args(&carol)).await?;
    ensure!(code == 403, "carol with a token that may: {code}");
    let edge_cert = kubeedge(&format!("system:node:{NODE}"))?;
    let (code, _) = curl_with(&url, &ca, None, &args(&edge_cert)).await?;
    ensure!(code == 401, "an edge certificate: {code}");
    let peer = kubeedge(kubeedge_cloud::router::PEER_CN)?;
    let (code, _) = curl_with(&url, &ca, None, &args(&peer)).await?;
    ensure!(code == 401, "a replica calling on its own: {code}");
    let mut passed = args(&peer);
    passed.extend(["-H", "x-kubeedge-forwarded-by: replica-a"]);
    let (code, body) = curl_with(&url, &ca, None, &passed).await?;
    ensure!(
        code == 201 && body == "POST /app/x ping",
        "a replica passing a call on: {code} {body}"
    );
    Ok(())
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
