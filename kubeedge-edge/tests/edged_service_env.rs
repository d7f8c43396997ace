//! Service environment variables as the kubelet sets them: `default/kubernetes` in every pod
//! (also with `enableServiceLinks: false`), every Service of the pod's namespace with links on,
//! none from other namespaces or headless Services, explicit `env` winning, and `$(VAR)`
//! expanding to service variables. The Services are in the meta store, as the cloud's
//! answers leave them (edged reads them there offline).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

on_both_runtimes!(pods_get_the_service_variables_the_kubelet_gives);

fn service(ns: &str, name: &str, ip: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "uid": format!("svc-{ns}-{name}")},
           "spec": {"clusterIP": ip, "ports": ports}})
}

/// The environment of container `c` of pod `ns/name`, read inside it.
async fn env_of<R: TestRuntime>(
    h: &Harness<R>,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, String>> {
    let st = h
        .wait_status(&format!("{ns}/{name}"), LIMIT, |s| {
            cstatus(s, "c").is_some_and(|c| c.ready)
        })
        .await?;
    let id = cstatus(&st, "c")
        .and_then(|c| c.container_id.clone())
        .context("container id")?;
    let out =
        h.rt.exec_sync(runtime_id(&id), vec!["env".into()], Duration::from_secs(5))
            .await?;
    Ok(String::from_utf8_lossy(&out.output)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

async fn pods_get_the_service_variables_the_kubelet_gives<R: TestRuntime>(
    h: Harness<R>,
    _rt: &str,
) -> Result<()> {
    let https = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]);
    h.push(
        "insert",
        "service",
        service("default", "kubernetes", "10.96.0.1", https),
    )
    .await?;
    h.push(
        "insert",
        "service",
        service(
            "default",
            "web",
            "10.96.0.7",
            json!([{"name": "http", "port": 80}]),
        ),
    )
    .await?;
    h.push(
        "insert",
        "service",
        service("default", "headless", "None", json!([{"port": 80}])),
    )
    .await?;
    h.push(
        "insert",
        "service",
        service("other", "db-main", "10.96.0.9", json!([{"port": 5432}])),
    )
    .await?;

    let mut c = container("c", "sleep 3600");
    c["env"] = json!([
        {"name": "WEB_SERVICE_HOST", "value": "mine"},
        {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
    ]);
    h.push("insert", "pod", pod("app", json!({"containers": [c]})))
        .await?;
    let mut other = pod(
        "linked",
        json!({"containers": [container("c", "sleep 3600")]}),
    );
    other["metadata"]["namespace"] = json!("other");
    h.push("insert", "pod", other).await?;
    let mut unlinked = pod(
        "unlinked",
        json!({"enableServiceLinks": false, "containers": [container("c", "sleep 3600")]}),
    );
    unlinked["metadata"]["namespace"] = json!("other");
    h.push("insert", "pod", unlinked).await?;

    let env = env_of(&h, "default", "app").await?;
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"), "{env:?}");
    assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
    assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
    assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.96.0.1:443"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP_PORT"), Some("443"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
    // Explicit env wins; $(VAR) sees the service variables.
    assert_eq!(get("WEB_SERVICE_HOST"), Some("mine"));
    assert_eq!(get("WEB_SERVICE_PORT"), Some("80"));
    assert_eq!(get("WEB_PORT_80_TCP"), Some("tcp://10.96.0.7:80"));
    assert_eq!(get("API"), Some("https://10.96.0.1:443"));
    assert!(
        !env.keys().any(|k| k.starts_with("HEADLESS_")),
        "headless: none"
    );
    assert!(
        !env.keys().any(|k| k.starts_with("DB_MAIN_")),
        "other namespace: none"
    );

    let env = env_of(&h, "other", "linked").await?;
    assert_eq!(
        env.get("DB_MAIN_SERVICE_HOST").map(String::as_str),
        Some("10.96.0.9")
    );
    assert_eq!(
        env.get("DB_MAIN_PORT").map(String::as_str),
        Some("tcp://10.96.0.9:5432")
    );
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some("10.96.0.1")
    );
    assert!(!env.contains_key("WEB_SERVICE_HOST"));

    // enableServiceLinks: false keeps only the master service's.
    let env = env_of(&h, "other", "unlinked").await?;
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some("10.96.0.1")
    );
    assert!(!env.contains_key("DB_MAIN_SERVICE_HOST"), "{env:?}");
    Ok(())
}
