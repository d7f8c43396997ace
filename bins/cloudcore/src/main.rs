//! cloudcore: reads an upstream `cloudcore.yaml` and runs CloudHub and the controllers until
//! SIGTERM/SIGINT.
//!
//! With `kubeAPIConfig.kubeConfig` or `master` set it runs against that cluster (the CA,
//! server certificate and join token kept in the `kubeedge` namespace secrets, as upstream
//! does). With neither it runs an embedded Kubernetes API (kubeedge-apiserver on SQLite under
//! `--data-dir`, HTTPS on `--apiserver-listen`) with the embedded control plane, and writes an
//! admin kubeconfig for kubectl.

use std::net::{IpAddr, SocketAddr};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubeedge_cloud::config::CloudCoreFile;
use kubeedge_cloud::hub::CloudHub;
use kubeedge_cloud::leader::LeaderElection;
use kubeedge_cloud::stream::{CloudStream, StreamConfig};
use kubeedge_cloud::ControllersConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

#[cfg(feature = "embedded")]
mod embedded;
#[cfg(not(feature = "embedded"))]
#[path = "no_embedded.rs"]
mod embedded;
#[cfg(feature = "etcd")]
mod peers;
mod router;
#[cfg(feature = "etcd")]
mod shared_pki;

#[derive(Parser, Debug)]
#[command(
    name = "cloudcore",
    version,
    about = "KubeEdge cloud core (kubeedge-rs)"
)]
pub(crate) struct Args {
    /// The configuration file.
    #[arg(long, default_value = "/etc/kubeedge/config/cloudcore.yaml")]
    config: PathBuf,
    /// Print the full default configuration and exit.
    #[arg(long)]
    defaultconfig: bool,
    /// Print a minimal configuration and exit.
    #[arg(long)]
    minconfig: bool,
    /// Embedded mode: where the API server keeps its database, CA and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/kubeedge/cloudcore")]
    data_dir: PathBuf,
    /// Embedded mode: where the Kubernetes API listens (HTTPS).
    #[arg(long, default_value = "0.0.0.0:6443")]
    apiserver_listen: SocketAddr,
    /// Embedded mode: keep the API's objects in this etcd v3 cluster (comma-separated client
    /// URLs, as kube-apiserver's flag) instead of SQLite under `--data-dir`.
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// Embedded mode with `--etcd-servers`: the key prefix (kube-apiserver's default).
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// TLS to etcd (`https://` servers): the CA of the members' certificates (kube-apiserver's
    /// flag).
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// TLS to etcd: the client certificate, for members run with `--client-cert-auth`.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// TLS to etcd: the client certificate's key.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Leader election (the singleton duties): how long a lease holds without renewal
    /// (kube-controller-manager's flag and default).
    #[arg(long, default_value = "15s")]
    leader_elect_lease_duration: GoDuration,
    /// Leader election: how long the leader tries to renew before it steps down.
    #[arg(long, default_value = "10s")]
    leader_elect_renew_deadline: GoDuration,
    /// Leader election: how often to try to acquire or renew.
    #[arg(long, default_value = "2s")]
    leader_elect_retry_period: GoDuration,
    /// Embedded mode: where to write the admin kubeconfig (default `<data-dir>/admin.kubeconfig`).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Run only upstream's iptables manager, on a kube-apiserver host of a real cluster: keep
    /// the nat chain TUNNEL-PORT leading each cloudcore replica's kubelet port (from the
    /// ConfigMap kubeedge/tunnelport) to its stream server.
    #[arg(long)]
    iptables_manager: bool,
}

/// On etcd: this replica's stream server for the other replicas (the API CA's client
/// certificates), and its address for the node records.
#[cfg(feature = "etcd")]
#[allow(clippy::too_many_arguments)]
async fn serve_peers(
    embedded: &embedded::Embedded,
    file: &CloudCoreFile,
    settings: &kubeedge_cloud::config::Settings,
    pki: &kubeedge_cloud::certs::Pki,
    stream: &CloudStream,
    client: &kube::Client,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<String>> {
    let (Some(peers), Some((addr, _))) = (embedded.peers.clone(), settings.stream_server.clone())
    else {
        return Ok(None);
    };
    let (chain, key) = pki.server_identity();
    let tls = kubeedge_cloud::stream::kubelet_api_tls(chain, key, peers.api_ca_pem().as_bytes())?;
    let l = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (stream server for the other replicas)")
    })?;
    let own = SocketAddr::new(advertised_ip(file), l.local_addr()?.port());
    peers.arm(pki.ca_cert_der(), own)?;
    info!(addr = %own, "stream server for the other replicas listening");
    let (s, client, c) = (stream.clone(), client.clone(), cancel.clone());
    tracker.spawn(async move {
        if let Err(e) = s.serve_kubelet_api(l, tls, client, c).await {
            error!(error = %e, "stream server for the other replicas failed");
        }
    });
    Ok(Some(own.to_string()))
}

/// The address other replicas reach this one at: the first `cloudHub.advertiseAddress`, or
/// the host's.
fn advertised_ip(file: &CloudCoreFile) -> IpAddr {
    file.modules
        .cloud_hub
        .advertise_address
        .first()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .unwrap_or_else(host_ip)
}

/// This replica's leader election: the Lease `kubeedge/cloudcore`, held as
/// `<hostname>_<hash of --data-dir and --apiserver-listen>` so that a restarted replica takes its
/// own lease back at once while two replicas on one host stay apart.
fn election(args: &Args) -> LeaderElection {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "cloudcore".to_owned());
    // FNV-1a: stable across builds, unlike std's hasher.
    let seed = format!("{}|{}", args.data_dir.display(), args.apiserver_listen);
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut e = LeaderElection::new("kubeedge", "cloudcore", format!("{host}_{hash:016x}"));
    e.lease_duration = args.leader_elect_lease_duration.0;
    e.renew_deadline = args.leader_elect_renew_deadline.0;
    e.retry_period = args.leader_elect_retry_period.0;
    e
}

/// A duration flag as Go writes one (`15s`, `500ms`, `2m`; a bare number is seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GoDuration(Duration);

impl std::str::FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (num, unit) = s
            .find(|c: char| !c.is_ascii_digit())
            .map_or((s, "s"), |i| s.split_at(i));
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 15s"))?;
        match unit {
            "ms" => Ok(Self(Duration::from_millis(n))),
            "s" => Ok(Self(Duration::from_secs(n))),
            "m" => Ok(Self(Duration::from_secs(n * 60))),
            _ => Err(format!("{s:?}: the unit must be ms, s or m")),
        }
    }
}

/// The host's outbound IP (no packet is sent), or loopback.
pub(crate) fn host_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.defaultconfig {
        print!("{}", CloudCoreFile::default_config(host_ip()).to_yaml()?);
        return Ok(());
    }
    if args.minconfig {
        print!("{}", CloudCoreFile::min_config_yaml(host_ip()));
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let file = CloudCoreFile::parse(&text)?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    if args.iptables_manager {
        let client = external_client(&file).await?;
        let port = file
            .settings()?
            .stream_server
            .map_or(10003, |(addr, _)| addr.port());
        info!(stream_port = port, "iptables manager running");
        let manager = kubeedge_cloud::stream::iptables::run_manager(
            client,
            Default::default(),
            port,
            Duration::from_secs(10),
            cancel.clone(),
        );
        tokio::pin!(manager);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            () = &mut manager => {}
            _ = term.recv() => cancel.cancel(),
            _ = tokio::signal::ctrl_c() => cancel.cancel(),
        }
        return Ok(());
    }
    let hub = file.settings()?.hub;
    let mut stream_cfg = StreamConfig::default();
    stream_cfg.enforce_node_identity = hub.enforce_node_identity;
    stream_cfg.allow_legacy_certs = hub.allow_legacy_certs;
    let stream = CloudStream::new(stream_cfg);

    // What the monitor server shows: the API's figures (embedded mode), then the hub's.
    let mut registry = prometheus_client::registry::Registry::default();
    let (client, embedded) = if file.kube_api_config.is_external() {
        (external_client(&file).await?, None)
    } else {
        let (client, svc) = embedded::start(
            &args,
            &file,
            &stream,
            &mut registry,
            &tracker,
            cancel.clone(),
        )
        .await?;
        (client, Some(svc))
    };
    let api = if file.settings()?.router.is_some() {
        Some(api_config(&file, &args).await?)
    } else {
        None
    };
    let election = election(&args);
    let run = run(
        file,
        election,
        client,
        api,
        embedded,
        stream,
        registry,
        &tracker,
        cancel.clone(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r,
        _ = term.recv() => { info!("SIGTERM: shutting down"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); Ok(()) }
    };
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        warn!("some tasks did not stop within 10 s");
    }
    if let Err(e) = &result {
        error!(error = %format!("{e:#}"), "cloudcore failed");
    }
    info!("cloudcore stopped");
    result
}

async fn external_client(file: &CloudCoreFile) -> anyhow::Result<kube::Client> {
    let config = external_config(file).await?;
    info!(server = %config.cluster_url, "running against a cluster");
    Ok(kube::Client::try_from(config)?)
}

/// Where the API is and how to trust it (the embedded API's admin kubeconfig, or the
/// cluster's): what the Router checks its callers' tokens against.
async fn api_config(file: &CloudCoreFile, args: &Args) -> anyhow::Result<kube::Config> {
    if file.kube_api_config.is_external() {
        return external_config(file).await;
    }
    let path = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

async fn external_config(file: &CloudCoreFile) -> anyhow::Result<kube::Config> {
    let api = &file.kube_api_config;
    let mut config = if api.kube_config.is_empty() {
        kube::Config::new(
            api.master
                .parse()
                .context("kubeAPIConfig.master is not a URL")?,
        )
    } else {
        let kc = kube::config::Kubeconfig::read_from(&api.kube_config)
            .with_context(|| format!("cannot read kubeconfig {}", api.kube_config))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .context("kubeconfig")?
    };
    if !api.master.is_empty() && !api.kube_config.is_empty() {
        config.cluster_url = api
            .master
            .parse()
            .context("kubeAPIConfig.master is not a URL")?;
    }
    Ok(config)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    file: CloudCoreFile,
    election: LeaderElection,
    client: kube::Client,
    api: Option<kube::Config>,
    embedded: Option<embedded::Embedded>,
    stream: CloudStream,
    mut registry: prometheus_client::registry::Registry,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let settings = file.settings()?;
    let pki =
        kubeedge_cloud::secrets::load_pki(&client, &settings.cert_files, settings.pki.clone())
            .await
            .context("certificates")?;
    info!(ca_hash = %kubeedge_proto::ca_hash(pki.ca_cert_der()), "cloudcore pki ready");
    let identity = election.identity.clone();
    let timing = (
        election.lease_duration,
        election.renew_deadline,
        election.retry_period,
    );
    // The singleton duties run on the one replica that holds the Lease kubeedge/cloudcore:
    // the join-token refresh and, in embedded mode, the control plane's controllers.
    {
        let lease_client = client.clone();
        let (pki, client, embedded) = (pki.clone(), client.clone(), embedded.clone());
        let duty = move |lead: CancellationToken| {
            let (pki, client, embedded) = (pki.clone(), client.clone(), embedded.clone());
            async move {
                let duties = TaskTracker::new();
                duties.spawn(kubeedge_cloud::secrets::run_token_secret(
                    pki,
                    client.clone(),
                    lead.clone(),
                ));
                if let Some(e) = &embedded {
                    embedded::start_control_plane(client, e, &duties, lead);
                }
                duties.close();
                duties.wait().await;
            }
        };
        tracker.spawn(election.run(lease_client, cancel.clone(), duty));
    }
    let (hub, down, up) = CloudHub::new(Arc::clone(&pki), settings.hub.clone());
    // Which replica holds which edge: a Lease kubeedge/node-<node> per node, naming this
    // replica's stream server for the others when they share an etcd.
    let mut ownership = kubeedge_cloud::ownership::NodeOwnership::new("kubeedge", identity);
    ownership.shared_ledger = settings.sync.is_some();
    // This replica's heartbeat keeps leader election's timings.
    (
        ownership.lease_duration,
        ownership.renew_deadline,
        ownership.retry_period,
    ) = timing;
    #[cfg(feature = "etcd")]
    if let Some(e) = &embedded {
        if let Some(addr) = serve_peers(
            e, &file, &settings, &pki, &stream, &client, tracker, &cancel,
        )
        .await?
        {
            ownership
                .annotations
                .insert(kubeedge_cloud::ownership::STREAM_SERVER.to_owned(), addr);
        }
    }
    // /metrics, /healthz and /readyz (commonConfig.monitorServer).
    hub.register_metrics(&mut registry);
    let sync_metrics = kubeedge_cloud::metrics::SyncMetrics::default();
    sync_metrics.register(&mut registry);
    let (ready, ready_rx) = tokio::sync::watch::channel(false);
    let monitor = &file.common_config.monitor_server;
    #[cfg(not(feature = "profiling"))]
    if monitor.enable_profiling {
        warn!("monitorServer.enableProfiling: cloudcore was built without the profiling feature; not served");
    }
    if !monitor.bind_address.is_empty() {
        match TcpListener::bind(&monitor.bind_address).await {
            Ok(l) => {
                let m = kubeedge_cloud::monitor::Monitor::new(Arc::new(registry), ready_rx);
                #[cfg(feature = "profiling")]
                let m = if monitor.enable_profiling {
                    info!(addr = %monitor.bind_address, "monitorServer.enableProfiling: CPU profiles at /debug/pprof/profile");
                    m.with_profiling()
                } else {
                    m
                };
                tracker.spawn(m.serve(l, cancel.clone()));
            }
            // A clash on the metrics port must not take the hub down with it.
            Err(e) => {
                warn!(addr = %monitor.bind_address, error = %e, "no monitor server: cannot listen")
            }
        }
    }
    if settings.hub_enabled {
        if let Some(addr) = settings.websocket {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (websocket)"))?;
            info!(addr = %l.local_addr()?, "cloudhub websocket listening");
            let (h, c) = (hub.clone(), cancel.clone());
            tracker.spawn(async move {
                if let Err(e) = h.serve_websocket(l, c).await {
                    error!(error = %e, "websocket server failed");
                }
            });
        }
        if let Some(addr) = settings.https {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (https)"))?;
            info!(addr = %l.local_addr()?, "cloudhub https listening");
            let (h, c) = (hub.clone(), cancel.clone());
            tracker.spawn(async move {
                if let Err(e) = h.serve_https(l, c).await {
                    error!(error = %e, "https server failed");
                }
            });
        }
    }
    if let Some(addr) = settings.stream {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (stream tunnel)"))?;
        info!(addr = %l.local_addr()?, "cloudstream tunnel listening");
        let (pki, c, s) = (Arc::clone(&pki), cancel.clone(), stream.clone());
        tracker.spawn(async move {
            if let Err(e) = s.serve_tunnel(l, pki, c).await {
                error!(error = %e, "stream tunnel server failed");
            }
        });
    }
    // On a real cluster, the kube-apiserver reaches edge pods through the stream server (its
    // calls to a node's kubelet port are led here); the embedded API needs none.
    if let (Some((addr, ca_file)), None) = (settings.stream_server.clone(), &embedded) {
        match std::fs::read(&ca_file) {
            Ok(ca) => {
                let (chain, key) = pki.server_identity();
                let tls = kubeedge_cloud::stream::kubelet_api_tls(chain, key, &ca)?;
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (stream server)"))?;
                info!(addr = %l.local_addr()?, "cloudstream stream server listening");
                // This replica's kubelet port, written into each node whose tunnel connects
                // here (the DNAT to the stream server keys on it).
                let port =
                    kubeedge_cloud::stream::negotiate_tunnel_port(&client, &host_ip().to_string())
                        .await
                        .context("tunnel port")?;
                info!(port, "kubelet port of this cloudcore's nodes");
                let (mut conns, api, c2) = (stream.connections(), client.clone(), cancel.clone());
                tracker.spawn(async move {
                    loop {
                        let node = tokio::select! {
                            () = c2.cancelled() => return,
                            n = conns.recv() => match n {
                                Ok(n) => n,
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                                Err(_) => return,
                            },
                        };
                        let api = api.clone();
                        tokio::spawn(async move {
                            let every = Duration::from_secs(20);
                            if let Err(e) = kubeedge_cloud::stream::set_kubelet_port(&api, &node, port, every, every * 6).await {
                                warn!(node, error = %e, "cannot write the node's kubelet port");
                            }
                        });
                    }
                });
                let (s, client, c) = (stream.clone(), client.clone(), cancel.clone());
                tracker.spawn(async move {
                    if let Err(e) = s.serve_kubelet_api(l, tls, client, c).await {
                        error!(error = %e, "stream server failed");
                    }
                });
            }
            Err(e) => warn!(
                file = %ca_file.display(),
                error = %e,
                "no stream server: the CA of the API server's kubelet-client certificate is not readable (copy the cluster's ca.crt there)"
            ),
        }
    }
    let mut controllers = ControllersConfig::default();
    // Embedded: the API is ours, so edges' requests run as their node and its Node authorizer
    // decides them. On a real cluster, as upstream, as cloudcore (impersonation would need
    // extra RBAC).
    let as_nodes = embedded.is_some() && settings.node_authorization;
    if embedded.is_some() && !settings.node_authorization {
        tracing::warn!(
            "cloudHub.authorization.enable is false: edge nodes' requests run as cloudcore, without node authorization"
        );
    }
    controllers.edge = settings.edge_controller.clone().map(|mut e| {
        e.impersonate_nodes = as_nodes;
        e
    });
    controllers.sync = settings.sync.clone();
    controllers.device = settings.device.clone();
    controllers.metrics = Some(sync_metrics);
    if let (Some(s), Some(api)) = (&settings.router, api) {
        let (r, addr) = router::start(
            s,
            api,
            &client,
            (&hub, &down),
            &pki,
            (advertised_ip(&file), &ownership.identity),
            tracker,
            cancel.clone(),
        )
        .await?;
        ownership
            .annotations
            .insert(kubeedge_cloud::ownership::ROUTER_SERVER.to_owned(), addr);
        controllers.router = Some(r);
    }
    // Ready while this replica serves: its heartbeat is fresh.
    let mut serving = ownership.serving();
    tracker.spawn(ownership.run(client.clone(), hub.clone(), cancel.clone()));
    tracker.spawn(async move {
        loop {
            ready.send_replace(*serving.borrow_and_update());
            if serving.changed().await.is_err() {
                break;
            }
        }
    });
    controllers.dynamic = settings.dynamic.clone().map(|mut d| {
        d.impersonate_nodes = as_nodes;
        d
    });
    kubeedge_cloud::run_controllers(client, hub, down, up, controllers, cancel)
        .await
        .context("controllers")?;
    Ok(())
}
