//! `keadm gettoken`: print the join token cloudcore keeps in the `kubeedge/tokensecret` secret
//! (`tokendata`), from a real cluster or from cloudcore's embedded control plane.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;

use crate::paths::Paths;

/// The kubeconfig to use: the flag, else `$KUBECONFIG`, else `~/.kube/config`, else the admin
/// kubeconfig of an embedded control plane on this host.
pub(crate) fn kubeconfig_path(paths: &Paths, flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if paths.is_system_root() {
        if let Some(home) = std::env::var_os("HOME") {
            let p = PathBuf::from(home).join(".kube/config");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    let embedded = crate::init::admin_kubeconfig(paths);
    if embedded.exists() {
        return Ok(embedded);
    }
    bail!(
        "no kubeconfig: pass --kube-config, set KUBECONFIG, or run `keadm init` on this host (it writes {})",
        embedded.display()
    )
}

/// A client for the kubeconfig at `path`.
pub(crate) async fn client(path: &PathBuf) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("read kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", path.display()))?;
    kube::Client::try_from(cfg).context("build the kubernetes client")
}

/// Read the token.
pub(crate) async fn token(client: kube::Client) -> Result<String> {
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "kubeedge");
    let s = secrets
        .get("tokensecret")
        .await
        .context("read secret kubeedge/tokensecret (is cloudcore running?)")?;
    let data = s
        .data
        .and_then(|mut d| d.remove("tokendata"))
        .context("secret kubeedge/tokensecret has no tokendata")?;
    let text = String::from_utf8(data.0).context("tokendata is not text")?;
    Ok(text.trim().to_owned())
}

/// Run `keadm gettoken`.
pub(crate) async fn run(paths: &Paths, kube_config: Option<PathBuf>) -> Result<()> {
    let path = kubeconfig_path(paths, kube_config)?;
    let t = token(client(&path).await?).await?;
    println!("{t}");
    Ok(())
}
