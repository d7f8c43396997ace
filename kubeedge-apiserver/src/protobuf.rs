//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send for `kubectl create <kind>` and `kubectl expose`.
//!
//! The body is the `k8s\0` magic followed by a `runtime.Unknown` message: the type meta and the
//! object's own protobuf bytes. The object is decoded with a field table per message type
//! (field number → JSON name and type, from the published `generated.proto` schemas) into the
//! same JSON the JSON path produces. Only the kinds and fields listed here are known: a body
//! with any other kind or field is refused (415) rather than stored with data missing.

use base64::Engine;
use serde_json::{Map, Value};

mod schema;

use schema::{schema, Kind, Msg};
use Kind::*;

/// Why a protobuf body cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtoError {
    #[error("protobuf body without the k8s envelope")]
    NoEnvelope,
    #[error("malformed protobuf in {0}")]
    Malformed(&'static str),
    #[error("protobuf bodies of {0} are not supported; send json")]
    UnknownKind(String),
    #[error("protobuf field {field} of {message} is not supported; send json")]
    UnknownField { message: &'static str, field: u32 },
}

/// A protobuf wire reader.
struct Reader<'a> {
    buf: &'a [u8],
    at: &'static str,
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(ProtoError::Malformed(self.at))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed(self.at))
    }

    /// The next field. Fixed-width wire types appear in none of the known messages.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = u32::try_from(tag >> 3).map_err(|_| ProtoError::Malformed(self.at))?;
        match tag & 7 {
            0 => Ok(Some((field, Wire::Varint(self.varint()?)))),
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed(self.at))?;
                if len > self.buf.len() {
                    return Err(ProtoError::Malformed(self.at));
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                Ok(Some((field, Wire::Bytes(data))))
            }
            1 | 5 => Err(ProtoError::UnknownField {
                message: self.at,
                field,
            }),
            _ => Err(ProtoError::Malformed(self.at)),
        }
    }
}

fn bytes<'a>(w: Wire<'a>, at: &'static str) -> Result<&'a [u8], ProtoError> {
    match w {
        Wire::Bytes(b) => Ok(b),
        Wire::Varint(_) => Err(ProtoError::Malformed(at)),
    }
}

fn text(w: Wire<'_>, at: &'static str) -> Result<String, ProtoError> {
    String::from_utf8(bytes(w, at)?.to_vec()).map_err(|_| ProtoError::Malformed(at))
}

fn decode_msg(buf: &[u8], msg: &'static Msg) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    let mut r = Reader { buf, at: msg.name };
    while let Some((field, wire)) = r.next()? {
        let Some(&(_, name, kind)) = msg.fields.iter().find(|(n, _, _)| *n == field) else {
            // Go writes every non-pointer field, set or not: an unknown field holding its zero
            // value carries nothing; anything else would be lost, so it is refused.
            match wire {
                Wire::Varint(0) => continue,
                Wire::Bytes([]) => continue,
                _ => {
                    return Err(ProtoError::UnknownField {
                        message: msg.name,
                        field,
                    })
                }
            }
        };
        let at = msg.name;
        match kind {
            Str => {
                let t = text(wire, at)?;
                if !t.is_empty() {
                    out.insert(name.into(), Value::String(t));
                }
            }
            Int | OptInt => match wire {
                // Protobuf int32/int64 are two's complement in a varint.
                Wire::Varint(v) => {
                    if v != 0 || matches!(kind, OptInt) {
                        out.insert(name.into(), Value::from(v as i64));
                    }
                }
                Wire::Bytes(_) => return Err(ProtoError::Malformed(at)),
            },
            Bool => match wire {
                Wire::Varint(v) => {
                    if v != 0 {
                        out.insert(name.into(), Value::Bool(true));
                    }
                }
                Wire::Bytes(_) => return Err(ProtoError::Malformed(at)),
            },
            Msg(m) => {
                out.insert(name.into(), decode_msg(bytes(wire, at)?, m)?);
            }
            RepStr => push(&mut out, name, Value::String(text(wire, at)?)),
            RepMsg(m) => push(&mut out, name, decode_msg(bytes(wire, at)?, m)?),
            MapStr | MapBytes | MapQuantity => {
                let (k, v) = map_entry(bytes(wire, at)?, kind, at)?;
                let entry = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(k, v);
                }
            }
            Time => {
                let mut t = Reader {
                    buf: bytes(wire, at)?,
                    at,
                };
                let mut secs = 0i64;
                while let Some((f, w)) = t.next()? {
                    if let (1, Wire::Varint(v)) = (f, w) {
                        secs = v as i64;
                    }
                }
                if secs != 0 {
                    let ts = jiff::Timestamp::from_second(secs)
                        .map_err(|_| ProtoError::Malformed(at))?;
                    out.insert(
                        name.into(),
                        Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                }
            }
            IntOrStr => {
                let mut t = Reader {
                    buf: bytes(wire, at)?,
                    at,
                };
                let (mut ty, mut int, mut s) = (0u64, 0i64, String::new());
                while let Some((f, w)) = t.next()? {
                    match (f, w) {
                        (1, Wire::Varint(v)) => ty = v,
                        (2, Wire::Varint(v)) => int = v as i64,
                        (3, w) => s = text(w, at)?,
                        _ => return Err(ProtoError::Malformed(at)),
                    }
                }
                out.insert(
                    name.into(),
                    if ty == 1 {
                        Value::String(s)
                    } else {
                        Value::from(int)
                    },
                );
            }
        }
    }
    Ok(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: &str, v: Value) {
    let entry = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = entry {
        a.push(v);
    }
}

fn map_entry(buf: &[u8], kind: Kind, at: &'static str) -> Result<(String, Value), ProtoError> {
    let mut r = Reader { buf, at };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while let Some((f, w)) = r.next()? {
        match f {
            1 => key = text(w, at)?,
            2 => {
                value = match kind {
                    MapBytes => Value::String(
                        base64::engine::general_purpose::STANDARD.encode(bytes(w, at)?),
                    ),
                    MapQuantity => {
                        // resource.Quantity { string = 1 }
                        let mut q = Reader {
                            buf: bytes(w, at)?,
                            at,
                        };
                        let mut s = String::new();
                        while let Some((qf, qw)) = q.next()? {
                            if qf == 1 {
                                s = text(qw, at)?;
                            }
                        }
                        Value::String(s)
                    }
                    _ => Value::String(text(w, at)?),
                }
            }
            _ => return Err(ProtoError::Malformed(at)),
        }
    }
    Ok((key, value))
}

/// Decode a `k8s\0`-enveloped protobuf object into its JSON form (with apiVersion and kind).
pub(crate) fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let raw = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoEnvelope)?;
    let mut r = Reader {
        buf: raw,
        at: "Unknown",
    };
    let (mut api_version, mut kind, mut object) = (String::new(), String::new(), None);
    while let Some((field, wire)) = r.next()? {
        match field {
            1 => {
                let mut t = Reader {
                    buf: bytes(wire, "TypeMeta")?,
                    at: "TypeMeta",
                };
                while let Some((f, w)) = t.next()? {
                    match f {
                        1 => api_version = text(w, "TypeMeta")?,
                        2 => kind = text(w, "TypeMeta")?,
                        _ => {}
                    }
                }
            }
            2 => object = Some(bytes(wire, "Unknown")?),
            3 | 4 => {}
            _ => return Err(ProtoError::Malformed("Unknown")),
        }
    }
    let msg = schema(&api_version, &kind)
        .ok_or_else(|| ProtoError::UnknownKind(format!("{api_version} {kind}")))?;
    let mut v = decode_msg(object.unwrap_or_default(), msg)?;
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
