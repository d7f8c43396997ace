//! What `keadm join` learns from the real runtimes on this machine: the test containerd
//! (scripts/test.sh starts it) and the Docker engine.

use anyhow::{ensure, Context as _, Result};
use kubeedge_edge::edged::{probe_cri, probe_docker, CgroupDriver};

const CRI: &str = "unix:///run/kubeedge-rs-containerd/containerd.sock";
const DOCKER: &str = "unix:///var/run/docker.sock";

#[tokio::test]
async fn containerd_says_its_version_and_cgroup_driver() -> Result<()> {
    if !std::path::Path::new(CRI.trim_start_matches("unix://")).exists() {
        eprintln!("skipped: no containerd at {CRI} (scripts/test.sh starts one)");
        return Ok(());
    }
    let p = probe_cri(CRI).await?;
    ensure!(p.version.name == "containerd", "{p:?}");
    // containerd 1.6 has no RuntimeConfig: the driver comes from its Status config (the test
    // containerd leaves runc's options unset: cgroupfs).
    ensure!(p.cgroup_driver == Some(CgroupDriver::Cgroupfs), "{p:?}");
    Ok(())
}

#[tokio::test]
async fn docker_says_its_cgroup_driver_as_docker_info_does() -> Result<()> {
    let p = probe_docker(DOCKER).await?;
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.CgroupDriver}}"])
        .output()
        .context("docker info")?;
    let want = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        p.cgroup_driver.map(CgroupDriver::as_str) == Some(want.as_str()),
        "{p:?} vs docker info {want:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_socket_that_is_not_a_cri_server_is_an_error_naming_it() -> Result<()> {
    let e = probe_cri(DOCKER)
        .await
        .err()
        .context("docker's socket answered the CRI")?;
    ensure!(e.to_string().contains(DOCKER), "{e}");
    let missing = "unix:///run/kubeedge-rs-no-such.sock";
    let e = probe_cri(missing)
        .await
        .err()
        .context("a missing socket answered")?;
    ensure!(e.to_string().contains(missing), "{e}");
    Ok(())
}
