//! `EdgeCore`: the modules wired together from an [`EdgeCoreConfig`]. The store opens first, so
//! that an edge with no cloud still has its pods; the hub connects (and bootstraps its
//! certificates from the token) in the background, with backoff, until the link is up.

use std::time::Duration;

use kubeedge_proto::JoinToken;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{ConfigError, EdgeCoreConfig};
use crate::edged;
use crate::hub::{self, ClientTls};
use crate::meta::{MetaDb, MetaManager, Outputs, SqliteStore, StoreError};
use crate::metaserver::{self, MetaServer, MetaView};
use crate::router::{self, Routes};

/// Why edgecore cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeCoreError {
    /// The configuration is invalid.
    #[error("configuration")]
    Config(#[from] ConfigError),
    /// The metadata store cannot be opened.
    #[error("metadata store")]
    Store(#[from] StoreError),
    /// No certificates and no usable token.
    #[error("no client certificate at {path} and no valid edgeHub.token to get one")]
    NoCredentials {
        /// The expected certificate file.
        path: String,
    },
    /// Certificate files exist but are unusable.
    #[error("client certificate files")]
    Tls(#[source] crate::error::HubError),
    /// MetaServer could not start.
    #[error("metaserver")]
    MetaServer(#[from] crate::metaserver::MetaServerError),
    /// MetaServer's address cannot be bound.
    #[error("cannot listen on metaServer.server {addr}")]
    Listen {
        /// The configured address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running edgecore.
#[derive(Debug)]
pub struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// The metadata store.
    pub db: MetaDb,
    /// Pods found in the store at start (handed to edged when it runs).
    pub stored_pods: usize,
    /// Where MetaServer listens, when it is enabled.
    pub metaserver: Option<std::net::SocketAddr>,
}

impl Running {
    /// Stop every module and wait for them (bounded by `grace`): the websocket is closed and
    /// every acknowledged write is already committed.
    pub async fn shutdown(self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(?grace, "modules did not stop in time");
        }
    }
}

/// Start edgecore's modules.
pub async fn start(config: EdgeCoreConfig) -> Result<Running, EdgeCoreError> {
    let hub_cfg = config.hub()?;
    let (store, warning) = SqliteStore::open(&config.database.data_source)?;
    if let Some(w) = warning {
        error!(error = %w, "metadata store recovered");
    }
    let db = MetaDb::spawn(store);
    let stored_pods = db.list("pod").await?.len();
    info!(pods = stored_pods, db = %config.database.data_source.display(), "metadata store open");

    let files = config.cert_files();
    let tls = ClientTls::load(&files).map_err(EdgeCoreError::Tls)?;
    let token: Option<JoinToken> = config.modules.edge_hub.token.parse().ok();
    if tls.is_none() && token.is_none() {
        return Err(EdgeCoreError::NoCredentials {
            path: files.cert.display().to_string(),
        });
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Edged starts now, with the stored pods, whether or not the cloud is reachable.
    let (cloud_tx, cloud_rx) = watch::channel(None);
    let edged_tx = config.modules.edged.enable.then(|| {
        edged::spawn(
            &tracker,
            cancel.child_token(),
            &config.modules.edged,
            db.clone(),
            cloud_rx,
        )
    });
    let node = config.node_name().to_owned();
    let (metaserver, metaserver_addr) = if config.modules.meta_manager.meta_server.enable {
        let (server, addr) = start_metaserver(&config, &db, &node, &cancel, &tracker).await?;
        (Some(server), Some(addr))
    } else {
        (None, None)
    };
    let https = config.modules.edge_hub.http_server.clone();
    let remote_timeout = config.remote_query_timeout();
    let db2 = db.clone();
    let c = cancel.clone();
    let t2 = tracker.clone();
    tracker.spawn(async move {
        // Certificates: from disk, or bootstrapped with the token, retrying while the cloud
        // is unreachable (the store keeps serving meanwhile).
        let tls = match tls {
            Some(t) => t,
            None => {
                let Some(token) = token else { return };
                let mut delay = Duration::from_secs(1);
                loop {
                    let attempt = hub::bootstrap(&https, &token, &node, &files, Duration::from_secs(30));
                    tokio::select! {
                        _ = c.cancelled() => return,
                        r = attempt => match r {
                            Ok(t) => break t,
                            Err(e) => warn!(error = %e, retry_in = ?delay, "certificate bootstrap failed"),
                        },
                    }
                    tokio::select! {
                        _ = c.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        let (client, inbound, driver) = hub::connect(hub_cfg, tls);
        if let Some(m) = &metaserver {
            m.set_hub(client.clone());
        }
        let meta = MetaManager::new(db2, client.clone(), Outputs { edged: edged_tx, twin: None })
            .with_remote_timeout(remote_timeout);
        let _ = cloud_tx.send(Some(edged::Cloud { meta: meta.clone(), hub: client.clone() }));
        t2.spawn(meta.clone().run_outbox(c.child_token()));
        let routes = Routes {
            meta: Some(meta),
            ..Routes::default()
        };
        t2.spawn(driver.run(c.child_token()));
        t2.spawn(router::run(inbound, client, routes, c.child_token()));
    });
    Ok(Running {
        cancel,
        tracker,
        db,
        stored_pods,
        metaserver: metaserver_addr,
    })
}

/// MetaServer on `metaServer.server`, serving the store from the start (the cloud may be away).
async fn start_metaserver(
    config: &EdgeCoreConfig,
    db: &MetaDb,
    node: &str,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(MetaServer, std::net::SocketAddr), EdgeCoreError> {
    let addr = config.modules.meta_manager.meta_server.server.clone();
    let listen_err = |source| EdgeCoreError::Listen {
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let view = MetaView::load(db.clone(), cancel.child_token())
        .await
        .map_err(crate::metaserver::MetaServerError::from)?;
    let server = MetaServer::new(view, node).await?;
    let c = cancel.clone();
    let s = server.clone();
    tracker.spawn(async move {
        if let Err(e) = metaserver::serve(listener, s, c.cancelled()).await {
            error!(error = %e, "metaserver stopped");
        }
    });
    info!(addr = %local, "metaserver listening");
    Ok((server, local))
}
