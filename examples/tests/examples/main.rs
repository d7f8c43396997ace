//! Each example, run as its user would run it, against real components: a cloudcore made by
//! `keadm init`, an edge hub client, Debian's mosquitto.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

const LIMIT: Duration = Duration::from_secs(60);

/// The built example `name` (cargo builds examples beside the test binaries' `deps`).
fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .context("profile directory")?;
    let path = profile.join("examples").join(name);
    ensure!(
        path.exists(),
        "{} is missing: `cargo test -p kubeedge-examples` builds it",
        path.display()
    );
    Ok(path)
}

/// A running example whose stdout lines are collected; killed when dropped.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(name: &str, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(example(name)?)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start example {name}"))?;
        let out = child.stdout.take().context("stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(Self { child, lines })
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until a line satisfies `pred` (or the example exits, or `LIMIT` passes).
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Some(l) = self.output().into_iter().find(|l| pred(l)) {
                return Ok(l);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the example exited ({status}) before {what}: {:?}",
                    self.output()
                );
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{what}: not within {LIMIT:?}; output: {:?}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

mod gateway;
mod mapper;
mod proto;
mod router;
