//! A TCP listener of one Service port: each connection is joined to the first endpoint that
//! accepts it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Port;

/// The relay's buffer each way: tokio's default (8 KiB) moves a bulk stream at a fifth of
/// what the endpoint takes directly; 64 KiB keeps the copy from being the bottleneck.
const RELAY_BUF: usize = 64 * 1024;

pub(super) async fn serve(listener: TcpListener, port: Arc<Port>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, client)) => {
                tokio::spawn(relay(stream, client, port.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: the listener itself stays.
                warn!(error = %e, "service proxy accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(mut inbound: TcpStream, client: SocketAddr, port: Arc<Port>) {
    let (order, affinity) = port.order(client.ip());
    for ep in order {
        let connect = tokio::time::timeout(port.config.connect_timeout, port.connect(&ep));
        match connect.await {
            Ok(Ok(mut outbound)) => {
                port.balancer.served(client.ip(), ep.clone(), affinity);
                let _ = inbound.set_nodelay(true);
                if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                    &mut inbound,
                    &mut outbound,
                    RELAY_BUF,
                    RELAY_BUF,
                )
                .await
                {
                    debug!(%client, endpoint = %ep, error = %e, "proxied connection ended");
                }
                return;
            }
            Ok(Err(e)) => {
                debug!(endpoint = %ep, error = %e, "endpoint refused; trying the next");
                port.balancer.failed(ep);
            }
            Err(_) => {
                debug!(endpoint = %ep, "endpoint did not answer; trying the next");
                port.balancer.failed(ep);
            }
        }
    }
    debug!(%client, service = ?port.key, "no endpoint accepted the connection");
}
