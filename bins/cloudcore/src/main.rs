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
use kubeedge_cloud::controlplane::KubernetesService;
use kubeedge_cloud::hub::CloudHub;
use kubeedge_cloud::ControllersConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "cloudcore",
    version,
    about = "KubeEdge cloud core (kubeedge-rs)"
)]
struct Args {
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
    /// Embedded mode: where to write the admin kubeconfig (default `<data-dir>/admin.kubeconfig`).
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
}

/// The host's outbound IP (no packet is sent), or loopback.
fn host_ip() -> IpAddr {
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

    let (client, embedded) = if file.kube_api_config.is_external() {
        (external_client(&file).await?, None)
    } else {
        let (client, svc) = embedded_api(&args, &file, &tracker, cancel.clone()).await?;
        (client, Some(svc))
    };
    let run = run(file, client, embedded, &tracker, cancel.clone());
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
    info!(server = %config.cluster_url, "running against a cluster");
    Ok(kube::Client::try_from(config)?)
}

/// Start the embedded API server; a client for the controllers (in process).
async fn embedded_api(
    args: &Args,
    file: &CloudCoreFile,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<(kube::Client, KubernetesService)> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let store = kubeedge_apiserver::SqliteStore::open(args.data_dir.join("state.db"))?;
    let api_config = kubeedge_apiserver::ApiConfig::default();
    let cluster_ip = first_ip(&api_config.service_cidr)
        .with_context(|| format!("bad service range {}", api_config.service_cidr))?;
    let service = kubeedge_apiserver::ApiService::new(store, api_config).await?;
    let mut hosts: Vec<String> = file.modules.cloud_hub.advertise_address.clone();
    hosts.push(host_ip().to_string());
    let pki = kubeedge_apiserver::Pki::load_or_generate(&args.data_dir.join("pki"), &hosts)?;
    let listener = TcpListener::bind(args.apiserver_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.apiserver_listen))?;
    let addr = listener.local_addr()?;
    let server_host = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
    let kubeconfig = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    kubeedge_apiserver::write_kubeconfig(
        &kubeconfig,
        &format!("https://{}", SocketAddr::new(server_host, addr.port())),
        &pki.ca_pem(),
        Some(&admin),
        None,
    )?;
    let tls = pki.server_tls()?;
    let svc = service.clone();
    tracker.spawn(async move {
        let r = kubeedge_apiserver::serve(
            listener,
            svc,
            tls,
            Default::default(),
            cancel.cancelled_owned(),
        )
        .await;
        if let Err(e) = r {
            error!(error = %e, "embedded api server failed");
        }
    });
    info!(
        api = %addr,
        kubeconfig = %kubeconfig.display(),
        "embedded Kubernetes API running; use: kubectl --kubeconfig {}",
        kubeconfig.display()
    );
    // The address pods reach the API at, as kube-apiserver advertises it: the host's when
    // listening on every address.
    let advertised = if addr.ip().is_unspecified() {
        host_ip()
    } else {
        addr.ip()
    };
    Ok((
        kube::Client::new(service, "default"),
        KubernetesService::new(cluster_ip, SocketAddr::new(advertised, addr.port())),
    ))
}

/// The first address of a service range (`10.96.0.0/12` -> `10.96.0.1`), the ClusterIP of
/// the `kubernetes` Service.
fn first_ip(cidr: &str) -> Option<IpAddr> {
    let net: std::net::Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
    Some(IpAddr::V4(std::net::Ipv4Addr::from(
        u32::from(net).checked_add(1)?,
    )))
}

/// The embedded control plane: scheduler, workload, endpoints, namespace, garbage-collection
/// and node-lifecycle controllers over the embedded API.
fn start_control_plane(
    client: kube::Client,
    kubernetes: KubernetesService,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    tracker.spawn(async move {
        let mut config = kubeedge_cloud::controlplane::ControlPlaneConfig::default();
        config.kubernetes_service = Some(kubernetes);
        if let Err(e) = kubeedge_cloud::controlplane::run(client, config, cancel).await {
            error!(error = %e, "embedded control plane failed");
        }
    });
    info!("embedded control plane running");
}

async fn run(
    file: CloudCoreFile,
    client: kube::Client,
    embedded: Option<KubernetesService>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let settings = file.settings()?;
    let pki =
        kubeedge_cloud::secrets::load_pki(&client, &settings.cert_files, settings.pki.clone())
            .await
            .context("certificates")?;
    info!(ca_hash = %kubeedge_proto::ca_hash(pki.ca_cert_der()), "cloudcore pki ready");
    {
        let (pki, client, cancel) = (pki.clone(), client.clone(), cancel.clone());
        tracker.spawn(kubeedge_cloud::secrets::run_token_secret(
            pki, client, cancel,
        ));
    }
    if let Some(kubernetes) = embedded.clone() {
        start_control_plane(client.clone(), kubernetes, tracker, cancel.clone());
    }
    let (hub, down, up) = CloudHub::new(Arc::clone(&pki), settings.hub.clone());
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
    let mut controllers = ControllersConfig::default();
    controllers.edge = settings.edge_controller.clone();
    controllers.sync = settings.sync.clone();
    controllers.device = settings.device.clone();
    controllers.dynamic = settings.dynamic.clone().map(|mut d| {
        // Embedded: the API is ours, so requests run as the node. On a real cluster, as
        // upstream, as cloudcore (impersonation would need extra RBAC).
        d.impersonate_nodes = embedded.is_some();
        d
    });
    kubeedge_cloud::run_controllers(client, hub, down, up, controllers, cancel)
        .await
        .context("controllers")?;
    Ok(())
}
