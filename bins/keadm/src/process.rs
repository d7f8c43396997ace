//! Starting and stopping cloudcore/edgecore: a systemd unit where systemd runs (see
//! [`crate::systemd`]), otherwise a background process with a pid file and a log file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::systemd::Systemd;

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
    is_running_with(paths, Systemd::detect(paths).as_ref(), name)
}

/// [`is_running`] with the init system given: its unit when it has one, else the pid file.
pub(crate) fn is_running_with(paths: &Paths, systemd: Option<&Systemd>, name: &str) -> bool {
    match systemd {
        Some(sd) if sd.unit_file(name).exists() => sd.is_active(name),
        _ => running_pid(&paths.pid_file(name)).is_some(),
    }
}

/// Start `binary --config <config> <extra...>` as `name` and return how it runs: a systemd
/// unit where systemd runs, else a background process.
pub(crate) fn start(
    paths: &Paths,
    name: &str,
    binary: &Path,
    config: &Path,
    extra: &[String],
) -> Result<String> {
    start_with(
        paths,
        Systemd::detect(paths).as_ref(),
        name,
        binary,
        config,
        extra,
    )
}

/// [`start`] with the init system given (`None`: a background process).
pub(crate) fn start_with(
    paths: &Paths,
    systemd: Option<&Systemd>,
    name: &str,
    binary: &Path,
    config: &Path,
    extra: &[String],
) -> Result<String> {
    if let Some(sd) = systemd {
        let file = sd.install(name, binary, config, extra)?;
        return Ok(format!(
            "systemd unit {} (logs: journalctl -u {name}.service -xe)",
            file.display()
        ));
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
    stop_with(paths, Systemd::detect(paths).as_ref(), name)
}

/// [`stop`] with the init system given: its unit is stopped, disabled and removed when there
/// is one; a background process (a pid file) is stopped either way.
pub(crate) fn stop_with(
    paths: &Paths,
    systemd: Option<&Systemd>,
    name: &str,
) -> Result<Option<String>> {
    if let Some(done) = systemd.map(|sd| sd.remove(name)).transpose()?.flatten() {
        return Ok(Some(done));
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

/// Write `text` to `path`, creating its directory.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::tests::{calls, fake_systemctl};

    /// A stand-in component: sleeps until stopped.
    fn fake_binary(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join("fakecore");
        std::fs::write(&p, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn without_systemd_a_background_process() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let bin = fake_binary(dir.path());
        let how = start_with(&paths, None, "edgecore", &bin, Path::new("/e.yaml"), &[]).unwrap();
        assert!(how.starts_with("background process"), "{how}");
        let pid = running_pid(&paths.pid_file("edgecore")).expect("running");
        assert!(is_running_with(&paths, None, "edgecore"));
        let done = stop_with(&paths, None, "edgecore").unwrap().unwrap();
        assert!(done.contains(&pid.to_string()), "{done}");
        assert!(!alive(pid) && !is_running_with(&paths, None, "edgecore"));
        assert_eq!(stop_with(&paths, None, "edgecore").unwrap(), None);
    }

    #[test]
    fn with_systemd_a_unit_and_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let sd = Systemd::new(fake_systemctl(dir.path()), dir.path().join("units"));
        let bin = fake_binary(dir.path());
        let how = start_with(
            &paths,
            Some(&sd),
            "edgecore",
            &bin,
            Path::new("/e.yaml"),
            &[],
        )
        .unwrap();
        assert!(how.starts_with("systemd unit"), "{how}");
        assert!(
            !paths.pid_file("edgecore").exists(),
            "no background process"
        );
        assert!(is_running_with(&paths, Some(&sd), "edgecore"));
        assert!(stop_with(&paths, Some(&sd), "edgecore").unwrap().is_some());
        assert!(!sd.unit_file("edgecore").exists());
        assert!(!is_running_with(&paths, Some(&sd), "edgecore"));
        let all = calls(dir.path()).join("\n");
        assert!(
            all.contains("stop edgecore") && all.contains("disable edgecore"),
            "{all}"
        );
    }
}
