//! `keadm reset`: undo what `keadm init` and `keadm join` set up on this host. Every step runs
//! even when an earlier one failed; failures are reported at the end. Running it again finds
//! nothing left and succeeds.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::paths::Paths;
use crate::process;

/// Run `keadm reset`; `endpoint` (upstream's `--remote-runtime-endpoint`) overrides the CRI
/// endpoint edgecore.yaml names.
pub(crate) async fn run(paths: &Paths, endpoint: Option<String>) -> Result<()> {
    // The node this host joined as (its containers carry that name) and its CRI endpoint, read
    // before removal.
    let config = std::fs::read_to_string(paths.config("edgecore"))
        .ok()
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok());
    let node = config.as_ref().and_then(|v| {
        crate::yaml::get_str(v, &["modules", "edged", "hostnameOverride"]).map(str::to_owned)
    });
    let cri = endpoint.or_else(|| config.as_ref().and_then(cri_endpoint));
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
    // Docker's always (a node may have moved runtimes), the CRI runtime's when one is set.
    let removed = match (&node, &cri) {
        (Some(node), Some(ep)) => {
            match (remove_pod_containers(node), remove_cri_pods(ep, node).await) {
                (Ok(a), Ok(b)) => Ok(a + b),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        (Some(node), None) => remove_pod_containers(node),
        _ => Ok(0),
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
pub(crate) const NODE_LABEL: &str = kubeedge_edge::edged::runtime::LABEL_NODE;

/// The CRI endpoint edgecore.yaml configures, in any upstream spelling (None: Docker).
fn cri_endpoint(config: &serde_yaml::Value) -> Option<String> {
    let edged = config.get("modules")?.get("edged")?.clone();
    let edged: kubeedge_edge::config::Edged = serde_yaml::from_value(edged).ok()?;
    match edged.runtime.choice() {
        kubeedge_edge::config::RuntimeChoice::Remote(ep) => Some(ep),
        _ => None,
    }
}

/// Remove the pod sandboxes (with their containers) and containers edged created for `node`
/// on the CRI runtime at `endpoint`. A runtime that does not answer has nothing of ours
/// running; the containers go before the sandboxes they live in.
async fn remove_cri_pods(endpoint: &str, node: &str) -> Result<usize> {
    use kubeedge_edge::edged::runtime::{LABEL_CONTAINER, SANDBOX};
    use kubeedge_edge::edged::{ContainerRuntime, CriRuntime, DEFAULT_LOG_ROOT};
    let rt = CriRuntime::new(endpoint, DEFAULT_LOG_ROOT);
    let Ok(mut found) = rt.list_containers(&[(NODE_LABEL, node)]).await else {
        return Ok(0);
    };
    found.sort_by_key(|c| c.labels.get(LABEL_CONTAINER).is_some_and(|n| n == SANDBOX));
    let mut failed = Vec::new();
    for c in &found {
        if let Err(e) = rt.remove_container(&c.id).await {
            failed.push(format!("{}: {e}", c.id));
        }
    }
    if !failed.is_empty() {
        bail!("on {endpoint}: {}", failed.join("; "));
    }
    Ok(found.len())
}

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
