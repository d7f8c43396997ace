//! Streams for a node whose tunnel is on another replica: this replica calls that replica's
//! stream server as a kube-apiserver would call the node's kubelet (HTTPS, a client
//! certificate the peer's stream server accepts), and passes the answer on: a body for logs
//! and stats, the upgraded connection for exec, attach and port-forward.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use http::Request;
use http_body_util::{BodyExt as _, BodyStream, Empty};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::StreamError;

/// The answer to a forwarded upgrade.
#[derive(Debug)]
pub struct Forwarded {
    /// The peer's HTTP status (101 when the upgrade happened).
    pub status: u16,
    /// The peer's response headers.
    pub headers: Vec<(String, String)>,
    /// The upgraded connection, both ways.
    pub io: TokioIo<hyper::upgrade::Upgraded>,
}

/// Calls other replicas' stream servers. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

fn server(e: impl std::fmt::Display) -> StreamError {
    StreamError::Server(format!(
        "forwarding to the replica that holds the node: {e}"
    ))
}

impl Forwarder {
    /// Trusts stream servers whose certificates `server_ca_der` signed, and presents `chain`
    /// and `key` (signed by the CA the peers' stream servers accept).
    pub fn new(
        server_ca_der: &[u8],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, StreamError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(server_ca_der.to_vec()))
            .map_err(server)?;
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(server)?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(server)?;
        Ok(Self { tls: Arc::new(tls) })
    }

    /// [`Forwarder::new`] with the client certificate and its PKCS#8 key in PEM.
    pub fn from_pem(
        server_ca_der: &[u8],
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, StreamError> {
        let chain = pem::parse_many(cert_pem)
            .map_err(server)?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| CertificateDer::from(p.into_contents()))
            .collect();
        let key = pem::parse(key_pem).map_err(server)?;
        let key = PrivateKeyDer::Pkcs8(key.into_contents().into());
        Self::new(server_ca_der, chain, key)
    }

    async fn send(
        &self,
        addr: SocketAddr,
        req: Request<Empty<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, StreamError> {
        let tcp = TcpStream::connect(addr).await.map_err(server)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(server)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(server)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender.send_request(req).await.map_err(server)
    }

    /// A kubelet GET (`/containerLogs/…`, `/stats/…`) of `node` through the replica at `addr`:
    /// the body as it comes.
    pub async fn get(
        &self,
        addr: SocketAddr,
        node: &str,
        path_and_query: &str,
    ) -> Result<BoxStream<'static, Bytes>, StreamError> {
        let req = Request::get(path_and_query)
            .header(http::header::HOST, addr.to_string())
            .header("X-Forwarded-Uri", format!("/api/v1/nodes/{node}/proxy"))
            .body(Empty::new())
            .map_err(server)?;
        let resp = self.send(addr, req).await?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.into_body().collect().await.map_err(server)?.to_bytes();
            return Err(StreamError::Refused {
                code: status,
                reason: String::new(),
                message: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        let frames = BodyStream::new(resp.into_body());
        Ok(frames
            .filter_map(|f| async move { f.ok().and_then(|f| f.into_data().ok()) })
            .boxed())
    }

    /// An upgrade request (`/exec/…`, `/attach/…`, `/portForward/…`) through the replica at
    /// `addr`, with the caller's upgrade headers.
    pub async fn upgrade(
        &self,
        addr: SocketAddr,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
    ) -> Result<Forwarded, StreamError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, addr.to_string());
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("host") {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let req = req.body(Empty::new()).map_err(server)?;
        let mut resp = self.send(addr, req).await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if status != 101 {
            let body = resp.into_body().collect().await.map_err(server)?.to_bytes();
            return Err(StreamError::Refused {
                code: status,
                reason: String::new(),
                message: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        let io = hyper::upgrade::on(&mut resp).await.map_err(server)?;
        Ok(Forwarded {
            status,
            headers,
            io: TokioIo::new(io),
        })
    }
}
