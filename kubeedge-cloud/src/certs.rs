//! The KubeEdge PKI: the CA, the cloudcore server certificate, edge certificates signed from
//! CSRs, and the join token (PROTOCOL.md §3). Material lives behind [`CertStore`], so that it can
//! be kept on disk (keys 0600) or in the `kubeedge` namespace secrets as upstream does
//! ([`crate::secrets`]).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubeedge_proto::{JoinToken, Jwt};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

use crate::error::CertError;

mod store;

use store::{is_sec1, sec1_to_pkcs8};
pub use store::{CertItem, CertStore, FsCertStore};

/// What the PKI needs from the cloudHub config.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PkiConfig {
    /// `advertiseAddress`: IP SANs of the server certificate.
    pub advertise_address: Vec<IpAddr>,
    /// `dnsNames`: DNS SANs of the server certificate.
    pub dns_names: Vec<String>,
    /// `edgeCertSigningDuration` (default 365 days).
    pub edge_cert_validity: Duration,
    /// `tokenRefreshDuration` (default 12 h); tokens are valid for twice that.
    pub token_refresh: Duration,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            advertise_address: vec![IpAddr::from([127, 0, 0, 1])],
            dns_names: Vec::new(),
            edge_cert_validity: Duration::from_secs(365 * 86_400),
            token_refresh: Duration::from_secs(12 * 3600),
        }
    }
}

/// A signing request for an edge certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EdgeCsr<'a> {
    /// The CSR, DER.
    pub csr_der: &'a [u8],
    /// The `NodeName` header.
    pub node_name: &'a str,
    /// Go `x509.ExtKeyUsage` numbers from the `ExtKeyUsages` header (empty = client auth).
    pub ext_key_usages: &'a [i32],
    /// Accept upstream v1.12 CSRs (CN `kubeedge.io`, O `kubeEdge`).
    pub allow_legacy_subject: bool,
}

impl<'a> EdgeCsr<'a> {
    /// A request for `node_name` with default usages.
    pub fn new(csr_der: &'a [u8], node_name: &'a str) -> Self {
        Self {
            csr_der,
            node_name,
            ext_key_usages: &[],
            allow_legacy_subject: false,
        }
    }
}

/// The loaded or generated PKI.
pub struct Pki {
    ca_cert_der: Vec<u8>,
    /// The CA key bytes exactly as stored: the HMAC key of join tokens.
    ca_key_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
    config: PkiConfig,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_hash", &kubeedge_proto::ca_hash(&self.ca_cert_der))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The CN upstream v1.16+ edges use and expect: `system:node:<name>`.
pub fn node_common_name(node: &str) -> String {
    format!("system:node:{node}")
}

/// Upstream v1.12 edges' CSR common name.
pub const LEGACY_EDGE_CN: &str = "kubeedge.io";

fn key_pair(item: CertItem, der: &[u8]) -> Result<KeyPair, CertError> {
    let pkcs8 = if is_sec1(der) {
        sec1_to_pkcs8(der)
    } else {
        der.to_vec()
    };
    let key = PrivateKeyDer::Pkcs8(pkcs8.into());
    KeyPair::from_der_and_sign_algo(&key, &rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        CertError::Invalid {
            item: item.name(),
            source,
        }
    })
}

fn random_serial() -> SerialNumber {
    let mut bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

impl Pki {
    /// Load the CA and server certificate from `store`, generating (and saving) what is
    /// missing: a P-256 CA valid 100 years, and a server certificate signed by it with SANs
    /// from `advertise_address` and `dns_names`.
    pub fn load_or_create(store: &dyn CertStore, config: PkiConfig) -> Result<Self, CertError> {
        let (ca_cert_der, ca_key_der) =
            match (store.load(CertItem::CaCert)?, store.load(CertItem::CaKey)?) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    let (c, k) = generate_ca()?;
                    store.save(CertItem::CaCert, &c)?;
                    store.save(CertItem::CaKey, &k)?;
                    (c, k)
                }
            };
        let ca_key = key_pair(CertItem::CaKey, &ca_key_der)?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_cert_der.clone()), ca_key)
            .map_err(|source| CertError::Invalid {
            item: CertItem::CaCert.name(),
            source,
        })?;
        let (server_cert_der, server_key_der) = match (
            store.load(CertItem::ServerCert)?,
            store.load(CertItem::ServerKey)?,
        ) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) = generate_server(&issuer, &config)?;
                store.save(CertItem::ServerCert, &c)?;
                store.save(CertItem::ServerKey, &k)?;
                (c, k)
            }
        };
        Ok(Self {
            ca_cert_der,
            ca_key_der,
            issuer,
            server_cert_der,
            server_key_der,
            config,
        })
    }

    /// The CA certificate, DER (what `/ca.crt` serves).
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// The server certificate chain and key for TLS.
    pub fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = if is_sec1(&self.server_key_der) {
            PrivateKeyDer::Sec1(self.server_key_der.clone().into())
        } else {
            PrivateKeyDer::Pkcs8(self.server_key_der.clone().into())
        };
        (
            vec![CertificateDer::from(self.server_cert_der.clone())],
            key,
        )
    }

    /// The PKI settings.
    pub fn config(&self) -> &PkiConfig {
        &self.config
    }

    /// Issue a join token valid for 2 × `token_refresh` from `now_unix`.
    pub fn issue_token(&self, now_unix: i64) -> Result<JoinToken, CertError> {
        let validity = i64::try_from(self.config.token_refresh.as_secs() * 2).unwrap_or(i64::MAX);
        JoinToken::issue(
            &self.ca_cert_der,
            &self.ca_key_der,
            now_unix.saturating_add(validity),
        )
        .map_err(CertError::Token)
    }

    /// Issue a token and write it to the store.
    pub fn refresh_token(&self, store: &dyn CertStore) -> Result<JoinToken, CertError> {
        let token = self.issue_token(unix_now())?;
        store.save(CertItem::Token, token.to_string().as_bytes())?;
        Ok(token)
    }

    /// Verify a bearer JWT from `/edge.crt`.
    pub fn verify_bearer(&self, jwt: &str) -> Result<(), kubeedge_proto::TokenError> {
        let jwt: Jwt = jwt.parse()?;
        jwt.verify(&self.ca_key_der, unix_now()).map(|_| ())
    }

    /// Sign an edge CSR: the certificate always carries CN `system:node:<node>` and O
    /// `system:nodes`; the CSR must ask for exactly that, or (with `allow_legacy_subject`) for
    /// upstream v1.12's `kubeedge.io`. Valid for `edge_cert_validity`.
    pub fn sign_edge_csr(&self, req: &EdgeCsr<'_>) -> Result<Vec<u8>, CertError> {
        let node = req.node_name;
        if node.is_empty() || node.len() > 253 || node.contains(['/', ':', ' ']) {
            return Err(CertError::InvalidNodeName(node.to_owned()));
        }
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            req.csr_der,
        ))
        .map_err(CertError::InvalidCsr)?;
        let cn = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .map(dn_value_text)
            .unwrap_or_default();
        let wanted = node_common_name(node);
        let legacy_ok = req.allow_legacy_subject && cn == LEGACY_EDGE_CN;
        if cn != wanted && !legacy_ok {
            return Err(CertError::IdentityMismatch {
                subject: cn,
                node: node.to_owned(),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, wanted);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        let validity = time::Duration::try_from(self.config.edge_cert_validity)
            .unwrap_or(time::Duration::days(365));
        // Allow a little clock skew without eating into short test lifetimes.
        let skew: time::Duration = validity / 10;
        params.not_before = now - skew.min(time::Duration::minutes(1));
        params.not_after = now + validity;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = eku_from_go(req.ext_key_usages);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(CertError::Generate)?;
        Ok(cert.der().to_vec())
    }

    /// A client certificate of the KubeEdge CA named `common_name` (organization
    /// `system:kubeedge`), valid for a year, with its key: how one cloudcore replica
    /// authenticates to another. Edges cannot get one: [`Pki::sign_edge_csr`] names every
    /// certificate it signs after a node.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:kubeedge");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(365);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CertError::Generate)?;
        Ok((
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ))
    }
}

fn dn_value_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_owned(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_owned(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// Go `x509.ExtKeyUsage` numbers → rcgen purposes; empty means client auth.
fn eku_from_go(usages: &[i32]) -> Vec<ExtendedKeyUsagePurpose> {
    if usages.is_empty() {
        return vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    usages
        .iter()
        .filter_map(|u| match u {
            0 => Some(ExtendedKeyUsagePurpose::Any),
            1 => Some(ExtendedKeyUsagePurpose::ServerAuth),
            2 => Some(ExtendedKeyUsagePurpose::ClientAuth),
            3 => Some(ExtendedKeyUsagePurpose::CodeSigning),
            4 => Some(ExtendedKeyUsagePurpose::EmailProtection),
            8 => Some(ExtendedKeyUsagePurpose::TimeStamping),
            9 => Some(ExtendedKeyUsagePurpose::OcspSigning),
            _ => None,
        })
        .collect()
}

/// Issue a token now and every `token_refresh` after, writing each to `store`, until
/// `cancel`. A failed refresh is logged and retried at the next period.
pub async fn run_token_refresh(
    pki: std::sync::Arc<Pki>,
    store: std::sync::Arc<dyn CertStore>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let period = pki.config.token_refresh.max(Duration::from_secs(1));
    loop {
        match pki.refresh_token(store.as_ref()) {
            Ok(_) => tracing::info!(next_in = ?period, "join token refreshed"),
            Err(e) => tracing::error!(error = %e, "join token refresh failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn generate_ca() -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::Generate)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "KubeEdge");
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&[0x04, 0x00])); // 1024, as upstream
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365 * 100);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(CertError::Generate)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

fn generate_server(
    issuer: &Issuer<'static, KeyPair>,
    config: &PkiConfig,
) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::Generate)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "KubeEdge");
    dn.push(DnType::OrganizationName, "KubeEdge");
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(36_500);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut sans: Vec<SanType> = config
        .advertise_address
        .iter()
        .map(|ip| SanType::IpAddress(*ip))
        .collect();
    for name in config.dns_names.iter().filter(|n| !n.is_empty()) {
        let dns = name.clone().try_into().map_err(CertError::Generate)?;
        sans.push(SanType::DnsName(dns));
    }
    params.subject_alt_names = sans;
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(CertError::Generate)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

#[cfg(test)]
mod tests;
