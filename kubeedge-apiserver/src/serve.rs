//! Serving over HTTPS: a generated CA and serving certificate, authentication by bearer token
//! or client certificate (CN = user, O = groups), and an admin kubeconfig.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime},
};
use tower::ServiceExt as _;

use crate::body::ResponseBody;
use crate::error::Error;
use crate::service::{ApiError, ApiService};
use crate::store::Store;

/// Who made a request, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (certificate CN, or the name bound to a token).
    pub name: String,
    /// The groups (certificate O fields, or those bound to a token).
    pub groups: Vec<String>,
}

/// A bearer token that is none of the configured ones: the API service checks it as a
/// ServiceAccount token (and answers 401 if it is not one).
#[derive(Debug, Clone)]
pub(crate) struct PendingToken(pub(crate) String);

/// A certificate authority with a serving certificate it signed; it also issues client
/// certificates.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// A client certificate and key, PEM encoded.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Writes a file readable by its owner only (it may hold a private key).
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    write_private_bytes(path, contents.as_bytes())
}

/// Writes bytes to a file readable by its owner only.
pub(crate) fn write_private_bytes(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let io = |source| Error::Io {
        what: format!("write {}", path.display()),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents).map_err(io)
}

impl Pki {
    /// Generates a CA (kept in memory only) and a serving certificate valid for `hosts` (DNS
    /// names or IP addresses) plus `localhost` and `127.0.0.1`.
    pub fn generate(hosts: &[String]) -> Result<Self, Error> {
        let (ca_pem, ca_key) = Self::new_ca()?;
        Self::from_ca(&ca_pem, ca_key, hosts)
    }

    /// Loads the CA from `dir/ca.crt` and `dir/ca.key`, creating both on first use, so that
    /// kubeconfigs stay valid across restarts; the serving certificate is issued afresh.
    pub fn load_or_generate(dir: &Path, hosts: &[String]) -> Result<Self, Error> {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Io {
                what: format!("read {}", p.display()),
                source,
            })
        };
        if crt.exists() && key.exists() {
            let ca_key = KeyPair::from_pem(&read(&key)?)?;
            return Self::from_ca(&read(&crt)?, ca_key, hosts);
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let (ca_pem, ca_key) = Self::new_ca()?;
        write_private(&key, &ca_key.serialize_pem())?;
        write_private(&crt, &ca_pem)?;
        Self::from_ca(&ca_pem, ca_key, hosts)
    }

    fn new_ca() -> Result<(String, KeyPair), Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kubeedge-rs-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = ca_params.self_signed(&key)?;
        Ok((cert.pem(), key))
    }

    fn from_ca(ca_pem: &str, ca_key: KeyPair, hosts: &[String]) -> Result<Self, Error> {
        let ca_der = CertificateDer::from(
            pem_to_der(ca_pem).ok_or(Error::Cert(rcgen::Error::CouldNotParseCertificate))?,
        );
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(hosts.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            issuer,
            ca_der,
            ca_pem: ca_pem.to_owned(),
            server_cert: cert.der().clone(),
            server_key: key.serialize_der(),
        })
    }

    /// The CA certificate, PEM encoded.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Issues a client certificate for `user` (the CN) in `group` (the O). rcgen encodes one
    /// value per attribute type, so one group at most; certificates from other CAs may carry
    /// several O values and all of them are read as groups.
    pub fn issue_client_cert(&self, user: &str, group: Option<&str>) -> Result<ClientCert, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The TLS settings for [`serve`]: a rustls configuration (ring provider) that presents
    /// the serving certificate and asks for, but does not require, a client certificate, and
    /// the verifier that decides whether that certificate was signed by this CA.
    pub fn server_tls(&self) -> Result<ServerTls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> =
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .allow_unauthenticated()
            .build()?;
        let verifier = Arc::new(DeferredVerifier {
            inner: Arc::clone(&client_verifier),
        });
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_cert.clone()], key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(cfg),
            client_verifier,
        })
    }
}

/// TLS settings for [`serve`], from [`Pki::server_tls`].
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl ServerTls {
    /// Builds settings from a rustls configuration and the verifier that authenticates client
    /// certificates after the handshake.
    pub fn new(
        config: Arc<rustls::ServerConfig>,
        client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Self {
        Self {
            config,
            client_verifier,
        }
    }
}

/// Accepts any client certificate during the handshake (still checking that the client holds
/// its key) and leaves the chain check to the request layer, so that an untrusted certificate
/// gets an HTTP 401 Status instead of a TLS alert, as with upstream.
#[derive(Debug)]
struct DeferredVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl rustls::server::danger::ClientCertVerifier for DeferredVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Writes a kubeconfig for `server` that trusts `ca_pem` and authenticates with a client
/// certificate and, when given, a bearer token.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    client: Option<&ClientCert>,
    token: Option<&str>,
) -> Result<(), Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut user = serde_json::Map::new();
    if let Some(c) = client {
        user.insert("client-certificate-data".into(), b64(&c.cert_pem).into());
        user.insert("client-key-data".into(), b64(&c.key_pem).into());
    }
    if let Some(t) = token {
        user.insert("token".into(), t.into());
    }
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "kubeedge-rs", "preferences": {},
        "clusters": [{"name": "kubeedge-rs", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "kubeedge-rs", "context": {"cluster": "kubeedge-rs", "user": "admin", "namespace": "default"}}],
    });
    let text = serde_yaml::to_string(&doc).map_err(Error::Kubeconfig)?;
    write_private(path, &text)
}

/// Settings of [`serve`]: bearer tokens and connection bounds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Bearer tokens and the users they stand for.
    pub tokens: HashMap<String, UserInfo>,
    /// Most connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (slow clients are dropped).
    pub header_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeConfig {
    /// Adds a bearer token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>, user: &str, groups: &[&str]) -> Self {
        self.tokens.insert(
            token.into(),
            UserInfo {
                name: user.into(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            },
        );
        self
    }
}

fn cert_identity(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo { name, groups })
}

/// Who a request is: a verified client certificate, a configured token, a token for the API
/// service to check, or anonymous for the health and version paths.
enum Authn {
    User(UserInfo),
    Pending(PendingToken),
}

fn authenticate<B>(
    auth: &ServeConfig,
    cert_user: Option<&UserInfo>,
    req: &Request<B>,
) -> Result<Authn, ApiError> {
    let path = req.uri().path();
    if let Some(u) = cert_user {
        return Ok(Authn::User(u.clone()));
    }
    if let Some(h) = req.headers().get(http::header::AUTHORIZATION) {
        let token = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if let Some(u) = auth.tokens.get(token) {
            return Ok(Authn::User(u.clone()));
        }
        if token.split('.').count() == 3 {
            return Ok(Authn::Pending(PendingToken(token.to_owned())));
        }
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    if matches!(path, "/healthz" | "/livez" | "/readyz" | "/version") {
        return Ok(Authn::User(UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }));
    }
    Err(ApiError::new(401, "Unauthorized", "Unauthorized"))
}

/// Serves `service` over HTTPS on `listener` until `shutdown` resolves. Every connection task
/// is owned by this future and is aborted when it returns.
pub async fn serve<S: Store>(
    listener: TcpListener,
    service: ApiService<S>,
    tls: ServerTls,
    auth: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let verifier = tls.client_verifier;
    let auth = Arc::new(auth);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // At the connection bound, stop accepting until a connection ends.
        let at_limit = conns.len() >= auth.max_connections.max(1);
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept(), if !at_limit => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let auth = Arc::clone(&auth);
        let verifier = Arc::clone(&verifier);
        conns.spawn(serve_conn(stream, peer, acceptor, verifier, service, auth));
    }
    conns.shutdown().await;
    Ok(())
}

/// Serves `service` over plain HTTP without authentication until `shutdown` resolves: for a
/// loopback-only endpoint such as the edge MetaServer (127.0.0.1:10550). Never bind it to an
/// address other hosts can reach.
pub async fn serve_insecure<S: Store>(
    listener: TcpListener,
    service: ApiService<S>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let service = service.clone();
        conns.spawn(async move {
            let _ = stream.set_nodelay(true);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                service.clone().oneshot(req)
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

async fn serve_conn<S: Store>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    service: ApiService<S>,
    auth: Arc<ServeConfig>,
) {
    let _ = stream.set_nodelay(true);
    let header_timeout = auth.header_read_timeout;
    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            return;
        }
    };
    // Checked here rather than in the handshake (see `DeferredVerifier`): an untrusted
    // certificate authenticates nobody, and its requests get 401.
    let cert_user = tls.get_ref().1.peer_certificates().and_then(|chain| {
        let (leaf, rest) = chain.split_first()?;
        match verifier.verify_client_cert(leaf, rest, UnixTime::now()) {
            Ok(_) => cert_identity(leaf),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "untrusted client certificate");
                None
            }
        }
    });
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let service = service.clone();
        let auth = Arc::clone(&auth);
        let cert_user = cert_user.clone();
        async move {
            let resp: Response<ResponseBody> = match authenticate(&auth, cert_user.as_ref(), &req) {
                Ok(who) => {
                    let mut req = req;
                    match who {
                        Authn::User(u) => {
                            req.extensions_mut().insert(u);
                        }
                        Authn::Pending(t) => {
                            req.extensions_mut().insert(t);
                        }
                    }
                    match service.oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                }
                Err(e) => e.into_response(),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_identity_is_cn_and_o() {
        let pki = Pki::generate(&[]).expect("pki");
        let cert = pki
            .issue_client_cert("system:node:edge-1", Some("system:nodes"))
            .expect("cert");
        let der = rustls_pki_der(&cert.cert_pem);
        let user = cert_identity(&der).expect("identity");
        assert_eq!(user.name, "system:node:edge-1");
        assert_eq!(user.groups, vec!["system:nodes".to_owned()]);
    }

    fn rustls_pki_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64")
    }
}
