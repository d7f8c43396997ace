//! Test cluster for the control plane: a real kubeedge-apiserver on SQLite in a temp dir (served
//! in-process to the controllers, and over HTTPS on 127.0.0.1:0 for the stock kubectl), the
//! control plane, and fake nodes registered through the API that act as kubelets: they renew
//! their Lease, and run the pods bound to them (status Running, Ready, a pod IP).

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Client;
use kubeedge_apiserver::{
    serve, write_kubeconfig, ApiConfig, ApiService, Pki, ServeConfig, SqliteConfig, SqliteStore,
};
use kubeedge_controlplane::{self as controlplane, ControlPlaneConfig, ControlPlaneError};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const EDGE: &str = "node-role.kubernetes.io/edge";
pub const AGENT: &str = "node-role.kubernetes.io/agent";
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A config with short periods for tests.
pub fn fast_config() -> ControlPlaneConfig {
    let mut c = ControlPlaneConfig::default();
    c.node_monitor_period = Duration::from_millis(100);
    c.gc_interval = Duration::from_millis(300);
    c.unschedulable_retry = Duration::from_secs(2);
    c
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub service: ApiService<SqliteStore>,
    pub client: Client,
    pub kubeconfig: PathBuf,
    cancel: CancellationToken,
    control_plane: Option<JoinHandle<Result<(), ControlPlaneError>>>,
    server: Option<JoinHandle<()>>,
    next_node: AtomicU32,
}

impl Cluster {
    pub async fn start(config: ControlPlaneConfig) -> Result<Self> {
        trace();
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open_with(dir.path().join("state.db"), SqliteConfig::default())?;
        let service = ApiService::new(store, ApiConfig::default()).await?;
        let client = Client::new(service.clone(), "default");
        let cancel = CancellationToken::new();

        // HTTPS for kubectl, on the same service.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pki = Pki::generate(&[])?;
        let tls = pki.server_tls()?;
        let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &format!("https://127.0.0.1:{}", addr.port()),
            &pki.ca_pem(),
            Some(&admin),
            None,
        )?;
        let (svc, stop) = (service.clone(), cancel.clone());
        let server = tokio::spawn(async move {
            let _ = serve(listener, svc, tls, ServeConfig::default(), async move {
                stop.cancelled().await;
            })
            .await;
        });
        let control_plane = tokio::spawn(controlplane::run(client.clone(), config, cancel.clone()));
        let c = Self {
            dir,
            service,
            client,
            kubeconfig,
            cancel,
            control_plane: Some(control_plane),
            server: Some(server),
            next_node: AtomicU32::new(1),
        };
        // The control plane is up once it wrote its default namespaces.
        let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.client.clone());
        wait_for("default namespaces", || async {
            ns.get_opt("kubeedge").await.ok().flatten()
        })
        .await?;
        Ok(c)
    }

    /// Registers a Ready node with these labels (plus `kubernetes.io/hostname`) and starts its
    /// fake kubelet.
    pub async fn node(&self, name: &str, labels: &[(&str, &str)]) -> Result<FakeNode> {
        self.node_with(
            name,
            labels,
            json!([]),
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        )
        .await
    }

    pub async fn node_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        taints: serde_json::Value,
        allocatable: serde_json::Value,
    ) -> Result<FakeNode> {
        let idx = self.next_node.fetch_add(1, Ordering::SeqCst);
        let mut l = serde_json::Map::new();
        l.insert("kubernetes.io/hostname".into(), name.into());
        for (k, v) in labels {
            l.insert((*k).into(), (*v).into());
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l},
            "spec": {"taints": taints},
        }))?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.create(&PostParams::default(), &node).await?;
        let fake = FakeNode {
            name: name.to_owned(),
            ip: format!("192.0.2.{idx}"),
            idx,
            allocatable,
            client: self.client.clone(),
            running: std::sync::Mutex::new(None),
        };
        fake.join().await?;
        Ok(fake)
    }

    /// Runs the stock kubectl against the HTTPS endpoint (bounded by 60 s); fails on non-zero exit.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("kubectl timed out")??;
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn write(&self, name: &str, text: &str) -> Result<String> {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p.display().to_string())
    }

    pub async fn stop(mut self) -> Result<()> {
        self.cancel.cancel();
        if let Some(t) = self.control_plane.take() {
            tokio::time::timeout(DEADLINE, t)
                .await
                .context("control plane did not stop")???;
        }
        if let Some(t) = self.server.take() {
            let _ = tokio::time::timeout(DEADLINE, t).await;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A node registered through the API, with a kubelet stand-in while it is "online".
pub struct FakeNode {
    pub name: String,
    pub ip: String,
    idx: u32,
    allocatable: serde_json::Value,
    client: Client,
    running: std::sync::Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl FakeNode {
    /// Posts Ready status and starts renewing the Lease and running pods.
    pub async fn join(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = Time(Timestamp::now());
        let status = json!({"status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": self.ip}, {"type": "Hostname", "address": self.name}],
            "capacity": self.allocatable, "allocatable": self.allocatable,
            "nodeInfo": {"kubeletVersion": "v1.29.5-kubeedge-v1.18.0", "osImage": "Ubuntu 22.04", "kernelVersion": "6.1",
                "containerRuntimeVersion": "docker://24.0.7", "architecture": "amd64", "operatingSystem": "linux",
                "bootID": "", "kubeProxyVersion": "", "machineID": "", "systemUUID": ""},
        }});
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": self.name},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": MicroTime(Timestamp::now())},
        }))?;
        match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(kubelet(
            self.client.clone(),
            self.name.clone(),
            self.idx,
            cancel.clone(),
        ));
        if let Ok(mut r) = self.running.lock() {
            *r = Some((cancel, task));
        }
        Ok(())
    }

    /// Goes offline: no more lease renewals, status or pod handling.
    pub async fn stop(&self) {
        let r = self.running.lock().ok().and_then(|mut r| r.take());
        if let Some((cancel, task)) = r {
            cancel.cancel();
            let _ = task.await;
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock() {
            if let Some((c, _)) = r.take() {
                c.cancel();
            }
        }
    }
}

/// The kubelet stand-in: renews the Lease every 200 ms, runs bound pods, finishes deletions.
async fn kubelet(client: Client, node: String, idx: u32, cancel: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods_all: Api<Pod> = Api::all(client.clone());
    let stream = watcher(
        pods_all,
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
    )
    .default_backoff()
    .applied_objects();
    futures_util::pin_mut!(stream);
    let mut renew = tokio::time::interval(Duration::from_millis(200));
    let ips = Arc::new(AtomicU32::new(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = renew.tick() => {
                let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
                let _ = leases.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await;
            }
            p = stream.next() => {
                let Some(Ok(p)) = p else { continue };
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                if p.metadata.deletion_timestamp.is_some() {
                    let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
                    continue;
                }
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if running {
                    continue;
                }
                let n = ips.fetch_add(1, Ordering::SeqCst);
                let now = Time(Timestamp::now());
                let containers: Vec<serde_json::Value> = p.spec.as_ref().map(|s| s.containers.iter().map(|c| json!({
                    "name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": now}},
                })).collect()).unwrap_or_default();
                let status = json!({"status": {
                    "phase": "Running", "podIP": format!("10.244.{idx}.{n}"), "podIPs": [{"ip": format!("10.244.{idx}.{n}")}],
                    "hostIP": format!("192.0.2.{idx}"), "startTime": now,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ],
                    "containerStatuses": containers,
                }});
                let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
            }
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, failing after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    PathBuf::from("kubectl")
}
