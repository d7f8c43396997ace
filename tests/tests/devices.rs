//! A device through the real binaries: `keadm init`'s cloudcore (DeviceController on the
//! embedded API), `keadm join`'s edgecore (embedded MQTT broker, device twin), the Rust Modbus
//! mapper against a pymodbus server (from PyPI, not ours).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use kube::api::{Api, PostParams};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_bench::devices::{device_on, model, wait_register, wait_reported, Pymodbus};
use kubeedge_device::mapper::{Mapper, MapperConfig, MapperDevice, ModbusTcp};
use kubeedge_proto::api::v1beta1::{Device, DeviceModel};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_through_cloudcore_edgecore_and_the_modbus_mapper() -> Result<()> {
    let node = "e2e-device";
    let mut cluster = Cluster::init()?;
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", Duration::from_secs(60), || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;
    let client = cluster.client().await?;
    let mut modbus = Pymodbus::start().await?;
    let models: Api<DeviceModel> = Api::namespaced(client.clone(), "default");
    let devices: Api<Device> = Api::namespaced(client, "default");
    models.create(&PostParams::default(), &model()?).await?;
    let dev = device_on(node, "thermo-e2e", modbus.port, "42")?;
    devices.create(&PostParams::default(), &dev).await?;

    let md = MapperDevice::from_v1beta1(&dev, Some(&model()?), true);
    let driver = ModbusTcp::from_config(&md.protocol)?;
    let cancel = CancellationToken::new();
    let mapper = tokio::spawn(
        Mapper::new(
            md,
            driver,
            MapperConfig::new("127.0.0.1", cluster.mqtt_port),
        )
        .run(cancel.clone()),
    );
    // The desired value in the CR reaches the register through cloudcore, the hub, the edge
    // twin, the broker and the mapper.
    wait_register(&mut modbus, "get hr 2", "42")
        .await
        .with_context(|| cluster.logs_tail(30))?;
    // A register changed on the server reaches the Device status within 2 s.
    modbus.cmd("set hr 5 41").await?;
    let t0 = Instant::now();
    wait_reported(&devices, "thermo-e2e", "temperature", "20.5").await?;
    let took = t0.elapsed();
    ensure!(
        took < Duration::from_secs(2),
        "register -> status took {took:?}"
    );
    cancel.cancel();
    mapper.await??;
    modbus.stop().await;
    Ok(())
}
