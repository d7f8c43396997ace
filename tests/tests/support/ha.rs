//! What the HA tests share: HAProxy in front of the replicas, and the Leases and pods as
//! kubectl reads them.
#![allow(dead_code)]

use anyhow::{Context as _, Result};
use kubeedge_bench::cluster::Cluster;

/// A frontend's listen port, and its backends' ports with their maxconn.
pub(crate) type Route = (u16, Vec<(u16, Option<u32>)>);

/// HAProxy (Debian's) in TCP mode on free loopback ports: `first` balancing, so every
/// connection goes to the first live server, with fast health checks.
pub(crate) struct Haproxy {
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
    /// One frontend per `(listen port, backend ports)`.
    pub(crate) fn start(routes: &[(u16, [u16; 2])]) -> Result<Self> {
        let routes: Vec<Route> = routes
            .iter()
            .map(|(l, s)| (*l, s.iter().map(|p| (*p, None)).collect()))
            .collect();
        Self::start_with(&routes)
    }

    /// One frontend per `(listen port, [(backend port, its maxconn)])`: with `balance first`,
    /// a server takes connections up to its maxconn, then the next one does.
    pub(crate) fn start_with(routes: &[Route]) -> Result<Self> {
        let mut cfg = String::from(
            "global\n  maxconn 2048\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n  retries 3\n  option redispatch\n",
        );
        for (i, (listen, servers)) in routes.iter().enumerate() {
            cfg += &format!("frontend f{i}\n  bind 127.0.0.1:{listen}\n  default_backend b{i}\n");
            cfg += &format!("backend b{i}\n  balance first\n");
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
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot run haproxy (Debian package haproxy)")?;
        Ok(Self { child, _dir: dir })
    }
}

/// The holder of the Lease `kubeedge/<name>`, as `cluster`'s API tells it.
pub(crate) fn lease_holder(cluster: &Cluster, name: &str) -> Result<String> {
    Ok(cluster
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kubeedge",
            name,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?
        .trim()
        .to_owned())
}

/// The holder of the leader Lease kubeedge/cloudcore.
pub(crate) fn holder(cluster: &Cluster) -> Result<String> {
    lease_holder(cluster, "cloudcore")
}

/// The replica that holds `node`, from its record (empty when none or unreadable).
pub(crate) fn record_holder(cluster: &Cluster, node: &str) -> String {
    lease_holder(cluster, &format!("node-{node}")).unwrap_or_default()
}

pub(crate) fn busybox_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n",
        kubeedge_bench::BUSYBOX_IMAGE
    )
}

pub(crate) fn phase(cluster: &Cluster, pod: &str) -> String {
    cluster
        .kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
        .map(|p| p.trim().to_owned())
        .unwrap_or_default()
}
