//! Where keadm puts things: upstream's paths (`/etc/kubeedge`, `/var/lib/kubeedge`), under a
//! root directory that is `/` unless `KUBEEDGE_ROOT` says otherwise (tests, or a second node
//! on one machine).

use std::path::{Path, PathBuf};

/// The file layout of one KubeEdge installation.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    root: PathBuf,
}

impl Paths {
    /// From `KUBEEDGE_ROOT` (default `/`).
    pub(crate) fn from_env() -> Self {
        let root = std::env::var_os("KUBEEDGE_ROOT")
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("/"));
        Self { root }
    }

    /// Under `root` (tests).
    #[cfg(test)]
    pub(crate) fn under(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// Upstream's own layout, for cloudcore inside a container image.
    pub(crate) fn for_image() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// `abs` under the root.
    pub(crate) fn at(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub(crate) fn is_system_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `/etc/kubeedge`.
    pub(crate) fn etc(&self) -> PathBuf {
        self.at("/etc/kubeedge")
    }

    /// `/var/lib/kubeedge`.
    pub(crate) fn var_lib(&self) -> PathBuf {
        self.at("/var/lib/kubeedge")
    }

    /// `/var/lib/edged`: edged's root directory (pod volumes).
    pub(crate) fn edged_root(&self) -> PathBuf {
        self.at("/var/lib/edged")
    }

    /// `/var/log/kubeedge`.
    pub(crate) fn logs(&self) -> PathBuf {
        self.at("/var/log/kubeedge")
    }

    /// `/etc/kubeedge/config/<name>.yaml`.
    pub(crate) fn config(&self, name: &str) -> PathBuf {
        self.at(&format!("/etc/kubeedge/config/{name}.yaml"))
    }

    /// The pid file of a component started in the background.
    pub(crate) fn pid_file(&self, name: &str) -> PathBuf {
        self.var_lib().join(format!("{name}.pid"))
    }

    /// The log file of a component started in the background.
    pub(crate) fn log_file(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
}
