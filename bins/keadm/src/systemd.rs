//! cloudcore and edgecore as systemd units, as upstream keadm runs them where systemd runs:
//! the unit of upstream's template (`keadm/cmd/keadm/app/cmd/util/extsystem/simple.service`)
//! in `/etc/systemd/system/<name>.service`, then `systemctl daemon-reload`, `enable`,
//! `start`; reset stops it (waiting until it is inactive), disables it and removes the unit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;

/// How long reset waits for a stopped unit to go inactive (upstream: 10 s).
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Whether components run as systemd units: on the real root (not under `KUBEEDGE_ROOT`) of a
/// machine booted with systemd (sd_booted: `/run/systemd/system` is a directory), unless
/// `KEADM_NO_SYSTEMD` opts out.
pub(crate) fn wanted(system_root: bool, sd_booted: bool, opted_out: bool) -> bool {
    system_root && sd_booted && !opted_out
}

/// The unit text of upstream's template, with `ExecStart` naming the config file (the
/// binaries are found beside keadm, not in `/usr/local/bin`) and `env` as `Environment`.
pub(crate) fn unit_text(
    name: &str,
    binary: &Path,
    config: &Path,
    extra: &[String],
    env: &[(&str, &str)],
) -> String {
    let mut exec = format!("{} --config {}", binary.display(), config.display());
    for a in extra {
        exec.push(' ');
        exec.push_str(a);
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("\"{k}={v}\"")).collect();
    format!(
        "[Unit]\nDescription={name}.service\n\n[Service]\nType=simple\nExecStart={exec}\nRestart=always\nRestartSec=10\nEnvironment={}\nKillMode=process\n\n[Install]\nWantedBy=multi-user.target\n",
        env.join(" ")
    )
}

/// systemd on this machine: the `systemctl` to run and the directory units go in.
#[derive(Debug, Clone)]
pub(crate) struct Systemd {
    systemctl: PathBuf,
    unit_dir: PathBuf,
}

impl Systemd {
    /// systemd, when components should run under it ([`wanted`]).
    pub(crate) fn detect(paths: &Paths) -> Option<Self> {
        let on = wanted(
            paths.is_system_root(),
            Path::new("/run/systemd/system").is_dir(),
            std::env::var_os("KEADM_NO_SYSTEMD").is_some(),
        );
        on.then(|| Self::new("systemctl", paths.at("/etc/systemd/system")))
    }

    /// `systemctl` as `systemctl`, units in `unit_dir`.
    pub(crate) fn new(systemctl: impl Into<PathBuf>, unit_dir: impl Into<PathBuf>) -> Self {
        Self {
            systemctl: systemctl.into(),
            unit_dir: unit_dir.into(),
        }
    }

    /// `<unit_dir>/<name>.service`.
    pub(crate) fn unit_file(&self, name: &str) -> PathBuf {
        self.unit_dir.join(format!("{name}.service"))
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let status = Command::new(&self.systemctl)
            .args(args)
            .status()
            .with_context(|| format!("run {}", self.systemctl.display()))?;
        if !status.success() {
            bail!("systemctl {} failed: {status}", args.join(" "));
        }
        Ok(())
    }

    fn check(&self, verb: &str, name: &str) -> bool {
        Command::new(&self.systemctl)
            .args([verb, "--quiet", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `systemctl is-active`.
    pub(crate) fn is_active(&self, name: &str) -> bool {
        self.check("is-active", name)
    }

    /// Write the unit, reload, enable and start it; returns the unit file.
    pub(crate) fn install(
        &self,
        name: &str,
        binary: &Path,
        config: &Path,
        extra: &[String],
    ) -> Result<PathBuf> {
        let file = self.unit_file(name);
        crate::process::write_file(&file, &unit_text(name, binary, config, extra, &[]))?;
        self.run(&["daemon-reload"])?;
        self.run(&["enable", name])?;
        self.run(&["start", name])?;
        Ok(file)
    }

    /// Stop (waiting until inactive), disable and remove the unit `name`; `None` when there
    /// is no unit.
    pub(crate) fn remove(&self, name: &str) -> Result<Option<String>> {
        let file = self.unit_file(name);
        if !file.exists() {
            return Ok(None);
        }
        if self.is_active(name) {
            self.run(&["stop", name])?;
            let deadline = Instant::now() + STOP_WAIT;
            while self.is_active(name) {
                if Instant::now() > deadline {
                    bail!("{name}.service is still active {STOP_WAIT:?} after systemctl stop");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if self.check("is-enabled", name) {
            self.run(&["disable", name])?;
        }
        std::fs::remove_file(&file).with_context(|| format!("remove {}", file.display()))?;
        self.run(&["daemon-reload"])?;
        Ok(Some(format!(
            "stopped, disabled and removed {}",
            file.display()
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn unit_text_is_upstreams_template() {
        let text = unit_text(
            "edgecore",
            Path::new("/usr/local/bin/edgecore"),
            Path::new("/etc/kubeedge/config/edgecore.yaml"),
            &[],
            &[],
        );
        assert_eq!(
            text,
            "[Unit]\n\
             Description=edgecore.service\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart=/usr/local/bin/edgecore --config /etc/kubeedge/config/edgecore.yaml\n\
             Restart=always\n\
             RestartSec=10\n\
             Environment=\n\
             KillMode=process\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        );
        let with = unit_text(
            "cloudcore",
            Path::new("/b/cloudcore"),
            Path::new("/c.yaml"),
            &["--v=2".into()],
            &[("A", "1"), ("B", "x y")],
        );
        assert!(with.contains("ExecStart=/b/cloudcore --config /c.yaml --v=2\n"));
        assert!(with.contains("Environment=\"A=1\" \"B=x y\"\n"));
    }

    #[test]
    fn systemd_only_on_the_real_root_of_a_systemd_machine() {
        assert!(wanted(true, true, false));
        assert!(!wanted(false, true, false), "under KUBEEDGE_ROOT");
        assert!(!wanted(true, false, false), "systemd not running");
        assert!(!wanted(true, true, true), "KEADM_NO_SYSTEMD");
    }

    /// A fake `systemctl` in `dir` that records each call in `dir/calls` and keeps the
    /// active and enabled state of units as files.
    pub(crate) fn fake_systemctl(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let script = r#"#!/bin/sh
d="$(dirname "$0")"
echo "$*" >> "$d/calls"
case "$1" in
  start) touch "$d/active-$2" ;;
  stop) rm -f "$d/active-$2" ;;
  enable) touch "$d/enabled-$2" ;;
  disable) rm -f "$d/enabled-$2" ;;
  is-active) test -e "$d/active-$3" ;;
  is-enabled) test -e "$d/enabled-$3" ;;
esac
"#;
        let path = dir.join("systemctl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The calls the fake recorded, one per line.
    pub(crate) fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn install_then_remove_drive_systemctl_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let sd = Systemd::new(fake_systemctl(dir.path()), dir.path().join("units"));
        let file = sd
            .install(
                "edgecore",
                Path::new("/bin/edgecore"),
                Path::new("/e.yaml"),
                &[],
            )
            .unwrap();
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("ExecStart=/bin/edgecore --config /e.yaml"));
        assert_eq!(
            calls(dir.path()),
            ["daemon-reload", "enable edgecore", "start edgecore"]
        );
        assert!(sd.is_active("edgecore"));

        let done = sd.remove("edgecore").unwrap();
        assert!(done.is_some());
        assert!(!file.exists());
        assert_eq!(
            calls(dir.path())[4..],
            [
                "is-active --quiet edgecore",
                "stop edgecore",
                "is-active --quiet edgecore",
                "is-enabled --quiet edgecore",
                "disable edgecore",
                "daemon-reload"
            ]
        );
        // Again: no unit, nothing run.
        let before = calls(dir.path()).len();
        assert_eq!(sd.remove("edgecore").unwrap(), None);
        assert_eq!(calls(dir.path()).len(), before);
    }
}
