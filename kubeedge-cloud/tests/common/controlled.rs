//! A controlled cloud: a real kubeedge-apiserver (SQLite in a temp dir, in process), a real
//! CloudHub on 127.0.0.1 with every controller behind it, and edges with their meta manager.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kubeedge_cloud::synccontroller::SyncConfig;
use kubeedge_cloud::ControllersConfig;
use kubeedge_edge::meta::{MetaDb, MetaManager, Outputs, SqliteStore};
use kubeedge_edge::router::{self, Routes};
use kubeedge_proto::{Application, ApplicationVerb, Content, Message, Route};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// How long an Application waits for its answer.
pub const T: Duration = Duration::from_secs(5);

pub struct Controlled {
    pub cloud: Cloud,
    pub client: kube::Client,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), kubeedge_cloud::ControllerError>>,
    pub _api: tempfile::TempDir,
}

impl Drop for Controlled {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn controllers() -> ControllersConfig {
    let mut c = ControllersConfig::default();
    let mut s = SyncConfig::default();
    s.resync_period = Duration::from_millis(200);
    c.sync = Some(s);
    c
}

pub async fn api() -> Result<(tempfile::TempDir, kube::Client)> {
    let (dir, service) = api_service().await?;
    Ok((dir, kube::Client::new(service, "default")))
}

/// The in-process API server itself, for clients built over it.
pub async fn api_service() -> Result<(
    tempfile::TempDir,
    kubeedge_apiserver::ApiService<kubeedge_apiserver::SqliteStore>,
)> {
    let dir = tempfile::tempdir()?;
    let store = kubeedge_apiserver::SqliteStore::open(dir.path().join("state.db"))?;
    let service = kubeedge_apiserver::ApiService::new(store, Default::default()).await?;
    Ok((dir, service))
}

/// Creates the namespace `name` through `client`.
pub async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await?;
    Ok(())
}

pub fn start_controllers(
    cloud: &mut Cloud,
    client: &kube::Client,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), kubeedge_cloud::ControllerError>>,
) {
    start_controllers_with(cloud, client, controllers())
}

pub fn start_controllers_with(
    cloud: &mut Cloud,
    client: &kube::Client,
    config: ControllersConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), kubeedge_cloud::ControllerError>>,
) {
    let up = std::mem::replace(&mut cloud.up, mpsc::channel(1).1);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(kubeedge_cloud::run_controllers(
        client.clone(),
        cloud.hub.clone(),
        cloud.down.clone(),
        up,
        config,
        cancel.clone(),
    ));
    (cancel, task)
}

pub async fn controlled() -> Result<Controlled> {
    controlled_with(controllers()).await
}

pub async fn controlled_with(config: ControllersConfig) -> Result<Controlled> {
    let (dir, client) = api().await?;
    let mut cloud = cloud(fast()).await?;
    let (cancel, task) = start_controllers_with(&mut cloud, &client, config);
    Ok(Controlled {
        cloud,
        client,
        cancel,
        task,
        _api: dir,
    })
}

/// An edge with its meta manager: pushes are stored in SQLite and acked, then handed on.
pub struct EdgeMeta {
    pub db: MetaDb,
    pub edged: mpsc::Receiver<Message>,
    pub edge: Edge,
    pub _cancel: CancellationToken,
    pub _dir: tempfile::TempDir,
}

pub async fn edge_meta(cloud: &Cloud, node: &str) -> Result<EdgeMeta> {
    let dir = tempfile::tempdir()?;
    let tls = join(cloud, node, dir.path()).await?;
    let mut e = edge(cloud, node, tls);
    within("connect", e.client.connected()).await??;
    let (store, _) = SqliteStore::open(&dir.path().join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let (edged_tx, edged) = mpsc::channel(1024);
    let meta = MetaManager::new(
        db.clone(),
        e.client.clone(),
        Outputs {
            edged: Some(edged_tx),
            twin: None,
        },
    );
    let cancel = CancellationToken::new();
    let inbound = std::mem::replace(&mut e.inbound, mpsc::channel(1).1);
    let routes = Routes {
        meta: Some(meta),
        ..Routes::default()
    };
    tokio::spawn(router::run(
        inbound,
        e.client.clone(),
        routes,
        cancel.clone(),
    ));
    Ok(EdgeMeta {
        db,
        edged,
        edge: e,
        _cancel: cancel,
        _dir: dir,
    })
}

pub async fn edge_node(client: &kube::Client, name: &str) -> Result<()> {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}}
    }))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    Ok(())
}

pub async fn stored(db: &MetaDb, key: &str) -> Result<Option<Value>> {
    Ok(match db.get(key).await? {
        Some(r) => Some(serde_json::from_str(&r.value)?),
        None => None,
    })
}

/// Wait until the edge's store holds `key` and `cond` holds on it.
pub async fn until_stored(db: &MetaDb, key: &str, cond: impl Fn(&Value) -> bool) -> Result<Value> {
    within(&format!("edge stores {key}"), async {
        loop {
            if let Ok(Some(v)) = stored(db, key).await {
                if cond(&v) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub fn application(verb: ApplicationVerb, key: &str, node: &str) -> Application {
    Application::new(key, verb, node)
}

pub async fn apply(e: &Edge, app: Application) -> Result<Application> {
    let msg = Message::new(
        Route::new("metaserver", "dynamiccontroller", "null", "null"),
        Content::json(&app)?,
    );
    let reply = e.client.request(msg.clone(), T).await?;
    // Upstream's reply envelope (captures 06, 07, 12-14).
    assert_eq!(reply.parent_id(), Some(msg.id()));
    assert_eq!(reply.route.source_str(), "dynamiccontroller");
    assert_eq!(reply.route.group_str(), "resource");
    assert_eq!(reply.route.operation_str(), "applicationResponse");
    assert_eq!(reply.route.resource, "ignore/Application/ignore");
    assert!(reply.header.resource_version.is_empty());
    Ok(reply.content.decode()?)
}
