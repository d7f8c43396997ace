//! Pod volumes under `<rootDirectory>/pods/<uid>/volumes`: emptyDir, hostPath, and configMap,
//! secret and downwardAPI as files. Files are written as kubelet's atomic writer does: a fresh
//! timestamped directory, a `..data` symlink swapped by rename, and one symlink per entry
//! pointing through `..data`, so an update reaches a running container's mount all at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};

use super::link::Link;
use super::spec::{field_ref, SpecError};

/// A prepared volume: where it is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostVolume {
    /// Host path to bind.
    pub(crate) path: PathBuf,
    /// Mount read-only regardless of the mount's own flag.
    pub(crate) read_only: bool,
}

/// The pod's directory.
pub(crate) fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

fn volume_dir(root: &Path, uid: &str, kind: &str, name: &str) -> PathBuf {
    pod_dir(root, uid).join("volumes").join(kind).join(name)
}

/// Whether `p` is a safe relative path (no `..`, not absolute, not empty).
fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != ".." && c != ".")
}

/// Write `files` (relative path → bytes, mode) into `dir` atomically.
pub(crate) fn atomic_write(
    dir: &Path,
    files: &BTreeMap<String, (Vec<u8>, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}_{:08x}",
        jiff::Timestamp::now().as_nanosecond(),
        fastrand::u32(..)
    );
    let data = dir.join(&stamp);
    std::fs::create_dir(&data)?;
    for (rel, (bytes, mode)) in files {
        let path = data.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let tops: std::collections::BTreeSet<&str> =
        files.keys().filter_map(|k| k.split('/').next()).collect();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != stamp {
                let _ = std::fs::remove_dir_all(entry.path());
            }
            continue;
        }
        if !tops.contains(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for top in tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(top), &link)?;
        }
    }
    Ok(())
}

fn project(
    volume: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, SpecError> {
    let mut files = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                if !safe_relative(&it.path) {
                    return Err(SpecError::InvalidVolume {
                        volume: volume.to_owned(),
                        message: format!("item path {:?} must be relative, without ..", it.path),
                    });
                }
                let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                match data.get(&it.key) {
                    Some(v) => {
                        files.insert(it.path.clone(), (v.clone(), mode));
                    }
                    None if optional => {}
                    None => {
                        return Err(SpecError::InvalidVolume {
                            volume: volume.to_owned(),
                            message: format!("key {:?} not found", it.key),
                        })
                    }
                }
            }
        }
        _ => {
            for (k, v) in data {
                if safe_relative(&k) {
                    files.insert(k, (v, default_mode));
                }
            }
        }
    }
    Ok(files)
}

/// The data of a configMap (data and binaryData), if it exists.
pub(crate) async fn configmap_data(
    link: &Link,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, SpecError> {
    let Some(text) = link.query(&format!("{ns}/configmap/{name}")).await? else {
        return Ok(None);
    };
    let cm: ConfigMap = serde_json::from_str(&text).map_err(|e| SpecError::BadObject {
        what: format!("configmap {ns}/{name}"),
        message: e.to_string(),
    })?;
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        out.insert(k, v.0);
    }
    Ok(Some(out))
}

/// The data of a secret (data and stringData), if it exists.
pub(crate) async fn secret_data(
    link: &Link,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, SpecError> {
    let Some(text) = link.query(&format!("{ns}/secret/{name}")).await? else {
        return Ok(None);
    };
    let s: Secret = serde_json::from_str(&text).map_err(|e| SpecError::BadObject {
        what: format!("secret {ns}/{name}"),
        message: e.to_string(),
    })?;
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    Ok(Some(out))
}

/// Which configMap or secret a volume shows, if any: (`configmap`|`secret`, name).
pub(crate) fn volume_source(v: &Volume) -> Option<(&'static str, &str)> {
    if let Some(cm) = &v.config_map {
        return Some(("configmap", cm.name.as_str()));
    }
    if let Some(s) = &v.secret {
        return s.secret_name.as_deref().map(|n| ("secret", n));
    }
    None
}

/// Prepare one volume (write its files, create its directory); `host_ip`/`pod_ip` feed
/// downwardAPI.
pub(crate) async fn prepare(
    root: &Path,
    pod: &Pod,
    v: &Volume,
    link: &Link,
    ips: (&str, &str),
) -> Result<HostVolume, SpecError> {
    let meta = &pod.metadata;
    let uid = meta.uid.as_deref().unwrap_or_default();
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let invalid = |message: String| SpecError::InvalidVolume {
        volume: v.name.clone(),
        message,
    };
    if !safe_relative(&v.name) || v.name.contains('/') {
        return Err(invalid("invalid volume name".into()));
    }
    if v.empty_dir.is_some() {
        let dir = volume_dir(root, uid, "empty-dir", &v.name);
        std::fs::create_dir_all(&dir).map_err(|e| invalid(e.to_string()))?;
        return Ok(HostVolume {
            path: dir,
            read_only: false,
        });
    }
    if let Some(hp) = &v.host_path {
        let path = PathBuf::from(&hp.path);
        if !path.is_absolute() {
            return Err(invalid(format!(
                "hostPath {:?} must be an absolute path",
                hp.path
            )));
        }
        let exists = path.exists();
        match hp.type_.as_deref().unwrap_or("") {
            "" => {}
            "DirectoryOrCreate" => {
                std::fs::create_dir_all(&path).map_err(|e| invalid(e.to_string()))?
            }
            "Directory" if path.is_dir() => {}
            "File" if path.is_file() => {}
            "FileOrCreate" if exists => {}
            "FileOrCreate" => {
                std::fs::write(&path, b"").map_err(|e| invalid(e.to_string()))?;
            }
            "Socket" | "CharDevice" | "BlockDevice" if exists => {}
            other => {
                return Err(invalid(format!(
                    "hostPath {:?} is not of type {other:?}",
                    hp.path
                )))
            }
        }
        return Ok(HostVolume {
            path,
            read_only: false,
        });
    }
    let (files, kind) = if let Some(cm) = &v.config_map {
        let optional = cm.optional.unwrap_or(false);
        let data = match configmap_data(link, ns, &cm.name).await? {
            Some(d) => d,
            None if optional => BTreeMap::new(),
            None => {
                return Err(SpecError::NotFound {
                    what: format!("configmap {ns}/{}", cm.name),
                })
            }
        };
        let mode = cm.default_mode.map(|m| m as u32).unwrap_or(0o644);
        (
            project(&v.name, data, cm.items.as_ref(), mode, optional)?,
            "configmap",
        )
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        let data = match secret_data(link, ns, &name).await? {
            Some(d) => d,
            None if optional => BTreeMap::new(),
            None => {
                return Err(SpecError::NotFound {
                    what: format!("secret {ns}/{name}"),
                })
            }
        };
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(0o644);
        (
            project(&v.name, data, s.items.as_ref(), mode, optional)?,
            "secret",
        )
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map(|m| m as u32).unwrap_or(0o644);
        let mut files = BTreeMap::new();
        for it in d.items.iter().flatten() {
            if !safe_relative(&it.path) {
                return Err(invalid(format!("item path {:?} is not relative", it.path)));
            }
            let Some(f) = &it.field_ref else {
                return Err(invalid(format!(
                    "item {:?}: only fieldRef is supported",
                    it.path
                )));
            };
            let value = field_ref(pod, &f.field_path, ips)
                .ok_or_else(|| invalid(format!("unsupported fieldPath {:?}", f.field_path)))?;
            let m = it.mode.map(|m| m as u32).unwrap_or(mode);
            files.insert(it.path.clone(), (value.into_bytes(), m));
        }
        (files, "downward-api")
    } else {
        return Err(invalid(
            "unsupported volume type (emptyDir, hostPath, configMap, secret and downwardAPI are)"
                .into(),
        ));
    };
    let dir = volume_dir(root, uid, kind, &v.name);
    let d2 = dir.clone();
    tokio::task::spawn_blocking(move || atomic_write(&d2, &files))
        .await
        .map_err(|e| invalid(e.to_string()))?
        .map_err(|e| invalid(e.to_string()))?;
    Ok(HostVolume {
        path: dir,
        read_only: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_swaps_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("v");
        let mut files = BTreeMap::new();
        files.insert("a".to_owned(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".to_owned(), (b"2".to_vec(), 0o600));
        atomic_write(&d, &files).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(d.join("sub/b")).unwrap(), b"2");
        files.remove("sub/b");
        files.insert("a".to_owned(), (b"3".to_vec(), 0o644));
        atomic_write(&d, &files).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"3");
        assert!(!d.join("sub").exists());
        let dirs = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(dirs, 1, "old data directories are removed");
    }

    #[test]
    fn relative_paths_only() {
        assert!(safe_relative("a/b"));
        assert!(!safe_relative("../x"));
        assert!(!safe_relative("/etc/x"));
        assert!(!safe_relative("a//b"));
        assert!(!safe_relative(""));
    }
}
