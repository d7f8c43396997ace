//! Who calls the Router over TLS: a user with a client certificate of the API's client CA (its
//! CN is the user, its Os the groups, as kube-apiserver reads them), another cloudcore replica
//! passing a call on (a client certificate of the KubeEdge CA with [`PEER_CN`], which only a
//! holder of that CA's key can issue: edge certificates are always `system:node:<name>`), or
//! neither, when the caller's bearer token decides.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::certs::Pki;
use crate::CertError;

/// The common name of the client certificate a replica presents to another replica's Router.
pub const PEER_CN: &str = "system:kubeedge:cloudcore";

/// Who a TLS caller is, as its client certificate says; put into each request's extensions
/// by [`Router::serve`](super::Router::serve).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// A user of the API, by a certificate of its client CA.
    User {
        /// The certificate's CN.
        name: String,
        /// The certificate's Os.
        groups: Vec<String>,
    },
    /// Another cloudcore replica (a certificate of the KubeEdge CA named [`PEER_CN`]).
    Peer,
}

/// The Router's TLS: cloudcore's certificate, and the client certificates it takes.
#[derive(Clone)]
pub struct RouterTls {
    pub(super) config: Arc<rustls::ServerConfig>,
    /// The KubeEdge CA's verifier (peers).
    kubeedge: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for RouterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterTls").finish_non_exhaustive()
    }
}

fn verifier(
    roots: &[&[u8]],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
    let mut store = RootCertStore::empty();
    for der in roots {
        store
            .add(CertificateDer::from(der.to_vec()))
            .map_err(CertError::Tls)?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| CertError::Tls(rustls::Error::General(e.to_string())))
}

impl RouterTls {
    /// Presents cloudcore's certificate from `pki` and takes, without requiring one, a client
    /// certificate signed by one of `client_cas` (DER; the API's client CA: a user) or by the
    /// KubeEdge CA (a replica).
    pub fn new(pki: &Pki, client_cas: &[Vec<u8>]) -> Result<Self, CertError> {
        let provider = crate::hub::tls::provider();
        let mut roots: Vec<&[u8]> = client_cas.iter().map(Vec::as_slice).collect();
        roots.push(pki.ca_cert_der());
        let either = verifier(&roots, &provider)?;
        let kubeedge = verifier(&[pki.ca_cert_der()], &provider)?;
        let (chain, key) = pki.server_identity();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(CertError::Tls)?
            .with_client_cert_verifier(either)
            .with_single_cert(chain, key)
            .map_err(CertError::Tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            kubeedge,
        })
    }

    /// The caller behind a handshake's verified certificates, if they name one.
    pub(super) fn caller(&self, chain: Option<&[CertificateDer<'static>]>) -> Option<Caller> {
        let (leaf, rest) = chain?.split_first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let subject = cert.subject();
        let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
        // The handshake checked the chain against either CA; which one signed it decides.
        let by_kubeedge = self
            .kubeedge
            .verify_client_cert(leaf, rest, UnixTime::now())
            .is_ok();
        match (by_kubeedge, name == PEER_CN) {
            (true, true) => Some(Caller::Peer),
            // An edge node's certificate is nobody here.
            (true, false) => None,
            (false, _) => Some(Caller::User {
                name,
                groups: subject
                    .iter_organization()
                    .filter_map(|o| o.as_str().ok().map(str::to_owned))
                    .collect(),
            }),
        }
    }
}
