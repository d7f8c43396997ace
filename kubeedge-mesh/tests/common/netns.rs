//! Network namespaces as separate hosts, made and removed by the tests (`ip netns`), and
//! threads that run inside one.

use std::future::Future;
use std::os::fd::AsFd;
use std::process::Command;

use anyhow::{ensure, Context as _};

/// A network namespace, deleted on drop.
pub(crate) struct Netns(pub(crate) String);

impl Netns {
    pub(crate) fn new(tag: &str) -> anyhow::Result<Self> {
        let name = format!("kem-{tag}-{}-{}", std::process::id(), fastrand::u32(..));
        run(&["ip", "netns", "add", &name])?;
        let ns = Self(name);
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(crate) fn exec(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs `f` on a thread of its own inside this namespace, on a runtime of that thread.
    pub(crate) fn run<F, Fut, T>(&self, f: F) -> std::thread::JoinHandle<anyhow::Result<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| path.clone())?;
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| args.join(" "))?;
    ensure!(st.success(), "{} failed", args.join(" "));
    Ok(())
}

pub(crate) fn join<T>(h: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?
}
