//! Running the node's network tools (`nft`, `iptables`, `ip`): one way to start them, feed
//! them a script, and say why they failed.

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::MeshError;

/// What a tool said.
pub(super) struct Ran {
    /// It exited with 0.
    pub(super) ok: bool,
    /// Its standard output.
    pub(super) stdout: String,
}

/// The Debian package that installs `tool`, for the message when it is missing.
fn package(tool: &str) -> &'static str {
    match tool {
        "nft" => "nftables",
        "ip" => "iproute2",
        _ => "iptables",
    }
}

/// Runs `args` (the tool first) with `input` on its standard input; a failed run is an
/// answer (`ok` false), a tool that cannot be started an error.
pub(super) async fn run(args: &[&str], input: Option<&str>) -> Result<Ran, MeshError> {
    Ok(output(args, input).await?.0)
}

/// [`run`], and a failed run an error carrying the tool's message.
pub(super) async fn must(args: &[&str], input: Option<&str>) -> Result<Ran, MeshError> {
    let (ran, stderr) = output(args, input).await?;
    if ran.ok {
        Ok(ran)
    } else {
        Err(MeshError::Network(format!(
            "{}: {}",
            args.join(" "),
            stderr.trim()
        )))
    }
}

async fn output(args: &[&str], input: Option<&str>) -> Result<(Ran, String), MeshError> {
    let tool = args.first().copied().unwrap_or_default();
    let mut child = Command::new(tool)
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            MeshError::Network(format!(
                "cannot run {tool} (Debian package {}): {e}",
                package(tool)
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).await?;
        }
    }
    let out = child.wait_with_output().await?;
    let ran = Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    Ok((ran, String::from_utf8_lossy(&out.stderr).into_owned()))
}
