//! Certificate bootstrap from a join token (PROTOCOL.md §3.3): fetch the CA, check it against
//! the token's hash, send a CSR with the token, and keep the PEM files.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kubeedge_proto::JoinToken;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::info;

use super::tls::{
    authority_of, cert_common_name, server_name, CertFiles, ClientTls, TrustOnFirstUse,
};
use crate::error::BootstrapError;

/// The CN the cloud must sign for this node.
pub fn node_common_name(node: &str) -> String {
    format!("system:node:{node}")
}

/// Get certificates for `node` from the cloud at `https_server` (`host:port` or
/// `https://host:port`) with `token`, and write them to `files`. Bounded by `timeout`.
pub async fn bootstrap(
    https_server: &str,
    token: &JoinToken,
    node: &str,
    files: &CertFiles,
    timeout: Duration,
) -> Result<ClientTls, BootstrapError> {
    tokio::time::timeout(timeout, bootstrap_inner(https_server, token, node, files))
        .await
        .map_err(|_| BootstrapError::Timeout)?
}

async fn bootstrap_inner(
    https_server: &str,
    token: &JoinToken,
    node: &str,
    files: &CertFiles,
) -> Result<ClientTls, BootstrapError> {
    let authority = authority_of(https_server).to_owned();
    // 1. The CA, over TLS without verification: the token's hash pins it.
    let tofu = TrustOnFirstUse::config().map_err(|e| BootstrapError::Cert(e.to_string()))?;
    let ca = get(&authority, tofu, "/ca.crt", Method::GET, None, &[]).await?;
    token.verify_ca(&ca).map_err(BootstrapError::Token)?;
    // 2. A key and a CSR for system:node:<node>.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| BootstrapError::Cert(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, node_common_name(node));
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| BootstrapError::Cert(e.to_string()))?;
    // 3. The signed certificate, verifying the cloud against the CA now.
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let anon = ClientTls {
        ca: ca.clone().into(),
        chain: Vec::new(),
        key: key_der.clone_key(),
    };
    let verified = verified_config(&anon)?;
    let bearer = format!("Bearer {}", token.jwt());
    let cert = get(
        &authority,
        verified,
        "/edge.crt",
        Method::GET,
        Some(csr.der().to_vec()),
        &[("Authorization", bearer.as_str()), ("NodeName", node)],
    )
    .await?;
    let cn = cert_common_name(&cert).unwrap_or_default();
    if cn != node_common_name(node) {
        return Err(BootstrapError::WrongIdentity {
            got: cn,
            expected: node_common_name(node),
        });
    }
    write_pem(&files.ca, "CERTIFICATE", &ca, false)?;
    write_pem(&files.cert, "CERTIFICATE", &cert, false)?;
    write_pem(&files.key, "PRIVATE KEY", &key.serialize_der(), true)?;
    info!(node, "edge certificate obtained");
    Ok(ClientTls::new(ca, cert, key_der))
}

fn verified_config(
    tls: &ClientTls,
) -> Result<std::sync::Arc<rustls::ClientConfig>, BootstrapError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(tls.ca.clone())
        .map_err(|e| BootstrapError::Cert(e.to_string()))?;
    let cfg = rustls::ClientConfig::builder_with_provider(super::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BootstrapError::Cert(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = if tls.chain.is_empty() {
        cfg.with_no_client_auth()
    } else {
        cfg.with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
            .map_err(|e| BootstrapError::Cert(e.to_string()))?
    };
    Ok(std::sync::Arc::new(cfg))
}

/// Renew the client certificate by presenting the current one (no token needed).
pub async fn renew(
    https_server: &str,
    current: &ClientTls,
    node: &str,
    files: &CertFiles,
    timeout: Duration,
) -> Result<ClientTls, BootstrapError> {
    let fut = async {
        let authority = authority_of(https_server).to_owned();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| BootstrapError::Cert(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, node_common_name(node));
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| BootstrapError::Cert(e.to_string()))?;
        let cert = get(
            &authority,
            verified_config(current)?,
            "/edge.crt",
            Method::GET,
            Some(csr.der().to_vec()),
            &[("NodeName", node)],
        )
        .await?;
        let ca = current.ca.to_vec();
        write_pem(&files.cert, "CERTIFICATE", &cert, false)?;
        write_pem(&files.key, "PRIVATE KEY", &key.serialize_der(), true)?;
        Ok(ClientTls::new(
            ca,
            cert,
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| BootstrapError::Timeout)?
}

async fn get(
    authority: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
    path: &'static str,
    method: Method,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, BootstrapError> {
    let connect_err = |source| BootstrapError::Connect {
        server: authority.to_owned(),
        source,
    };
    let tcp = TcpStream::connect(authority).await.map_err(connect_err)?;
    let name = server_name(authority).map_err(|e| BootstrapError::Cert(e.to_string()))?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(connect_err)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(BootstrapError::Http)?;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "kubeedge-rs");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| BootstrapError::Cert(e.to_string()))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(BootstrapError::Http)?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(BootstrapError::Http)?
            .to_bytes();
        if !status.is_success() {
            return Err(BootstrapError::Refused {
                path,
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).trim().to_owned(),
            });
        }
        if bytes.is_empty() {
            // Upstream v1.12 answers a bad CSR with 200 and no body.
            return Err(BootstrapError::Refused {
                path,
                status: status.as_u16(),
                message: "empty response".into(),
            });
        }
        Ok(bytes.to_vec())
    };
    tokio::select! {
        r = exchange => r,
        r = conn => match r {
            Err(e) => Err(BootstrapError::Http(e)),
            Ok(()) => Err(BootstrapError::Refused { path, status: 0, message: "connection closed".into() }),
        },
    }
}

fn write_pem(path: &Path, label: &str, der: &[u8], secret: bool) -> Result<(), BootstrapError> {
    use base64::Engine;
    use std::io::Write;
    let io = |source| BootstrapError::Io {
        path: path.display().to_string(),
        source,
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
