//! keadm: set up KubeEdge (kubeedge-rs) clouds and edge nodes.
//!
//! `keadm init` starts cloudcore (embedded control plane, or against `--kube-config`),
//! `keadm gettoken` prints the join token, `keadm join` makes this host an edge node,
//! `keadm reset` removes what init and join set up, `keadm version` says what this is.
//! Files go under upstream's paths (`/etc/kubeedge`, `/var/lib/kubeedge`), below
//! `KUBEEDGE_ROOT` when that is set.

mod gettoken;
mod init;
mod join;
mod paths;
mod process;
mod reset;
mod runtime;
mod systemd;
mod yaml;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "keadm",
    version,
    about = "KubeEdge (kubeedge-rs) installation tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prepare and start the cloud side (cloudcore).
    Init(init::InitArgs),
    /// Print the token edge nodes join with.
    Gettoken {
        /// The cluster's kubeconfig (default: $KUBECONFIG, ~/.kube/config, or the embedded
        /// control plane's admin kubeconfig on this host).
        #[arg(long = "kube-config")]
        kube_config: Option<PathBuf>,
    },
    /// Make this host an edge node.
    Join(join::JoinArgs),
    /// Remove what init and join set up on this host.
    Reset {
        /// Accepted for upstream compatibility; reset never asks.
        #[arg(long)]
        force: bool,
        /// The CRI endpoint whose pods of this node are removed (default: edgecore.yaml's).
        #[arg(long = "remote-runtime-endpoint")]
        remote_runtime_endpoint: Option<String>,
    },
    /// Print the version.
    Version,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let paths = paths::Paths::from_env();
    let result = match cli.command {
        Command::Init(a) => init::run(&paths, &a).await,
        Command::Gettoken { kube_config } => gettoken::run(&paths, kube_config).await,
        Command::Join(a) => join::run(&paths, &a).await,
        Command::Reset {
            force: _,
            remote_runtime_endpoint,
        } => reset::run(&paths, remote_runtime_endpoint).await,
        Command::Version => {
            println!(
                "keadm version: kubeedge-rs v{} (wire-compatible with KubeEdge v1.12 and later)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
