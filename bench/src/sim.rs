//! Simulated edge nodes for the benches: kubeedge-edge's hub client, acking what it receives.

use std::time::Duration;

use kubeedge_edge::hub::{self, ClientTls, HubConfig};
use kubeedge_proto::Message;
use tokio_util::sync::CancellationToken;

/// A hub config for the simulated edge `node` reaching `server`: 15 s heartbeats and a 120 s
/// handshake timeout (thousands of handshakes queue on two cores).
pub fn config(server: &str, node: String) -> HubConfig {
    let mut cfg = HubConfig::default();
    cfg.server = server.to_owned();
    cfg.node_name = node;
    cfg.heartbeat = Duration::from_secs(15);
    cfg.handshake_timeout = Duration::from_secs(120);
    cfg
}

/// Connect a simulated edge with `cfg` and `tls` until `cancel`. Each message it receives is
/// shown to `seen`, then acked at once: an edge's MetaManager acks after persisting, so acking at
/// once measures the cloud alone.
pub fn acking_edge(
    cfg: HubConfig,
    tls: ClientTls,
    cancel: &CancellationToken,
    mut seen: impl FnMut(&Message) + Send + 'static,
) -> hub::Client {
    let (client, mut inbound, driver) = hub::connect(cfg, tls);
    tokio::spawn(driver.run(cancel.child_token()));
    let c = client.clone();
    tokio::spawn(async move {
        while let Some(m) = inbound.recv().await {
            seen(&m);
            let _ = c.send(m.ack()).await;
        }
    });
    client
}
