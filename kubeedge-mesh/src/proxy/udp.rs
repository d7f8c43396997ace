//! A UDP listener of one Service port: each client address gets a flow to one endpoint (its
//! own socket, connected to it), and the endpoint's datagrams go back to the client from the
//! listener. A flow ends after `udp_idle` without a datagram either way. An endpoint on another
//! node gets its flow through the tunnel, as a stream of framed datagrams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Port;

/// Where a client's datagrams go: a socket connected to the endpoint, or a tunnel stream to
/// the endpoint's node (its writer task).
#[derive(Clone)]
enum Flow {
    Direct(Arc<UdpSocket>),
    #[cfg(feature = "tunnel")]
    Tunnel(tokio::sync::mpsc::Sender<Vec<u8>>),
}

impl Flow {
    async fn send(&self, datagram: &[u8]) -> std::io::Result<()> {
        match self {
            Flow::Direct(s) => s.send(datagram).await.map(|_| ()),
            // A full queue drops the datagram, as a full socket buffer would.
            #[cfg(feature = "tunnel")]
            Flow::Tunnel(tx) => tx
                .try_send(datagram.to_vec())
                .map_err(|e| std::io::Error::other(e.to_string())),
        }
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

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

/// A new flow for `client`: a socket connected to its endpoint (or a tunnel stream to the
/// endpoint's node), and a task that sends the endpoint's answers back until the flow is idle.
async fn open(
    listener: &Arc<UdpSocket>,
    port: &Arc<Port>,
    flows: &Flows,
    client: SocketAddr,
    stop: &CancellationToken,
) -> Option<Flow> {
    let (order, affinity) = port.order(client.ip());
    let ep = order.first()?.clone();
    #[cfg(feature = "tunnel")]
    if let Some((tunnel, node)) = port.tunnel_for(&ep) {
        let opened = tokio::time::timeout(
            port.config.connect_timeout,
            tunnel.connect_udp(node, ep.addr),
        )
        .await;
        let Ok(Ok(stream)) = opened else {
            debug!(%client, endpoint = %ep, "no UDP flow through the tunnel");
            port.balancer.failed(ep);
            return None;
        };
        port.balancer.served(client.ip(), ep, affinity);
        let flow = tunnel_flow(stream, listener, port, flows, client, stop);
        flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client, flow.clone());
        return Some(flow);
    }
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
        .insert(client, Flow::Direct(socket.clone()));
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
    Some(Flow::Direct(socket))
}

/// A flow through a tunnel stream: a task writes the client's datagrams to it, another sends
/// the endpoint's back until the flow is idle (then the stream closes, and the far agent's
/// socket with it).
#[cfg(feature = "tunnel")]
fn tunnel_flow(
    stream: crate::tunnel::TunnelStream,
    listener: &Arc<UdpSocket>,
    port: &Arc<Port>,
    flows: &Flows,
    client: SocketAddr,
    stop: &CancellationToken,
) -> Flow {
    use crate::tunnel::wire;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if wire::write_datagram(&mut wr, &d).await.is_err() {
                break;
            }
        }
    });
    let (listener, flows, stop) = (listener.clone(), flows.clone(), stop.clone());
    let idle = port.config.udp_idle;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let deadline = Instant::now() + idle;
            let got = tokio::select! {
                r = tokio::time::timeout_at(deadline, wire::read_datagram(&mut rd, &mut buf)) => r,
                () = stop.cancelled() => break,
            };
            match got {
                Ok(Ok(Some(n))) => {
                    let _ = listener.send_to(&buf[..n], client).await;
                }
                // The far agent ended the flow (the endpoint refused), or it is idle.
                _ => break,
            }
        }
        flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client);
    });
    Flow::Tunnel(tx)
}
