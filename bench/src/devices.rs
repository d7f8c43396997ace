//! A cloud for device tests and the device benchmark: an in-process Kubernetes API with the
//! Device and DeviceModel CRDs, a CloudHub on loopback, and the DeviceController between them.

use std::time::{Duration, Instant};

use anyhow::Result;
use kubeedge_proto::api::v1beta1::{Device, DeviceModel};
use serde_json::Value;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kubeedge_apiserver::{ApiConfig, ApiService, SqliteStore};
use kubeedge_cloud::devicecontroller::{
    is_device_message, DeviceController, DeviceControllerConfig,
};
use kubeedge_cloud::hub::HubConfig;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::TestCloud;

/// The cloud side of a device test.
pub struct DeviceCloud {
    /// The hub and its scratch directory.
    pub cloud: TestCloud,
    /// A client of the in-process API.
    pub client: kube::Client,
    _api_dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl std::fmt::Debug for DeviceCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCloud")
            .field("cloud", &self.cloud)
            .finish_non_exhaustive()
    }
}

impl Drop for DeviceCloud {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn crd(plural: &str, kind: &str) -> serde_json::Value {
    let version = |name: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.devices.kubeedge.io")},
        "spec": {
            "group": "devices.kubeedge.io",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
            "scope": "Namespaced",
            "versions": [version("v1beta1", true), version("v1alpha2", false)]
        }
    })
}

/// Create the Device and DeviceModel CRDs (v1beta1 stored, v1alpha2 served).
pub async fn create_device_crds(client: &kube::Client) -> anyhow::Result<()> {
    let ar = ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    for (plural, kind) in [("devices", "Device"), ("devicemodels", "DeviceModel")] {
        let obj: DynamicObject = serde_json::from_value(crd(plural, kind))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    Ok(())
}

impl DeviceCloud {
    /// Start the API, the hub and the controller.
    pub async fn start(hub: HubConfig, controller: DeviceControllerConfig) -> anyhow::Result<Self> {
        let api_dir = tempfile::tempdir()?;
        let store = SqliteStore::open(api_dir.path().join("state.db"))?;
        let service = ApiService::new(store, ApiConfig::default()).await?;
        let client = kube::Client::new(service, "default");
        create_device_crds(&client).await?;
        let mut cloud = TestCloud::start(hub).await?;
        let (_, dummy) = mpsc::channel(1);
        let mut up = std::mem::replace(&mut cloud.up, dummy);
        let (tx, rx) = mpsc::channel(4096);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            loop {
                let u = tokio::select! {
                    _ = c.cancelled() => return,
                    u = up.recv() => match u { Some(u) => u, None => return },
                };
                if is_device_message(&u) && tx.send(u).await.is_err() {
                    return;
                }
            }
        });
        let dc = DeviceController::new(client.clone(), cloud.down.clone(), controller);
        tokio::spawn(dc.run(rx, cancel.child_token()));
        Ok(Self {
            cloud,
            client,
            _api_dir: api_dir,
            cancel,
        })
    }

    /// An `edgecore.yaml` for node `edge-1` with the event bus in `mode` on `broker`
    /// (`tcp://127.0.0.1:<port>`). Returns the config path and the database path.
    pub fn edge_config(
        &self,
        mode: u8,
        broker: &str,
    ) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (path, db) = self.cloud.edge_config()?;
        let text = std::fs::read_to_string(&path)?;
        let bus = format!(
            "  eventBus:\n    enable: true\n    mqttMode: {mode}\n    mqttServerInternal: {broker}\n    mqttServerExternal: {broker}\n  deviceTwin:\n    enable: true\n"
        );
        std::fs::write(
            &path,
            text.replace("  eventBus:\n    enable: false\n", &bus),
        )?;
        Ok((path, db))
    }
}

pub use crate::free_port;

/// How long device tests wait for a condition.
pub const DEVICE_LIMIT: Duration = Duration::from_secs(30);

/// A pymodbus TCP server (from PyPI, not ours) on a free loopback port, driven through its
/// stdin/stdout line protocol (`testdata/modbus/server.py`). Killed when dropped.
#[derive(Debug)]
pub struct Pymodbus {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// The port.
    pub port: u16,
}

impl Pymodbus {
    /// Start it and wait (bounded) until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let port = free_port()?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/modbus/server.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg("300")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        match ready {
            Ok(Ok(Some(l))) if l == "READY" => {}
            other => anyhow::bail!("pymodbus did not start (is pymodbus installed?): {other:?}"),
        }
        Ok(Self {
            child,
            stdin,
            lines,
            port,
        })
    }

    /// One command (`set hr 2 55`, `get co 1`); returns the answer line.
    pub async fn cmd(&mut self, line: &str) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt as _;
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let l = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("pymodbus exited"))?;
        anyhow::ensure!(!l.starts_with("ERR"), "pymodbus: {l}");
        Ok(l)
    }

    /// Stop it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Debian's mosquitto on a loopback port, killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// The port.
    pub port: u16,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// Start it on `port` and wait (bounded) until it accepts connections.
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmessage_size_limit 262144\n"),
        )?;
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let m = Self {
            child,
            _dir: dir,
            port,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }
}

/// The test DeviceModel `thermo-model` (modbus): setpoint, temperature, humidity, switch.
pub fn model() -> Result<DeviceModel> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "thermo-model", "namespace": "default"},
        "spec": {"protocol": "modbus", "properties": [
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
            {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
            {"name": "humidity", "type": "INT", "accessMode": "ReadOnly"},
            {"name": "switch", "type": "BOOLEAN", "accessMode": "ReadWrite"},
        ]}
    }))?)
}

/// Device `name` of [`model`] on `node`, reading the pymodbus server at `modbus_port`, with
/// desired `setpoint` (holding register 2) and switch on (coil 1); temperature is holding
/// register 5 scaled by 0.5, humidity register 6.
pub fn device_on(node: &str, name: &str, modbus_port: u16, setpoint: &str) -> Result<Device> {
    let visitor = |cfg: Value| json!({"protocolName": "modbus", "configData": cfg});
    Ok(serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "thermo-model"},
            "nodeName": node,
            "protocol": {"protocolName": "modbus",
                         "configData": {"ip": "127.0.0.1", "port": modbus_port, "slaveID": 1}},
            "properties": [
                {"name": "setpoint", "collectCycle": 100,
                 "desired": {"value": setpoint, "metadata": {"type": "int"}},
                 "visitors": visitor(json!({"register": "HoldingRegister", "offset": 2}))},
                {"name": "temperature", "collectCycle": 100,
                 "visitors": visitor(json!({"register": "HoldingRegister", "offset": 5, "scale": 0.5}))},
                {"name": "humidity", "collectCycle": 100,
                 "visitors": visitor(json!({"register": "HoldingRegister", "offset": 6}))},
                {"name": "switch", "collectCycle": 100,
                 "desired": {"value": "true", "metadata": {"type": "boolean"}},
                 "visitors": visitor(json!({"register": "CoilRegister", "offset": 1}))},
            ]
        }
    }))?)
}

/// The reported value of `prop` in the Device status.
pub async fn reported(api: &Api<Device>, name: &str, prop: &str) -> Option<String> {
    let d = api.get(name).await.ok()?;
    d.status?
        .twins
        .into_iter()
        .find(|t| t.property_name == prop)?
        .reported
        .map(|r| r.value)
}

/// Wait until the Device status reports `want` for `prop`.
pub async fn wait_reported(api: &Api<Device>, name: &str, prop: &str, want: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        if reported(api, name, prop).await.as_deref() == Some(want) {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < DEVICE_LIMIT,
            "{name}.{prop} never reported {want:?} (last {:?})",
            reported(api, name, prop).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the pymodbus command `cmd` (e.g. `get hr 2`) answers `want`.
pub async fn wait_register(modbus: &mut Pymodbus, cmd: &str, want: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let got = modbus.cmd(cmd).await?;
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < DEVICE_LIMIT, "{cmd}: {got}, never {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Modbus mapper for `dev` (of [`model`]) against the broker at 127.0.0.1:`broker_port`,
/// running until `MapperRun::stop`.
pub fn spawn_mapper(dev: &Device, broker_port: u16) -> Result<MapperRun> {
    use kubeedge_device::mapper::{Mapper, MapperConfig, MapperDevice, ModbusTcp};
    let md = MapperDevice::from_v1beta1(dev, Some(&model()?), true);
    let driver = ModbusTcp::from_config(&md.protocol)?;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        Mapper::new(md, driver, MapperConfig::new("127.0.0.1", broker_port)).run(cancel.clone()),
    );
    Ok(MapperRun { cancel, task })
}

/// A running mapper.
#[derive(Debug)]
pub struct MapperRun {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kubeedge_device::mapper::MapperError>>,
}

impl MapperRun {
    /// Stop it; its error, if it failed.
    pub async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        Ok(self.task.await??)
    }
}

/// Set the temperature register (holding register 5) to 41 on the server and time until
/// Device `name`'s status reports it (20.5 after the model's scale).
pub async fn register_to_status(
    modbus: &mut Pymodbus,
    devices: &Api<Device>,
    name: &str,
) -> Result<Duration> {
    modbus.cmd("set hr 5 41").await?;
    let t0 = Instant::now();
    wait_reported(devices, name, "temperature", "20.5").await?;
    Ok(t0.elapsed())
}
