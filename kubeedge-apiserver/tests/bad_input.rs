//! Bad input gets the right `metav1.Status`; abandoned watches are reclaimed.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, WatchParams};
use kubeedge_apiserver::{AnyStore, ApiConfig, ApiService, SqliteConfig};
use serde_json::{json, Value};
use tower::ServiceExt as _;

struct Raw {
    _dir: common::Scratch,
    svc: ApiService<AnyStore>,
}

impl Raw {
    async fn new() -> anyhow::Result<Self> {
        let (dir, store) = common::store(SqliteConfig::default()).await?;
        let mut cfg = ApiConfig::default();
        cfg.max_body_bytes = 64 * 1024;
        let svc = ApiService::new(store, cfg).await?;
        Ok(Self { _dir: dir, svc })
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        ctype: &str,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<(u16, Value)> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ctype)
            .body(Full::new(body.into()))?;
        let resp = self.svc.clone().oneshot(req).await?;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((code, v))
    }
}

fn is_status(v: &Value, code: u16, reason: &str) -> bool {
    v["kind"] == "Status" && v["status"] == "Failure" && v["code"] == code && v["reason"] == reason
}

const JSON: &str = "application/json";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn malformed_json_and_yaml_are_400() -> anyhow::Result<()> {
    let raw = Raw::new().await?;
    let (code, v) = raw.call(Method::POST, CMS, JSON, "{\"metadata\": ").await?;
    ensure!(
        code == 400 && is_status(&v, 400, "BadRequest"),
        "{code} {v}"
    );
    let (code, v) = raw
        .call(Method::POST, CMS, "application/yaml", "metadata: [unclosed")
        .await?;
    ensure!(
        code == 400 && is_status(&v, 400, "BadRequest"),
        "{code} {v}"
    );
    let (code, _) = raw.call(Method::POST, CMS, JSON, "[1, 2]").await?;
    ensure!(code == 400, "non-object body");
    let (code, v) = raw
        .call(
            Method::POST,
            CMS,
            JSON,
            r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        )
        .await?;
    ensure!(code == 400, "wrong apiVersion: {v}");
    let (code, _) = raw
        .call(
            Method::GET,
            &format!("{CMS}?labelSelector=a%20b%20c"),
            JSON,
            "",
        )
        .await?;
    ensure!(code == 400, "bad label selector");
    let (code, _) = raw
        .call(
            Method::GET,
            &format!("{CMS}?fieldSelector=spec.bogus%3D1"),
            JSON,
            "",
        )
        .await?;
    ensure!(code == 400, "unsupported field selector");
    // Protobuf is not spoken: 415.
    let (code, v) = raw
        .call(
            Method::POST,
            CMS,
            "application/vnd.kubernetes.protobuf",
            "k8s\0",
        )
        .await?;
    ensure!(
        code == 415 && is_status(&v, 415, "UnsupportedMediaType"),
        "{code} {v}"
    );
    // A valid YAML body is accepted.
    let (code, v) = raw
        .call(
            Method::POST,
            CMS,
            "application/yaml",
            "metadata:\n  name: from-yaml\ndata:\n  a: b\n",
        )
        .await?;
    ensure!(code == 201 && v["data"]["a"] == "b", "{code} {v}");
    Ok(())
}

#[tokio::test]
async fn invalid_name_or_missing_field_is_422() -> anyhow::Result<()> {
    let raw = Raw::new().await?;
    let (code, v) = raw
        .call(
            Method::POST,
            CMS,
            JSON,
            r#"{"metadata":{"name":"Bad_Name"}}"#,
        )
        .await?;
    ensure!(
        code == 422
            && is_status(&v, 422, "Invalid")
            && v["details"]["causes"][0]["field"] == "metadata.name",
        "{v}"
    );
    let (code, v) = raw
        .call(Method::POST, CMS, JSON, r#"{"metadata":{}}"#)
        .await?;
    ensure!(code == 422 && is_status(&v, 422, "Invalid"), "{v}");
    let (code, v) = raw
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            JSON,
            r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#,
        )
        .await?;
    ensure!(
        code == 422 && v["details"]["causes"][0]["field"] == "spec.containers[0].image",
        "{v}"
    );
    let (code, v) = raw.call(Method::POST, "/apis/apps/v1/namespaces/default/deployments", JSON, r#"{"metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#).await?;
    ensure!(
        code == 422
            && v["message"]
                .as_str()
                .unwrap_or_default()
                .contains("spec.selector"),
        "{v}"
    );
    // generateName fills the name in.
    let (code, v) = raw
        .call(
            Method::POST,
            CMS,
            JSON,
            r#"{"metadata":{"generateName":"gen-"}}"#,
        )
        .await?;
    ensure!(
        code == 201 && v["metadata"]["name"].as_str().unwrap_or_default().len() == 9,
        "{v}"
    );
    ensure!(
        v["metadata"]["uid"].is_string() && v["metadata"]["creationTimestamp"].is_string(),
        "{v}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_resource_or_object_is_404() -> anyhow::Result<()> {
    let raw = Raw::new().await?;
    let (code, v) = raw
        .call(Method::GET, "/api/v1/namespaces/default/gizmos", JSON, "")
        .await?;
    ensure!(code == 404 && is_status(&v, 404, "NotFound"), "{v}");
    let (code, _) = raw
        .call(
            Method::POST,
            "/api/v1/configmaps",
            JSON,
            r#"{"metadata":{"name":"x"}}"#,
        )
        .await?;
    ensure!(code == 404, "create outside a namespace");
    let (code, _) = raw
        .call(Method::GET, "/apis/nothing.example.com/v1", JSON, "")
        .await?;
    ensure!(code == 404, "unknown group version");
    let (code, v) = raw
        .call(Method::GET, &format!("{CMS}/missing"), JSON, "")
        .await?;
    ensure!(
        code == 404
            && v["details"]["name"] == "missing"
            && v["message"] == "configmaps \"missing\" not found",
        "{v}"
    );
    let (code, v) = raw
        .call(
            Method::POST,
            "/api/v1/namespaces/nope/configmaps",
            JSON,
            r#"{"metadata":{"name":"x"}}"#,
        )
        .await?;
    ensure!(
        code == 404 && v["message"] == "namespaces \"nope\" not found",
        "{v}"
    );
    // pods/log and pods/exec of a missing pod: kube-apiserver's 404 for the pod.
    for sub in ["log", "exec"] {
        let (code, v) = raw
            .call(
                Method::GET,
                &format!("/api/v1/namespaces/default/pods/p/{sub}"),
                JSON,
                "",
            )
            .await?;
        ensure!(
            code == 404 && is_status(&v, 404, "NotFound") && v["message"] == "pods \"p\" not found",
            "{sub}: {v}"
        );
    }
    // A pod not on a node yet: empty logs; exec needs a host and an upgrade.
    let pod = r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
    let (code, v) = raw
        .call(Method::POST, "/api/v1/namespaces/default/pods", JSON, pod)
        .await?;
    ensure!(code == 201, "{v}");
    let (code, _) = raw
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/p/log",
            JSON,
            "",
        )
        .await?;
    ensure!(code == 200, "log of an unscheduled pod: {code}");
    let (code, v) = raw
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true",
            JSON,
            "",
        )
        .await?;
    ensure!(
        code == 400 && v["message"] == "pod p does not have a host assigned",
        "{v}"
    );
    let (code, v) = raw
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/p/log?tailLines=-1",
            JSON,
            "",
        )
        .await?;
    ensure!(code == 422 && is_status(&v, 422, "Invalid"), "{v}");
    Ok(())
}

#[tokio::test]
async fn body_over_the_limit_is_413() -> anyhow::Result<()> {
    let raw = Raw::new().await?;
    let big =
        json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(100 * 1024)}}).to_string();
    let (code, v) = raw.call(Method::POST, CMS, JSON, big.clone()).await?;
    ensure!(
        code == 413 && is_status(&v, 413, "RequestEntityTooLarge"),
        "{v}"
    );
    // Without a Content-Length header (a streamed body) the limit still holds.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let req = Request::builder()
        .method(Method::POST)
        .uri(CMS)
        .header("content-type", JSON)
        .body(body)?;
    let send = tokio::spawn(async move {
        for chunk in big.as_bytes().chunks(16 * 1024) {
            if tx
                .send(Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let resp = raw.svc.clone().oneshot(req).await?;
    ensure!(resp.status().as_u16() == 413, "streamed: {}", resp.status());
    send.abort();
    Ok(())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn conflicts_are_409() -> anyhow::Result<()> {
    let raw = Raw::new().await?;
    let (code, v) = raw
        .call(Method::POST, CMS, JSON, r#"{"metadata":{"name":"a"}}"#)
        .await?;
    ensure!(code == 201, "{v}");
    let (code, v) = raw
        .call(Method::POST, CMS, JSON, r#"{"metadata":{"name":"a"}}"#)
        .await?;
    ensure!(code == 409 && is_status(&v, 409, "AlreadyExists"), "{v}");
    let (code, _) = raw
        .call(
            Method::PUT,
            &format!("{CMS}/a"),
            JSON,
            r#"{"metadata":{"name":"a","resourceVersion":"1"},"data":{"x":"1"}}"#,
        )
        .await?;
    ensure!(code == 409, "stale resourceVersion");
    let (code, v) = raw
        .call(
            Method::DELETE,
            &format!("{CMS}/a"),
            JSON,
            r#"{"preconditions":{"uid":"not-the-uid"}}"#,
        )
        .await?;
    ensure!(code == 409 && v["reason"] == "Conflict", "{v}");
    let (code, _) = raw
        .call(
            Method::PATCH,
            &format!("{CMS}/a"),
            "application/strategic-merge-patch+json",
            r#"{"metadata":{"resourceVersion":"1"},"data":{"x":"2"}}"#,
        )
        .await?;
    ensure!(code == 409, "stale resourceVersion in a patch");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_or_untrusted_cert_is_401() -> anyhow::Result<()> {
    let srv = common::TestServer::start().await?;
    let server = format!("https://127.0.0.1:{}", srv.addr.port());
    let bad_token = srv.path("bad-token.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &bad_token,
        &server,
        &srv.pki.ca_pem(),
        None,
        Some("wrong"),
    )?;
    let other_ca = kubeedge_apiserver::Pki::generate(&[])?;
    let foreign = other_ca.issue_client_cert("admin", Some("system:masters"))?;
    let bad_cert = srv.path("bad-cert.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &bad_cert,
        &server,
        &srv.pki.ca_pem(),
        Some(&foreign),
        None,
    )?;
    let anonymous = srv.path("anonymous.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(&anonymous, &server, &srv.pki.ca_pem(), None, None)?;
    for kc in [&bad_token, &bad_cert, &anonymous] {
        let client = common::client_from(kc).await?;
        let r = Api::<ConfigMap>::default_namespaced(client)
            .list(&ListParams::default())
            .await;
        ensure!(
            matches!(&r, Err(kube::Error::Api(s)) if s.code == 401 && s.reason == "Unauthorized"),
            "{}: {r:?}",
            kc.display()
        );
    }
    // kubectl says so too.
    let out = tokio::process::Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(&bad_token)
        .args(["get", "pods"])
        .env("HOME", srv.dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // kubectl's wording for a 401 Status.
    ensure!(
        !out.status.success()
            && stderr.contains("the server has asked for the client to provide credentials"),
        "{stderr}"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_watches_are_reclaimed() -> anyhow::Result<()> {
    let srv = common::TestServer::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await?);
    let mut streams = Vec::new();
    for _ in 0..5 {
        // No bookmarks: the server learns of the client leaving from the socket alone.
        streams.push(
            cms.watch(&WatchParams::default().disable_bookmarks(), "0")
                .await?
                .boxed(),
        );
    }
    common::wait_for(Duration::from_secs(10), || async {
        (srv.service.active_watches() == 5).then_some(())
    })
    .await?;
    drop(streams);
    common::wait_for(Duration::from_secs(10), || async {
        (srv.service.active_watches() == 0).then_some(())
    })
    .await
    .context("watches still held after their clients went away")?;
    // In-process: dropping the response body releases the watch at once.
    let (_dir, svc, client) = common::in_process(SqliteConfig::default()).await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let s = api.watch(&WatchParams::default(), "0").await?.boxed();
    common::wait_for(Duration::from_secs(10), || async {
        (svc.active_watches() == 1).then_some(())
    })
    .await?;
    drop(s);
    common::wait_for(Duration::from_secs(10), || async {
        (svc.active_watches() == 0).then_some(())
    })
    .await?;
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn watch_timeout_and_bookmarks() -> anyhow::Result<()> {
    let (_dir, store) = common::store(SqliteConfig::default()).await?;
    let mut cfg = ApiConfig::default();
    cfg.bookmark_interval = Duration::from_millis(50);
    let svc = ApiService::new(store, cfg).await?;
    let req = Request::builder()
        .uri(format!(
            "{CMS}?watch=true&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=1"
        ))
        .body(Full::new(Bytes::new()))?;
    let resp = svc.clone().oneshot(req).await?;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .context("timeoutSeconds not honoured")??
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    ensure!(
        text.lines().count() >= 2 && text.lines().all(|l| l.contains("\"BOOKMARK\"")),
        "{text}"
    );
    ensure!(svc.active_watches() == 0, "watch released at its timeout");
    Ok(())
}

async fn body_text(
    resp: http::Response<kubeedge_apiserver::ResponseBody>,
) -> anyhow::Result<String> {
    let bytes = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .context("stream did not end")??
        .to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn streaming_list_sends_initial_events_then_a_marked_bookmark() -> anyhow::Result<()> {
    let raw = Raw::new().await?;
    for n in ["a", "b", "c"] {
        let (code, _) = raw
            .call(
                Method::POST,
                CMS,
                JSON,
                format!(r#"{{"metadata":{{"name":"{n}"}}}}"#),
            )
            .await?;
        ensure!(code == 201);
    }
    let req = Request::builder()
        .uri(format!("{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"))
        .body(Full::new(Bytes::new()))?;
    let text = body_text(raw.svc.clone().oneshot(req).await?).await?;
    let events: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let types: Vec<&str> = events
        .iter()
        .take(4)
        .filter_map(|e| e["type"].as_str())
        .collect();
    ensure!(types == ["ADDED", "ADDED", "ADDED", "BOOKMARK"], "{text}");
    ensure!(
        events[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true",
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_watcher_that_falls_behind_gets_410_not_unbounded_memory() -> anyhow::Result<()> {
    let mut cfg = SqliteConfig::default();
    cfg.watch_buffer = 16;
    let (_dir, store) = common::store(cfg).await?;
    let svc = ApiService::new(store, ApiConfig::default()).await?;
    let rv = svc.store_revision();
    let req = Request::builder()
        .uri(format!(
            "{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=5"
        ))
        .body(Full::new(Bytes::new()))?;
    // The response is not read while 100 writes land: its feed overflows.
    let resp = svc.clone().oneshot(req).await?;
    for i in 0..100 {
        let req = Request::builder()
            .method(Method::POST)
            .uri(CMS)
            .header("content-type", JSON)
            .body(Full::new(Bytes::from(format!(
                r#"{{"metadata":{{"name":"c{i}"}}}}"#
            ))))?;
        ensure!(svc.clone().oneshot(req).await?.status().as_u16() == 201);
    }
    let text = body_text(resp).await?;
    let last: Value = serde_json::from_str(text.lines().last().context("no event")?)?;
    ensure!(
        last["type"] == "ERROR" && last["object"]["code"] == 410,
        "{text}"
    );
    ensure!(svc.active_watches() == 0, "released");
    Ok(())
}
