//! The hub's admission: a new session of a node writes once this replica holds its record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use super::records::{take_failed, Shared};
use super::{ROUTER_SERVER, STREAM_SERVER};
use crate::hub::{Admission, Admit};

/// [`Admission`] over the node records.
pub(super) struct Admitter(pub(super) Arc<Shared>);

impl Admission for Admitter {
    fn admit(&self, node: &str) -> Admit {
        let (shared, node) = (self.0.clone(), node.to_owned());
        Box::pin(async move { admit(&shared, &node).await })
    }
}

/// How a waiting session learns that the holder's process is gone: its peer address refuses
/// connections (a host that does not answer proves nothing). One answer per address serves
/// every session waiting on it for a second.
async fn refused(shared: &Shared, addr: Option<SocketAddr>) -> bool {
    let Some(addr) = addr else { return false };
    if let Some(known) = shared.probed(addr, Duration::from_secs(1)) {
        return known;
    }
    let refused = matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    );
    shared.note_probe(addr, refused);
    refused
}

async fn admit(shared: &Shared, node: &str) -> Result<(), String> {
    let me = shared.me().to_owned();
    let mut listed = shared.listed.subscribe();
    let mut live = shared.live();
    let mut asked = false;
    loop {
        let changed = shared.changed.notified();
        if !*live.borrow_and_update() {
            return Err("this replica is not serving: its heartbeat is not renewed".into());
        }
        if !*listed.borrow_and_update() {
            tokio::select! {
                _ = listed.changed() => {}
                _ = live.changed() => {}
            }
            continue;
        }
        let record = shared.record(node).unwrap_or_default();
        let holder = record.holder.clone();
        let free = match holder.as_deref() {
            None => true,
            Some(h) if h == me => true,
            Some(h) if shared.expired(h) => {
                info!(%node, holder = h, "taking the node: its holder's heartbeat expired");
                true
            }
            Some(h) => {
                let peer = [STREAM_SERVER, ROUTER_SERVER]
                    .iter()
                    .find_map(|k| record.annotations.get(*k)?.parse().ok());
                let gone = refused(shared, peer).await;
                if gone {
                    info!(%node, holder = h, "taking the node: its holder's process is gone");
                }
                gone
            }
        };
        if free {
            match shared.take(node, holder.as_deref()).await {
                Ok(true) => {
                    shared.admitted(node);
                    return Ok(());
                }
                // The record changed under this view of it: wait for the watch to catch up.
                Ok(false) => {}
                Err(e) => take_failed(node, &e),
            }
        } else if !asked {
            debug!(%node, holder = ?holder, "asking the holder to let the node go");
            asked = shared.ask(node).await.is_ok();
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(shared.config.retry_period) => {}
            _ = live.changed() => {}
        }
    }
}
