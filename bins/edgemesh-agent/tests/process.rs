//! The edgemesh-agent process: a config file it cannot use is refused at once with a message
//! that names the problem (and nothing of the node's network is touched). Building this test
//! also puts the binary where the cross-node tests (`tests/tests/mesh_nodes.rs`) run it.

use std::process::Command;
use std::time::Duration;

fn run(config: &str) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("edgemesh-agent.yaml");
    std::fs::write(&path, config)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgemesh-agent"))
        .arg("--config-file")
        .arg(&path)
        .args(["--node-name", "n1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    Ok((out.status.success(), text))
}

#[test]
fn an_unusable_config_is_refused_with_its_reason() -> anyhow::Result<()> {
    let (ok, text) = run("modules: [not, a, mapping]\n")?;
    assert!(!ok && text.contains("edgemesh-agent config"), "{text}");
    let (ok, text) = run(
        "kubeAPIConfig: {metaServer: {server: 'http://127.0.0.1:1'}}\nmodules:\n  edgeProxy: {enable: true, serviceFilterMode: Sometimes}\n",
    )?;
    assert!(!ok && text.contains("serviceFilterMode"), "{text}");
    Ok(())
}
