//! Edged online, against a real kubeedge-apiserver, the real controllers and CloudHub, with
//! the real Docker engine: the Services it lists through the DynamicController reach its
//! containers' environment as the kubelet's variables, and the events it records reach the
//! API through the edge controller.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use kubeedge_edge::edged::runtime::ContainerRuntime;
use kubeedge_edge::edged::{Cloud as EdgeCloud, DockerRuntime, Edged, EdgedConfig, Link};
use kubeedge_edge::meta::{MetaDb, MetaManager, Outputs, SqliteStore};
use kubeedge_edge::router::{self, Routes};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        kubeedge_bench::remove_node_containers(&self.0);
    }
}

async fn create<K>(client: &kube::Client, ns: Option<&str>, v: Value) -> Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(v)?)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edged_online_gets_service_variables_and_its_events_reach_the_api() -> Result<()> {
    trace();
    kubeedge_bench::ensure_busybox_image().await?;
    let node = format!("svc-{:08x}", fastrand_u32());
    let _clean = Containers(node.clone());

    // The cloud: API server, controllers, hub.
    let dir = tempfile::tempdir()?;
    let store = kubeedge_apiserver::SqliteStore::open(dir.path().join("state.db"))?;
    let service = kubeedge_apiserver::ApiService::new(store, Default::default()).await?;
    let client = kube::Client::new(service, "default");
    let mut cloud = cloud(fast()).await?;
    let up = std::mem::replace(&mut cloud.up, mpsc::channel(1).1);
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    tokio::spawn(kubeedge_cloud::run_controllers(
        client.clone(),
        cloud.hub.clone(),
        cloud.down.clone(),
        up,
        kubeedge_cloud::ControllersConfig::default(),
        cancel.clone(),
    ));
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node, "labels": {
                "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}}}))?,
        )
        .await?;
    let https = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]);
    create::<Service>(
        &client,
        None,
        json!({"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": "10.96.0.1", "ports": https}}),
    )
    .await?;
    create::<Service>(
        &client,
        None,
        json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}}),
    )
    .await?;

    // The edge: hub client, meta manager, edged on Docker.
    let edge_dir = tempfile::tempdir()?;
    let tls = join(&cloud, &node, edge_dir.path()).await?;
    let mut e = edge(&cloud, &node, tls);
    within("connect", e.client.connected()).await??;
    let (store, _) = SqliteStore::open(&edge_dir.path().join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let (cloud_tx, cloud_rx) = watch::channel(None);
    let mut cfg = EdgedConfig::default();
    cfg.node_name = node.clone();
    cfg.root_dir = edge_dir.path().join("edged");
    cfg.sync_frequency = Duration::from_millis(200);
    let rt = Arc::new(DockerRuntime::new("unix:///var/run/docker.sock"));
    let (edged, edged_tx, handle) = Edged::new(cfg, rt.clone(), Link::new(db.clone(), cloud_rx));
    let meta = MetaManager::new(
        db.clone(),
        e.client.clone(),
        Outputs {
            edged: Some(edged_tx),
            twin: None,
        },
    );
    tokio::spawn(meta.clone().run_outbox(cancel.clone()));
    let inbound = std::mem::replace(&mut e.inbound, mpsc::channel(1).1);
    let routes = Routes {
        meta: Some(meta.clone()),
        ..Routes::default()
    };
    tokio::spawn(router::run(
        inbound,
        e.client.clone(),
        routes,
        cancel.clone(),
    ));
    cloud_tx.send_replace(Some(EdgeCloud {
        meta,
        hub: e.client.clone(),
    }));
    tokio::spawn(edged.run(cancel.clone()));

    let image = kubeedge_bench::BUSYBOX_IMAGE;
    let c = |name: &str, cmd: Value| json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": cmd});
    create::<Pod>(
        &client,
        None,
        json!({"metadata": {"name": "app"}, "spec": {"nodeName": node,
               "containers": [c("c", json!(["sleep", "3600"]))]}}),
    )
    .await?;
    create::<Pod>(
        &client,
        None,
        json!({"metadata": {"name": "badcmd"}, "spec": {"nodeName": node,
               "containers": [c("c", json!(["/no/such/binary"]))]}}),
    )
    .await?;

    // The running container has the variables of the Services listed from the cloud.
    let mut statuses = handle.statuses();
    let id = within("app running", async {
        loop {
            let id = statuses
                .borrow_and_update()
                .get("default/app")
                .and_then(|s| {
                    let c = s.container_statuses.as_ref()?.first()?;
                    c.state.as_ref()?.running.as_ref()?;
                    c.container_id.clone()
                });
            if let Some(id) = id {
                return Ok::<_, anyhow::Error>(id);
            }
            statuses.changed().await?;
        }
    })
    .await??;
    let out = rt
        .exec_sync(
            id.trim_start_matches("docker://"),
            vec!["env".into()],
            Duration::from_secs(5),
        )
        .await?;
    let env = String::from_utf8_lossy(&out.output).into_owned();
    for want in [
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
        "WEB_SERVICE_HOST=10.96.0.7",
        "WEB_PORT=tcp://10.96.0.7:80",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing from {env}");
    }

    // The failed start is an Event in the API, about the container, from the kubelet there.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let ev = tokio::time::timeout(LIMIT, async {
        loop {
            let list = events.list(&ListParams::default()).await?;
            if let Some(ev) = list.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some("badcmd")
                    && e.reason.as_deref() == Some("Failed")
            }) {
                return Ok::<_, anyhow::Error>(ev);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("no Failed event in the API")??;
    assert!(ev
        .message
        .as_deref()
        .unwrap_or_default()
        .starts_with("Error: "));
    assert_eq!(
        ev.involved_object.field_path.as_deref(),
        Some("spec.containers{c}")
    );
    assert_eq!(
        ev.source.as_ref().and_then(|s| s.host.as_deref()),
        Some(node.as_str())
    );
    drop(dir);
    Ok(())
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id()
}
