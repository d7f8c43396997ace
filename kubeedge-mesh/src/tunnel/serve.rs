//! The streams other agents open: each names an endpoint on this node, which is connected and
//! joined to the stream (a TCP connection, or a UDP flow of framed datagrams).

use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::PeerId;
use libp2p_stream::IncomingStreams;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::wire::{self, Proto, Request, Response};

/// The copy buffer each way (as the proxy's).
const RELAY_BUF: usize = 64 * 1024;

pub(super) async fn run(
    mut incoming: IncomingStreams,
    node_name: String,
    connect_timeout: Duration,
    cancel: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            n = incoming.next() => n,
            () = cancel.cancelled() => return,
        };
        let Some((peer, stream)) = next else {
            return;
        };
        let node_name = node_name.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve(peer, stream, &node_name, connect_timeout) => {}
                () = cancel.cancelled() => {}
            }
        });
    }
}

async fn serve(peer: PeerId, stream: libp2p::Stream, node_name: &str, connect_timeout: Duration) {
    let mut stream = stream.compat();
    let request: Request = match wire::read(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%peer, error = %e, "tunnel stream with a bad header");
            let _ = refuse(&mut stream, e.to_string()).await;
            return;
        }
    };
    if request.node_name != node_name {
        let why = format!("this is node {node_name}, not {}", request.node_name);
        let _ = refuse(&mut stream, why).await;
        return;
    }
    let target = request.target();
    if request.protocol == Proto::Udp {
        let bind: std::net::SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(e) => return drop(refuse(&mut stream, format!("udp socket: {e}")).await),
        };
        if let Err(e) = socket.connect(target).await {
            return drop(refuse(&mut stream, format!("{target}: {e}")).await);
        }
        if wire::write(&mut stream, &Response::Success).await.is_ok() {
            udp_flow(stream, socket).await;
        }
        return;
    }
    let connected = tokio::time::timeout(connect_timeout, TcpStream::connect(target)).await;
    let mut endpoint = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = refuse(&mut stream, format!("{target}: {e}")).await;
            return;
        }
        Err(_) => {
            let why = format!("{target}: no answer within {connect_timeout:?}");
            let _ = refuse(&mut stream, why).await;
            return;
        }
    };
    let _ = endpoint.set_nodelay(true);
    if wire::write(&mut stream, &Response::Success).await.is_err() {
        return;
    }
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut endpoint, RELAY_BUF, RELAY_BUF)
            .await
    {
        debug!(%peer, %target, error = %e, "tunnelled connection ended");
    }
}

/// Datagrams both ways until the opening side ends the flow (it owns the idle timeout), or
/// the endpoint refuses (an ICMP error).
async fn udp_flow<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(stream: S, socket: UdpSocket) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        let mut buf = vec![0u8; 65_535];
        while let Ok(Some(n)) = wire::read_datagram(&mut rd, &mut buf).await {
            let _ = socket.send(&buf[..n]).await;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 65_535];
        while let Ok(n) = socket.recv(&mut buf).await {
            if wire::write_datagram(&mut wr, &buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    message: String,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    wire::write(w, &Response::Failed { message }).await?;
    w.shutdown().await
}
