//! rustls configuration of the hub ports, as upstream's cloudhub: TLS 1.3, and TLS 1.2 with
//! ECDHE-ECDSA-AES128-GCM-SHA256 only; client certificates verified against the KubeEdge CA.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::certs::Pki;
use crate::error::CertError;

/// The crypto provider with upstream's cipher policy.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| match s {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(_) => {
            s.suite() == rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
    });
    Arc::new(p)
}

/// A server config presenting the cloudcore certificate. `client_cert_required` = false still
/// verifies a certificate when one is presented (the `/edge.crt` renewal path).
pub(crate) fn server_config(
    pki: &Pki,
    client_cert_required: bool,
) -> Result<Arc<ServerConfig>, CertError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_cert_der().to_vec()))
        .map_err(CertError::Tls)?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if client_cert_required {
        builder.build()
    } else {
        builder.allow_unauthenticated().build()
    }
    .map_err(|e| CertError::Tls(rustls::Error::General(e.to_string())))?;
    let (chain, key) = pki.server_identity();
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(CertError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(CertError::Tls)?;
    Ok(Arc::new(config))
}

/// The subject common name and whether the certificate allows client auth.
pub(crate) fn peer_identity(cert: &CertificateDer<'_>) -> Option<(String, bool)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let client_auth = match parsed.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        Ok(None) => true,
        Err(_) => false,
    };
    Some((cn, client_auth))
}
