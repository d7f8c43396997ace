//! Object semantics through kube-rs in-process: every served type, defaulting, graceful pod
//! deletion, finalizers, orphaning, deletecollection, field selectors, namespace deletion.

mod common;

use anyhow::{ensure, Context as _};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Resource;
use kubeedge_apiserver::SqliteConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

async fn roundtrip<K>(api: &Api<K>, obj: Value) -> anyhow::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let k: K = serde_json::from_value(obj)?;
    let created = api.create(&PostParams::default(), &k).await?;
    let name = created.meta().name.clone().context("name")?;
    ensure!(
        created.meta().uid.is_some() && created.meta().resource_version.is_some(),
        "{created:?}"
    );
    api.get(&name).await?;
    ensure!(
        !api.list(&ListParams::default()).await?.items.is_empty(),
        "list"
    );
    Ok(created)
}

fn pod(name: &str, node: Option<&str>, phase: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_type_round_trips() -> anyhow::Result<()> {
    let (_dir, _svc, client) = common::in_process(SqliteConfig::default()).await?;
    let c = || client.clone();
    roundtrip(
        &Api::<Namespace>::all(c()),
        json!({"metadata": {"name": "edge"}}),
    )
    .await?;
    roundtrip(&Api::<Node>::all(c()), json!({"metadata": {"name": "n1"}})).await?;
    let p = roundtrip(
        &Api::<Pod>::default_namespaced(c()),
        pod("p", None, "Pending"),
    )
    .await?;
    let spec = p.spec.context("spec")?;
    ensure!(
        spec.restart_policy.as_deref() == Some("Always")
            && spec.containers[0].image_pull_policy.as_deref() == Some("Always"),
        "pod defaults"
    );
    roundtrip(
        &Api::<ConfigMap>::default_namespaced(c()),
        json!({"metadata": {"name": "cm"}, "data": {"a": "b"}}),
    )
    .await?;
    let s = roundtrip(
        &Api::<Secret>::default_namespaced(c()),
        json!({"metadata": {"name": "s"}, "data": {"a": "Yg=="}}),
    )
    .await?;
    ensure!(s.type_.as_deref() == Some("Opaque"), "secret type default");
    let svc = roundtrip(
        &Api::<Service>::default_namespaced(c()),
        json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await?;
    let svc2 = roundtrip(
        &Api::<Service>::default_namespaced(c()),
        json!({"metadata": {"name": "svc2"}, "spec": {"ports": [{"port": 81}]}}),
    )
    .await?;
    let ip1 = svc.spec.and_then(|s| s.cluster_ip).context("ip")?;
    let ip2 = svc2.spec.and_then(|s| s.cluster_ip).context("ip")?;
    ensure!(
        ip1 != ip2 && ip1.starts_with("10.") && ip2.starts_with("10."),
        "{ip1} {ip2}"
    );
    roundtrip(&Api::<Endpoints>::default_namespaced(c()), json!({"metadata": {"name": "svc"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})).await?;
    roundtrip(&Api::<Event>::default_namespaced(c()), json!({"metadata": {"name": "ev1"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started", "message": "m", "type": "Normal"})).await?;
    roundtrip(
        &Api::<ServiceAccount>::default_namespaced(c()),
        json!({"metadata": {"name": "sa"}}),
    )
    .await?;
    roundtrip(&Api::<Lease>::namespaced(c(), "kube-node-lease"), json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}})).await?;
    let tmpl = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let d = roundtrip(&Api::<Deployment>::default_namespaced(c()), json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": tmpl}})).await?;
    ensure!(
        d.spec.and_then(|s| s.replicas) == Some(1) && d.metadata.generation == Some(1),
        "deployment defaults"
    );
    roundtrip(&Api::<ReplicaSet>::default_namespaced(c()), json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": tmpl}})).await?;
    roundtrip(&Api::<DaemonSet>::default_namespaced(c()), json!({"metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": tmpl}})).await?;
    // A cluster IP asked for is kept; one outside the range is 422.
    let svcs: Api<Service> = Api::default_namespaced(c());
    let fixed: Service = serde_json::from_value(
        json!({"metadata": {"name": "fixed"}, "spec": {"clusterIP": "10.96.0.100", "ports": [{"port": 80}]}}),
    )?;
    ensure!(
        svcs.create(&PostParams::default(), &fixed)
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .as_deref()
            == Some("10.96.0.100"),
        "fixed ip"
    );
    let outside: Service = serde_json::from_value(
        json!({"metadata": {"name": "outside"}, "spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}}),
    )?;
    let r = svcs.create(&PostParams::default(), &outside).await;
    ensure!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 422),
        "{r:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_semantics() -> anyhow::Result<()> {
    let (_dir, _svc, client) = common::in_process(SqliteConfig::default()).await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    // A pod bound to a node is deleted gracefully: marked, then removed by its node (grace 0).
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod("bound", Some("edge-1"), "Running"))?,
    )
    .await?;
    pods.delete("bound", &DeleteParams::default()).await?;
    let marked = pods.get("bound").await?;
    ensure!(
        marked.metadata.deletion_timestamp.is_some()
            && marked.metadata.deletion_grace_period_seconds == Some(30),
        "{marked:?}"
    );
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await?;
    ensure!(
        pods.get_opt("bound").await?.is_none(),
        "bound pod removed at grace 0"
    );
    // An unbound pod goes at once.
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod("free", None, "Pending"))?,
    )
    .await?;
    pods.delete("free", &DeleteParams::default()).await?;
    ensure!(pods.get_opt("free").await?.is_none(), "unbound pod removed");

    // Finalizers hold an object until they are cleared.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
        )?,
    )
    .await?;
    cms.delete("held", &DeleteParams::default()).await?;
    ensure!(
        cms.get("held").await?.metadata.deletion_timestamp.is_some(),
        "marked for deletion"
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    ensure!(
        cms.get_opt("held").await?.is_none(),
        "removed when the finalizer went"
    );

    // Orphan keeps dependents and strips the owner reference.
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let uid = owner.metadata.uid.clone().context("uid")?;
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "dep", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}))?).await?;
    cms.delete("owner", &DeleteParams::orphan()).await?;
    let dep = cms.get("dep").await?;
    ensure!(
        dep.metadata.owner_references.unwrap_or_default().is_empty(),
        "owner reference stripped"
    );

    // deletecollection with a label selector; field selectors on pods.
    for (i, node) in ["a", "b", "a"].iter().enumerate() {
        let mut p = pod(
            &format!("sel-{i}"),
            Some(node),
            if i == 0 { "Running" } else { "Pending" },
        );
        p["metadata"]["labels"] = json!({"group": "sel"});
        pods.create(&PostParams::default(), &serde_json::from_value(p)?)
            .await?;
    }
    ensure!(
        pods.list(&ListParams::default().fields("spec.nodeName=a"))
            .await?
            .items
            .len()
            == 2,
        "spec.nodeName"
    );
    ensure!(
        pods.list(&ListParams::default().fields("status.phase=Running,metadata.namespace=default"))
            .await?
            .items
            .len()
            == 1,
        "status.phase"
    );
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels("group=sel"),
    )
    .await?;
    ensure!(
        pods.list(&ListParams::default().labels("group=sel"))
            .await?
            .items
            .is_empty(),
        "deletecollection"
    );

    // Deleting a namespace deletes what is in it.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "doomed"}}))?,
    )
    .await?;
    let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    in_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}}))?,
        )
        .await?;
    nss.delete("doomed", &DeleteParams::default()).await?;
    ensure!(nss.get_opt("doomed").await?.is_none(), "namespace gone");
    let r = in_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "y"}}))?,
        )
        .await;
    ensure!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 404),
        "create in a deleted namespace: {r:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_a_pod_once() -> anyhow::Result<()> {
    let (_dir, _svc, client) = common::in_process(SqliteConfig::default()).await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("web", None, "Pending"))?,
        )
        .await?;
    let binding = |node: &str, uid: Option<String>| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web", "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    };
    // A binding for another pod of that name is refused.
    let r: kube::Result<Value> = pods
        .create_subresource(
            "binding",
            "web",
            &PostParams::default(),
            &binding("edge-1", Some("not-the-uid".into())),
        )
        .await;
    ensure!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 409),
        "{r:?}"
    );
    let r: Value = pods
        .create_subresource(
            "binding",
            "web",
            &PostParams::default(),
            &binding("edge-1", created.metadata.uid.clone()),
        )
        .await?;
    ensure!(r["status"] == "Success", "{r}");
    let p = pods.get("web").await?;
    ensure!(p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("edge-1"));
    let scheduled = p
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True");
    ensure!(scheduled, "no PodScheduled=True");
    // Bound already: a second binding is a conflict.
    let r: kube::Result<Value> = pods
        .create_subresource(
            "binding",
            "web",
            &PostParams::default(),
            &binding("edge-2", None),
        )
        .await;
    ensure!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 409),
        "{r:?}"
    );
    // A binding without a target is invalid.
    let r: kube::Result<Value> = pods
        .create_subresource(
            "binding",
            "web",
            &PostParams::default(),
            &json!({"kind": "Binding", "target": {}}),
        )
        .await;
    ensure!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 422),
        "{r:?}"
    );
    Ok(())
}
