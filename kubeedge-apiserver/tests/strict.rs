//! Strictness, rule by rule: what kube-apiserver refuses is refused with its status and
//! message, and the well-formed request next to it is accepted (see the table in
//! `kubeedge_apiserver::validation`).

use anyhow::ensure;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
mod common;

use kubeedge_apiserver::{AnyStore, ApiConfig, ApiService, SqliteConfig};
use serde_json::{json, Value};
use tower::ServiceExt as _;

struct Api {
    _dir: common::Scratch,
    svc: ApiService<AnyStore>,
}

struct Reply {
    code: u16,
    body: Value,
    warnings: Vec<String>,
}

impl Api {
    async fn new() -> anyhow::Result<Self> {
        let (dir, store) = common::store(SqliteConfig::default()).await?;
        let svc = ApiService::new(store, ApiConfig::default()).await?;
        Ok(Self { _dir: dir, svc })
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        ctype: &str,
        body: &str,
    ) -> anyhow::Result<Reply> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body.to_owned())))?;
        let resp = self.svc.clone().oneshot(req).await?;
        let code = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            code,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            warnings,
        })
    }

    async fn post(&self, uri: &str, v: &Value) -> anyhow::Result<Reply> {
        self.call(Method::POST, uri, JSON, &v.to_string()).await
    }

    async fn put(&self, uri: &str, v: &Value) -> anyhow::Result<Reply> {
        self.call(Method::PUT, uri, JSON, &v.to_string()).await
    }
}

const JSON: &str = "application/json";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SVCS: &str = "/api/v1/namespaces/default/services";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn lease(renew: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-a"},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40, "renewTime": renew}})
}

fn expect(r: &Reply, code: u16, message: &str) -> anyhow::Result<()> {
    ensure!(
        r.code == code && r.body["message"] == message,
        "want {code} {message:?}, got {} {}",
        r.code,
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn micro_time_wants_six_digits() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let r = api
        .post(LEASES, &lease("2026-01-02T03:04:05.123456789Z"))
        .await?;
    expect(
        &r,
        400,
        r#"Lease in version "v1" cannot be handled as a Lease: parsing time "2026-01-02T03:04:05.123456789Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "789Z" as "Z07:00""#,
    )?;
    let r = api.post(LEASES, &lease("2026-01-02T03:04:05Z")).await?;
    expect(
        &r,
        400,
        r#"Lease in version "v1" cannot be handled as a Lease: parsing time "2026-01-02T03:04:05Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000""#,
    )?;
    // The well-formed one, in another zone, is stored in UTC.
    let r = api
        .post(LEASES, &lease("2026-01-02T05:04:05.123456+02:00"))
        .await?;
    ensure!(r.code == 201, "{}", r.body);
    ensure!(
        r.body["spec"]["renewTime"] == "2026-01-02T03:04:05.123456Z",
        "{}",
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn time_drops_fractions_and_refuses_other_forms() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let node = |t: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": t}]}})
    };
    let r = api
        .post("/api/v1/nodes", &node("2026-01-02 03:04:05Z"))
        .await?;
    expect(
        &r,
        400,
        r#"Node in version "v1" cannot be handled as a Node: parsing time "2026-01-02 03:04:05Z" as "2006-01-02T15:04:05Z07:00": cannot parse " 03:04:05Z" as "T""#,
    )?;
    let r = api
        .post("/api/v1/nodes", &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "creationTimestamp": 17}}))
        .await?;
    expect(
        &r,
        400,
        r#"Node in version "v1" cannot be handled as a Node: json: cannot unmarshal number into Go value of type string"#,
    )?;
    let r = api
        .post("/api/v1/nodes", &node("2026-01-02T03:04:05.999Z"))
        .await?;
    ensure!(r.code == 201, "{}", r.body);
    ensure!(
        r.body["status"]["conditions"][0]["lastHeartbeatTime"] == "2026-01-02T03:04:05Z",
        "{}",
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn event_time_is_micro_and_timestamps_are_seconds() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let ev = |event_time: &str| {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Started", "eventTime": event_time, "firstTimestamp": "2026-01-02T03:04:05Z"})
    };
    let r = api
        .post(
            "/api/v1/namespaces/default/events",
            &ev("2026-01-02T03:04:05Z"),
        )
        .await?;
    expect(
        &r,
        400,
        r#"Event in version "v1" cannot be handled as a Event: parsing time "2026-01-02T03:04:05Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000""#,
    )?;
    let r = api
        .post(
            "/api/v1/namespaces/default/events",
            &ev("2026-01-02T03:04:05.000001Z"),
        )
        .await?;
    ensure!(r.code == 201, "{}", r.body);
    Ok(())
}

#[tokio::test]
async fn lease_put_needs_resource_version_and_a_fresh_one() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let created = api
        .post(LEASES, &lease("2026-01-02T03:04:05.000000Z"))
        .await?;
    ensure!(created.code == 201, "{}", created.body);
    let url = format!("{LEASES}/node-a");
    let r = api.put(&url, &lease("2026-01-02T03:04:15.000000Z")).await?;
    expect(
        &r,
        422,
        r#"leases.coordination.k8s.io "node-a" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"#,
    )?;
    ensure!(r.body["details"]["kind"] == "leases", "{}", r.body);
    let mut fresh = created.body.clone();
    fresh["spec"]["renewTime"] = json!("2026-01-02T03:04:15.000000Z");
    let r = api.put(&url, &fresh).await?;
    ensure!(r.code == 200, "{}", r.body);
    // The first resourceVersion is stale now.
    let r = api.put(&url, &fresh).await?;
    expect(
        &r,
        409,
        r#"Operation cannot be fulfilled on leases.coordination.k8s.io "node-a": the object has been modified; please apply your changes to the latest version and try again"#,
    )?;
    // A ConfigMap (AllowUnconditionalUpdate) may still be replaced without one.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    ensure!(api.post(CMS, &cm).await?.code == 201);
    ensure!(api.put(&format!("{CMS}/c"), &cm).await?.code == 200);
    Ok(())
}

#[tokio::test]
async fn field_validation_strict_warn_ignore() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","name":"c1"},"data":{"a":"1"},"dtaa":{}}"#;
    let r = api
        .call(
            Method::POST,
            &format!("{CMS}?fieldValidation=Strict"),
            JSON,
            body,
        )
        .await?;
    expect(
        &r,
        400,
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name", unknown field "dtaa""#,
    )?;
    let r = api.call(Method::POST, CMS, JSON, body).await?;
    ensure!(r.code == 201, "{}", r.body);
    ensure!(
        r.warnings
            == [
                r#"299 - "duplicate field \"metadata.name\"""#,
                r#"299 - "unknown field \"dtaa\"""#
            ],
        "{:?}",
        r.warnings
    );
    ensure!(r.body["metadata"]["name"] == "c1" && r.body.get("dtaa").is_none());
    let body2 = body.replace("c1", "c2");
    let r = api
        .call(
            Method::POST,
            &format!("{CMS}?fieldValidation=Ignore"),
            JSON,
            &body2,
        )
        .await?;
    ensure!(
        r.code == 201 && r.warnings.is_empty(),
        "{} {:?}",
        r.body,
        r.warnings
    );
    let r = api
        .call(
            Method::POST,
            &format!("{CMS}?fieldValidation=strict"),
            JSON,
            &body2,
        )
        .await?;
    expect(
        &r,
        422,
        r#"CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": supported values: "", "Ignore", "Strict", "Warn""#,
    )?;
    Ok(())
}

#[tokio::test]
async fn pod_spec_is_immutable_but_image_is_not() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
    let created = api.post(PODS, &pod).await?;
    ensure!(created.code == 201, "{}", created.body);
    let mut moved = created.body.clone();
    moved["spec"]["nodeName"] = json!("node-b");
    let r = api.put(&format!("{PODS}/p"), &moved).await?;
    ensure!(r.code == 422, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap_or_default();
    ensure!(
        msg.starts_with("Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n")
            && msg.contains("spec.nodeName"),
        "{msg}"
    );
    // The image may change; a body without the server's defaults is the same spec.
    let mut image = pod.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx:2");
    let r = api.put(&format!("{PODS}/p"), &image).await?;
    ensure!(r.code == 200, "{}", r.body);
    Ok(())
}

#[tokio::test]
async fn deployment_selector_is_immutable() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let d = |app: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": app}},
                "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    };
    ensure!(api.post(DEPLOYS, &d("a")).await?.code == 201);
    let r = api.put(&format!("{DEPLOYS}/d"), &d("b")).await?;
    expect(
        &r,
        422,
        r#"Deployment.apps "d" is invalid: spec.selector: Invalid value: {"matchLabels":{"app":"b"}}: field is immutable"#,
    )?;
    let mut same = d("a");
    same["spec"]["replicas"] = json!(3);
    ensure!(api.put(&format!("{DEPLOYS}/d"), &same).await?.code == 200);
    Ok(())
}

#[tokio::test]
async fn cluster_ip_is_immutable_and_kept_when_left_out() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}]}});
    let created = api.post(SVCS, &svc).await?;
    ensure!(created.code == 201, "{}", created.body);
    let ip = created.body["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut changed = created.body.clone();
    changed["spec"]["clusterIP"] = json!("10.96.0.99");
    changed["spec"]["clusterIPs"] = json!(["10.96.0.99"]);
    let r = api.put(&format!("{SVCS}/s"), &changed).await?;
    expect(
        &r,
        422,
        r#"Service "s" is invalid: spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set"#,
    )?;
    let mut blank = svc.clone();
    blank["spec"]["clusterIP"] = json!("");
    let r = api.put(&format!("{SVCS}/s"), &blank).await?;
    ensure!(
        r.code == 200 && r.body["spec"]["clusterIP"] == ip.as_str(),
        "{}",
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn uid_may_be_left_out_but_not_changed() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}});
    ensure!(api.post(CMS, &cm).await?.code == 201);
    let mut other = cm.clone();
    other["metadata"]["uid"] = json!("not-the-uid");
    let r = api.put(&format!("{CMS}/u"), &other).await?;
    expect(
        &r,
        422,
        r#"ConfigMap "u" is invalid: metadata.uid: Invalid value: "not-the-uid": field is immutable"#,
    )?;
    ensure!(api.put(&format!("{CMS}/u"), &cm).await?.code == 200);
    Ok(())
}

#[tokio::test]
async fn patched_times_are_checked() -> anyhow::Result<()> {
    let api = Api::new().await?;
    ensure!(
        api.post(LEASES, &lease("2026-01-02T03:04:05.000000Z"))
            .await?
            .code
            == 201
    );
    let url = format!("{LEASES}/node-a");
    let bad = r#"{"spec":{"renewTime":"2026-01-02T03:04:15Z"}}"#;
    let r = api
        .call(Method::PATCH, &url, "application/merge-patch+json", bad)
        .await?;
    ensure!(r.code == 422, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap_or_default();
    ensure!(
        msg.starts_with("\"\" is invalid: patch: Invalid value: ")
            && msg.ends_with(r#"parsing time "2026-01-02T03:04:15Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000""#),
        "{msg}"
    );
    let good = r#"{"spec":{"renewTime":"2026-01-02T03:04:15.000000Z"}}"#;
    ensure!(
        api.call(Method::PATCH, &url, "application/merge-patch+json", good)
            .await?
            .code
            == 200
    );
    Ok(())
}

#[tokio::test]
async fn names_follow_their_kind() -> anyhow::Result<()> {
    let api = Api::new().await?;
    let svc = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}]}})
    };
    // A Service name is a DNS-1035 label: it may not start with a digit.
    let r = api.post(SVCS, &svc("1st")).await?;
    expect(
        &r,
        422,
        r#"Service "1st" is invalid: metadata.name: Invalid value: "1st": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"#,
    )?;
    ensure!(api.post(SVCS, &svc("first")).await?.code == 201);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
    let r = api.post(CMS, &cm).await?;
    expect(
        &r,
        422,
        r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#,
    )?;
    ensure!(
        api.post(
            CMS,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "1.good-name"}})
        )
        .await?
        .code
            == 201
    );
    Ok(())
}

#[test]
fn decode_entry_point_matches_the_server() {
    use kubeedge_apiserver::{decode_json_object, FieldValidation};
    let body = lease("2026-01-02T03:04:05.1Z").to_string();
    let e = decode_json_object(body.as_bytes(), "Lease", "v1", FieldValidation::Warn).unwrap_err();
    assert!(
        e.message.contains(r#"cannot parse ".1Z" as ".000000""#),
        "{e}"
    );
}
