//! Typed errors of the wire formats. Messages are lowercase and say what was wrong.

use std::fmt;

/// What kind of JSON problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// Not JSON at all (bad token, trailing characters, too deep nesting).
    Syntax,
    /// The input ended in the middle of a value.
    Truncated,
    /// Valid JSON with the wrong shape (wrong type, number out of range, missing field).
    Data,
    /// An I/O error from the writer (encoding only).
    Io,
}

impl fmt::Display for JsonErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "malformed json",
            Self::Truncated => "truncated json",
            Self::Data => "unexpected json shape",
            Self::Io => "i/o failure",
        })
    }
}

/// A JSON decode or encode failure with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at line {line} column {column}: {detail}")]
pub struct JsonError {
    /// The kind of problem.
    pub kind: JsonErrorKind,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// serde_json's description.
    pub detail: String,
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Syntax => JsonErrorKind::Syntax,
            Category::Eof => JsonErrorKind::Truncated,
            Category::Data => JsonErrorKind::Data,
            Category::Io => JsonErrorKind::Io,
        };
        let mut detail = e.to_string();
        // serde_json appends " at line L column C"; we keep the position in fields.
        if let Some(at) = detail.rfind(" at line ") {
            detail.truncate(at);
        }
        Self {
            kind,
            line: e.line(),
            column: e.column(),
            detail,
        }
    }
}

/// A message content could not be encoded or decoded into the requested type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The content is not the expected JSON.
    #[error("invalid message content")]
    Decode(#[source] JsonError),
    /// The value could not be serialised.
    #[error("content could not be encoded")]
    Encode(#[source] JsonError),
}

/// A hub (websocket) frame could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than the configured maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Frame size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The frame carries no payload.
    #[error("empty frame")]
    Empty,
    /// A text frame is not valid UTF-8.
    #[error("text frame is not valid utf-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The payload is not a beehive message.
    #[error("frame is not a valid message")]
    Json(#[source] JsonError),
}

/// A stream-tunnel frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The frame is larger than the tunnel limit.
    #[error("tunnel frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A varint field ended early.
    #[error("tunnel frame truncated in the {field} varint")]
    Truncated {
        /// `connect id` or `message type`.
        field: &'static str,
    },
    /// A varint field does not fit in 64 bits.
    #[error("tunnel frame {field} varint overflows 64 bits")]
    VarintOverflow {
        /// `connect id` or `message type`.
        field: &'static str,
    },
    /// A connect payload is not the expected JSON.
    #[error("invalid tunnel connect payload")]
    Payload(#[source] JsonError),
}

/// A join token or its JWT part is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is longer than any real token can be.
    #[error("token of {len} bytes is longer than the maximum of {max} bytes")]
    TooLong {
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Wrong number of dot-separated parts.
    #[error("token has {found} dot-separated parts, expected {expected}")]
    PartCount {
        /// Parts found.
        found: usize,
        /// Parts expected (4 for a join token, 3 for a JWT).
        expected: usize,
    },
    /// The CA hash is not 64 lowercase hex digits.
    #[error("token ca hash is not 64 hex digits")]
    MalformedCaHash,
    /// The CA certificate does not match the token's hash.
    #[error("ca certificate hash {actual} does not match the token's {expected}")]
    CaHashMismatch {
        /// Hash in the token.
        expected: String,
        /// Hash of the CA certificate presented.
        actual: String,
    },
    /// A JWT part is not valid base64url.
    #[error("jwt {part} is not valid base64url")]
    Base64 {
        /// `header`, `claims` or `signature`.
        part: &'static str,
    },
    /// A JWT part is not the expected JSON.
    #[error("jwt {part} is not valid json")]
    Json {
        /// `header` or `claims`.
        part: &'static str,
        /// The JSON problem.
        #[source]
        source: JsonError,
    },
    /// The JWT algorithm is not HS256.
    #[error("jwt algorithm {0:?} is not HS256")]
    Algorithm(String),
    /// The signature does not verify with the CA key.
    #[error("jwt signature does not verify")]
    Signature,
    /// The claims carry no `exp`.
    #[error("jwt has no exp claim")]
    MissingExpiry,
    /// The token expired.
    #[error("jwt expired at {exp} (now {now})")]
    Expired {
        /// `exp` claim, Unix seconds.
        exp: i64,
        /// The time checked against.
        now: i64,
    },
    /// The HMAC key is unusable (empty).
    #[error("empty signing key")]
    EmptyKey,
}

/// An MQTT topic name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty topic.
    #[error("empty topic")]
    Empty,
    /// Longer than MQTT allows.
    #[error("topic of {0} bytes exceeds 65535 bytes")]
    TooLong(usize),
    /// Topic names must not contain `+`, `#` or NUL.
    #[error("topic name contains the forbidden character {0:?}")]
    ForbiddenChar(char),
}

/// A resource path is unusable for the requested conversion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// A node id was required but is empty or contains `/`.
    #[error("invalid node id {0:?}")]
    InvalidNodeId(String),
}

/// An Application key is not `/<group|core>/<version>/<resource>/<ns|null>/<name|null>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationKeyError {
    /// The key does not start with `/`.
    #[error("application key {0:?} does not start with '/'")]
    NoLeadingSlash(String),
    /// Not five segments.
    #[error("application key {key:?} has {found} segments, expected 5")]
    SegmentCount {
        /// The key.
        key: String,
        /// How many segments it has.
        found: usize,
    },
    /// A segment is empty.
    #[error("application key {0:?} has an empty segment")]
    EmptySegment(String),
}
