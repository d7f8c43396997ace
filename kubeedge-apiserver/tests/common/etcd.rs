//! A real etcd cluster on loopback for tests: Debian's `etcd` binary, members with their own
//! data directories and free ports, killed when the cluster is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

struct Member {
    name: String,
    client: String,
    peer: String,
    child: Option<Child>,
}

/// An etcd cluster of one or more members on 127.0.0.1.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    /// Clients must use TLS and a client certificate ([`EtcdCluster::start_tls`]).
    tls: bool,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, PEM files in `dir`.
fn write_tls_material(dir: &std::path::Path) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
        KeyPair,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "etcd-test-ca");
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key)?;
    let server_names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    for (name, sans, usages) in [
        (
            "server",
            server_names,
            vec![Eku::ServerAuth, Eku::ClientAuth],
        ),
        ("client", Vec::new(), vec![Eku::ClientAuth]),
    ] {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = usages;
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers (60 s at most).
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let mut last = None;
        // A port taken between the probe and etcd's bind fails the start: try again.
        for _ in 0..3 {
            match Self::try_start(n, false).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// Starts `n` members that serve clients only over TLS and only with a client certificate
    /// of their CA (`--client-cert-auth`); see [`EtcdCluster::client_tls`].
    pub async fn start_tls(n: usize) -> anyhow::Result<Self> {
        Self::try_start(n, true).await
    }

    /// The CA, client certificate and client key (PEM) of a cluster started with
    /// [`EtcdCluster::start_tls`].
    pub fn client_tls(&self) -> Option<(String, String, String)> {
        if !self.tls {
            return None;
        }
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).ok();
        Some((read("ca.pem")?, read("client.pem")?, read("client.key")?))
    }

    async fn try_start(n: usize, tls: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        if tls {
            write_tls_material(dir.path())?;
        }
        let scheme = if tls { "https" } else { "http" };
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client: format!("{scheme}://127.0.0.1:{}", free_port()?),
                peer: format!("http://127.0.0.1:{}", free_port()?),
                child: None,
            });
        }
        let mut cluster = Self { members, dir, tls };
        for i in 0..n {
            cluster.spawn(i, "new")?;
        }
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `flag file` pairs for the TLS files in this cluster's directory (none without TLS).
    fn tls_args(&self, pairs: &[(&str, &str)]) -> Vec<std::ffi::OsString> {
        if !self.tls {
            return Vec::new();
        }
        pairs
            .iter()
            .flat_map(|(flag, file)| [(*flag).into(), self.dir.path().join(file).into()])
            .collect()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    fn spawn(&mut self, i: usize, state: &str) -> anyhow::Result<()> {
        let initial = self.initial_cluster();
        let data = self.data_dir(i);
        // Appended to, so that a restarted member's log keeps what it said before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))?;
        let mut tls_args = self.tls_args(&[
            ("--cert-file", "server.pem"),
            ("--key-file", "server.key"),
            ("--trusted-ca-file", "ca.pem"),
        ]);
        if self.tls {
            tls_args.push("--client-cert-auth".into());
        }
        // A token of this cluster's own: a member of another test's cluster that takes a
        // killed member's port is then refused by the survivors, never taken for it.
        let token = format!("kubeedge-rs-test-{}", self.dir.path().display());
        let m = &mut self.members[i];
        let child = Command::new("etcd")
            .args(tls_args)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &token])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot run etcd (Debian package etcd-server)")?;
        m.child = Some(child);
        Ok(())
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// Kills member `i` with SIGKILL and waits for it to exit.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.members[i].child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data directory.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i, "existing")?;
        self.wait_healthy(Duration::from_secs(60)).await
    }

    /// The last `lines` lines of every member's log, to explain a failed test.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let path = self.dir.path().join(format!("{}.log", m.name));
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {} ({})\n", m.name, m.peer));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Runs etcdctl against the running members and returns its stdout.
    pub async fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.clone())
            .collect();
        let tls_args = self.tls_args(&[
            ("--cacert", "ca.pem"),
            ("--cert", "client.pem"),
            ("--key", "client.key"),
        ]);
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(tls_args)
            .arg(format!("--endpoints={}", live.join(",")))
            .args(args)
            .output()
            .await
            .context("cannot run etcdctl (Debian package etcd-client)")?;
        if !out.status.success() {
            bail!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(c) = m.child.as_mut() {
                    if let Some(status) = c.try_wait()? {
                        let log =
                            std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                                .unwrap_or_default();
                        let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                        bail!("etcd member {i} exited with {status}: {tail}");
                    }
                }
            }
            if self.etcdctl(&["endpoint", "health"]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
