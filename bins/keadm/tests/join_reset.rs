//! `keadm join` and `keadm reset` as a user runs them, twice each, against a real CloudHub on
//! loopback. Files go under a temporary KUBEEDGE_ROOT; edgecore runs as a background process.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kubeedge_bench::cluster::output_text as text;
use kubeedge_bench::{wait_until, TestCloud};
use kubeedge_cloud::certs::unix_now;
use kubeedge_cloud::hub::HubConfig;

const LIMIT: Duration = Duration::from_secs(30);

fn keadm(root: &Path, args: &[&str]) -> Result<Output> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keadm"))
        .args(args)
        .env("KUBEEDGE_ROOT", root)
        .env("KEADM_NO_SYSTEMD", "1")
        .env("RUST_LOG", "warn")
        .output()
        .context("run keadm")?;
    Ok(out)
}

fn edgecore_pid(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join("var/lib/kubeedge/edgecore.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

/// Kills a leftover edgecore if the test fails midway.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = edgecore_pid(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_twice_and_reset_twice() -> Result<()> {
    let edgecore = Path::new(env!("CARGO_BIN_EXE_keadm")).with_file_name("edgecore");
    ensure!(
        edgecore.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        edgecore.display()
    );
    let cloud = TestCloud::start(HubConfig::default()).await?;
    let token = cloud.pki.issue_token(unix_now())?.to_string();
    let root = tempfile::tempdir()?;
    let _cleanup = Cleanup(root.path().to_owned());
    let ipport = cloud.ws.to_string();
    let certport = cloud.https.port().to_string();
    let join = [
        "join",
        "--cloudcore-ipport",
        &ipport,
        "--certport",
        &certport,
        "--edgenode-name",
        "edge-1",
        "--token",
        &token,
        // The host's network is shared with other tests: no EdgeMesh (on by default).
        "--set",
        "modules.edgeMesh.enable=false",
    ];

    let first = keadm(root.path(), &join)?;
    ensure!(
        first.status.success(),
        "first join failed: {}",
        text(&first)
    );
    let out = text(&first);
    for step in ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"] {
        ensure!(out.contains(step), "missing step {step}: {out}");
    }
    let config = root.path().join("etc/kubeedge/config/edgecore.yaml");
    ensure!(config.exists(), "edgecore.yaml not written");
    let hub = cloud.hub.clone();
    wait_until("edge-1 connects", LIMIT, || hub.connected() == 1).await?;
    let pid = edgecore_pid(root.path()).context("pid file")?;

    // Joining again is safe and says so: same process, still one session.
    let second = keadm(root.path(), &join)?;
    ensure!(
        second.status.success(),
        "second join failed: {}",
        text(&second)
    );
    ensure!(
        text(&second).contains("already running"),
        "{}",
        text(&second)
    );
    ensure!(
        edgecore_pid(root.path()) == Some(pid),
        "edgecore was restarted"
    );
    ensure!(hub.connected() == 1);

    // Joining as another node while joined is refused, and changes nothing.
    let mut other = join;
    other[6] = "edge-2";
    let refused = keadm(root.path(), &other)?;
    ensure!(!refused.status.success(), "join as another node succeeded");
    ensure!(text(&refused).contains("keadm reset"), "{}", text(&refused));
    ensure!(alive(pid));

    // Bad input: a token that is not a join token.
    let bad_root = tempfile::tempdir()?;
    let mut bad = join;
    bad[8] = "not-a-token";
    let bad_out = keadm(bad_root.path(), &bad)?;
    ensure!(!bad_out.status.success());
    ensure!(
        text(&bad_out).contains("invalid --token"),
        "{}",
        text(&bad_out)
    );

    let reset = keadm(root.path(), &["reset"])?;
    ensure!(reset.status.success(), "reset failed: {}", text(&reset));
    ensure!(!alive(pid), "edgecore still runs after reset");
    ensure!(!root.path().join("etc/kubeedge").exists());
    ensure!(!root.path().join("var/lib/kubeedge").exists());
    wait_until("edge-1 disconnects", LIMIT, || hub.connected() == 0).await?;

    let again = keadm(root.path(), &["reset"])?;
    ensure!(
        again.status.success(),
        "second reset failed: {}",
        text(&again)
    );
    ensure!(text(&again).contains("not running"), "{}", text(&again));

    let v = keadm(root.path(), &["version"])?;
    ensure!(text(&v).contains("kubeedge-rs"));
    Ok(())
}
