//! The PKI kept as upstream keeps it (PROTOCOL.md §3.1): certificate files when present, else
//! the `kubeedge` namespace secrets `casecret` (`cadata`, `cakeydata`), `cloudcoresecret`
//! (`cloudcoredata`, `cloudcorekeydata`), else generated; whatever is used is written back to
//! the secrets (DER, keys SEC1 as Go's `MarshalECPrivateKey` writes them), and the join token
//! to `tokensecret` (`tokendata`), refreshed every `tokenRefreshDuration`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::certs::{unix_now, CertItem, CertStore, FsCertStore, Pki, PkiConfig};
use crate::error::{CertError, ControllerError};

/// The namespace of the secrets.
pub const NAMESPACE: &str = "kubeedge";
/// CA secret.
pub const CA_SECRET: &str = "casecret";
/// CloudCore certificate secret.
pub const CLOUDCORE_SECRET: &str = "cloudcoresecret";
/// Token secret.
pub const TOKEN_SECRET: &str = "tokensecret";

fn location(item: CertItem) -> (&'static str, &'static str) {
    match item {
        CertItem::CaCert => (CA_SECRET, "cadata"),
        CertItem::CaKey => (CA_SECRET, "cakeydata"),
        CertItem::ServerCert => (CLOUDCORE_SECRET, "cloudcoredata"),
        CertItem::ServerKey => (CLOUDCORE_SECRET, "cloudcorekeydata"),
        _ => (TOKEN_SECRET, "tokendata"),
    }
}

/// PKI material in memory, keys converted to SEC1 when saved.
#[derive(Debug, Default)]
struct MemStore {
    items: Mutex<HashMap<CertItem, Vec<u8>>>,
}

impl CertStore for MemStore {
    fn load(&self, item: CertItem) -> Result<Option<Vec<u8>>, CertError> {
        Ok(self
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&item)
            .cloned())
    }

    fn save(&self, item: CertItem, data: &[u8]) -> Result<(), CertError> {
        let data = match item {
            CertItem::CaKey | CertItem::ServerKey => {
                pkcs8_to_sec1(data).unwrap_or_else(|| data.to_vec())
            }
            _ => data.to_vec(),
        };
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(item, data);
        Ok(())
    }
}

/// One DER TLV: (tag, whole element length, content start).
fn tlv(b: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *b.first()?;
    let l0 = *b.get(1)?;
    let (len, hdr) = if l0 < 0x80 {
        (usize::from(l0), 2)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 2 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let total = hdr.checked_add(len)?;
    (total <= b.len()).then_some((tag, total, hdr))
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A P-256 PKCS#8 key as SEC1 with the curve named (Go's `x509.ParseECPrivateKey` needs it).
/// `None` when `pkcs8` is not one.
fn pkcs8_to_sec1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    // PrivateKeyInfo ::= SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING }
    let (t, _, h) = tlv(pkcs8)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = &pkcs8[h..];
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let (tag, total, hdr) = tlv(rest)?;
        parts.push((tag, &rest[hdr..total]));
        rest = &rest[total..];
    }
    let [(0x02, [0]), (0x30, _), (0x04, inner)] = parts.as_slice() else {
        return None;
    };
    // ECPrivateKey ::= SEQUENCE { INTEGER 1, OCTET STRING, [0] params OPTIONAL, [1] OPTIONAL }
    let (t, _, h) = tlv(inner)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = &inner[h..];
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (tag, total, _) = tlv(rest)?;
        fields.push((tag, &rest[..total]));
        rest = &rest[total..];
    }
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut body = Vec::new();
    let mut has_params = false;
    for (tag, raw) in &fields {
        if *tag == 0xa0 {
            has_params = true;
        }
        if *tag == 0xa1 && !has_params {
            body.extend(der(0xa0, P256));
            has_params = true;
        }
        body.extend_from_slice(raw);
    }
    if !has_params {
        body.extend(der(0xa0, P256));
    }
    Some(der(0x30, &body))
}

async fn ensure_namespace(client: &kube::Client) -> Result<(), ControllerError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
            .map_err(|e| ControllerError::Config(e.to_string()))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
        Err(e) => Err(ControllerError::kube("create namespace kubeedge", e)),
    }
}

async fn read_secret(
    client: &kube::Client,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, ControllerError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) => Ok(BTreeMap::new()),
        Err(e) => Err(ControllerError::kube(
            format!("read secret {NAMESPACE}/{name}"),
            e,
        )),
    }
}

/// Create or update an Opaque secret in `kubeedge`.
pub async fn write_secret(
    client: &kube::Client,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<(), ControllerError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let mut secret = Secret {
        type_: Some("Opaque".to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(NAMESPACE.to_owned());
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let current = api
                .get(name)
                .await
                .map_err(|e| ControllerError::kube(format!("read secret {name}"), e))?;
            secret.metadata.resource_version = current.metadata.resource_version;
            api.replace(name, &PostParams::default(), &secret)
                .await
                .map(|_| ())
                .map_err(|e| ControllerError::kube(format!("update secret {name}"), e))
        }
        Err(e) => Err(ControllerError::kube(format!("create secret {name}"), e)),
    }
}

/// Load (or create) the PKI: files, then secrets, then generated; write what is used back
/// to the secrets. The files are not written (upstream leaves them to the operator).
pub async fn load_pki(
    client: &kube::Client,
    files: &FsCertStore,
    config: PkiConfig,
) -> Result<Arc<Pki>, ControllerError> {
    ensure_namespace(client).await?;
    let mem = MemStore::default();
    let ca = read_secret(client, CA_SECRET).await?;
    let server = read_secret(client, CLOUDCORE_SECRET).await?;
    for (item, pair) in [
        (CertItem::CaCert, CertItem::CaKey),
        (CertItem::ServerCert, CertItem::ServerKey),
    ] {
        let from_files = match (files.load(item), files.load(pair)) {
            (Ok(Some(c)), Ok(Some(k))) => Some((c, k)),
            _ => None,
        };
        let from_secret = {
            let secret = if item == CertItem::CaCert {
                &ca
            } else {
                &server
            };
            let (_, ck) = location(item);
            let (_, kk) = location(pair);
            match (secret.get(ck), secret.get(kk)) {
                (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
                    Some((c.clone(), k.clone()))
                }
                _ => None,
            }
        };
        if let Some((c, k)) = from_files.or(from_secret) {
            mem.items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend([(item, c), (pair, k)]);
        }
    }
    // Generated material is saved as SEC1; load again so that the token key is those bytes.
    Pki::load_or_create(&mem, config.clone()).map_err(ControllerError::Cert)?;
    let pki = Pki::load_or_create(&mem, config).map_err(ControllerError::Cert)?;
    for (secret, items) in [
        (CA_SECRET, [CertItem::CaCert, CertItem::CaKey]),
        (
            CLOUDCORE_SECRET,
            [CertItem::ServerCert, CertItem::ServerKey],
        ),
    ] {
        let mut data = BTreeMap::new();
        for item in items {
            if let Ok(Some(v)) = mem.load(item) {
                data.insert(location(item).1.to_owned(), v);
            }
        }
        write_secret(client, secret, data).await?;
    }
    info!("kubeedge certificates kept in the {NAMESPACE} namespace secrets");
    Ok(Arc::new(pki))
}

/// Write a fresh join token to `kubeedge/tokensecret` now and every `token_refresh`, until
/// `cancel`. Failures are logged and retried at the next period.
pub async fn run_token_secret(pki: Arc<Pki>, client: kube::Client, cancel: CancellationToken) {
    let period = pki
        .config()
        .token_refresh
        .max(std::time::Duration::from_secs(1));
    loop {
        let result = match pki.issue_token(unix_now()) {
            Ok(t) => {
                let data = BTreeMap::from([("tokendata".to_owned(), t.to_string().into_bytes())]);
                write_secret(&client, TOKEN_SECRET, data).await
            }
            Err(e) => Err(ControllerError::Cert(e)),
        };
        match result {
            Ok(()) => info!(next_in = ?period, "join token written to {NAMESPACE}/{TOKEN_SECRET}"),
            Err(e) => error!(error = %e, "join token refresh failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_keys_become_named_curve_sec1() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let pkcs8 = key.serialize_der();
        let sec1 = pkcs8_to_sec1(&pkcs8).expect("convert");
        let (_, obj) = x509_parser::der_parser::der::parse_der(&sec1).expect("der");
        let seq = obj.as_sequence().expect("seq");
        assert_eq!(seq[0].as_u32().expect("version"), 1);
        assert_eq!(seq[1].as_slice().expect("priv").len(), 32);
        assert!(
            seq.iter().any(|o| o.header.raw_tag() == Some(&[0xa0])),
            "curve named"
        );
        assert!(pkcs8_to_sec1(b"\x30\x03\x02\x01\x01").is_none());
        assert!(pkcs8_to_sec1(&[]).is_none());
        assert!(pkcs8_to_sec1(&[0x30, 0x82, 0xff]).is_none());
        // The converted key still loads and signs.
        let mem = MemStore::default();
        mem.save(CertItem::CaKey, &pkcs8).expect("save");
        assert_eq!(mem.load(CertItem::CaKey).expect("load"), Some(sec1));
    }
}
