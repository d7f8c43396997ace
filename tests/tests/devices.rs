//! A device through the real binaries: `keadm init`'s cloudcore (DeviceController on the
//! embedded API), `keadm join`'s edgecore (embedded MQTT broker, device twin), the Rust Modbus
//! mapper against a pymodbus server (from PyPI, not ours).

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use kube::api::{Api, PostParams};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_bench::devices::{
    device_on, model, register_to_status, spawn_mapper, wait_register, Pymodbus,
};
use kubeedge_proto::api::v1beta1::{Device, DeviceModel};

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

    let mapper = spawn_mapper(&dev, cluster.mqtt_port)?;
    // The desired value in the CR reaches the register through cloudcore, the hub, the edge
    // twin, the broker and the mapper.
    wait_register(&mut modbus, "get hr 2", "42")
        .await
        .with_context(|| cluster.logs_tail(30))?;
    // A register changed on the server reaches the Device status within 2 s.
    let took = register_to_status(&mut modbus, &devices, "thermo-e2e").await?;
    ensure!(
        took < Duration::from_secs(2),
        "register -> status took {took:?}"
    );
    mapper.stop().await?;
    modbus.stop().await;
    Ok(())
}
