//! The bridge interface the mesh serves on (upstream's `edgemesh0`), made and removed with
//! `ip` (iproute2).

use tokio::process::Command;

use crate::error::MeshError;

/// Makes the bridge interface `name` (as upstream does) with `ip/32` and brings it up (upstream's `edgemesh0` with
/// 169.254.96.16): the address the DNS and the proxy's listeners bind. An existing interface
/// is kept, and the address added if missing.
pub async fn ensure_interface(name: &str, ip: std::net::Ipv4Addr) -> Result<(), MeshError> {
    let exists = Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| MeshError::Network(format!("cannot run ip (Debian package iproute2): {e}")))?
        .success();
    if !exists {
        ip_cmd(&["link", "add", name, "type", "bridge"]).await?;
    }
    let addr = format!("{ip}/32");
    let shown = Command::new("ip")
        .args(["-4", "addr", "show", "dev", name])
        .output()
        .await?;
    if !String::from_utf8_lossy(&shown.stdout).contains(&addr) {
        ip_cmd(&["addr", "add", &addr, "dev", name]).await?;
    }
    ip_cmd(&["link", "set", name, "up"]).await
}

/// Removes the interface `name`; a missing one is not an error.
pub async fn remove_interface(name: &str) -> Result<(), MeshError> {
    let _ = Command::new("ip")
        .args(["link", "delete", name])
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    Ok(())
}

async fn ip_cmd(args: &[&str]) -> Result<(), MeshError> {
    let out = Command::new("ip").args(args).output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MeshError::Network(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
