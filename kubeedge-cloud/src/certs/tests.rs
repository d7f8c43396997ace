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
