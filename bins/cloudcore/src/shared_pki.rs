//! Replicas on one etcd share the embedded API's CA and ServiceAccount signing key, as kubeadm
//! shares control-plane certificates through its `kubeadm-certs` Secret: the first replica
//! writes its files to the Secret `kube-system/kubeedge-apiserver-pki`, and every other replica
//! takes them from there before it serves. So each replica's admin kubeconfig and each
//! ServiceAccount token are good on all of them.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use kubeedge_apiserver::{AnyStore, ObjectKey, Store, StoreError, WriteOp};
use serde_json::{json, Value};
use tracing::{info, warn};

/// The files shared, under the pki directory.
const FILES: [&str; 3] = ["ca.crt", "ca.key", "sa.key"];

fn key() -> ObjectKey {
    ObjectKey::new("core/secrets", "kube-system", "kubeedge-apiserver-pki")
}

/// Makes `dir` hold the cluster's shared files: the Secret's when it exists, else this
/// replica's (generated when missing), published for the others.
pub(crate) async fn share(store: &AnyStore, dir: &Path) -> anyhow::Result<()> {
    if let Some(stored) = store.get(key()).await? {
        return take(&stored.value()?, dir);
    }
    kubeedge_apiserver::Pki::load_or_generate(dir, &[])?;
    kubeedge_apiserver::authz::token::SigningKey::load_or_generate(&dir.join("sa.key"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = serde_json::Map::new();
    for f in FILES {
        let bytes = std::fs::read(dir.join(f)).with_context(|| format!("read {f}"))?;
        data.insert(f.to_owned(), Value::String(b64.encode(bytes)));
    }
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "kubeedge-apiserver-pki", "namespace": "kube-system",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": format!("{:.0}", jiff::Timestamp::now())},
        "data": data,
    });
    match store
        .write(WriteOp::Create {
            key: key(),
            value: secret,
        })
        .await
    {
        Ok(_) => {
            info!("the API's CA and ServiceAccount key are shared in kube-system/kubeedge-apiserver-pki");
            Ok(())
        }
        // Another replica published first: take its files.
        Err(StoreError::AlreadyExists(_)) => {
            let stored = store.get(key()).await?.context("shared pki vanished")?;
            take(&stored.value()?, dir)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the Secret's files into `dir` (owner-only).
fn take(secret: &Value, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    for f in FILES {
        let text = secret["data"][f]
            .as_str()
            .with_context(|| format!("kube-system/kubeedge-apiserver-pki has no {f}"))?;
        let bytes = b64
            .decode(text)
            .with_context(|| format!("{f} is not base64"))?;
        let path = dir.join(f);
        if std::fs::read(&path).is_ok_and(|old| old != bytes) {
            warn!(file = %path.display(), "replaced by the cluster's shared copy");
        }
        write_private(&path, &bytes)?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
