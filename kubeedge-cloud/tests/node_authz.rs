//! Node authorization through the cloud, as cloudcore runs it on its embedded API: node A's
//! messages (through the hub) and MetaServer Applications run as `system:node:A`, so the API
//! server's Node authorizer and NodeRestriction decide them. Node A asks for node B's pod, for
//! a Secret no pod of A uses, to change node B's status and to delete a Node: each is refused
//! with Kubernetes' 403 and nothing changes, while A's own requests go through.

mod common;

use anyhow::{ensure, Result};
use common::controlled::*;
use common::*;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, PostParams};
use kubeedge_proto::{Application, ApplicationStatus, ApplicationVerb, Content, Message, Route};
use serde_json::{json, Value};

const A: &str = "edge-a";
const B: &str = "edge-b";

fn as_nodes() -> kubeedge_cloud::ControllersConfig {
    let mut c = controllers();
    if let Some(e) = c.edge.as_mut() {
        e.impersonate_nodes = true;
    }
    if let Some(d) = c.dynamic.as_mut() {
        d.impersonate_nodes = true;
    }
    c
}

fn pod(name: &str, node: &str, secret: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"nodeName": node,
        "serviceAccountName": "app",
        "containers": [{"name": "c", "image": "nginx"}],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
}

async fn setup(client: &kube::Client) -> Result<()> {
    edge_node(client, A).await?;
    edge_node(client, B).await?;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for s in ["sa", "sb", "unused"] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": s}, "stringData": {"k": s}}))?,
            )
            .await?;
    }
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::default_namespaced(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}}))?,
        )
        .await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for (p, n, s) in [("pa", A, "sa"), ("pb", B, "sb")] {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod(p, n, s))?,
        )
        .await?;
    }
    Ok(())
}

/// A merge patch of `node`'s own Node, as its MetaServer sends it.
fn patch_own_labels(node: &str, patch: &str) -> Result<Application> {
    let mut app = application(
        ApplicationVerb::Patch,
        &format!("/core/v1/nodes/null/{node}"),
        node,
    );
    app.set_option(&kubeedge_proto::PatchInfo {
        name: node.into(),
        patch_type: "application/merge-patch+json".into(),
        data: Some(patch.as_bytes().to_vec()),
        options: json!({"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"}),
        subresources: None,
    })?;
    Ok(app.with_identifier())
}

fn forbidden(app: &Application) -> String {
    assert_eq!(app.status, ApplicationStatus::Rejected, "{}", app.reason);
    assert_eq!(app.error.err_status.code, 403, "{:?}", app.error);
    app.error.err_status.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metaserver_requests_run_as_the_node() -> Result<()> {
    trace();
    let c = controlled_with(as_nodes()).await?;
    setup(&c.client).await?;
    let em = edge_meta(&c.cloud, A).await?;
    let user = "User \"system:node:edge-a\"";
    let no_rel = "no relationship found between node 'edge-a' and this object";

    // Its own: the pod, the secret the pod uses, its Node.
    for key in [
        "/core/v1/pods/default/pa",
        "/core/v1/secrets/default/sa",
        "/core/v1/nodes/null/edge-a",
    ] {
        let got = apply(&em.edge, application(ApplicationVerb::Get, key, A)).await?;
        ensure!(
            got.status == ApplicationStatus::Approved,
            "{key}: {}",
            got.reason
        );
    }

    for (verb, key, want) in [
        (
            ApplicationVerb::Get,
            "/core/v1/pods/default/pb",
            format!("pods \"pb\" is forbidden: {user} cannot get resource \"pods\" in API group \"\" in the namespace \"default\": {no_rel}"),
        ),
        (
            ApplicationVerb::Get,
            "/core/v1/secrets/default/unused",
            format!("secrets \"unused\" is forbidden: {user} cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": {no_rel}"),
        ),
        (
            ApplicationVerb::Get,
            "/core/v1/nodes/null/edge-b",
            format!("nodes \"edge-b\" is forbidden: {user} cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'edge-a' cannot read 'edge-b', only its own Node object"),
        ),
        (
            ApplicationVerb::Delete,
            "/core/v1/nodes/null/edge-a",
            format!("nodes \"edge-a\" is forbidden: {user} cannot delete resource \"nodes\" in API group \"\" at the cluster scope"),
        ),
    ] {
        let got = apply(&em.edge, application(verb, key, A)).await?;
        let msg = forbidden(&got);
        ensure!(msg == want, "{key}:\n got: {msg}\nwant: {want}");
    }

    // Node B's status: NodeRestriction.
    let mut app = application(
        ApplicationVerb::UpdateStatus,
        "/core/v1/nodes/null/edge-b",
        A,
    );
    let mut b: Value = serde_json::to_value(Api::<Node>::all(c.client.clone()).get(B).await?)?;
    b["status"]["phase"] = json!("Terminated");
    app.set_req_body(&b)?;
    let got = apply(&em.edge, app).await?;
    let msg = forbidden(&got);
    ensure!(
        msg == "nodes \"edge-b\" is forbidden: node \"edge-a\" is not allowed to modify node \"edge-b\"",
        "{msg}"
    );

    // Its own Node, with a label the kubelet may not set: NodeRestriction.
    let app = patch_own_labels(
        A,
        r#"{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}"#,
    )?;
    let msg = forbidden(&apply(&em.edge, app).await?);
    ensure!(
        msg == "nodes \"edge-a\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/control-plane",
        "{msg}"
    );
    // A label of its own choosing goes through.
    let app = patch_own_labels(
        A,
        r#"{"metadata":{"labels":{"team":"a","node.kubernetes.io/pool":"x"}}}"#,
    )?;
    let got = apply(&em.edge, app).await?;
    ensure!(got.status == ApplicationStatus::Approved, "{}", got.reason);

    // Nothing changed.
    let a = Api::<Node>::all(c.client.clone()).get(A).await?;
    let labels = a.metadata.labels.unwrap_or_default();
    ensure!(
        !labels.contains_key("node-role.kubernetes.io/control-plane")
            && labels.contains_key("team"),
        "{labels:?}"
    );
    let b = Api::<Node>::all(c.client.clone()).get(B).await?;
    ensure!(b.status.and_then(|s| s.phase).as_deref() != Some("Terminated"));
    Api::<Node>::all(c.client.clone()).get(A).await?;
    Ok(())
}

fn request(op: &str, resource: &str, content: Content) -> Message {
    Message::new(Route::new("edged", "meta", op, resource), content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_messages_run_as_the_node() -> Result<()> {
    trace();
    let c = controlled_with(as_nodes()).await?;
    setup(&c.client).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&c.cloud, A, dir.path()).await?;
    let e = edge(&c.cloud, A, tls);
    within("connect", e.client.connected()).await??;

    // The secret its pod uses is answered; another is not (upstream stays silent on a
    // refused query, since an upstream edge would store any reply as the object).
    let reply = e
        .client
        .request(request("query", "default/secret/sa", Content::null()), T)
        .await?;
    let v: Value = reply.content.decode()?;
    ensure!(v["metadata"]["name"] == "sa", "{v}");
    for other in ["default/secret/unused", "default/secret/sb"] {
        let r = e
            .client
            .request(
                request("query", other, Content::null()),
                std::time::Duration::from_millis(500),
            )
            .await;
        ensure!(r.is_err(), "{other} answered: {r:?}");
    }

    // A ServiceAccount token for its own pod, not for node B's.
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    for (pod, ok) in [("pa", true), ("pb", false)] {
        let uid = pods.get(pod).await?.metadata.uid.unwrap_or_default();
        let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid}}});
        let reply = e
            .client
            .request(
                request(
                    "query",
                    "default/serviceaccounttoken/app",
                    Content::json(&tr)?,
                ),
                T,
            )
            .await?;
        let text = format!("{:?}", reply.content);
        if ok {
            let v: Value = reply.content.decode()?;
            ensure!(
                v["status"]["token"]
                    .as_str()
                    .is_some_and(|t| t.split('.').count() == 3),
                "{v}"
            );
        } else {
            ensure!(
                text.contains("node requested token bound to a pod scheduled on a different node"),
                "{text}"
            );
        }
    }

    // Node B's status: the API's 403 comes back in the error reply.
    let status = json!({"Status": {"phase": "Terminated", "conditions": []}});
    let reply = e
        .client
        .request(
            request(
                "update",
                "default/nodestatus/edge-b",
                Content::json(&status)?,
            ),
            T,
        )
        .await?;
    let text = format!("{:?}", reply.content);
    ensure!(
        text.contains("nodes \\\"edge-b\\\" is forbidden: node \\\"edge-a\\\" is not allowed to modify node \\\"edge-b\\\"")
            || text.contains("nodes \"edge-b\" is forbidden: node \"edge-a\" is not allowed to modify node \"edge-b\""),
        "{text}"
    );
    // Its own status goes through.
    let reply = e
        .client
        .request(
            request(
                "update",
                "default/nodestatus/edge-a",
                Content::json(&json!({"Status": {"phase": "Running"}}))?,
            ),
            T,
        )
        .await?;
    ensure!(
        reply.route.operation_str() != "error",
        "{:?}",
        reply.content
    );
    let nodes: Api<Node> = Api::all(c.client.clone());
    ensure!(nodes.get(B).await?.status.and_then(|s| s.phase).as_deref() != Some("Terminated"));
    ensure!(nodes.get(A).await?.status.and_then(|s| s.phase).as_deref() == Some("Running"));

    // A label NodeRestriction keeps from nodes: refused with Kubernetes' message, unchanged.
    let relabel = json!({"metadata": {"name": A, "labels": {
        "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "",
        "node-restriction.kubernetes.io/secure-zone": "true"}}});
    let reply = e
        .client
        .request(
            request("update", "default/node/edge-a", Content::json(&relabel)?),
            T,
        )
        .await?;
    let text = format!("{:?}", reply.content);
    ensure!(
        reply.route.operation_str() == "error"
            && text.contains(
                "is not allowed to modify labels: node-restriction.kubernetes.io/secure-zone"
            ),
        "{text}"
    );
    let labels = nodes.get(A).await?.metadata.labels.unwrap_or_default();
    ensure!(
        !labels.contains_key("node-restriction.kubernetes.io/secure-zone"),
        "{labels:?}"
    );
    Ok(())
}

/// A node that registers itself through the hub, as its own user, keeps the `kubernetes.io`
/// labels edged sets (`node-role.kubernetes.io/edge` among them), which NodeRestriction would
/// refuse from the node: as upstream, the node creates itself without them and cloudcore adds
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_itself_with_the_edge_labels() -> Result<()> {
    trace();
    let c = controlled_with(as_nodes()).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&c.cloud, "edge-c", dir.path()).await?;
    let e = edge(&c.cloud, "edge-c", tls);
    within("connect", e.client.connected()).await??;
    let node = json!({"metadata": {"name": "edge-c", "labels": {
        "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "",
        "kubernetes.io/hostname": "edge-c", "team": "a"}}});
    let reply = e
        .client
        .request(
            request("insert", "default/node/edge-c", Content::json(&node)?),
            T,
        )
        .await?;
    let v: Value = reply.content.decode()?;
    ensure!(v["Err"].is_null(), "{v}");
    let labels = Api::<Node>::all(c.client.clone())
        .get("edge-c")
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    for k in [
        "node-role.kubernetes.io/edge",
        "node-role.kubernetes.io/agent",
        "kubernetes.io/hostname",
        "team",
    ] {
        ensure!(labels.contains_key(k), "{k} missing: {labels:?}");
    }
    Ok(())
}
