//! A Modbus TCP mapper: reads a v1beta1 Device (and optionally its DeviceModel) from YAML
//! files, talks to the device with the Modbus driver and to the edge over MQTT.
//!
//! ```text
//! cargo run -p kubeedge-device --example modbus-mapper -- \
//!     --device device.yaml --model model.yaml --broker 127.0.0.1:1883
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kubeedge_device::mapper::{Mapper, MapperConfig, MapperDevice, ModbusTcp};
use kubeedge_proto::api::v1beta1::{Device, DeviceModel};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "KubeEdge Modbus TCP mapper (kubeedge-rs)")]
struct Args {
    /// The Device (devices.kubeedge.io/v1beta1) as YAML.
    #[arg(long)]
    device: PathBuf,
    /// Its DeviceModel as YAML (property types and access modes).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The edge's MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Twin ids as <name> (KubeEdge before v1.17) instead of <namespace>/<name>.
    #[arg(long)]
    legacy_ids: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let device: Device =
        serde_yaml::from_str(&std::fs::read_to_string(&args.device)?).context("device yaml")?;
    let model: Option<DeviceModel> = match &args.model {
        Some(p) => Some(serde_yaml::from_str(&std::fs::read_to_string(p)?).context("model yaml")?),
        None => None,
    };
    let md = MapperDevice::from_v1beta1(&device, model.as_ref(), !args.legacy_ids);
    let driver = ModbusTcp::from_config(&md.protocol)?;
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .context("--broker must be host:port")?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        c.cancel();
    });
    tracing::info!(device = %md.id, properties = md.properties.len(), "mapper starting");
    Mapper::new(md, driver, MapperConfig::new(host, port.parse()?))
        .run(cancel)
        .await?;
    Ok(())
}
