//! The controllers together behind one hub: the hub's upstream messages routed as upstream's
//! cloudhub routes them (by source: `metaserver` → dynamic controller, `twin` → device
//! controller, everything else → edge controller).

use kubeedge_proto::{Group, Source};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dynamiccontroller::{DynamicConfig, DynamicController};
use crate::edgecontroller::{EdgeController, EdgeControllerConfig};
use crate::error::ControllerError;
use crate::hub::{CloudHub, Downstream, Upstream};
use crate::synccontroller::{ensure_crds, SyncConfig, SyncController};

/// Which controllers run, and their settings (`None` = disabled).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControllersConfig {
    /// Edge controller.
    pub edge: Option<EdgeControllerConfig>,
    /// Sync controller: with `None` the ledger stays in memory only.
    pub sync: Option<SyncConfig>,
    /// Dynamic controller.
    pub dynamic: Option<DynamicConfig>,
    /// Device controller.
    pub device: Option<crate::devicecontroller::DeviceControllerConfig>,
    /// Where the sync controller's figures are read from, once it runs (see
    /// [`crate::metrics::SyncMetrics`]).
    pub metrics: Option<crate::metrics::SyncMetrics>,
    /// The Router, which takes the edges' ServiceBus answers.
    pub router: Option<crate::router::Router>,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            edge: Some(EdgeControllerConfig::default()),
            sync: Some(SyncConfig::default()),
            dynamic: Some(DynamicConfig::default()),
            device: Some(crate::devicecontroller::DeviceControllerConfig::default()),
            metrics: None,
            router: None,
        }
    }
}

/// Run the controllers against `client` on `hub` until `cancel`, taking the hub's upstream
/// messages.
pub async fn run_controllers(
    client: kube::Client,
    hub: CloudHub,
    down: Downstream,
    mut upstream: mpsc::Receiver<Upstream>,
    config: ControllersConfig,
    cancel: CancellationToken,
) -> Result<(), ControllerError> {
    let persist = config.sync.is_some();
    let sync_cfg = config.sync.clone().unwrap_or_default();
    let device = config
        .device
        .clone()
        .map(|c| crate::devicecontroller::DeviceController::new(client.clone(), down.clone(), c));
    let sync = SyncController::new(client.clone(), hub.clone(), down, sync_cfg, persist);
    if persist {
        ensure_crds(&client, std::time::Duration::from_secs(30)).await?;
        sync.load().await?;
    }
    let handle = sync.handle();
    if let Some(m) = &config.metrics {
        m.set(handle.clone());
    }
    let (edge_tx, edge_rx) = mpsc::channel::<Upstream>(1024);
    let (dyn_tx, dyn_rx) = mpsc::channel::<Upstream>(1024);
    let (dev_tx, dev_rx) = mpsc::channel::<Upstream>(1024);
    let edge = config
        .edge
        .clone()
        .map(|c| EdgeController::new(client.clone(), hub.clone(), handle.clone(), c));
    let dynamic = config
        .dynamic
        .clone()
        .map(|c| DynamicController::new(client.clone(), handle.clone(), c));
    info!(
        edge = edge.is_some(),
        dynamic = dynamic.is_some(),
        sync = persist,
        "controllers starting"
    );
    let edge_task = async {
        match edge {
            Some(e) => e.run(edge_rx, cancel.clone()).await,
            None => Ok(()),
        }
    };
    let dyn_task = async {
        match dynamic {
            Some(d) => d.run(dyn_rx, cancel.clone()).await,
            None => Ok(()),
        }
    };
    let dev_task = async {
        if let Some(d) = device {
            if let Err(e) = d.run(dev_rx, cancel.clone()).await {
                warn!(error = %e, "device controller stopped");
            }
        }
        Ok::<(), ControllerError>(())
    };
    let sync_task = sync.run(cancel.clone());
    let has_edge = config.edge.is_some();
    let has_dev = config.device.is_some();
    let has_dyn = config.dynamic.is_some();
    let dispatch = async {
        loop {
            let up = tokio::select! {
                _ = cancel.cancelled() => break,
                up = upstream.recv() => match up { Some(u) => u, None => break },
            };
            // An answer to a Router call (the app's, or the edge's error reply).
            if let Some(r) = config.router.as_ref().filter(|r| r.waits_for(&up.msg)) {
                r.deliver(up.msg);
                continue;
            }
            // An app's publish on a topic an `eventbus` Rule subscribed to.
            if let Some(r) = config
                .router
                .as_ref()
                .filter(|_| crate::router::Router::takes(&up.msg))
            {
                let (r, node) = (r.clone(), up.node.clone());
                tokio::spawn(async move { r.upload(&node, up.msg).await });
                continue;
            }
            if up.msg.route.source == Some(Source::ServiceBus)
                && up.msg.route.group == Some(Group::User)
            {
                debug!(node = %up.node, msg_id = %up.msg.id(), "servicebus message with no waiting call: dropped");
                continue;
            }
            let target = match up.msg.route.source {
                Some(Source::MetaServer) if has_dyn => &dyn_tx,
                Some(Source::MetaServer) => {
                    debug!(node = %up.node, "dynamic controller disabled: application dropped");
                    continue;
                }
                Some(Source::Twin) if has_dev => &dev_tx,
                Some(Source::Twin) => {
                    debug!(node = %up.node, resource = %up.msg.route.resource, "no device controller: dropped");
                    continue;
                }
                _ if has_edge => &edge_tx,
                _ => continue,
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = target.send(up) => if r.is_err() { warn!("controller stopped"); break },
            }
        }
        drop(edge_tx);
        drop(dyn_tx);
        drop(dev_tx);
        Ok::<(), ControllerError>(())
    };
    let (a, b, c, d, e) = tokio::join!(edge_task, dyn_task, sync_task, dispatch, dev_task);
    a.and(b).and(c).and(d).and(e)
}
