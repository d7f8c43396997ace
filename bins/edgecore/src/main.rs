//! edgecore: reads an upstream `edgecore.yaml` and runs the edge modules until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubeedge_edge::config::EdgeCoreConfig;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = EdgeCoreConfig::from_yaml(&text)?;
    let running = kubeedge_edge::start(config).await?;
    tracing::info!(stored_pods = running.stored_pods, "edgecore started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    running.shutdown(Duration::from_secs(10)).await;
    tracing::info!("edgecore stopped");
    Ok(())
}
