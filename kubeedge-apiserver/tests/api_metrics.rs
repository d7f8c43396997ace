//! The API's metrics: requests counted and timed by kube-apiserver's verbs and the served
//! resource, the open watches read as they come and go, and paths that name no served
//! resource kept out of the resource label.

use anyhow::{ensure, Result};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
mod common;

use kubeedge_apiserver::{AnyStore, ApiConfig, ApiService, SqliteConfig};
use prometheus_client::registry::Registry;
use tower::ServiceExt as _;

fn scrape(registry: &Registry) -> Result<String> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

fn value(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn call(svc: &ApiService<AnyStore>, method: &str, uri: &str, body: &str) -> Result<u16> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let resp = svc.clone().oneshot(req).await?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn requests_and_watches_are_counted_by_verb_and_resource() -> Result<()> {
    let (_dir, store) = common::store(SqliteConfig::default()).await?;
    let mut registry = Registry::default();
    let svc = ApiService::new(store, ApiConfig::default())
        .await?
        .with_metrics(&mut registry);
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#;
    ensure!(call(&svc, "POST", "/api/v1/namespaces/default/configmaps", cm).await? == 201);
    ensure!(call(&svc, "GET", "/api/v1/namespaces/default/configmaps/a", "").await? == 200);
    ensure!(call(&svc, "GET", "/api/v1/namespaces/default/configmaps", "").await? == 200);
    ensure!(
        call(
            &svc,
            "GET",
            "/api/v1/namespaces/default/configmaps/missing",
            ""
        )
        .await?
            == 404
    );
    ensure!(
        call(
            &svc,
            "DELETE",
            "/api/v1/namespaces/default/configmaps/a",
            ""
        )
        .await?
            == 200
    );
    // Paths that are no served resource: the method as verb, no resource label.
    ensure!(call(&svc, "GET", "/apis/made.up/v1/things", "").await? == 404);
    ensure!(call(&svc, "GET", "/version", "").await? == 200);

    let text = scrape(&registry)?;
    let base = r#"group="",resource="configmaps",subresource="""#;
    for (verb, code, n) in [
        ("create", 201, 1.0),
        ("get", 200, 1.0),
        ("get", 404, 1.0),
        ("list", 200, 1.0),
        ("delete", 200, 1.0),
    ] {
        let sample =
            format!("kubeedge_apiserver_requests_total{{verb=\"{verb}\",{base},code=\"{code}\"}}");
        ensure!(value(&text, &sample) == Some(n), "{sample} in\n{text}");
    }
    let latency =
        format!("kubeedge_apiserver_request_duration_seconds_count{{verb=\"get\",{base}}}");
    ensure!(value(&text, &latency) == Some(2.0), "{latency} in\n{text}");
    ensure!(
        !text.contains("things"),
        "an unserved path became a label:\n{text}"
    );
    ensure!(
        value(
            &text,
            r#"kubeedge_apiserver_requests_total{verb="get",group="",resource="",subresource="",code="404"}"#
        ) == Some(1.0),
        "{text}"
    );

    // A watch is counted while its stream is open.
    ensure!(
        value(&text, "kubeedge_apiserver_watches") == Some(0.0),
        "{text}"
    );
    let req = Request::get("/api/v1/namespaces/default/configmaps?watch=true")
        .body(Full::new(Bytes::new()))?;
    let resp = svc.clone().oneshot(req).await?;
    ensure!(resp.status() == 200);
    let text = scrape(&registry)?;
    ensure!(
        value(&text, "kubeedge_apiserver_watches") == Some(1.0),
        "{text}"
    );
    let watch = format!("kubeedge_apiserver_requests_total{{verb=\"watch\",{base},code=\"200\"}}");
    ensure!(value(&text, &watch) == Some(1.0), "{text}");
    drop(resp);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while value(&scrape(&registry)?, "kubeedge_apiserver_watches") != Some(0.0) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the watch was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}
