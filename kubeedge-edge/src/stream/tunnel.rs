//! Dialling the cloud's tunnel port: TCP, TLS with the node certificate, then the WebSocket
//! upgrade of `GET /v1/kubeedge/connect` with upstream's session headers.

use std::sync::Arc;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kubeedge_proto::ws::{Role, WsCodec};
use kubeedge_proto::MAX_TUNNEL_FRAME;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_util::codec::Framed;

use super::EdgeStreamConfig;
use crate::hub::tls::{authority_of, server_name};

/// The framed tunnel connection.
pub(super) type Ws = Framed<TokioIo<hyper::upgrade::Upgraded>, WsCodec>;

/// Why the tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// TCP or TLS failed.
    #[error("cannot reach {server}: {reason}")]
    Connect {
        /// The tunnel address.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The cloud answered the upgrade with something else than 101 and the right accept key.
    #[error("tunnel upgrade refused by {server}: {reason}")]
    Upgrade {
        /// The tunnel address.
        server: String,
        /// The status or header that was wrong.
        reason: String,
    },
    /// Dialling and the handshake took too long.
    #[error("tunnel handshake with {0} timed out")]
    Timeout(String),
}

/// Open the tunnel.
pub(super) async fn dial(
    cfg: &EdgeStreamConfig,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Ws, TunnelError> {
    let server = authority_of(&cfg.server).to_owned();
    tokio::time::timeout(cfg.handshake_timeout, dial_inner(cfg, &server, tls))
        .await
        .map_err(|_| TunnelError::Timeout(server.clone()))?
}

async fn dial_inner(
    cfg: &EdgeStreamConfig,
    server: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Ws, TunnelError> {
    let connect = |reason: String| TunnelError::Connect {
        server: server.to_owned(),
        reason,
    };
    let upgrade = |reason: String| TunnelError::Upgrade {
        server: server.to_owned(),
        reason,
    };
    let name = server_name(server).map_err(|e| connect(e.to_string()))?;
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|e| connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| connect(format!("tls: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let key = generate_key();
    let req = http::Request::get("/v1/kubeedge/connect")
        .header(http::header::HOST, server)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_VERSION, "13")
        .header(http::header::SEC_WEBSOCKET_KEY, &key)
        .header("SessionHostNameOverride", &cfg.node_name)
        .header("SessionInternalIP", &cfg.node_ip)
        .body(Empty::<Bytes>::new())
        .map_err(|e| upgrade(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| upgrade(e.to_string()))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(upgrade(format!("status {}", resp.status())));
    }
    let accept = resp
        .headers()
        .get(http::header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok());
    if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(upgrade("wrong Sec-WebSocket-Accept".into()));
    }
    let io = hyper::upgrade::on(resp)
        .await
        .map_err(|e| upgrade(e.to_string()))?;
    // A frame holds a tunnel frame; allow for the varint header.
    Ok(Framed::new(
        TokioIo::new(io),
        WsCodec::new(Role::Client, MAX_TUNNEL_FRAME + 32),
    ))
}
