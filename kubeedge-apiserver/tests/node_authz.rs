//! The Node authorizer and NodeRestriction, driven by the stock kubectl with a node's client
//! certificate (`system:node:n1` in `system:nodes`): a node reads only its own Node, its pods
//! and what they use, and changes only its own things; every refusal is Kubernetes' 403 and
//! leaves the stored objects as they were.

mod common;

use anyhow::ensure;
use common::TestServer;

const OBJECTS: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
  {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}},
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "stringData": {"k": "v"}},
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}, "stringData": {"k": "v"}},
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unused"}, "stringData": {"k": "v"}},
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"k": "v"}},
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "labels": {"app": "a"}},
   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx",
     "envFrom": [{"configMapRef": {"name": "c1"}}]}],
     "volumes": [{"name": "s", "secret": {"secretName": "s1"}}]}},
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2"},
   "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "nginx"}],
     "volumes": [{"name": "s", "secret": {"secretName": "s2"}}]}}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_and_writes_only_what_is_its_own() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    srv.kubectl_stdin(&["create", "-f", "-"], OBJECTS).await?;
    let cert = srv
        .pki
        .issue_client_cert("system:node:n1", Some("system:nodes"))?;
    let kc = srv.path("n1.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &kc,
        &format!("https://127.0.0.1:{}", srv.addr.port()),
        &srv.pki.ca_pem(),
        Some(&cert),
        None,
    )?;
    let client = common::client_from(&kc).await?;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::default_namespaced(client.clone());
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let merge = |v: serde_json::Value| kube::api::Patch::Merge(v);
    let pp = kube::api::PatchParams::default();
    let kc = kc.display().to_string();
    let node = |args: &[&str]| {
        let mut v = vec!["--kubeconfig".to_owned(), kc.clone()];
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    };
    let run = |args: Vec<String>| {
        let srv = &srv;
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = srv.kubectl_raw(&refs, None).await?;
            anyhow::Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    };
    let user = "User \"system:node:n1\"";

    // What is n1's.
    for args in [
        &["get", "pod", "p1"][..],
        &["get", "secret", "s1"],
        &["get", "configmap", "c1"],
        &["get", "node", "n1"],
        &["get", "pods", "--field-selector", "spec.nodeName=n1"],
        &[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "n1",
            "--ignore-not-found",
        ],
    ] {
        let (ok, err) = run(node(args)).await?;
        ensure!(ok, "{args:?}: {err}");
    }
    // (kubectl patch --subresource reads the status first, which a node may not: kube-rs
    // patches straight away, as the kubelet does.)
    pods.patch_status(
        "p1",
        &pp,
        &merge(serde_json::json!({"status": {"phase": "Running"}})),
    )
    .await?;
    let refused = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(e.message),
        other => Err(anyhow::anyhow!(
            "not a 403: {:?}",
            other.map(|_: k8s_openapi::api::core::v1::Pod| ())
        )),
    };
    for (got, want) in [
        (
            refused(pods.patch_status("p2", &pp, &merge(serde_json::json!({"status": {"phase": "Failed"}}))).await)?,
            "pods \"p2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself",
        ),
        (
            refused(pods.patch_status("p1", &pp, &merge(serde_json::json!({"metadata": {"labels": {"app": "b"}}}))).await)?,
            "pods \"p1\" is forbidden: node \"n1\" cannot update labels through pod status",
        ),
    ] {
        ensure!(got == want, "got: {got}\nwant: {want}");
    }
    let got = match nodes
        .patch_status(
            "n2",
            &pp,
            &merge(serde_json::json!({"status": {"phase": "Terminated"}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => e.message,
        other => anyhow::bail!("not a 403: {:?}", other.map(|_| ())),
    };
    ensure!(
        got == "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"",
        "{got}"
    );

    // What is not, each with the Node authorizer's reason or NodeRestriction's message.
    let no_rel = "no relationship found between node 'n1' and this object";
    for (args, want) in [
        (
            &["get", "pod", "p2"][..],
            format!("pods \"p2\" is forbidden: {user} cannot get resource \"pods\" in API group \"\" in the namespace \"default\": {no_rel}"),
        ),
        (
            &["get", "secret", "s2"],
            format!("secrets \"s2\" is forbidden: {user} cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": {no_rel}"),
        ),
        (
            &["get", "secret", "unused"],
            format!("secrets \"unused\" is forbidden: {user} cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": {no_rel}"),
        ),
        (
            &["get", "secrets"],
            "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found".to_owned(),
        ),
        (
            &["get", "pods"],
            format!("{user} cannot list resource \"pods\" in API group \"\" in the namespace \"default\": can only list/watch pods with spec.nodeName field selector"),
        ),
        (
            &["get", "node", "n2"],
            format!("nodes \"n2\" is forbidden: {user} cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot read 'n2', only its own Node object"),
        ),
        (
            &["delete", "node", "n1"],
            format!("nodes \"n1\" is forbidden: {user} cannot delete resource \"nodes\" in API group \"\" at the cluster scope"),
        ),
        (
            &["delete", "pod", "p2"],
            "pods \"p2\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself".to_owned(),
        ),
        (
            &["create", "configmap", "mine", "--from-literal=a=b"],
            format!("configmaps is forbidden: {user} cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\": can only read resources of this type"),
        ),
    ] {
        let (ok, err) = run(node(args)).await?;
        ensure!(!ok && err.contains(&want), "{args:?}:\n got: {err}\nwant: {want}");
    }

    // Nothing changed.
    let p2 = srv
        .kubectl(&["get", "pod", "p2", "-o", "jsonpath={.status.phase}"])
        .await?;
    ensure!(p2 != "Failed", "p2 changed: {p2}");
    let p1 = srv
        .kubectl(&[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.metadata.labels.app}/{.status.phase}",
        ])
        .await?;
    ensure!(p1 == "a/Running", "{p1}");
    srv.kubectl(&["get", "node", "n1", "n2"]).await?;
    srv.kubectl(&["get", "configmap", "mine"])
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the node created a configmap"))?;

    // `kubectl auth can-i` answers for the node, as the node, with the reason.
    for (what, want) in [
        ("secret/s1", "yes".to_owned()),
        ("secret/s2", format!("no - {no_rel}")),
    ] {
        let args = node(&["auth", "can-i", "get", what]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = srv.kubectl_raw(&refs, None).await?;
        let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(got == want, "can-i get {what}: {got}");
    }
    srv.stop().await;
    Ok(())
}
