//! HAProxy (Debian's) in TCP mode on loopback, in front of cloudcore replicas, with fast
//! health checks: what the HA tests and `ha-bench` put between the edges and the replicas.

use anyhow::{Context as _, Result};

/// A frontend's listen port, and its backends' ports with their maxconn.
pub type Route = (u16, Vec<(u16, Option<u32>)>);

/// A running haproxy; stopped on drop.
#[derive(Debug)]
pub struct Haproxy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// One frontend per `(listen port, backend ports)`, `balance first`: every connection goes
    /// to the first live server.
    pub fn start(routes: &[(u16, [u16; 2])]) -> Result<Self> {
        let routes: Vec<Route> = routes
            .iter()
            .map(|(l, s)| (*l, s.iter().map(|p| (*p, None)).collect()))
            .collect();
        Self::balanced("first", &routes)
    }

    /// One frontend per `(listen port, [(backend port, its maxconn)])` with HAProxy's
    /// `balance` algorithm (`first`: a server takes connections up to its maxconn, then the
    /// next one does; `roundrobin`). One haproxy takes up to 9,000 connections, two
    /// descriptors each, so that it starts under a 20,000 descriptor limit.
    pub fn balanced(balance: &str, routes: &[Route]) -> Result<Self> {
        let mut cfg = String::from(
            "global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n  retries 3\n  option redispatch\n",
        );
        for (i, (listen, servers)) in routes.iter().enumerate() {
            cfg += &format!(
                "frontend f{i}\n  bind 127.0.0.1:{listen}\n  maxconn 9000\n  default_backend b{i}\n"
            );
            cfg += &format!("backend b{i}\n  balance {balance}\n");
            for (j, (port, maxconn)) in servers.iter().enumerate() {
                let limit = maxconn.map(|m| format!(" maxconn {m}")).unwrap_or_default();
                cfg += &format!(
                    "  server s{j} 127.0.0.1:{port} check inter 300 fall 1 rise 1{limit}\n"
                );
            }
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let log = dir.path().join("haproxy.log");
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot run haproxy (Debian package haproxy)")?;
        let mut me = Self { child, _dir: dir };
        // Up when every frontend accepts; an haproxy that refused its config says why.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for (listen, _) in routes {
            while std::net::TcpStream::connect(("127.0.0.1", *listen)).is_err() {
                if let Some(status) = me.child.try_wait()? {
                    anyhow::bail!(
                        "haproxy exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "haproxy does not listen on {listen}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(me)
    }
}
