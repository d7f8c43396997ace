//! Starting and stopping cloudcore/edgecore: a systemd unit where systemd runs, otherwise a
//! background process with a pid file and a log file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;

/// The binary `name`: beside keadm itself, else on the PATH.
pub(crate) fn find_binary(name: &str) -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("cannot find the {name} binary beside keadm or on the PATH")
}

/// The pid in `pid_file` if that process is alive (and not a zombie).
pub(crate) fn running_pid(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: u32) -> bool {
    // /proc/<pid>/stat: "<pid> (<comm>) <state> ..."; Z and X are dead.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    !matches!(state, "Z" | "X")
}

/// Whether the component is running, under systemd or in the background.
pub(crate) fn is_running(paths: &Paths, name: &str) -> bool {
    if paths.use_systemd() && paths.unit_file(name).exists() {
        return Command::new("systemctl")
            .args(["is-active", "--quiet", name])
            .status()
            .is_ok_and(|s| s.success());
    }
    running_pid(&paths.pid_file(name)).is_some()
}

/// Start `binary --config <config> <extra...>` as `name` and return how it runs.
pub(crate) fn start(
    paths: &Paths,
    name: &str,
    binary: &Path,
    config: &Path,
    extra: &[String],
) -> Result<String> {
    if paths.use_systemd() {
        let unit = format!(
            "[Unit]\nDescription={name} (kubeedge-rs)\nAfter=network-online.target\n\n[Service]\nExecStart={} --config {} {}\nRestart=always\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
            binary.display(),
            config.display(),
            extra.join(" ")
        );
        let file = paths.unit_file(name);
        write_file(&file, &unit)?;
        run("systemctl", &["daemon-reload"])?;
        run("systemctl", &["enable", "--now", name])?;
        return Ok(format!("systemd unit {}", file.display()));
    }
    let log = paths.log_file(name);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(binary);
    cmd.arg("--config")
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // Its own process group: it outlives keadm and the terminal keadm ran in.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let pid_file = paths.pid_file(name);
    write_file(&pid_file, &child.id().to_string())?;
    Ok(format!(
        "background process {} (log {})",
        child.id(),
        log.display()
    ))
}

/// Stop the component; returns what was done (`None`: it was not running).
pub(crate) fn stop(paths: &Paths, name: &str) -> Result<Option<String>> {
    let unit = paths.unit_file(name);
    if paths.use_systemd() && unit.exists() {
        run("systemctl", &["disable", "--now", name])?;
        std::fs::remove_file(&unit).with_context(|| format!("remove {}", unit.display()))?;
        let _ = run("systemctl", &["daemon-reload"]);
        return Ok(Some(format!("stopped and removed systemd unit {name}")));
    }
    let pid_file = paths.pid_file(name);
    let Some(pid) = running_pid(&pid_file) else {
        let _ = std::fs::remove_file(&pid_file);
        return Ok(None);
    };
    signal(pid, "TERM")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        if Instant::now() > deadline {
            signal(pid, "KILL")?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(Some(format!("stopped {name} (pid {pid})")))
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("run kill")?
        .success();
    if !ok && alive(pid) {
        bail!("cannot send SIG{sig} to {pid}");
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("run {cmd}"))?;
    if !status.success() {
        bail!("{cmd} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Write `text` to `path`, creating its directory.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
