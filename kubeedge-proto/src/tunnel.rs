//! The stream-tunnel frame codec for `kubectl logs/exec/attach` and metrics (PROTOCOL.md §7.3):
//! `uvarint(connectID) ‖ uvarint(messageType) ‖ data`, one frame per websocket message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{JsonError, TunnelError};

/// The largest frame upstream's reader accepts (1 MiB).
pub const MAX_TUNNEL_FRAME: usize = 1024 * 1024;

/// The message type of a tunnel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelMessageType {
    /// 0: open a logs stream.
    LogsConnect,
    /// 1: open an exec stream.
    ExecConnect,
    /// 2: open a metrics request.
    MetricConnect,
    /// 3: payload bytes of an open stream.
    Data,
    /// 4: the stream is finished.
    RemoveConnect,
    /// 5: the tunnel session is closed (data = reason).
    CloseConnect,
    /// 6: open an attach stream (upstream HEAD).
    AttachConnect,
    /// Any other value, kept for forward compatibility.
    Unknown(u64),
}

impl TunnelMessageType {
    /// The numeric wire value.
    pub fn code(self) -> u64 {
        match self {
            Self::LogsConnect => 0,
            Self::ExecConnect => 1,
            Self::MetricConnect => 2,
            Self::Data => 3,
            Self::RemoveConnect => 4,
            Self::CloseConnect => 5,
            Self::AttachConnect => 6,
            Self::Unknown(n) => n,
        }
    }

    /// The type for a numeric wire value.
    pub fn from_code(code: u64) -> Self {
        match code {
            0 => Self::LogsConnect,
            1 => Self::ExecConnect,
            2 => Self::MetricConnect,
            3 => Self::Data,
            4 => Self::RemoveConnect,
            5 => Self::CloseConnect,
            6 => Self::AttachConnect,
            n => Self::Unknown(n),
        }
    }
}

/// One tunnel frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelFrame {
    /// The per-request connection id chosen by the cloud.
    pub connect_id: u64,
    /// What the frame carries.
    pub message_type: TunnelMessageType,
    /// The rest of the frame.
    pub data: Vec<u8>,
}

impl TunnelFrame {
    /// A frame.
    pub fn new(connect_id: u64, message_type: TunnelMessageType, data: impl Into<Vec<u8>>) -> Self {
        Self {
            connect_id,
            message_type,
            data: data.into(),
        }
    }

    /// Decode a frame, refusing anything over [`MAX_TUNNEL_FRAME`].
    pub fn decode(frame: &[u8]) -> Result<Self, TunnelError> {
        if frame.len() > MAX_TUNNEL_FRAME {
            return Err(TunnelError::TooLarge {
                size: frame.len(),
                max: MAX_TUNNEL_FRAME,
            });
        }
        let (connect_id, n) = read_uvarint(frame, "connect id")?;
        let rest = &frame[n..];
        let (code, m) = read_uvarint(rest, "message type")?;
        Ok(Self {
            connect_id,
            message_type: TunnelMessageType::from_code(code),
            data: rest[m..].to_vec(),
        })
    }

    /// Encode the frame (send it as a websocket text frame to upstream peers).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.data.len());
        write_uvarint(&mut out, self.connect_id);
        write_uvarint(&mut out, self.message_type.code());
        out.extend_from_slice(&self.data);
        out
    }
}

/// Go `binary.Uvarint`: LEB128, at most 10 bytes, the 10th byte at most 1.
fn read_uvarint(buf: &[u8], field: &'static str) -> Result<(u64, usize), TunnelError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(TunnelError::VarintOverflow { field });
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= 10 {
        Err(TunnelError::VarintOverflow { field })
    } else {
        Err(TunnelError::Truncated { field })
    }
}

fn write_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Go's `net/url.URL` as `encoding/json` writes it (every field, no omitempty).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct GoUrl {
    /// `Scheme`.
    #[serde(default)]
    pub scheme: String,
    /// `Opaque`.
    #[serde(default)]
    pub opaque: String,
    /// `User`: Go's `*Userinfo` has no exported fields, so it is `null` or `{}`.
    #[serde(default)]
    pub user: Option<serde_json::Map<String, serde_json::Value>>,
    /// `Host`.
    #[serde(default)]
    pub host: String,
    /// `Path`.
    #[serde(default)]
    pub path: String,
    /// `RawPath`.
    #[serde(default)]
    pub raw_path: String,
    /// `OmitHost` (newer Go only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_host: Option<bool>,
    /// `ForceQuery`.
    #[serde(default)]
    pub force_query: bool,
    /// `RawQuery`.
    #[serde(default)]
    pub raw_query: String,
    /// `Fragment`.
    #[serde(default)]
    pub fragment: String,
    /// `RawFragment`.
    #[serde(default)]
    pub raw_fragment: String,
}

impl GoUrl {
    /// `scheme://host/path?query` as the edge dials it.
    pub fn to_url_string(&self) -> String {
        let mut s = format!("{}://{}{}", self.scheme, self.host, self.path);
        if !self.raw_query.is_empty() || self.force_query {
            s.push('?');
            s.push_str(&self.raw_query);
        }
        s
    }
}

/// The JSON payload of a `*_CONNECT` frame: where the edge should send the request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamConnect {
    /// `MessID`: equals the frame's connect id.
    #[serde(rename = "MessID", default)]
    pub mess_id: u64,
    /// `url`: the kubelet URL (scheme `http`, host `127.0.0.1:10350`).
    #[serde(default)]
    pub url: GoUrl,
    /// `header`: the request headers.
    #[serde(default)]
    pub header: BTreeMap<String, Vec<String>>,
    /// `method`: present for exec and attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl StreamConnect {
    /// Decode a connect payload.
    pub fn decode(data: &[u8]) -> Result<Self, TunnelError> {
        serde_json::from_slice(data).map_err(|e| TunnelError::Payload(JsonError::from(e)))
    }

    /// Encode a connect payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_go_vectors() {
        // Go: binary.PutUvarint(300) = ac 02
        let f = TunnelFrame::new(300, TunnelMessageType::Data, b"hi".to_vec());
        assert_eq!(f.encode(), vec![0xac, 0x02, 0x03, b'h', b'i']);
        assert_eq!(TunnelFrame::decode(&f.encode()).unwrap(), f);
        let max = TunnelFrame::new(u64::MAX, TunnelMessageType::Unknown(99), Vec::new());
        assert_eq!(TunnelFrame::decode(&max.encode()).unwrap(), max);
    }

    #[test]
    fn bad_varints() {
        assert_eq!(
            TunnelFrame::decode(&[]),
            Err(TunnelError::Truncated {
                field: "connect id"
            })
        );
        assert_eq!(
            TunnelFrame::decode(&[0x80]),
            Err(TunnelError::Truncated {
                field: "connect id"
            })
        );
        assert_eq!(
            TunnelFrame::decode(&[1]),
            Err(TunnelError::Truncated {
                field: "message type"
            })
        );
        assert_eq!(
            TunnelFrame::decode(&[0xff; 11]),
            Err(TunnelError::VarintOverflow {
                field: "connect id"
            })
        );
        let mut ten = vec![0xff; 9];
        ten.push(0x02);
        assert_eq!(
            TunnelFrame::decode(&ten),
            Err(TunnelError::VarintOverflow {
                field: "connect id"
            })
        );
        let big = vec![0u8; MAX_TUNNEL_FRAME + 1];
        assert!(matches!(
            TunnelFrame::decode(&big),
            Err(TunnelError::TooLarge { .. })
        ));
    }

    #[test]
    fn connect_payload() {
        let json = br#"{"MessID":7,"url":{"Scheme":"http","Opaque":"","User":null,"Host":"127.0.0.1:10350","Path":"/containerLogs/default/p/c","RawPath":"","ForceQuery":false,"RawQuery":"follow=true","Fragment":"","RawFragment":""},"header":{"Accept":["*/*"]}}"#;
        let c = StreamConnect::decode(json).unwrap();
        assert_eq!(c.mess_id, 7);
        assert_eq!(
            c.url.to_url_string(),
            "http://127.0.0.1:10350/containerLogs/default/p/c?follow=true"
        );
        let back: serde_json::Value = serde_json::from_slice(&c.encode()).unwrap();
        let orig: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(back, orig);
        assert!(StreamConnect::decode(b"{\"MessID\":-1}").is_err());
    }
}
