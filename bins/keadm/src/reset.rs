//! `keadm reset`: undo what `keadm init` and `keadm join` set up on this host. Every step runs
//! even when an earlier one failed; failures are reported at the end. Running it again finds
//! nothing left and succeeds.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::paths::Paths;
use crate::process;

/// Run `keadm reset`.
pub(crate) fn run(paths: &Paths) -> Result<()> {
    // The node this host joined as (its containers carry that name), read before removal.
    let node = std::fs::read_to_string(paths.config("edgecore"))
        .ok()
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
        .and_then(|v| {
            crate::yaml::get_str(&v, &["modules", "edged", "hostnameOverride"]).map(str::to_owned)
        });
    let mut failures: Vec<String> = Vec::new();
    let mut n = 0;
    let mut step = |what: &str| {
        n += 1;
        println!("[{n}] {what}");
    };

    for name in ["edgecore", "cloudcore"] {
        step(&format!("Stop {name}"));
        match process::stop(paths, name) {
            Ok(Some(done)) => println!("    {done}"),
            Ok(None) => println!("    {name} is not running"),
            Err(e) => {
                println!("    failed: {e:#}");
                failures.push(format!("stop {name}: {e:#}"));
            }
        }
    }

    step("Remove the containers edgecore started");
    let removed = match &node {
        Some(node) => remove_pod_containers(node),
        None => Ok(0),
    };
    match removed {
        Ok(0) => println!("    none"),
        Ok(k) => println!("    removed {k}"),
        Err(e) => {
            println!("    failed: {e:#}");
            failures.push(format!("remove containers: {e:#}"));
        }
    }

    let dirs: [PathBuf; 4] = [
        paths.etc(),
        paths.var_lib(),
        paths.edged_root(),
        paths.logs(),
    ];
    for dir in dirs {
        step(&format!("Remove {}", dir.display()));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => println!("    removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("    not present"),
            Err(e) => {
                println!("    failed: {e}");
                failures.push(format!("remove {}: {e}", dir.display()));
            }
        }
    }

    if failures.is_empty() {
        println!("\nkeadm reset: done");
        Ok(())
    } else {
        bail!(
            "keadm reset finished with {} failure(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        )
    }
}

/// Label every container of edged carries: the node it runs for.
pub(crate) const NODE_LABEL: &str = "io.kubeedge-rs.node";

/// Remove the containers edged created for `node` (by label), when a Docker engine answers.
fn remove_pod_containers(node: &str) -> Result<usize> {
    let Ok(out) = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={NODE_LABEL}={node}"),
        ])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Ok(0);
    };
    if !out.status.success() {
        // No engine: nothing of ours can be running there.
        return Ok(0);
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let status = std::process::Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("docker rm -f failed: {status}");
    }
    Ok(ids.len())
}
