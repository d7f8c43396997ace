//! The stream server (`cloudStream.streamPort`, 10003) for a real kube-apiserver, which calls
//! it as the node's kubelet (the node's kubelet port is led here by DNAT, as upstream does):
//! `/containerLogs`, `/exec`, `/attach`, `/portForward`, `/stats/...` and `/metrics/...`,
//! each passed through the node's tunnel. Unlike upstream's, which asks for a client
//! certificate and never checks it, this one serves only callers whose certificate the
//! configured CA signed (the API server's `--kubelet-client-certificate`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kubeedge_proto::TunnelMessageType;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{CloudStream, StreamError};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The stream server's TLS: `chain` and `key` to present (cloudcore's own server
/// certificate), and the CA (PEM) whose client certificates are served.
pub fn kubelet_api_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca_pem: &[u8],
) -> Result<Arc<ServerConfig>, StreamError> {
    let bad = |e: String| StreamError::Server(e);
    let mut roots = RootCertStore::empty();
    for p in pem::parse_many(client_ca_pem).map_err(|e| bad(e.to_string()))? {
        roots
            .add(CertificateDer::from(p.contents().to_vec()))
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "no CA certificate for the API server's client certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(config))
}

impl CloudStream {
    /// Serve the kubelet API on `listener` until `cancel`; pods are found through `client`
    /// (a session goes to the pod's `spec.nodeName`).
    pub async fn serve_kubelet_api(
        &self,
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        client: kube::Client,
        cancel: CancellationToken,
    ) -> Result<(), StreamError> {
        let me = self.clone();
        super::server::serve_tls(
            listener,
            tls,
            self.inner.config.handshake_timeout,
            cancel,
            "stream server",
            move |_| {
                let (me, client) = (me.clone(), client.clone());
                hyper::service::service_fn(move |req| {
                    let (me, client) = (me.clone(), client.clone());
                    async move { Ok::<_, Infallible>(me.kubelet_request(req, &client).await) }
                })
            },
        )
        .await;
        Ok(())
    }

    async fn kubelet_request(
        &self,
        mut req: Request<Incoming>,
        client: &kube::Client,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.as_str().to_owned());
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let node = match parts[..] {
            ["containerLogs" | "exec" | "attach" | "portForward", ns, pod, ..] => {
                match kube::Api::<Pod>::namespaced(client.clone(), ns)
                    .get(pod)
                    .await
                {
                    Ok(p) => p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                    Err(e) => return text(StatusCode::NOT_FOUND, &format!("pod {ns}/{pod}: {e}")),
                }
            }
            ["stats" | "metrics", ..] => {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                let ip = host.rsplit_once(':').map_or(host, |(h, _)| h);
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let forwarded = req
                    .headers()
                    .get("X-Forwarded-Uri")
                    .and_then(|h| h.to_str().ok())
                    .and_then(|u| u.strip_prefix("/api/v1/nodes/"))
                    .and_then(|u| u.split('/').next())
                    .map(str::to_owned);
                match forwarded.or_else(|| self.node_by_ip(ip)) {
                    Some(n) => n,
                    None => {
                        return text(
                            StatusCode::NOT_FOUND,
                            &format!("no node with a stream tunnel has the IP {ip}"),
                        )
                    }
                }
            }
            _ => return text(StatusCode::NOT_FOUND, "404 page not found"),
        };
        let kind = match parts[0] {
            "containerLogs" => TunnelMessageType::LogsConnect,
            "attach" => TunnelMessageType::AttachConnect,
            "exec" | "portForward" => TunnelMessageType::ExecConnect,
            _ => TunnelMessageType::MetricConnect,
        };
        if matches!(
            kind,
            TunnelMessageType::LogsConnect | TunnelMessageType::MetricConnect
        ) {
            let body = match kind {
                TunnelMessageType::LogsConnect => self.logs(&node, &path_and_query).await,
                _ => self.metrics(&node, &path_and_query).await,
            };
            return match body {
                Ok(b) => {
                    let frames = b.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
                    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    r
                }
                Err(e) => refused(&e),
            };
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in req.headers() {
            if let Ok(v) = v.to_str() {
                headers
                    .entry(k.as_str().to_owned())
                    .or_default()
                    .push(v.to_owned());
            }
        }
        let method = req.method().as_str().to_owned();
        let up = match self
            .upgrade(&node, kind, &method, &path_and_query, headers)
            .await
        {
            Ok(up) => up,
            Err(e) => return refused(&e),
        };
        let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
        *r.status_mut() = StatusCode::from_u16(up.status).unwrap_or(StatusCode::BAD_GATEWAY);
        for (k, v) in &up.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                r.headers_mut().append(k, v);
            }
        }
        if up.status == 101 {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let mut io = up.io;
            tokio::spawn(async move {
                if let Ok(client) = on_upgrade.await {
                    let mut client = TokioIo::new(client);
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut client,
                        &mut io,
                        8 * 1024,
                        16 * 1024,
                    )
                    .await;
                }
            });
        }
        r
    }
}

fn text(code: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(message.to_owned())).boxed_unsync());
    *r.status_mut() = code;
    r
}

/// A refusal as the kubelet answers it: its status and words.
fn refused(e: &StreamError) -> Response<Body> {
    let code = match e {
        StreamError::Refused { code, .. } => {
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(code, &e.to_string())
}
