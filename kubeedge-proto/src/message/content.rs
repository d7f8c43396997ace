//! The message `content`: raw JSON kept byte-exact, with typed views over it.

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{ContentError, JsonError};

/// `content`: any JSON value, kept as the exact JSON text that was received so that
/// re-encoding preserves key order, number text and string-versus-object typing.
#[derive(Clone)]
pub struct Content(Box<RawValue>);

/// Contents are equal when their JSON text is identical.
impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Content {}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.0.get();
        if raw.len() > 256 {
            let cut = (0..=256)
                .rev()
                .find(|i| raw.is_char_boundary(*i))
                .unwrap_or(0);
            write!(f, "Content({}… {} bytes)", &raw[..cut], raw.len())
        } else {
            write!(f, "Content({raw})")
        }
    }
}

impl Default for Content {
    fn default() -> Self {
        Self::null()
    }
}

impl Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self)
    }
}

impl Content {
    /// JSON `null` (Go's nil content).
    pub fn null() -> Self {
        Self(raw_from_trusted("null".to_owned()))
    }

    /// A JSON string, such as `"OK"` or a patch that upstream sends as a string holding JSON.
    pub fn string(text: &str) -> Self {
        // Serialising a &str cannot fail.
        let json = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
        Self(raw_from_trusted(json))
    }

    /// The JSON serialisation of `value` (an object for Kubernetes objects and typed payloads).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, ContentError> {
        serde_json::value::to_raw_value(value)
            .map(Self)
            .map_err(|e| ContentError::Encode(JsonError::from(e)))
    }

    /// Content from JSON text, validated.
    pub fn from_json_text(text: String) -> Result<Self, ContentError> {
        RawValue::from_string(text)
            .map(Self)
            .map_err(|e| ContentError::Decode(JsonError::from(e)))
    }

    /// The JSON text exactly as it travels.
    pub fn raw_json(&self) -> &str {
        self.0.get()
    }

    /// True for JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }

    /// True when the content is a JSON string.
    pub fn is_string(&self) -> bool {
        self.0.get().starts_with('"')
    }

    /// The string value when the content is a JSON string.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        if !self.is_string() {
            return None;
        }
        let raw = self.0.get();
        let inner = &raw[1..raw.len() - 1];
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    }

    /// Upstream's `GetContentData`: a JSON string yields its text (not re-quoted); any other
    /// value yields its compact JSON serialisation.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        if let Some(s) = self.as_str() {
            return match s {
                Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            };
        }
        let raw = self.0.get();
        if is_compact(raw) {
            return Cow::Borrowed(raw.as_bytes());
        }
        match serde_json::from_str::<serde_json::Value>(raw).and_then(|v| serde_json::to_vec(&v)) {
            Ok(v) => Cow::Owned(v),
            Err(_) => Cow::Borrowed(raw.as_bytes()),
        }
    }

    /// Decode the content into `T` the way upstream consumers do: from [`Content::bytes`], so
    /// that both an embedded object and a string holding JSON decode.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ContentError> {
        serde_json::from_slice(&self.bytes()).map_err(|e| ContentError::Decode(JsonError::from(e)))
    }
}

/// Build a RawValue from JSON text produced by serde_json itself.
fn raw_from_trusted(json: String) -> Box<RawValue> {
    match RawValue::from_string(json) {
        Ok(raw) => raw,
        // Unreachable for serde_json output; fall back to null rather than panic.
        Err(_) => serde_json::value::to_raw_value(&()).unwrap_or_else(|_| null_raw()),
    }
}

fn null_raw() -> Box<RawValue> {
    // `RawValue::NULL` is a &'static RawValue; Box it by going through its text.
    RawValue::NULL.to_owned()
}

/// True when `raw` has no insignificant whitespace (outside strings).
fn is_compact(raw: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for b in raw.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            return false;
        }
    }
    true
}
