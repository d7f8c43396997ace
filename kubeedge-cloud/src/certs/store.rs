//! Where PKI material lives: [`CertStore`], and [`FsCertStore`] with files on disk (keys 0600,
//! written atomically), reading upstream's SEC1 EC keys too.

use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

pub(super) fn is_sec1(der: &[u8]) -> bool {
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
pub(super) fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
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
    ::pem::encode(&::pem::Pem::new(label, der))
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
