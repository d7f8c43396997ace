//! The KubeEdge PKI: the CA, the cloudcore server certificate, edge certificates signed from
//! CSRs, and the join token (PROTOCOL.md §3). Material lives behind [`CertStore`], so that it can
//! be kept on disk (keys 0600) or, later, in Kubernetes secrets as upstream does.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubeedge_proto::{JoinToken, Jwt};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

use crate::error::CertError;

/// One item of PKI material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertItem {
    /// CA certificate (DER).
    CaCert,
    /// CA private key (DER, PKCS#8 or SEC1).
    CaKey,
    /// Cloudcore server certificate (DER).
    ServerCert,
    /// Cloudcore server key (DER).
    ServerKey,
    /// The current join token (ASCII).
    Token,
}

impl CertItem {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::CaCert => "ca certificate",
            Self::CaKey => "ca key",
            Self::ServerCert => "server certificate",
            Self::ServerKey => "server key",
            Self::Token => "token",
        }
    }

    fn is_secret(self) -> bool {
        matches!(self, Self::CaKey | Self::ServerKey | Self::Token)
    }
}

/// Where PKI material is kept. Values are DER (certificates, keys) or ASCII (token).
pub trait CertStore: Send + Sync + fmt::Debug {
    /// Read an item; `None` when absent.
    fn load(&self, item: CertItem) -> Result<Option<Vec<u8>>, CertError>;
    /// Write an item.
    fn save(&self, item: CertItem, data: &[u8]) -> Result<(), CertError>;
}

/// Files on disk, as upstream lays them out: PEM certificates and keys, keys mode 0600.
#[derive(Debug, Clone)]
pub struct FsCertStore {
    /// `tlsCAFile` (`/etc/kubeedge/ca/rootCA.crt`).
    pub ca_cert: PathBuf,
    /// `tlsCAKeyFile` (`/etc/kubeedge/ca/rootCA.key`).
    pub ca_key: PathBuf,
    /// `tlsCertFile` (`/etc/kubeedge/certs/server.crt`).
    pub server_cert: PathBuf,
    /// `tlsPrivateKeyFile` (`/etc/kubeedge/certs/server.key`).
    pub server_key: PathBuf,
    /// Where the join token is written (`keadm gettoken` reads it).
    pub token: PathBuf,
}

impl FsCertStore {
    /// Everything under one directory: `ca/rootCA.crt`, `ca/rootCA.key`, `certs/server.crt`,
    /// `certs/server.key`, `token`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            ca_cert: dir.join("ca/rootCA.crt"),
            ca_key: dir.join("ca/rootCA.key"),
            server_cert: dir.join("certs/server.crt"),
            server_key: dir.join("certs/server.key"),
            token: dir.join("token"),
        }
    }

    fn path(&self, item: CertItem) -> &PathBuf {
        match item {
            CertItem::CaCert => &self.ca_cert,
            CertItem::CaKey => &self.ca_key,
            CertItem::ServerCert => &self.server_cert,
            CertItem::ServerKey => &self.server_key,
            CertItem::Token => &self.token,
        }
    }
}

fn io_err(item: CertItem) -> impl FnOnce(std::io::Error) -> CertError {
    move |source| CertError::Store {
        item: item.name(),
        source,
    }
}

impl CertStore for FsCertStore {
    fn load(&self, item: CertItem) -> Result<Option<Vec<u8>>, CertError> {
        let path = self.path(item);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(item)(e)),
        };
        let invalid = |_| CertError::Invalid {
            item: item.name(),
            source: rcgen::Error::CouldNotParseCertificate,
        };
        Ok(Some(match item {
            CertItem::Token => bytes.trim_ascii().to_vec(),
            CertItem::CaCert | CertItem::ServerCert => CertificateDer::from_pem_slice(&bytes)
                .map_err(invalid)?
                .to_vec(),
            CertItem::CaKey | CertItem::ServerKey => PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(invalid)?
                .secret_der()
                .to_vec(),
        }))
    }

    fn save(&self, item: CertItem, data: &[u8]) -> Result<(), CertError> {
        let path = self.path(item);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(item))?;
        }
        let text = match item {
            CertItem::Token => String::from_utf8_lossy(data).into_owned(),
            CertItem::CaCert | CertItem::ServerCert => pem("CERTIFICATE", data),
            CertItem::CaKey | CertItem::ServerKey => pem(key_pem_label(data), data),
        };
        write_file(path, text.as_bytes(), item.is_secret()).map_err(io_err(item))
    }
}

/// PKCS#8 keys start with `SEQUENCE { INTEGER 0, SEQUENCE {…` ; SEC1 keys with `INTEGER 1`.
fn key_pem_label(der: &[u8]) -> &'static str {
    if is_sec1(der) {
        "EC PRIVATE KEY"
    } else {
        "PRIVATE KEY"
    }
}

fn is_sec1(der: &[u8]) -> bool {
    // 30 <len> 02 01 01 (version 1) after a one- or two-byte length.
    let body = match der {
        [0x30, l, rest @ ..] if *l < 0x80 => rest,
        [0x30, 0x81, _, rest @ ..] => rest,
        [0x30, 0x82, _, _, rest @ ..] => rest,
        _ => return false,
    };
    body.starts_with(&[0x02, 0x01, 0x01])
}

/// Wrap a SEC1 P-256 key (as upstream's `MarshalECPrivateKey` writes it) into PKCS#8.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALG: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut inner = vec![0x02, 0x01, 0x00];
    inner.extend_from_slice(ALG);
    inner.push(0x04);
    der_len(&mut inner, sec1.len());
    inner.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, inner.len());
    out.extend_from_slice(&inner);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Write a file atomically (temp file + rename), mode 0600 for secrets.
pub(crate) fn write_file(path: &std::path::Path, data: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if secret { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

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
mod tests {
    use super::*;
    use kubeedge_proto::Jwt;

    fn capture_b64(file: &str, index: usize) -> Vec<u8> {
        use base64::Engine;
        let path = format!("{}/../testdata/captures/{file}", env!("CARGO_MANIFEST_DIR"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let bodies: Vec<&str> = v["http"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["payload_b64"].as_str())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(bodies[index])
            .unwrap()
    }

    fn pki(dir: &std::path::Path) -> Pki {
        Pki::load_or_create(&FsCertStore::in_dir(dir), PkiConfig::default()).unwrap()
    }

    #[test]
    fn generated_pki_is_reloaded_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = pki(dir.path());
        let b = pki(dir.path());
        assert_eq!(a.ca_cert_der(), b.ca_cert_der());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca/rootCA.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (_, ca) = x509_parser::parse_x509_certificate(a.ca_cert_der()).unwrap();
        assert!(ca.is_ca());
        let years = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp())
            / (365 * 86400);
        assert!(years >= 99, "{years}");
        // The server certificate carries the advertise address.
        let (chain, _) = a.server_identity();
        let (_, srv) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let san = srv.subject_alternative_name().unwrap().unwrap();
        assert!(san.value.general_names.iter().any(|g| matches!(
            g,
            x509_parser::extensions::GeneralName::IPAddress(b) if *b == [127u8, 0, 0, 1]
        )));
    }

    #[test]
    fn tokens_expire_after_twice_the_refresh_period_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = pki(dir.path());
        let store = FsCertStore::in_dir(dir.path());
        let t = p.refresh_token(&store).unwrap();
        let stored = store.load(CertItem::Token).unwrap().unwrap();
        assert_eq!(String::from_utf8(stored).unwrap(), t.to_string());
        t.verify_ca(p.ca_cert_der()).unwrap();
        let exp = t.jwt().unverified_claims().unwrap().exp;
        assert!((exp - unix_now() - 24 * 3600).abs() < 5);
        p.verify_bearer(t.jwt().as_str()).unwrap();
        let old: Jwt = p.issue_token(unix_now() - 25 * 3600).unwrap().jwt().clone();
        assert!(p.verify_bearer(old.as_str()).is_err());
    }

    #[test]
    fn signs_captured_upstream_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let p = pki(dir.path());
        // v1.22.2: CN system:node:edge-node-122.
        let csr = capture_b64("v1.22.2/02-https-get-edge-crt.json", 0);
        let der = p
            .sign_edge_csr(&EdgeCsr::new(&csr, "edge-node-122"))
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(cn, "system:node:edge-node-122");
        let (_, ca) = x509_parser::parse_x509_certificate(p.ca_cert_der()).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        let days = (cert.validity().not_after.timestamp() - unix_now()) / 86400;
        assert!((364..=365).contains(&days), "{days}");
        // The same CSR for another node is refused.
        assert!(matches!(
            p.sign_edge_csr(&EdgeCsr::new(&csr, "edge-node-9")),
            Err(CertError::IdentityMismatch { .. })
        ));
        // v1.12.1: CN kubeedge.io, only behind the compatibility switch; signed as the node.
        let legacy = capture_b64("v1.12.1/02-https-get-edge-crt.json", 0);
        assert!(matches!(
            p.sign_edge_csr(&EdgeCsr::new(&legacy, "edge-node-1")),
            Err(CertError::IdentityMismatch { .. })
        ));
        let mut req = EdgeCsr::new(&legacy, "edge-node-1");
        req.allow_legacy_subject = true;
        req.ext_key_usages = &[1, 2];
        let der = p.sign_edge_csr(&req).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value.clone();
        assert!(eku.client_auth && eku.server_auth);
        // Garbage is a typed error.
        assert!(matches!(
            p.sign_edge_csr(&EdgeCsr::new(b"junk", "n")),
            Err(CertError::InvalidCsr(_))
        ));
        assert!(matches!(
            p.sign_edge_csr(&EdgeCsr::new(&csr, "a/b")),
            Err(CertError::InvalidNodeName(_))
        ));
    }

    /// Counts token writes.
    #[derive(Debug, Default)]
    struct Counting {
        inner: std::sync::Mutex<Vec<CertItem>>,
        fs: Option<FsCertStore>,
    }

    impl CertStore for Counting {
        fn load(&self, item: CertItem) -> Result<Option<Vec<u8>>, CertError> {
            self.fs.as_ref().map_or(Ok(None), |f| f.load(item))
        }
        fn save(&self, item: CertItem, data: &[u8]) -> Result<(), CertError> {
            self.inner.lock().unwrap().push(item);
            self.fs.as_ref().map_or(Ok(()), |f| f.save(item, data))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_refreshed_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PkiConfig {
            token_refresh: Duration::from_secs(3600),
            ..PkiConfig::default()
        };
        let counting = std::sync::Arc::new(Counting {
            fs: Some(FsCertStore::in_dir(dir.path())),
            ..Counting::default()
        });
        let pki = std::sync::Arc::new(Pki::load_or_create(counting.as_ref(), cfg).unwrap());
        let tokens = || {
            counting
                .inner
                .lock()
                .unwrap()
                .iter()
                .filter(|i| **i == CertItem::Token)
                .count()
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let store: std::sync::Arc<dyn CertStore> = counting.clone();
        let task = tokio::spawn(run_token_refresh(pki, store, cancel.clone()));
        while tokens() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(tokens(), 1, "issued at start");
        tokio::time::advance(Duration::from_secs(3599)).await;
        tokio::task::yield_now().await;
        assert_eq!(tokens(), 1, "not before the period");
        tokio::time::advance(Duration::from_secs(2)).await;
        while tokens() < 2 {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn imports_an_upstream_sec1_ca_key() {
        // Upstream writes the CA key as SEC1 ("EC PRIVATE KEY"): wrap ours that way and reload.
        let dir = tempfile::tempdir().unwrap();
        let p = pki(dir.path());
        let store = FsCertStore::in_dir(dir.path());
        let pkcs8 = store.load(CertItem::CaKey).unwrap().unwrap();
        let (_, info) = x509_parser::der_parser::der::parse_der(&pkcs8).unwrap();
        let seq = info.as_sequence().unwrap();
        let sec1 = seq[2].as_slice().unwrap().to_vec();
        assert!(is_sec1(&sec1));
        store.save(CertItem::CaKey, &sec1).unwrap();
        let text = std::fs::read_to_string(&store.ca_key).unwrap();
        assert!(text.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let again = Pki::load_or_create(&store, PkiConfig::default()).unwrap();
        assert_eq!(again.ca_cert_der(), p.ca_cert_der());
        let csr = capture_b64("v1.22.2/02-https-get-edge-crt.json", 0);
        again
            .sign_edge_csr(&EdgeCsr::new(&csr, "edge-node-122"))
            .unwrap();
    }
}
