//! The certificate bootstrap server on HTTPS :10002 (PROTOCOL.md §3.3): `GET /ca.crt` returns
//! the CA (DER); `GET /edge.crt` signs a CSR (DER body) for a node that presents the join
//! token, or renews for a node that presents its current client certificate.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rustls_pki_types::CertificateDer;
use tracing::{debug, info, warn};

use crate::certs::{node_common_name, EdgeCsr, Pki, LEGACY_EDGE_CN};
use crate::hub::tls::peer_identity;

/// Largest CSR body accepted.
const MAX_CSR: usize = 64 * 1024;

pub(crate) type Body = Full<Bytes>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = reply(status, msg.to_owned());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn der(body: Vec<u8>) -> Response<Body> {
    let mut r = reply(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// Serve one bootstrap request. `peer` is the verified client certificate, if one was presented.
pub(crate) async fn handle(
    req: Request<Incoming>,
    pki: Arc<Pki>,
    peer: Option<CertificateDer<'static>>,
    allow_legacy: bool,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ca.crt") => der(pki.ca_cert_der().to_vec()),
        (&Method::GET | &Method::POST, "/edge.crt") => {
            edge_cert(req, &pki, peer, allow_legacy).await
        }
        (_, path) => {
            debug!(path, "unknown bootstrap path");
            text(StatusCode::NOT_FOUND, "not found")
        }
    }
}

async fn edge_cert(
    req: Request<Incoming>,
    pki: &Pki,
    peer: Option<CertificateDer<'static>>,
    allow_legacy: bool,
) -> Response<Body> {
    let headers = req.headers();
    let Some(node) = headers
        .get("NodeName")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|n| !n.is_empty())
    else {
        return text(StatusCode::BAD_REQUEST, "missing NodeName header");
    };
    let usages: Vec<i32> = match headers.get("ExtKeyUsages").map(|v| v.as_bytes()) {
        None => Vec::new(),
        Some(v) => match serde_json::from_slice(v) {
            Ok(u) => u,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "ExtKeyUsages is not a json array of integers",
                )
            }
        },
    };
    if let Some(cert) = peer {
        // Renewal: the presented certificate chains to our CA (checked by rustls); it must be
        // a client certificate of this very node.
        let Some((cn, client_auth)) = peer_identity(&cert) else {
            return text(
                StatusCode::UNAUTHORIZED,
                "client certificate cannot be parsed",
            );
        };
        let own = cn == node_common_name(&node) || (allow_legacy && cn == LEGACY_EDGE_CN);
        if !client_auth || !own {
            warn!(node = %node, subject = %cn, "renewal refused: certificate belongs to another identity");
            return text(
                StatusCode::UNAUTHORIZED,
                "client certificate does not belong to this node",
            );
        }
    } else {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let parts: Vec<&str> = auth.split(' ').collect();
        let [scheme, jwt] = parts.as_slice() else {
            warn!(node = %node, "edge.crt without a bearer token");
            return text(StatusCode::UNAUTHORIZED, "Invalid authorization token");
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return text(StatusCode::UNAUTHORIZED, "Invalid authorization token");
        }
        if let Err(e) = pki.verify_bearer(jwt) {
            warn!(node = %node, error = %e, "edge.crt with an invalid token");
            return text(
                StatusCode::UNAUTHORIZED,
                &format!("Invalid authorization token: {e}"),
            );
        }
    }
    let body = match Limited::new(req.into_body(), MAX_CSR).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "csr body too large or unreadable",
            )
        }
    };
    let csr = EdgeCsr {
        csr_der: &body,
        node_name: &node,
        ext_key_usages: &usages,
        allow_legacy_subject: allow_legacy,
    };
    match pki.sign_edge_csr(&csr) {
        Ok(cert) => {
            info!(node = %node, "signed edge certificate");
            der(cert)
        }
        Err(e) => {
            warn!(node = %node, error = %e, "edge.crt refused");
            let mut msg = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                msg = format!("{msg}: {src}");
            }
            text(StatusCode::BAD_REQUEST, &msg)
        }
    }
}
