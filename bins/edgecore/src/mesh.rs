//! `modules.edgeMesh`: EdgeMesh (kubeedge-mesh's agent) over this edgecore's own MetaServer,
//! read in process, so that Services resolve and answer on the node, also with the cloud
//! offline.

use std::time::Duration;

use kubeedge_edge::config::EdgeMesh;
use kubeedge_edge::metaserver::MetaServer;
use kubeedge_mesh::agent::{self, AgentOptions};
use kubeedge_mesh::catalog::{store_feed, Catalog};
use kubeedge_mesh::config::AgentConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running mesh: stop it with [`Mesh::stop`] (its table and interface are removed).
pub(crate) struct Mesh {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Mesh {
    /// Cancels the mesh and waits (5 s at most) for it to clean up.
    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Starts the mesh when `cfg.enable`, over `metaserver`'s view of the node's store.
pub(crate) fn start(
    cfg: &EdgeMesh,
    cluster_domain: &str,
    node_name: &str,
    metaserver: Option<&MetaServer>,
) -> anyhow::Result<Option<Mesh>> {
    if !cfg.enable {
        return Ok(None);
    }
    let Some(metaserver) = metaserver else {
        anyhow::bail!("modules.edgeMesh needs modules.metaManager.metaServer.enable");
    };
    // The address only names where Services come from; they are read in process.
    let server = "http://127.0.0.1:10550";
    let agent_config = match std::fs::read_to_string(&cfg.config_file) {
        Ok(text) => AgentConfig::from_yaml(&text)?.on_edge(server),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            AgentConfig::defaults_for_edge(server)
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", cfg.config_file.display()),
    };
    let filter = agent_config.modules.edge_proxy.filter_mode()?;
    // The cloud pushes Services and Endpoints to nodes that ask.
    metaserver.watch_from_cloud("services", None);
    metaserver.watch_from_cloud("endpoints", None);
    let mut options = AgentOptions::default();
    options.cluster_domain = cluster_domain.to_owned();
    options.node_name = node_name.to_owned();
    let cancel = CancellationToken::new();
    let catalog = Catalog::new();
    tokio::spawn(store_feed::run(
        metaserver.view().clone(),
        catalog.clone(),
        filter,
        cancel.clone(),
    ));
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = agent::run(&agent_config, &options, catalog, stop).await {
            tracing::error!(error = %e, "edgeMesh stopped");
        }
    });
    tracing::info!("edgeMesh started");
    Ok(Some(Mesh { cancel, task }))
}
