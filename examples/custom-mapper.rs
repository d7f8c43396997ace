//! A device driver of your own on the mapper SDK: a simulated thermostat whose temperature
//! moves one degree per reading towards its setpoint. The mapper runtime does the rest: it reads
//! each property at its collect cycle and reports changes to the edge's device twin over MQTT,
//! writes desired values the cloud sets (twin deltas), and publishes the device's state.
//!
//! ```text
//! cargo run -p kubeedge-examples --example custom-mapper -- default/thermostat-1 127.0.0.1:1883
//! ```

use std::time::Duration;

use kubeedge_device::mapper::{
    DeviceDriver, DeviceHealth, DriverError, Mapper, MapperConfig, MapperDevice, PropertyConfig,
    ValueType,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The device: what a real driver would read over its bus.
struct Thermostat {
    temperature: i64,
    setpoint: i64,
}

impl DeviceDriver for Thermostat {
    async fn connect(&mut self) -> Result<(), DriverError> {
        Ok(())
    }

    async fn read(&mut self, property: &PropertyConfig) -> Result<String, DriverError> {
        match property.name.as_str() {
            "temperature" => {
                self.temperature += (self.setpoint - self.temperature).signum();
                Ok(self.temperature.to_string())
            }
            "setpoint" => Ok(self.setpoint.to_string()),
            other => Err(DriverError::Refused(format!("no property {other}"))),
        }
    }

    async fn write(&mut self, property: &PropertyConfig, value: &str) -> Result<(), DriverError> {
        if property.name != "setpoint" {
            return Err(DriverError::ReadOnly(property.name.clone()));
        }
        self.setpoint = value.parse().map_err(|_| DriverError::Value {
            property: property.name.clone(),
            value: value.to_owned(),
        })?;
        Ok(())
    }

    async fn health(&mut self) -> DeviceHealth {
        DeviceHealth::Online
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [device_id, broker] = <[String; 2]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: custom-mapper DEVICE_ID BROKER_HOST:PORT"))?;
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("the broker is host:port"))?;

    let mut temperature = PropertyConfig::new("temperature", ValueType::Int, Value::Null);
    temperature.writable = false;
    temperature.collect_cycle = Duration::from_millis(200);
    let mut setpoint = PropertyConfig::new("setpoint", ValueType::Int, Value::Null);
    setpoint.collect_cycle = Duration::from_millis(200);
    let device = MapperDevice::new(device_id, vec![temperature, setpoint], Value::Null);

    let driver = Thermostat {
        temperature: 15,
        setpoint: 18,
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    println!("mapper running");
    Mapper::new(device, driver, MapperConfig::new(host, port.parse()?))
        .run(cancel)
        .await?;
    Ok(())
}
