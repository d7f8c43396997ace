//! Calls for a node held by another replica: the call goes, with the caller's headers, to the
//! holder's Router, named in the node's record (`kubeedge.io/router-server`, see
//! `crate::ownership`). This replica authorized it; it presents its replica certificate
//! ([`PEER_CN`](super::PEER_CN)), so the holder answers without asking again. A forwarded call
//! is never forwarded twice.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::Body;
use crate::ownership::{record_name, ROUTER_SERVER};

/// The header that marks a forwarded call.
pub const FORWARDED: &str = "x-kubeedge-forwarded-by";

/// How this replica reaches the others' Routers.
#[derive(Clone)]
pub struct RouterPeers {
    /// TLS to the peers (`None`: plain HTTP, upstream's insecure mode).
    tls: Option<Arc<ClientConfig>>,
    /// This replica's Router address, as written in its own records.
    own: String,
    /// This replica's identity, sent in [`FORWARDED`].
    identity: String,
}

impl std::fmt::Debug for RouterPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterPeers")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl RouterPeers {
    /// Peers whose Router certificates the KubeEdge CA of `pki` signed, reached with a client
    /// certificate of that CA named [`PEER_CN`](super::PEER_CN) (`None`: plain HTTP,
    /// upstream's insecure mode); `own` is this replica's Router address and `identity` its
    /// name.
    pub fn new(
        pki: Option<&crate::certs::Pki>,
        own: impl Into<String>,
        identity: impl Into<String>,
    ) -> Result<Self, crate::CertError> {
        let tls = match pki {
            None => None,
            Some(pki) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from(pki.ca_cert_der().to_vec()))
                    .map_err(crate::CertError::Tls)?;
                let (chain, key) = pki.issue_client_cert(super::PEER_CN)?;
                Some(Arc::new(
                    ClientConfig::builder_with_provider(crate::hub::tls::provider())
                        .with_safe_default_protocol_versions()
                        .map_err(crate::CertError::Tls)?
                        .with_root_certificates(roots)
                        .with_client_auth_cert(chain, key)
                        .map_err(crate::CertError::Tls)?,
                ))
            }
        };
        Ok(Self {
            tls,
            own: own.into(),
            identity: identity.into(),
        })
    }

    /// The Router of the replica that holds `node`, when that is another replica.
    pub(super) async fn holder_of(&self, client: &kube::Client, node: &str) -> Option<SocketAddr> {
        let api: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
        let record = api.get_opt(&record_name(node)).await.ok()??;
        let held = record
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| !h.is_empty() && h != self.identity);
        let addr = record.metadata.annotations?.get(ROUTER_SERVER)?.clone();
        (held && addr != self.own)
            .then(|| addr.parse().ok())
            .flatten()
    }

    /// Sends the call to the Router at `addr` and returns its answer.
    pub(super) async fn forward(
        &self,
        addr: SocketAddr,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Body>, String> {
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        for (k, v) in &parts.headers {
            if k != http::header::HOST {
                req = req.header(k, v);
            }
        }
        let req = req
            .header(http::header::HOST, addr.to_string())
            .header(FORWARDED, self.identity.as_str())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                send(TokioIo::new(stream), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        let (head, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let mut out = Response::new(Full::new(body).boxed_unsync());
        *out.status_mut() = head.status;
        *out.headers_mut() = head.headers;
        Ok(out)
    }
}

async fn send<I>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The answer when the holder cannot be reached.
pub(super) fn unreachable(node: &str, addr: SocketAddr, why: &str) -> (StatusCode, String) {
    (
        StatusCode::BAD_GATEWAY,
        format!("node {node:?} is held by the replica at {addr}, which cannot be reached: {why}"),
    )
}
