//! Client TLS material and rustls configs for the hub.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::HubError;

/// Where the edge keeps its certificates (edgecore.yaml `edgeHub.tlsCaFile`, `tlsCertFile`,
/// `tlsPrivateKeyFile`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertFiles {
    /// CA certificate, PEM (`/etc/kubeedge/ca/rootCA.crt`).
    pub ca: PathBuf,
    /// Client certificate, PEM (`/etc/kubeedge/certs/server.crt`).
    pub cert: PathBuf,
    /// Client key, PEM (`/etc/kubeedge/certs/server.key`).
    pub key: PathBuf,
}

impl CertFiles {
    /// The three files under one directory, laid out as upstream does.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca/rootCA.crt"),
            cert: dir.join("certs/server.crt"),
            key: dir.join("certs/server.key"),
        }
    }
}

/// CA, client certificate and key.
#[derive(Debug)]
pub struct ClientTls {
    pub(crate) ca: CertificateDer<'static>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientTls {
    /// From DER parts.
    pub fn new(ca: Vec<u8>, cert: Vec<u8>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            ca: CertificateDer::from(ca),
            chain: vec![CertificateDer::from(cert)],
            key,
        }
    }

    /// Load the PEM files; `Ok(None)` when any is missing.
    pub fn load(files: &CertFiles) -> Result<Option<Self>, HubError> {
        if !(files.ca.exists() && files.cert.exists() && files.key.exists()) {
            return Ok(None);
        }
        let bad =
            |what: &str, e: rustls_pki_types::pem::Error| HubError::Tls(format!("{what}: {e}"));
        let ca = CertificateDer::from_pem_file(&files.ca).map_err(|e| bad("ca", e))?;
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| bad("certificate", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", e))?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", e))?;
        Ok(Some(Self { ca, chain, key }))
    }

    /// The client certificate's NotBefore/NotAfter, Unix seconds.
    pub fn validity(&self) -> Option<(i64, i64)> {
        let (_, c) = x509_parser::parse_x509_certificate(self.chain.first()?).ok()?;
        Some((
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        ))
    }

    /// The client certificate's common name.
    pub fn common_name(&self) -> Option<String> {
        cert_common_name(self.chain.first()?)
    }

    /// rustls config: verify the cloud against the CA (with hostname checks), present our cert.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, HubError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| HubError::Tls(e.to_string()))?;
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HubError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| HubError::Tls(e.to_string()))?;
        Ok(Arc::new(cfg))
    }
}

pub(crate) fn cert_common_name(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server name to verify for `host:port`.
pub(crate) fn server_name(server: &str) -> Result<ServerName<'static>, HubError> {
    let host = host_of(server);
    ServerName::try_from(host.to_owned())
        .map_err(|e| HubError::Tls(format!("server name {host:?}: {e}")))
}

/// `host` of `host:port`, `[v6]:port` or a URL.
pub(crate) fn host_of(server: &str) -> &str {
    let s = server.split("://").last().unwrap_or(server);
    let s = s.split('/').next().unwrap_or(s);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    s.rsplit_once(':').map_or(s, |(h, _)| h)
}

/// `host:port` of a URL or address.
pub(crate) fn authority_of(server: &str) -> &str {
    let s = server.split("://").last().unwrap_or(server);
    s.split('/').next().unwrap_or(s)
}

/// Accepts any server certificate: only for fetching `/ca.crt`, whose hash the token pins.
#[derive(Debug)]
pub(crate) struct TrustOnFirstUse(Arc<rustls::crypto::CryptoProvider>);

impl TrustOnFirstUse {
    pub(crate) fn config() -> Result<Arc<ClientConfig>, rustls::Error> {
        let provider = provider();
        let verifier = Arc::new(Self(provider.clone()));
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }
}

impl ServerCertVerifier for TrustOnFirstUse {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
