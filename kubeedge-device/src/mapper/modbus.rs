//! A Modbus TCP driver on tokio-modbus: coils, discrete inputs, holding and input registers,
//! with upstream's visitor settings (`register`, `offset` = the first address, `limit` = how
//! many registers, `scale`, `isSwap`, `isRegisterSwap`) and an optional `valueOffset` added
//! after scaling.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::Slave;

use super::{DeviceDriver, DeviceHealth, DriverError, PropertyConfig, ValueType};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum Register {
    /// Read/write bits.
    #[serde(alias = "Coil", alias = "coil")]
    CoilRegister,
    /// Read-only bits.
    #[serde(alias = "DiscreteInput", alias = "discreteInput")]
    DiscreteInputRegister,
    /// Read/write words.
    #[serde(alias = "Holding", alias = "holding")]
    HoldingRegister,
    /// Read-only words.
    #[serde(alias = "Input", alias = "input")]
    InputRegister,
}

fn one() -> u16 {
    1
}

fn unit() -> f64 {
    1.0
}

/// A property's Modbus visitor (`visitors.configData`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ModbusVisitor {
    /// The table.
    pub register: Register,
    /// The first address.
    pub offset: u16,
    /// How many registers (1 or 2 for words; 1 for bits).
    #[serde(default = "one")]
    pub limit: u16,
    /// Multiplier from raw to value.
    #[serde(default = "unit")]
    pub scale: f64,
    /// Added to the scaled value.
    #[serde(default)]
    pub value_offset: f64,
    /// Swap the bytes inside each register.
    #[serde(default)]
    pub is_swap: bool,
    /// Swap the order of the registers.
    #[serde(default)]
    pub is_register_swap: bool,
}

impl ModbusVisitor {
    fn of(p: &PropertyConfig) -> Result<Self, DriverError> {
        let v: Self =
            serde_json::from_value(p.visitor.clone()).map_err(|e| DriverError::Visitor {
                property: p.name.clone(),
                reason: e.to_string(),
            })?;
        let words = matches!(
            v.register,
            Register::HoldingRegister | Register::InputRegister
        );
        if (words && !(1..=2).contains(&v.limit)) || (!words && v.limit != 1) || v.scale == 0.0 {
            return Err(DriverError::Visitor {
                property: p.name.clone(),
                reason: format!("unsupported limit {} / scale {}", v.limit, v.scale),
            });
        }
        Ok(v)
    }

    fn decode(&self, words: &[u16]) -> i64 {
        let w: Vec<u16> = words
            .iter()
            .map(|w| if self.is_swap { w.swap_bytes() } else { *w })
            .collect();
        match w.as_slice() {
            [a] => i64::from(*a as i16),
            [a, b] => {
                let (hi, lo) = if self.is_register_swap {
                    (*b, *a)
                } else {
                    (*a, *b)
                };
                i64::from(((u32::from(hi) << 16) | u32::from(lo)) as i32)
            }
            _ => 0,
        }
    }

    fn encode(&self, raw: i64) -> Vec<u16> {
        let words = if self.limit == 2 {
            let v = raw as i32 as u32;
            let (hi, lo) = ((v >> 16) as u16, v as u16);
            if self.is_register_swap {
                vec![lo, hi]
            } else {
                vec![hi, lo]
            }
        } else {
            vec![raw as i16 as u16]
        };
        words
            .into_iter()
            .map(|w| if self.is_swap { w.swap_bytes() } else { w })
            .collect()
    }
}

fn format_value(v: f64, t: ValueType) -> String {
    match t {
        ValueType::Int => format!("{}", v.round() as i64),
        ValueType::Boolean => (v != 0.0).to_string(),
        _ => {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            }
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" => Some(true),
        "false" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A Modbus TCP device.
pub struct ModbusTcp {
    addr: SocketAddr,
    slave: u8,
    timeout: Duration,
    ctx: Option<Context>,
}

impl std::fmt::Debug for ModbusTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusTcp")
            .field("addr", &self.addr)
            .field("slave", &self.slave)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

impl ModbusTcp {
    /// A device at `addr` with unit id `slave`.
    pub fn new(addr: SocketAddr, slave: u8) -> Self {
        Self {
            addr,
            slave,
            timeout: Duration::from_secs(2),
            ctx: None,
        }
    }

    /// From a protocol `configData` such as `{"ip":"127.0.0.1","port":502,"slaveID":1}`.
    pub fn from_config(config: &serde_json::Value) -> Result<Self, DriverError> {
        let bad = |reason: &str| DriverError::Visitor {
            property: "protocol".into(),
            reason: reason.into(),
        };
        let ip = config
            .get("ip")
            .and_then(|v| v.as_str())
            .unwrap_or("127.0.0.1");
        let port = config
            .get("port")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .ok_or_else(|| bad("port is missing"))?;
        let port = u16::try_from(port).map_err(|_| bad("port out of range"))?;
        let slave = config
            .get("slaveID")
            .or_else(|| config.get("slaveId"))
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        let addr = format!("{ip}:{port}")
            .parse()
            .map_err(|_| bad("invalid ip"))?;
        Ok(Self::new(addr, u8::try_from(slave).unwrap_or(1)))
    }

    /// Bound every request by `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn ctx(&mut self) -> Result<&mut Context, DriverError> {
        self.ctx.as_mut().ok_or(DriverError::NotConnected)
    }

    /// A broken connection is dropped so that the next call reconnects.
    fn check<T>(&mut self, r: Result<T, DriverError>) -> Result<T, DriverError> {
        if matches!(r, Err(DriverError::Io(_))) {
            self.ctx = None;
        }
        r
    }
}

async fn timed<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = tokio_modbus::Result<T>>,
) -> Result<T, DriverError> {
    match tokio::time::timeout(timeout, f).await {
        Err(_) => Err(DriverError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "modbus request timed out",
        ))),
        Ok(Err(tokio_modbus::Error::Transport(e))) => Err(DriverError::Io(e)),
        Ok(Err(e)) => Err(DriverError::Io(std::io::Error::other(e.to_string()))),
        Ok(Ok(Err(code))) => Err(DriverError::Refused(format!("{code:?}"))),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

impl DeviceDriver for ModbusTcp {
    async fn connect(&mut self) -> Result<(), DriverError> {
        let c = tokio::time::timeout(
            self.timeout,
            tcp::connect_slave(self.addr, Slave(self.slave)),
        )
        .await
        .map_err(|_| {
            DriverError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "modbus connect timed out",
            ))
        })??;
        self.ctx = Some(c);
        Ok(())
    }

    async fn read(&mut self, p: &PropertyConfig) -> Result<String, DriverError> {
        let v = ModbusVisitor::of(p)?;
        let (addr, cnt, t) = (v.offset, v.limit, self.timeout);
        let raw = match v.register {
            Register::CoilRegister | Register::DiscreteInputRegister => {
                let coil = v.register == Register::CoilRegister;
                let ctx = self.ctx()?;
                let r = if coil {
                    timed(t, ctx.read_coils(addr, 1)).await
                } else {
                    timed(t, ctx.read_discrete_inputs(addr, 1)).await
                };
                let bits = self.check(r)?;
                let on = bits.first().copied().unwrap_or(false);
                return Ok(match p.value_type {
                    ValueType::Int | ValueType::Float => u8::from(on).to_string(),
                    _ => on.to_string(),
                });
            }
            Register::HoldingRegister => {
                let r = timed(t, self.ctx()?.read_holding_registers(addr, cnt)).await;
                self.check(r)?
            }
            Register::InputRegister => {
                let r = timed(t, self.ctx()?.read_input_registers(addr, cnt)).await;
                self.check(r)?
            }
        };
        let value = v.decode(&raw) as f64 * v.scale + v.value_offset;
        Ok(format_value(value, p.value_type))
    }

    async fn write(&mut self, p: &PropertyConfig, value: &str) -> Result<(), DriverError> {
        let v = ModbusVisitor::of(p)?;
        let bad = || DriverError::Value {
            property: p.name.clone(),
            value: value.to_owned(),
        };
        if !p.writable {
            return Err(DriverError::ReadOnly(p.name.clone()));
        }
        let t = self.timeout;
        match v.register {
            Register::CoilRegister => {
                let bit = parse_bool(value).ok_or_else(bad)?;
                let r = timed(t, self.ctx()?.write_single_coil(v.offset, bit)).await;
                self.check(r)
            }
            Register::HoldingRegister => {
                let num: f64 = match p.value_type {
                    ValueType::Boolean => {
                        if parse_bool(value).ok_or_else(bad)? {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    _ => value.trim().parse().map_err(|_| bad())?,
                };
                let raw = ((num - v.value_offset) / v.scale).round();
                let (lo, hi) = if v.limit == 2 {
                    (f64::from(i32::MIN), f64::from(u32::MAX))
                } else {
                    (f64::from(i16::MIN), f64::from(u16::MAX))
                };
                if !raw.is_finite() || raw < lo || raw > hi {
                    return Err(bad());
                }
                let words = v.encode(raw as i64);
                let r = if let [w] = words.as_slice() {
                    timed(t, self.ctx()?.write_single_register(v.offset, *w)).await
                } else {
                    timed(t, self.ctx()?.write_multiple_registers(v.offset, &words)).await
                };
                self.check(r)
            }
            Register::DiscreteInputRegister | Register::InputRegister => {
                Err(DriverError::ReadOnly(p.name.clone()))
            }
        }
    }

    async fn health(&mut self) -> DeviceHealth {
        if self.ctx.is_none() && self.connect().await.is_err() {
            return DeviceHealth::Offline;
        }
        DeviceHealth::Online
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_scale() {
        let v: ModbusVisitor = serde_json::from_value(serde_json::json!({
            "register": "HoldingRegister", "offset": 3, "limit": 2, "scale": 0.1, "isRegisterSwap": true
        }))
        .unwrap();
        assert_eq!(v.decode(&v.encode(123_456)), 123_456);
        assert_eq!(v.encode(1), vec![1, 0], "low word first when swapped");
        let s: ModbusVisitor = serde_json::from_value(serde_json::json!({
            "register": "InputRegister", "offset": 0, "isSwap": true
        }))
        .unwrap();
        assert_eq!(s.decode(&[0x0100]), 1);
        assert_eq!(s.decode(&s.encode(-2)), -2);
        assert_eq!(format_value(21.5, ValueType::Float), "21.5");
        assert_eq!(format_value(21.0, ValueType::Float), "21");
        assert_eq!(format_value(20.6, ValueType::Int), "21");
        assert_eq!(parse_bool("ON"), Some(true));
    }
}
