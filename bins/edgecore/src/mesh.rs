//! `modules.edgeMesh`: EdgeMesh (kubeedge-mesh's agent) over this edgecore's own MetaServer,
//! so that Services resolve and answer on the node, also with the cloud offline.

use std::net::SocketAddr;
use std::time::Duration;

use kubeedge_edge::config::EdgeMesh;
use kubeedge_mesh::agent::{self, AgentOptions};
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

/// Starts the mesh when `cfg.enable`, reading Services through `metaserver`.
pub(crate) fn start(
    cfg: &EdgeMesh,
    cluster_domain: &str,
    metaserver: Option<SocketAddr>,
) -> anyhow::Result<Option<Mesh>> {
    if !cfg.enable {
        return Ok(None);
    }
    let Some(addr) = metaserver else {
        anyhow::bail!("modules.edgeMesh needs modules.metaManager.metaServer.enable");
    };
    let server = format!("http://{addr}");
    let agent_config = match std::fs::read_to_string(&cfg.config_file) {
        Ok(text) => AgentConfig::from_yaml(&text)?.on_edge(&server),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            AgentConfig::defaults_for_edge(&server)
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", cfg.config_file.display()),
    };
    let client = kube::Client::try_from(kube::Config::new(server.parse()?))?;
    let mut options = AgentOptions::default();
    options.cluster_domain = cluster_domain.to_owned();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = agent::run(&agent_config, &options, client, stop).await {
            tracing::error!(error = %e, "edgeMesh stopped");
        }
    });
    tracing::info!(metaserver = %addr, "edgeMesh started");
    Ok(Some(Mesh { cancel, task }))
}
