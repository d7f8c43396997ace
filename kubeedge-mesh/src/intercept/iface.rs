//! The bridge interface the mesh serves on (upstream's `edgemesh0`), made and removed with
//! `ip` (iproute2).

use super::cmd::{must, run};
use crate::error::MeshError;

/// Makes the bridge interface `name` (a bridge, as upstream makes `edgemesh0`) with `ip/32`
/// and brings it up: the address the DNS and the proxy's listeners bind (169.254.96.16). An
/// existing interface is kept, and the address added if missing.
pub async fn ensure_interface(name: &str, ip: std::net::Ipv4Addr) -> Result<(), MeshError> {
    if !run(&["ip", "link", "show", "dev", name], None).await?.ok {
        must(&["ip", "link", "add", name, "type", "bridge"], None).await?;
    }
    let addr = format!("{ip}/32");
    let shown = must(&["ip", "-4", "addr", "show", "dev", name], None).await?;
    if !shown.stdout.contains(&addr) {
        must(&["ip", "addr", "add", &addr, "dev", name], None).await?;
    }
    must(&["ip", "link", "set", name, "up"], None).await?;
    Ok(())
}

/// Removes the interface `name`; a missing one is not an error.
pub async fn remove_interface(name: &str) -> Result<(), MeshError> {
    run(&["ip", "link", "delete", name], None).await?;
    Ok(())
}
