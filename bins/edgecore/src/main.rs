//! edgecore: reads an upstream `edgecore.yaml` and runs the edge modules until SIGTERM/SIGINT.

mod mesh;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubeedge_device::store::SqliteTwinStore;
use kubeedge_device::{twin_service, TwinConfig, TwinOutputs};
use kubeedge_edge::config::EdgeCoreConfig;
use kubeedge_edge::Plugins;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "edgecore", version, about = "KubeEdge edge core (kubeedge-rs)")]
struct Args {
    /// The configuration file.
    #[arg(long, default_value = "/etc/kubeedge/config/edgecore.yaml")]
    config: PathBuf,
    /// Print the full default configuration and exit.
    #[arg(long)]
    defaultconfig: bool,
    /// Print a minimal configuration and exit.
    #[arg(long)]
    minconfig: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.defaultconfig {
        print!("{}", EdgeCoreConfig::default_yaml());
        return Ok(());
    }
    if args.minconfig {
        print!("{}", EdgeCoreConfig::min_yaml());
        return Ok(());
    }
    // `RUST_LOG` as `target=level` directives (e.g. `warn,kubeedge_edge::eventbus=debug`):
    // a `Targets` filter rather than `EnvFilter`, whose regex engine would cost the edge
    // node a few hundred KB of resident code.
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer())
            .with(filter)
            .init();
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = EdgeCoreConfig::from_yaml(&text)?;
    let (plugins, twin) = device_twin(&config)?;
    let edge_mesh = config.modules.edge_mesh.clone();
    let cluster_domain = config.modules.edged.dns_settings().cluster_domain;
    let node_name = config.node_name().to_owned();
    let running = kubeedge_edge::start_with(config, plugins).await?;
    tracing::info!(stored_pods = running.stored_pods, "edgecore started");
    let mesh = mesh::start(
        &edge_mesh,
        &cluster_domain,
        &node_name,
        running.meta_server.as_ref(),
    )?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    if let Some(mesh) = mesh {
        mesh.stop().await;
    }
    if let Some((cancel, task)) = twin {
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    running.shutdown(Duration::from_secs(10)).await;
    tracing::info!("edgecore stopped");
    Ok(())
}

type TwinTask = (CancellationToken, tokio::task::JoinHandle<()>);

/// The device twin (kubeedge-device) plugged into the edge's router and event bus, when
/// `modules.deviceTwin.enable` is set. It shares edgecore's database file.
fn device_twin(config: &EdgeCoreConfig) -> anyhow::Result<(Plugins, Option<TwinTask>)> {
    if !config.modules.device_twin.enable {
        return Ok((Plugins::default(), None));
    }
    let store = SqliteTwinStore::open(&config.database.data_source).with_context(|| {
        format!(
            "cannot open the device twin tables in {}",
            config.database.data_source.display()
        )
    })?;
    let (cloud_tx, cloud_rx) = mpsc::channel(1024);
    let (bus_tx, bus_rx) = mpsc::channel(1024);
    let (twin, driver) = twin_service(
        store,
        TwinConfig::new(config.node_name()),
        TwinOutputs::new(cloud_tx, bus_tx),
    )?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = driver.run(c).await {
            tracing::error!(error = %e, "device twin stopped");
        }
    });
    Ok((
        Plugins::twin(twin.sender(), cloud_rx, bus_rx),
        Some((cancel, task)),
    ))
}
