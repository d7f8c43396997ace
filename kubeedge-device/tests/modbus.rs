//! The Modbus TCP driver against pymodbus (a server we did not write): coils, discrete inputs,
//! holding and input registers, scale and value offset, 32-bit words, read-only refusals, and
//! a reconnect after the server comes back.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kubeedge_device::mapper::{
    DeviceDriver, DeviceHealth, DriverError, ModbusTcp, PropertyConfig, ValueType,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

struct Pymodbus {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl Pymodbus {
    async fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/modbus/server.py");
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
        ensure!(first.as_deref() == Some("READY"), "pymodbus: {first:?}");
        Ok(Self {
            _child: child,
            stdin,
            lines,
            port,
        })
    }

    async fn cmd(&mut self, line: &str) -> Result<String> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        let l = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await??
            .context("pymodbus exited")?;
        ensure!(!l.starts_with("ERR"), "{l}");
        Ok(l)
    }
}

fn prop(name: &str, t: ValueType, visitor: serde_json::Value) -> PropertyConfig {
    PropertyConfig::new(name, t, visitor)
}

#[tokio::test]
async fn every_table_scale_and_refusals() -> Result<()> {
    let mut srv = Pymodbus::start().await?;
    let mut d =
        ModbusTcp::from_config(&json!({"ip": "127.0.0.1", "port": srv.port, "slaveID": 1}))?
            .with_timeout(Duration::from_secs(2));
    d.connect().await?;
    assert_eq!(d.health().await, DeviceHealth::Online);

    // Holding register with scale and value offset, both ways.
    let hr = prop(
        "temp",
        ValueType::Float,
        json!({"register": "HoldingRegister", "offset": 4, "scale": 0.1, "valueOffset": -10}),
    );
    d.write(&hr, "12.5").await?;
    assert_eq!(srv.cmd("get hr 4").await?, "225", "(12.5 + 10) / 0.1");
    srv.cmd("set hr 4 300").await?;
    assert_eq!(d.read(&hr).await?, "20");

    // Two registers as one 32-bit value.
    let wide = prop(
        "count",
        ValueType::Int,
        json!({"register": "HoldingRegister", "offset": 10, "limit": 2}),
    );
    d.write(&wide, "70000").await?;
    assert_eq!(srv.cmd("get hr 10").await?, "1");
    assert_eq!(srv.cmd("get hr 11").await?, "4464");
    assert_eq!(d.read(&wide).await?, "70000");

    // Coils.
    let coil = prop(
        "switch",
        ValueType::Boolean,
        json!({"register": "CoilRegister", "offset": 3}),
    );
    d.write(&coil, "true").await?;
    assert_eq!(srv.cmd("get co 3").await?, "1");
    assert_eq!(d.read(&coil).await?, "true");
    srv.cmd("set co 3 0").await?;
    assert_eq!(d.read(&coil).await?, "false");

    // Input registers and discrete inputs: readable, never writable.
    let ir = prop(
        "level",
        ValueType::Int,
        json!({"register": "InputRegister", "offset": 3}),
    );
    assert_eq!(d.read(&ir).await?, srv.cmd("get ir 3").await?);
    let di = prop(
        "door",
        ValueType::Boolean,
        json!({"register": "DiscreteInputRegister", "offset": 0}),
    );
    assert_eq!(d.read(&di).await?, "true");
    assert!(matches!(
        d.write(&ir, "1").await,
        Err(DriverError::ReadOnly(_))
    ));
    assert!(matches!(
        d.write(&di, "true").await,
        Err(DriverError::ReadOnly(_))
    ));

    // Bad values and visitors are refused without touching the device.
    assert!(matches!(
        d.write(&hr, "hot").await,
        Err(DriverError::Value { .. })
    ));
    assert!(matches!(
        d.write(&hr, "1e9").await,
        Err(DriverError::Value { .. })
    ));
    let bad = prop(
        "x",
        ValueType::Int,
        json!({"register": "Nope", "offset": 1}),
    );
    assert!(matches!(
        d.read(&bad).await,
        Err(DriverError::Visitor { .. })
    ));
    assert_eq!(srv.cmd("get hr 4").await?, "300");
    Ok(())
}

#[tokio::test]
async fn unreachable_then_reconnects() -> Result<()> {
    // A port bound but not listening: held for the whole test (a released one could go to
    // the simulator another test starts), and refused.
    let reserved = tokio::net::TcpSocket::new_v4()?;
    reserved.bind("127.0.0.1:0".parse()?)?;
    let port = reserved.local_addr()?.port();
    let mut d = ModbusTcp::from_config(&json!({"ip": "127.0.0.1", "port": port}))?
        .with_timeout(Duration::from_millis(500));
    assert!(d.connect().await.is_err());
    assert_eq!(d.health().await, DeviceHealth::Offline);
    let hr = prop(
        "v",
        ValueType::Int,
        json!({"register": "HoldingRegister", "offset": 1}),
    );
    assert!(matches!(d.read(&hr).await, Err(DriverError::NotConnected)));
    drop(reserved);
    let srv = Pymodbus::start().await?;
    let mut d = ModbusTcp::from_config(&json!({"ip": "127.0.0.1", "port": srv.port}))?;
    assert_eq!(d.health().await, DeviceHealth::Online, "health connects");
    assert_eq!(d.read(&hr).await?, "0");
    Ok(())
}
