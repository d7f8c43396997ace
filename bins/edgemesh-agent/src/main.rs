//! edgemesh-agent: the mesh on a node that runs no edgecore (a cloud node), or beside one.
//!
//! It reads upstream edgemesh-agent's config file and Services from the API server in
//! `kubeAPIConfig` (a kubeconfig, `master`, or the node's MetaServer with
//! `kubeAPIConfig.metaServer`), serves the cluster DNS and the service proxy on
//! `edgemesh0`, runs the tunnel to the other nodes' agents (`modules.edgeTunnel`), and removes its interface and nftables table on SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kubeedge_mesh::agent::{self, AgentOptions};
use kubeedge_mesh::catalog::{feed, Catalog};
use kubeedge_mesh::config::AgentConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "EdgeMesh agent: cluster DNS and Service proxy on a node"
)]
struct Args {
    /// Upstream edgemesh-agent's config file.
    #[arg(
        long = "config-file",
        default_value = "/etc/edgemesh/config/edgemesh-agent.yaml"
    )]
    config: PathBuf,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolvers, for names outside the cluster.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// This node's name (the tunnel's identity); `NODE_NAME`, else the host name.
    #[arg(long)]
    node_name: Option<String>,
}

/// `--node-name`, `NODE_NAME` (what upstream's DaemonSet sets), or the host name.
fn node_name(arg: Option<String>) -> String {
    arg.or_else(|| std::env::var("NODE_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}

async fn client(cfg: &AgentConfig) -> anyhow::Result<kube::Client> {
    let api = &cfg.kube_api;
    let mut config = if let Some(meta) = &api.meta_server {
        kube::Config::new(
            meta.server
                .parse()
                .context("kubeAPIConfig.metaServer.server")?,
        )
    } else if !api.kube_config.is_empty() {
        let kc = kube::config::Kubeconfig::read_from(&api.kube_config)
            .with_context(|| format!("kubeconfig {}", api.kube_config))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
    } else {
        kube::Config::infer()
            .await
            .context("no kubeconfig, master or metaServer configured")?
    };
    if !api.master.is_empty() {
        config.cluster_url = api.master.parse().context("kubeAPIConfig.master")?;
    }
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
            });
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer())
            .with(filter)
            .init();
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = AgentConfig::from_yaml(&text)?;
    let client = client(&config).await?;
    let mut options = AgentOptions::default();
    options.cluster_domain = args.cluster_domain;
    options.resolv_conf = args.resolv_conf;
    options.node_name = node_name(args.node_name);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let catalog = Catalog::new();
    let filter = config.modules.edge_proxy.filter_mode()?;
    tokio::spawn(feed::run(client, catalog.clone(), filter, cancel.clone()));
    agent::run(&config, &options, catalog, cancel).await?;
    Ok(())
}
