//! Shared harness: a real HTTPS server on 127.0.0.1:0, and the real kubectl binary.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use kubeedge_apiserver::{
    serve, write_kubeconfig, AnyStore, ApiConfig, ApiService, Pki, ServeConfig, SqliteConfig,
    SqliteStore,
};

pub mod etcd;

/// What a test's store needs kept alive: its directory and, on etcd, the cluster.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub etcd: Option<etcd::EtcdCluster>,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether the suite runs on etcd (`KUBEEDGE_TEST_STORE=etcd`, with the `etcd` feature).
pub fn on_etcd() -> bool {
    std::env::var("KUBEEDGE_TEST_STORE").is_ok_and(|v| v == "etcd")
}

/// A fresh store for one test: SQLite in a temp dir, or a one-member etcd cluster of its own
/// when the suite runs on etcd.
pub async fn store(config: SqliteConfig) -> anyhow::Result<(Scratch, AnyStore)> {
    let dir = tempfile::tempdir()?;
    if on_etcd() {
        #[cfg(feature = "etcd")]
        {
            let cluster = etcd::EtcdCluster::start(1).await?;
            let mut cfg = kubeedge_apiserver::EtcdConfig::new(cluster.endpoints());
            cfg.history = config.history;
            cfg.watch_buffer = config.watch_buffer;
            let store = kubeedge_apiserver::EtcdStore::connect(cfg).await?;
            return Ok((
                Scratch {
                    dir,
                    etcd: Some(cluster),
                },
                store.into(),
            ));
        }
        #[cfg(not(feature = "etcd"))]
        bail!("KUBEEDGE_TEST_STORE=etcd needs --features etcd");
    }
    let store = SqliteStore::open_with(dir.path().join("state.db"), config)?;
    Ok((Scratch { dir, etcd: None }, store.into()))
}
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-admin-token";

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub token_kubeconfig: PathBuf,
    pub service: ApiService<AnyStore>,
    pub pki: Pki,
    _etcd: Option<etcd::EtcdCluster>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(ApiConfig::default()).await
    }

    pub async fn start_with(config: ApiConfig) -> anyhow::Result<Self> {
        Self::start_full(config, SqliteConfig::default()).await
    }

    pub async fn start_full(config: ApiConfig, store_config: SqliteConfig) -> anyhow::Result<Self> {
        let (Scratch { dir, etcd }, store) = store(store_config).await?;
        let service = ApiService::new(store, config).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pki = Pki::generate(&[])?;
        let tls = pki.server_tls()?;
        let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
        let server = format!("https://127.0.0.1:{}", addr.port());
        let kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki.ca_pem(), Some(&admin), None)?;
        let token_kubeconfig = dir.path().join("token.kubeconfig");
        write_kubeconfig(&token_kubeconfig, &server, &pki.ca_pem(), None, Some(TOKEN))?;
        let auth = ServeConfig::default().token(TOKEN, "admin", &["system:masters"]);
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = service.clone();
        let task = tokio::spawn(async move {
            let _ = serve(listener, svc, tls, auth, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self {
            addr,
            dir,
            kubeconfig,
            token_kubeconfig,
            service,
            pki,
            _etcd: etcd,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// Runs kubectl to completion (bounded by 60 s) and returns stdout; fails on non-zero exit.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl_raw(args, None).await?;
        if !out.status.success() {
            bail!(
                "kubectl {:?} failed: {}\n{}",
                args,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let out = self.kubectl_raw(args, Some(stdin)).await?;
        if !out.status.success() {
            bail!(
                "kubectl {:?} failed: {}",
                args,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn kubectl_raw(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<std::process::Output> {
        let mut cmd = self.kubectl_cmd(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn kubectl")?;
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt as _;
            let mut w = child.stdin.take().context("stdin")?;
            w.write_all(input.as_bytes()).await?;
            drop(w);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("kubectl timed out")??;
        Ok(out)
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        cmd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// The kubectl binary: `$KUBECTL`, else `kubectl` on the PATH.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let c = dir.join("kubectl");
            if c.is_file() {
                return c;
            }
        }
    }
    panic!("kubectl not found: install it or set KUBECTL=/path/to/kubectl");
}

/// Polls `f` until it returns `Some`, failing after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An in-process service on a fresh store (no socket).
pub async fn in_process(
    store_config: SqliteConfig,
) -> anyhow::Result<(Scratch, ApiService<AnyStore>, kube::Client)> {
    let (dir, store) = store(store_config).await?;
    let service = ApiService::new(store, ApiConfig::default()).await?;
    let client = kube::Client::new(service.clone(), "default");
    Ok((dir, service, client))
}
