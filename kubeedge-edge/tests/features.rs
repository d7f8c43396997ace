//! The crate's feature sets, as a gateway author uses them: a build with only the hub and the
//! meta cache compiles no container runtime client, no MQTT client and no API server
//! (checked on cargo's own dependency tree; `scripts/features.sh` builds each set).

use std::process::Command;

use anyhow::{ensure, Context, Result};

/// `cargo tree` of this crate with `features` and no defaults: the normal dependencies.
fn tree(features: &str) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args([
            "-p",
            "kubeedge-edge",
            "--no-default-features",
            "--features",
            features,
        ])
        .output()
        .context("run cargo tree")?;
    ensure!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn has(tree: &str, krate: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(krate))
}

#[test]
fn the_gateway_build_pulls_no_runtime_broker_or_api_server() -> Result<()> {
    let t = tree("hub,meta")?;
    for absent in [
        "bollard",
        "tonic",
        "k8s-cri",
        "rumqttc",
        "kubeedge-apiserver",
    ] {
        ensure!(!has(&t, absent), "{absent} is in the hub,meta build:\n{t}");
    }
    for present in ["tokio-tungstenite", "rusqlite", "kubeedge-proto"] {
        ensure!(
            has(&t, present),
            "{present} is missing from the hub,meta build"
        );
    }
    Ok(())
}

#[test]
fn each_module_brings_its_own_dependencies() -> Result<()> {
    ensure!(has(&tree("edged")?, "bollard"), "edged without bollard");
    ensure!(has(&tree("edged")?, "tonic"), "edged without tonic");
    ensure!(!has(&tree("edged")?, "rumqttc"), "edged pulls rumqttc");
    ensure!(
        has(&tree("eventbus")?, "rumqttc"),
        "eventbus without rumqttc"
    );
    ensure!(
        !has(&tree("eventbus")?, "bollard"),
        "eventbus pulls bollard"
    );
    ensure!(
        has(&tree("metaserver")?, "kubeedge-apiserver"),
        "metaserver without it"
    );
    ensure!(
        !has(&tree("hub")?, "rusqlite"),
        "the hub alone pulls rusqlite"
    );
    Ok(())
}
