//! Devices end to end with real components: the Kubernetes API (in process) with the Device
//! CRDs, CloudHub and the DeviceController, the edgecore binary (event bus + device twin),
//! an MQTT broker (edgecore's embedded one, or Debian's mosquitto), the Rust mapper with its
//! Modbus driver, and a pymodbus server from PyPI.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_bench::devices::{
    device_on, free_port, model, register_to_status, reported, spawn_mapper, wait_register,
    wait_reported, DeviceCloud, Mosquitto, Pymodbus,
};
use kubeedge_bench::proxy::Proxy;
use kubeedge_bench::wait_until;
use kubeedge_cloud::devicecontroller::DeviceControllerConfig;
use kubeedge_cloud::hub::HubConfig;
use kubeedge_proto::api::v1beta1::{Device, DeviceModel};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(30);

/// An edgecore process, killed when dropped.
struct Edgecore(Child);

impl Drop for Edgecore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path, log: &Path) -> Result<Edgecore> {
    let err = std::fs::File::create(log)?;
    Ok(Edgecore(
        Command::new(env!("CARGO_BIN_EXE_edgecore"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn,kubeedge_edge::eventbus=info")
            .env("NO_COLOR", "1")
            .stdout(err)
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

/// Twin rows of `device` in the edge database: name -> actual value.
fn edge_actuals(db: &Path, device: &str) -> Vec<(String, Option<String>)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) =
        conn.prepare("SELECT name, actual FROM device_twin WHERE deviceid = ?1 ORDER BY name")
    else {
        return Vec::new();
    };
    stmt.query_map([device], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn edge_has_device(db: &Path, device: &str) -> bool {
    rusqlite::Connection::open(db)
        .and_then(|c| {
            c.query_row("SELECT count(*) FROM device WHERE id = ?1", [device], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n == 1)
        .unwrap_or(false)
}

struct Setup {
    dc: DeviceCloud,
    db: std::path::PathBuf,
    log: std::path::PathBuf,
    broker_port: u16,
    _edge: Edgecore,
    _mosquitto: Option<Mosquitto>,
    proxy: Option<Proxy>,
}

async fn setup(mode: u8, namespaced: bool, proxy: bool) -> Result<Setup> {
    let mut hub = HubConfig::default();
    hub.keepalive_interval = Duration::from_secs(1);
    let mut ctl = DeviceControllerConfig::default();
    ctl.namespaced_ids = namespaced;
    let dc = DeviceCloud::start(hub, ctl).await?;
    let broker_port = free_port()?;
    let mosquitto = if mode == 2 {
        Some(Mosquitto::start(broker_port)?)
    } else {
        None
    };
    let (config, db) = dc.edge_config(mode, &format!("tcp://127.0.0.1:{broker_port}"))?;
    let proxy = if proxy {
        let p = Proxy::start(dc.cloud.ws).await?;
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(
            &config,
            text.replace(
                &format!("server: {}", dc.cloud.ws),
                &format!("server: {}", p.addr),
            ),
        )?;
        Some(p)
    } else {
        None
    };
    let log = db.with_file_name("edgecore.log");
    let edge = spawn(&config, &log)?;
    let hub = dc.cloud.hub.clone();
    wait_until("edgecore joins", LIMIT, || hub.connected() == 1).await?;
    Ok(Setup {
        dc,
        db,
        log,
        broker_port,
        _edge: edge,
        _mosquitto: mosquitto,
        proxy,
    })
}

/// Desired value -> edge twin -> mapper -> register; register -> Device status within 2 s;
/// a changed desired value reaches the register; the device state reaches the status.
async fn round_trip(mode: u8) -> Result<()> {
    let s = setup(mode, true, false).await?;
    let mut modbus = Pymodbus::start().await?;
    let models: Api<DeviceModel> = Api::namespaced(s.dc.client.clone(), "default");
    let devices: Api<Device> = Api::namespaced(s.dc.client.clone(), "default");
    models.create(&PostParams::default(), &model()?).await?;
    let dev = device_on("edge-1", "thermo-1", modbus.port, "42")?;
    devices.create(&PostParams::default(), &dev).await?;
    let db = s.db.clone();
    wait_until("the twin has the device", LIMIT, || {
        edge_has_device(&db, "default/thermo-1")
    })
    .await?;

    let mapper = spawn_mapper(&dev, s.broker_port)?;

    // Desired values land on the pymodbus server.
    wait_register(&mut modbus, "get hr 2", "42").await?;
    wait_register(&mut modbus, "get co 1", "1").await?;

    // A register changed on the server reaches the Device status within 2 s.
    let took = register_to_status(&mut modbus, &devices, "thermo-1").await?;
    assert!(
        took < Duration::from_secs(2),
        "register -> status took {took:?}"
    );

    // A new desired value in the CR is written to the register.
    let patch = json!({"spec": {"properties": dev.spec.properties.iter().map(|p| {
        let mut v = serde_json::to_value(p).unwrap_or_default();
        if p.name == "setpoint" { v["desired"]["value"] = json!("7"); }
        v
    }).collect::<Vec<_>>()}});
    devices
        .patch("thermo-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_register(&mut modbus, "get hr 2", "7").await?;
    wait_reported(&devices, "thermo-1", "setpoint", "7").await?;

    // The mapper's device state reaches the status.
    let start = Instant::now();
    loop {
        let st = devices.get("thermo-1").await?.status.unwrap_or_default();
        if st.state == "online" && !st.last_online_time.is_empty() {
            break;
        }
        anyhow::ensure!(start.elapsed() < LIMIT, "state never online: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mapper.stop().await?;
    modbus.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_round_trip_with_the_embedded_broker() -> Result<()> {
    round_trip(0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_round_trip_with_external_mosquitto() -> Result<()> {
    round_trip(2).await
}

/// Reports made while the cloud link is cut arrive after it is back: the newest value of each
/// property wins and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reports_arrive_after_reconnect() -> Result<()> {
    let mut s = setup(0, true, true).await?;
    let proxy = s.proxy.take().context("proxy")?;
    let mut modbus = Pymodbus::start().await?;
    let models: Api<DeviceModel> = Api::namespaced(s.dc.client.clone(), "default");
    let devices: Api<Device> = Api::namespaced(s.dc.client.clone(), "default");
    models.create(&PostParams::default(), &model()?).await?;
    let dev = device_on("edge-1", "thermo-2", modbus.port, "1")?;
    devices.create(&PostParams::default(), &dev).await?;
    let db = s.db.clone();
    wait_until("the twin has the device", LIMIT, || {
        edge_has_device(&db, "default/thermo-2")
    })
    .await?;
    let mapper = spawn_mapper(&dev, s.broker_port)?;
    modbus.cmd("set hr 5 2").await?;
    wait_reported(&devices, "thermo-2", "temperature", "1").await?;

    // Cut the link.
    proxy.set_down(true);
    let hub = s.dc.cloud.hub.clone();
    wait_until("link down", LIMIT, || hub.connected() == 0).await?;
    for v in ["10", "12", "14"] {
        modbus.cmd(&format!("set hr 5 {v}")).await?;
        let want = (v.parse::<f64>()? * 0.5).to_string();
        wait_until("the edge twin saw it", LIMIT, || {
            edge_actuals(&db, "default/thermo-2")
                .iter()
                .any(|(n, a)| n == "temperature" && a.as_deref() == Some(want.as_str()))
        })
        .await?;
    }
    modbus.cmd("set hr 6 33").await?;
    wait_until("the edge twin saw humidity", LIMIT, || {
        edge_actuals(&db, "default/thermo-2")
            .iter()
            .any(|(n, a)| n == "humidity" && a.as_deref() == Some("33"))
    })
    .await?;
    assert_eq!(
        reported(&devices, "thermo-2", "temperature")
            .await
            .as_deref(),
        Some("1"),
        "nothing reached the cloud while cut"
    );

    // Restore: the newest values arrive, for every property.
    proxy.set_down(false);
    wait_until("link up", LIMIT, || hub.connected() == 1).await?;
    wait_reported(&devices, "thermo-2", "temperature", "7").await?;
    wait_reported(&devices, "thermo-2", "humidity", "33").await?;
    mapper.stop().await?;
    let log = std::fs::read_to_string(&s.log)?;
    let outages = log.matches("mqtt broker unreachable").count();
    assert_eq!(outages, 0, "the broker never went down: {log}");
    Ok(())
}

/// An MQTT client speaking exactly what an upstream mapper sends (topic and payload shapes
/// from the v1.12 captures, legacy device ids).
struct RawMqtt {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    _task: tokio::task::JoinHandle<()>,
}

impl RawMqtt {
    async fn connect(port: u16, subs: &[&str]) -> Result<Self> {
        let mut opts = MqttOptions::new(
            format!("upstream-mapper-{}", free_port()?),
            "127.0.0.1",
            port,
        );
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send((p.topic.clone(), v));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
            .subscribe_many(
                subs.iter()
                    .map(|s| rumqttc::SubscribeFilter::new((*s).to_owned(), QoS::AtLeastOnce)),
            )
            .await?;
        tokio::time::timeout(LIMIT, ready_rx).await??;
        Ok(Self {
            client,
            rx,
            _task: task,
        })
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await?;
        Ok(())
    }

    /// The next publish on `topic`.
    async fn next_on(&mut self, topic: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let (t, v) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .with_context(|| format!("nothing on {topic}"))?
                .context("mqtt closed")?;
            if t == topic {
                return Ok(v);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mapper_traffic_and_bad_input() -> Result<()> {
    let s = setup(0, false, false).await?;
    let devices: Api<Device> = Api::namespaced(s.dc.client.clone(), "default");
    for name in ["thermometer-1", "thermometer-2"] {
        let d: Device = serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "edge-1", "properties": [
                {"name": "switch", "desired": {"value": "OFF", "metadata": {"type": "string"}}},
                {"name": "level", "desired": {"value": "1", "metadata": {"type": "int"}}},
            ]}
        }))?;
        devices.create(&PostParams::default(), &d).await?;
    }
    let db = s.db.clone();
    wait_until("the twin has the devices", LIMIT, || {
        edge_has_device(&db, "thermometer-1") && edge_has_device(&db, "thermometer-2")
    })
    .await?;
    let t1 = "$hw/events/device/thermometer-1";
    let mut m = RawMqtt::connect(
        s.broker_port,
        &[
            "$hw/events/device/+/twin/update/result",
            "$hw/events/device/+/twin/update/delta",
            "$hw/events/device/+/twin/get/result",
            "$hw/events/device/+/state/update/result",
            "$hw/events/node/+/membership/get/result",
        ],
    )
    .await?;

    // twin/get as upstream mappers send it.
    m.publish(
        &format!("{t1}/twin/get"),
        r#"{"event_id":"g1","timestamp":1795617300000}"#,
    )
    .await?;
    let got = m.next_on(&format!("{t1}/twin/get/result")).await?;
    assert_eq!(got["event_id"], "g1");
    assert_eq!(got["twin"]["switch"]["expected"]["value"], "OFF");

    // The captured report shape (v1.12.1 21-twin-edge-updated: mapper side).
    let now = kubeedge_proto::now_millis();
    let report = format!(
        r#"{{"event_id":"e1","timestamp":{now},"twin":{{"switch":{{"actual":{{"value":"ON","metadata":{{"timestamp":{now}}}}},"metadata":{{"type":"string"}}}}}}}}"#
    );
    m.publish(&format!("{t1}/twin/update"), report.clone())
        .await?;
    let echo = m.next_on(&format!("{t1}/twin/update/result")).await?;
    assert_eq!(echo["event_id"], "e1", "the result echoes the request");
    wait_reported(&devices, "thermometer-1", "switch", "ON").await?;

    // State update (captured shape).
    m.publish(
        &format!("{t1}/state/update"),
        format!(r#"{{"event_id":"s1","timestamp":{now},"state":"online"}}"#),
    )
    .await?;
    let st = m.next_on(&format!("{t1}/state/update/result")).await?;
    assert_eq!(st["device"]["state"], "online");
    let start = Instant::now();
    while devices
        .get("thermometer-1")
        .await?
        .status
        .unwrap_or_default()
        .state
        != "online"
    {
        anyhow::ensure!(start.elapsed() < LIMIT, "state never reached the status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Membership get.
    m.publish(
        "$hw/events/node/edge-1/membership/get",
        r#"{"event_id":"m1"}"#,
    )
    .await?;
    let mem = m
        .next_on("$hw/events/node/edge-1/membership/get/result")
        .await?;
    let ids: Vec<&str> = mem["devices"]
        .as_array()
        .context("devices")?
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["thermometer-1", "thermometer-2"]);

    // Bad input: each gets an error result and changes nothing.
    let before = edge_actuals(&db, "thermometer-1");
    let cases: Vec<(&str, Vec<u8>, i64)> = vec![
        (t1, b"{not json".to_vec(), 400),
        (
            "$hw/events/device/no-such-device",
            report.clone().into_bytes(),
            404,
        ),
        (
            t1,
            br#"{"event_id":"w1","twin":{"level":{"actual":{"value":"abc"}}}}"#.to_vec(),
            400,
        ),
        (
            t1,
            format!(
                r#"{{"event_id":"h1","twin":{{"switch":{{"actual":{{"value":"{}"}}}}}}}}"#,
                "x".repeat(100_000)
            )
            .into_bytes(),
            400,
        ),
    ];
    for (prefix, payload, code) in cases {
        m.publish(&format!("{prefix}/twin/update"), payload).await?;
        let r = m.next_on(&format!("{prefix}/twin/update/result")).await?;
        assert_eq!(r["code"], code, "{r}");
    }
    assert_eq!(
        edge_actuals(&db, "thermometer-1"),
        before,
        "store unchanged"
    );
    assert_eq!(
        reported(&devices, "thermometer-1", "switch")
            .await
            .as_deref(),
        Some("ON")
    );

    // A flood from one device: throttled with one log line, the other device unaffected.
    for i in 0..600 {
        let p =
            format!(r#"{{"event_id":"f{i}","twin":{{"level":{{"actual":{{"value":"{i}"}}}}}}}}"#);
        m.publish(&format!("{t1}/twin/update"), p).await?;
    }
    let t2 = "$hw/events/device/thermometer-2";
    m.publish(
        &format!("{t2}/twin/update"),
        r#"{"event_id":"o1","twin":{"level":{"actual":{"value":"5"}}}}"#,
    )
    .await?;
    wait_reported(&devices, "thermometer-2", "level", "5").await?;
    let log = s.log.clone();
    wait_until("one flood line", LIMIT, || {
        std::fs::read_to_string(&log)
            .map(|l| l.matches("flooding").count() == 1)
            .unwrap_or(false)
    })
    .await
    .with_context(|| std::fs::read_to_string(&s.log).unwrap_or_default())?;
    let text = std::fs::read_to_string(&s.log)?;
    assert_eq!(text.matches("flooding").count(), 1, "{text}");
    for what in [
        "invalid payload",
        "unknown device",
        "invalid value",
        "over the limit",
    ] {
        assert_eq!(
            text.matches(what).count(),
            1,
            "one line for {what:?}:\n{text}"
        );
    }
    Ok(())
}
