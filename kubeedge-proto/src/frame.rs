//! The hub link frame codec (PROTOCOL.md §2.1): one beehive message per websocket message.
//! Upstream writes text frames holding the JSON and a trailing newline, and reads text or
//! binary frames holding one JSON document.

use crate::error::FrameError;
use crate::message::Message;

/// The websocket opcode a payload arrived with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Opcode 1: must be UTF-8.
    Text,
    /// Opcode 2: accepted as upstream's reader does.
    Binary,
}

/// Encoder/decoder of hub frames with a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubCodec {
    max_frame_size: usize,
}

impl Default for HubCodec {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_FRAME_SIZE)
    }
}

impl HubCodec {
    /// Default frame limit: 16 MiB, ten times the largest object etcd stores.
    pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

    /// A codec refusing frames larger than `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        Self { max_frame_size }
    }

    /// The configured limit.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Decode one frame payload. A trailing newline (upstream's writer adds one) is accepted.
    pub fn decode(&self, kind: FrameKind, payload: &[u8]) -> Result<Message, FrameError> {
        if payload.len() > self.max_frame_size {
            return Err(FrameError::TooLarge {
                size: payload.len(),
                max: self.max_frame_size,
            });
        }
        if kind == FrameKind::Text {
            if let Err(e) = std::str::from_utf8(payload) {
                return Err(FrameError::InvalidUtf8 {
                    valid_up_to: e.valid_up_to(),
                });
            }
        }
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Err(FrameError::Empty);
        }
        Message::from_json(payload).map_err(FrameError::Json)
    }

    /// Encode a message as upstream's writer does: compact JSON and a trailing newline, to be
    /// sent as a text frame.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(256 + msg.content.raw_json().len());
        self.encode_into(msg, &mut out)?;
        Ok(out)
    }

    /// Append the encoding of `msg` to `out`; on error `out` is left as it was.
    pub fn encode_into(&self, msg: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = out.len();
        msg.write_json(out);
        out.push(b'\n');
        let size = out.len() - start;
        if size > self.max_frame_size {
            out.truncate(start);
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::JsonErrorKind;

    const KEEPALIVE: &str = r#"{"header":{"msg_id":"a","timestamp":1},"route":{"source":"websocket","group":"resource","operation":"keepalive","resource":"node"},"content":"ping"}"#;

    #[test]
    fn text_with_newline_and_binary() {
        let c = HubCodec::default();
        let framed = format!("{KEEPALIVE}\n");
        let m = c.decode(FrameKind::Text, framed.as_bytes()).unwrap();
        assert_eq!(c.encode(&m).unwrap(), framed.as_bytes());
        assert_eq!(
            c.decode(FrameKind::Binary, KEEPALIVE.as_bytes()).unwrap(),
            m
        );
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        let c = HubCodec::new(64);
        let big = vec![b' '; 65];
        assert!(matches!(
            c.decode(FrameKind::Text, &big),
            Err(FrameError::TooLarge { size: 65, max: 64 })
        ));
        assert!(matches!(
            c.decode(FrameKind::Text, b"{\"a\":\"\xff\"}"),
            Err(FrameError::InvalidUtf8 { valid_up_to: 6 })
        ));
        assert_eq!(c.decode(FrameKind::Text, b" \n"), Err(FrameError::Empty));
        let c = HubCodec::default();
        let trunc = &KEEPALIVE[..40];
        match c.decode(FrameKind::Text, trunc.as_bytes()) {
            Err(FrameError::Json(e)) => assert_eq!(e.kind, JsonErrorKind::Truncated),
            other => panic!("{other:?}"),
        }
        let wrong = r#"{"header":{"msg_id":"a","timestamp":"1"},"route":{},"content":null}"#;
        match c.decode(FrameKind::Text, wrong.as_bytes()) {
            Err(FrameError::Json(e)) => assert_eq!(e.kind, JsonErrorKind::Data),
            other => panic!("{other:?}"),
        }
        let huge = r#"{"header":{"msg_id":"a","timestamp":99999999999999999999999},"route":{},"content":null}"#;
        assert!(matches!(
            c.decode(FrameKind::Text, huge.as_bytes()),
            Err(FrameError::Json(_))
        ));
        let deep = format!(
            "{{\"header\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            c.decode(FrameKind::Text, deep.as_bytes()),
            Err(FrameError::Json(_))
        ));
        let deep_content = format!(
            "{{\"header\":{{}},\"route\":{{}},\"content\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        // Deep content is opaque to us: it is bounded by the frame size and never recursed into.
        assert!(
            c.decode(FrameKind::Text, deep_content.as_bytes()).is_ok()
                || c.decode(FrameKind::Text, deep_content.as_bytes()).is_err()
        );
    }

    #[test]
    fn encode_respects_limit() {
        let m = Message::from_json(KEEPALIVE.as_bytes()).unwrap();
        let mut buf = b"keep".to_vec();
        assert!(HubCodec::new(10).encode_into(&m, &mut buf).is_err());
        assert_eq!(buf, b"keep");
    }
}
