//! A UDP listener of one Service port: each client address gets a flow to one endpoint (its
//! own socket, connected to it), and the endpoint's datagrams go back to the client from the
//! listener. A flow ends after `udp_idle` without a datagram either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Port;

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

pub(super) async fn serve(listener: UdpSocket, port: Arc<Port>, stop: CancellationToken) {
    let listener = Arc::new(listener);
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            r = listener.recv_from(&mut buf) => r,
            () = stop.cancelled() => return,
        };
        let Ok((n, client)) = received else {
            continue;
        };
        let existing = flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client)
            .cloned();
        let flow = match existing {
            Some(f) => f,
            None => match open(&listener, &port, &flows, client, &stop).await {
                Some(f) => f,
                None => continue,
            },
        };
        if let Err(e) = flow.send(&buf[..n]).await {
            debug!(%client, error = %e, "datagram not sent to the endpoint");
        }
    }
}

/// A new flow for `client`: a socket connected to its endpoint, and a task that sends the
/// endpoint's answers back until the flow is idle.
async fn open(
    listener: &Arc<UdpSocket>,
    port: &Arc<Port>,
    flows: &Flows,
    client: SocketAddr,
    stop: &CancellationToken,
) -> Option<Arc<UdpSocket>> {
    let (order, affinity) = port.order(client.ip());
    let ep = order.first()?.clone();
    let addr = ep.addr;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(addr).await.ok()?;
    port.balancer.served(client.ip(), ep, affinity);
    let socket = Arc::new(socket);
    flows
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(client, socket.clone());
    let (listener, flows, stop) = (listener.clone(), flows.clone(), stop.clone());
    let idle = port.config.udp_idle;
    let upstream = socket.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let deadline = Instant::now() + idle;
            let got = tokio::select! {
                r = tokio::time::timeout_at(deadline, upstream.recv(&mut buf)) => r,
                () = stop.cancelled() => break,
            };
            match got {
                Ok(Ok(n)) => {
                    let _ = listener.send_to(&buf[..n], client).await;
                }
                // An ICMP error from the endpoint (nothing listens): the flow ends, and the
                // client's next datagram picks an endpoint again.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client);
    });
    Some(socket)
}
