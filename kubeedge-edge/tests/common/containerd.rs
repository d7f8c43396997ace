//! A containerd of a test's own (for tests that kill the runtime): its config, root, state
//! and socket in a temp dir, as scripts/lib.sh `write_containerd_config` writes the shared
//! one's, and the test images copied from the shared instance (`ctr images export`, a read
//! of it) into its `k8s.io` namespace. No CNI config: its pods use the host network.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kubeedge_edge::edged::runtime::ContainerRuntime;
use kubeedge_edge::edged::CriRuntime;

use super::{CRI_PAUSE_IMAGE, CRI_SOCKET, IMAGE};

/// A containerd process this test started (killed, its containers removed, on drop).
pub struct OwnContainerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{CRI_PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#
    )
}

fn ctr(address: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("ctr")
        .args(["--address", address, "-n", "k8s.io"])
        .args(args)
        .output()
        .context("ctr")?;
    if !out.status.success() {
        bail!(
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl OwnContainerd {
    /// Start one with the test images; None (the reason printed) when containerd is not
    /// installed or the shared instance whose images it copies is absent.
    pub async fn start() -> Result<Option<Self>> {
        if Command::new("containerd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("skipped: containerd is not installed (scripts/test.sh installs it)");
            return Ok(None);
        }
        if !Path::new(CRI_SOCKET).exists() {
            eprintln!("skipped: no containerd at {CRI_SOCKET} to copy the test images from");
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("ctrd").tempdir()?;
        std::fs::create_dir_all(dir.path().join("net.d"))?;
        std::fs::write(dir.path().join("config.toml"), config(dir.path()))?;
        let mut me = Self { dir, child: None };
        me.spawn().await?;
        let tarball = me.dir.path().join("images.tar");
        let tar = tarball.to_string_lossy();
        let busybox = format!("docker.io/{IMAGE}");
        ctr(
            CRI_SOCKET,
            &["images", "export", &tar, &busybox, CRI_PAUSE_IMAGE],
        )?;
        ctr(&me.socket().to_string_lossy(), &["images", "import", &tar])?;
        std::fs::remove_file(&tarball)?;
        Ok(Some(me))
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// A CRI client of it (logs in its temp dir).
    pub fn runtime(&self) -> CriRuntime {
        CriRuntime::new(
            format!("unix://{}", self.socket().display()),
            self.dir.path().join("logs"),
        )
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let rt = self.runtime();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while rt.version().await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.dir.path().join("containerd.log"))?;
                bail!("own containerd did not answer within 30 s; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// kill -9 (its shims, and so the containers, keep running).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Start it again on the same root, state and socket.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn().await
    }
}

impl Drop for OwnContainerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Remove every sandbox (and so every shim) before the daemon goes.
            super::cri_sweep(&self.runtime(), None);
        }
        let _ = self.kill();
    }
}
