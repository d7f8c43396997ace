//! A single-machine KubeEdge as a user runs it, for the end-to-end tests and `e2e-bench`:
//! `keadm init` (cloudcore with its embedded control plane), `keadm gettoken`, `keadm join`
//! (edgecore with edged on the real Docker engine), the stock `kubectl`, and `docker`.
//!
//! Each [`Cluster`] lives under its own `KUBEEDGE_ROOT` (a temp dir) with free loopback ports,
//! so tests run side by side; dropping it runs `keadm reset`, which stops both processes and
//! removes the node's containers. The binaries are the workspace's own, found next to the
//! running test or bench executable (`cargo test --workspace` builds them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

pub use crate::free_port;
use serde_json::Value;

/// The directory holding `cloudcore`, `edgecore` and `keadm`: the running executable's
/// profile directory (`target/<profile>`, also from `target/<profile>/deps`), or
/// `$KUBEEDGE_BIN_DIR` when set.
pub fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("KUBEEDGE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("current executable")?;
            let mut dir = exe.parent().context("executable directory")?.to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    for name in ["cloudcore", "edgecore", "keadm"] {
        ensure!(
            dir.join(name).exists(),
            "{} is missing: build the workspace first (`cargo test --workspace` or `cargo build -p cloudcore -p keadm` and `-p edgecore`)",
            dir.join(name).display()
        );
    }
    Ok(dir)
}

/// A process's stdout followed by its stderr, for messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Poll `cond` every 100 ms until it returns true, or fail after `limit` (the last error, if
/// any, is in the message).
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e:#})"),
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?}: {what}{last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One container edged made, as the Docker engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container ID.
    pub id: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name in the pod spec (empty for the sandbox).
    pub name: String,
}

/// The containers edged made for `node` (by label), sandboxes included.
pub fn containers(node: &str) -> Result<Vec<Container>> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label={}={node}", kubeedge_edge::edged::runtime::LABEL_NODE),
            "--format",
            "{{.ID}}|{{.State}}|{{.Label \"io.kubernetes.pod.uid\"}}|{{.Label \"io.kubernetes.container.name\"}}",
        ])
        .output()
        .context("run docker ps")?;
    ensure!(out.status.success(), "docker ps: {}", output_text(&out));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some(Container {
                id: f.next()?.to_owned(),
                state: f.next()?.to_owned(),
                pod_uid: f.next()?.to_owned(),
                name: f.next().unwrap_or_default().to_owned(),
            })
        })
        .collect())
}

/// The running application containers (not sandboxes) for `node`.
pub fn app_containers(node: &str) -> Result<Vec<Container>> {
    Ok(containers(node)?
        .into_iter()
        .filter(|c| c.state == "running" && !c.name.is_empty() && c.name != "POD")
        .collect())
}

/// A pod as `kubectl get po -o json` shows it.
#[derive(Debug, Clone)]
pub struct PodRow {
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.phase`.
    pub phase: String,
    /// Sum of the containers' restart counts.
    pub restarts: u64,
    /// The Ready condition is True.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// cloudcore + one edge node on this machine, under one `KUBEEDGE_ROOT`.
#[derive(Debug)]
pub struct Cluster {
    root: tempfile::TempDir,
    bins: PathBuf,
    /// The admin kubeconfig `keadm init` wrote.
    pub kubeconfig: PathBuf,
    /// cloudcore's websocket address.
    pub ws: SocketAddr,
    /// cloudcore's bootstrap (HTTPS) port.
    pub https_port: u16,
    api_port: u16,
    /// cloudcore's stream tunnel port.
    pub tunnel_port: u16,
    /// cloudcore's stream server port (kubelet API for an API server or other replicas).
    pub stream_port: u16,
    /// cloudcore's monitor server (`/metrics`, `/healthz`, `/readyz`).
    pub monitor: SocketAddr,
    /// The joined edgecore's MetaServer (and its `/metrics`), once joined.
    pub metaserver: Option<SocketAddr>,
    join_args: Vec<String>,
    /// The joined node's name, once joined.
    pub node: Option<String>,
    /// The joined edgecore's embedded MQTT broker port.
    pub mqtt_port: u16,
    init_sets: Vec<String>,
    init_flags: Vec<String>,
    /// Extra `--set` keys for edgecore.yaml that [`Cluster::join`] passes (`key.path=value`).
    /// EdgeMesh is off unless these turn it on (`modules.edgeMesh.enable=true`): it takes over
    /// part of the host's network, which tests share.
    pub join_sets: Vec<String>,
    /// Extra flags [`Cluster::join`] passes (e.g. `--remote-runtime-endpoint=…`).
    pub join_flags: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.keadm(&["reset", "--force"]);
        if let Some(node) = &self.node {
            crate::remove_node_containers(node);
        }
    }
}

impl Cluster {
    /// `keadm init --advertise-address=127.0.0.1` on free ports; returns once cloudcore serves.
    pub fn init() -> Result<Self> {
        Self::init_with(&[])
    }

    /// [`Cluster::init`] with extra `--set` keys for cloudcore.yaml (`key.path=value`).
    pub fn init_with(sets: &[&str]) -> Result<Self> {
        Self::init_with_flags(&[], sets)
    }

    /// [`Cluster::init_with`] with extra `keadm init` flags (`--etcd-servers=…`).
    pub fn init_with_flags(flags: &[&str], sets: &[&str]) -> Result<Self> {
        let bins = bin_dir()?;
        let root = tempfile::Builder::new().prefix("kubeedge-e2e").tempdir()?;
        let (ws, https_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let mut c = Self {
            kubeconfig: root.path().join("etc/kubeedge/admin.kubeconfig"),
            root,
            bins,
            ws: SocketAddr::from(([127, 0, 0, 1], ws)),
            https_port,
            api_port,
            tunnel_port: free_port()?,
            stream_port: free_port()?,
            monitor: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            metaserver: None,
            join_args: Vec::new(),
            node: None,
            mqtt_port: 0,
            init_sets: sets.iter().map(|s| (*s).to_owned()).collect(),
            init_flags: flags.iter().map(|s| (*s).to_owned()).collect(),
            join_sets: Vec::new(),
            join_flags: Vec::new(),
        };
        c.start_cloudcore()?;
        Ok(c)
    }

    /// The `KUBEEDGE_ROOT` of this cluster.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The embedded API server's address (loopback).
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }

    /// The workspace binary `name` the cluster runs (`edgemesh-agent`, …).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// Run `keadm` with `args`; its output, or an error with that output when it fails.
    pub fn keadm(&self, args: &[&str]) -> Result<String> {
        let out = self.keadm_output(args)?;
        ensure!(
            out.status.success(),
            "keadm {args:?}: {}",
            output_text(&out)
        );
        Ok(output_text(&out))
    }

    /// Run `keadm` with `args` as [`Cluster::keadm`] does, whatever its exit status.
    pub fn keadm_output(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.bins.join("keadm"))
            .args(args)
            .env("KUBEEDGE_ROOT", self.root.path())
            .env("KEADM_NO_SYSTEMD", "1")
            .env("PATH", self.path_env())
            .env("RUST_LOG", "info")
            .output()
            .context("run keadm")
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.bins.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `keadm init` (again): starts cloudcore when it is not running.
    pub fn start_cloudcore(&mut self) -> Result<String> {
        let sets = format!("--set={}", self.init_sets.join(","));
        let mut args: Vec<&str> = self.init_flags.iter().map(String::as_str).collect();
        args.push(&sets);
        self.keadm_init(&args)
    }

    fn keadm_init(&self, more: &[&str]) -> Result<String> {
        let mut args = vec![
            "init".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--apiserver-listen=127.0.0.1:{}", self.api_port),
            format!(
                "--set=modules.cloudHub.websocket.port={},modules.cloudHub.https.port={},modules.cloudHub.websocket.address=127.0.0.1,modules.cloudHub.https.address=127.0.0.1,modules.cloudStream.tunnelPort={},modules.cloudStream.streamPort={},commonConfig.monitorServer.bindAddress={}",
                self.ws.port(),
                self.https_port,
                self.tunnel_port,
                self.stream_port,
                self.monitor,
            ),
        ];
        args.extend(more.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.keadm(&args)
    }

    /// `GET path` on cloudcore's monitor server: the status code and the body.
    pub fn monitor_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.monitor, path)
    }

    /// A kube-rs client with the admin kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The stock kubectl with the admin kubeconfig; its stdout, or an error with its output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .context("run kubectl")?;
        ensure!(
            out.status.success(),
            "kubectl {args:?}: {}",
            output_text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        use std::io::Write as _;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kubectl apply")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "kubectl apply: {}", output_text(&out));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `keadm gettoken`.
    pub fn token(&self) -> Result<String> {
        let kc = format!("--kube-config={}", self.kubeconfig.display());
        Ok(self.keadm(&["gettoken", &kc])?.trim().to_owned())
    }

    /// `keadm join` of this host as `node`, reaching cloudcore's websocket at `ws` (cloudcore
    /// itself, or a proxy in front of it). MetaServer and the embedded MQTT broker get free
    /// ports. Returns keadm's output.
    pub fn join(&mut self, node: &str, ws: SocketAddr) -> Result<String> {
        let token = self.token()?;
        self.join_with_token(node, ws, &token)
    }

    /// [`Cluster::join`] with a token already in hand.
    pub fn join_with_token(&mut self, node: &str, ws: SocketAddr, token: &str) -> Result<String> {
        self.mqtt_port = free_port()?;
        let metaserver = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        self.metaserver = Some(metaserver);
        self.join_args = vec![
            "join".into(),
            format!("--cloudcore-ipport={ws}"),
            format!("--certport={}", self.https_port),
            format!("--edgenode-name={node}"),
            format!("--token={token}"),
            format!(
                "--set=modules.metaManager.metaServer.server={metaserver},modules.eventBus.mqttServerInternal=tcp://127.0.0.1:{mqtt},modules.eventBus.mqttServerExternal=tcp://127.0.0.1:{mqtt},modules.edgeStream.server=127.0.0.1:{},modules.edgeMesh.enable=false{}",
                self.tunnel_port,
                self.join_sets.iter().map(|s| format!(",{s}")).collect::<String>(),
                mqtt = self.mqtt_port,
            ),
        ];
        self.join_args.extend(self.join_flags.iter().cloned());
        self.node = Some(node.to_owned());
        self.rejoin()
    }

    /// `keadm join` again with the same flags (starts edgecore when it is not running).
    pub fn rejoin(&self) -> Result<String> {
        let args: Vec<&str> = self.join_args.iter().map(String::as_str).collect();
        self.keadm(&args)
    }

    /// The pid of `cloudcore` or `edgecore`, from keadm's pid file, when it is alive.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(
            self.root
                .path()
                .join(format!("var/lib/kubeedge/{name}.pid")),
        )
        .ok()?
        .trim()
        .parse()
        .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state != 'Z' && state != 'X').then_some(pid)
    }

    /// `kill -9` of `cloudcore` or `edgecore`; returns once it is gone.
    pub fn kill9(&self, name: &str) -> Result<()> {
        let pid = self
            .pid(name)
            .with_context(|| format!("{name} is not running"))?;
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -9 {pid}");
        wait_for(&format!("{name} gone"), Duration::from_secs(10), || {
            Ok(self.pid(name).is_none())
        })
    }

    /// The log keadm started `name` with.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(
            self.root
                .path()
                .join(format!("var/log/kubeedge/{name}.log")),
        )
        .unwrap_or_default()
    }

    /// The last `n` lines of both logs, for failure messages.
    pub fn logs_tail(&self, n: usize) -> String {
        let mut s = String::new();
        for name in ["cloudcore", "edgecore"] {
            let log = self.log(name);
            let lines: Vec<&str> = log.lines().collect();
            s.push_str(&format!("--- {name} (last {n} lines)\n"));
            for l in &lines[lines.len().saturating_sub(n)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// The node's Ready condition is True.
    pub fn node_ready(&self, node: &str) -> Result<bool> {
        let out = self.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])?;
        Ok(out.trim() == "True")
    }

    /// The pods in `namespace`.
    pub fn pods(&self, namespace: &str) -> Result<Vec<PodRow>> {
        let out = self.kubectl(&["-n", namespace, "get", "pods", "-o", "json"])?;
        let v: Value = serde_json::from_str(&out).context("kubectl get pods -o json")?;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(v["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| PodRow {
                name: s(&p["metadata"]["name"]),
                uid: s(&p["metadata"]["uid"]),
                node: s(&p["spec"]["nodeName"]),
                phase: s(&p["status"]["phase"]),
                restarts: p["status"]["containerStatuses"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .map(|c| c["restartCount"].as_u64().unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0),
                ready: p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                }),
                deleting: !p["metadata"]["deletionTimestamp"].is_null(),
            })
            .collect())
    }

    /// Wait until exactly `n` pods in `namespace` are Running and Ready, none being deleted,
    /// and the node runs exactly one application container for each of them (no others).
    pub fn wait_running(&self, namespace: &str, n: usize, limit: Duration) -> Result<Vec<PodRow>> {
        let node = self.node.clone().context("not joined")?;
        let mut rows = Vec::new();
        wait_for(
            &format!("{n} pods Running with one container each on {node}"),
            limit,
            || {
                rows = self.pods(namespace)?;
                let running = rows
                    .iter()
                    .filter(|p| p.phase == "Running" && p.ready && !p.deleting && p.node == node)
                    .count();
                if running != n || rows.len() != n {
                    return Ok(false);
                }
                let cs = app_containers(&node)?;
                Ok(cs.len() == n && rows.iter().all(|p| cs.iter().any(|c| c.pod_uid == p.uid)))
            },
        )
        .with_context(|| self.logs_tail(30))?;
        Ok(rows)
    }
}

/// [`Proxy`](crate::proxy::Proxy) for synchronous tests, with a link that can be cut as a
/// network goes away: while cut, no byte passes either way and nothing is closed (the peers
/// find out by their own keepalives); when the link returns, the connections that lived
/// through the cut are dropped and new ones go through.
#[derive(Debug)]
pub struct LinkProxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    proxy: crate::proxy::Proxy,
    _rt: tokio::runtime::Runtime,
}

impl LinkProxy {
    /// Start one in front of `target`.
    pub fn start(target: SocketAddr) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let proxy = rt.block_on(crate::proxy::Proxy::start(target))?;
        Ok(Self {
            addr: proxy.addr,
            proxy,
            _rt: rt,
        })
    }

    /// Cut (`true`) or restore (`false`) the link.
    pub fn set_cut(&self, cut: bool) {
        if cut {
            self.proxy.blackhole(true);
        } else {
            self.proxy.cut();
            self.proxy.blackhole(false);
        }
    }
}

/// `GET path` over plain HTTP/1.0 on `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: kubeedge\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).unwrap_or_default().parse()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Ok((status, body.to_owned()))
}

/// The value of the sample `name` (with its labels, as exposed) in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The output of `node`'s app container named `name`, as Docker holds it (no cloud needed);
/// empty while there is none.
pub fn container_log(node: &str, name: &str) -> Result<String> {
    let Some(c) = app_containers(node)?.into_iter().find(|c| c.name == name) else {
        return Ok(String::new());
    };
    let out = Command::new("docker").args(["logs", &c.id]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The highest `N` of the lines `<kind> N` in `log` (a looping client's successes), 0 for none.
pub fn last_count(log: &str, kind: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix(kind)?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// Removes what an EdgeMesh in this host's network leaves if it is killed: its nftables table
/// and its interface.
pub fn remove_host_mesh() {
    for args in [
        &["nft", "delete", "table", "ip", "kubeedge-mesh"][..],
        &["ip", "link", "delete", "edgemesh0"][..],
    ] {
        let _ = Command::new(args[0])
            .args(&args[1..])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
