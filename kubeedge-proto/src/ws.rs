//! WebSocket framing (RFC 6455 §5) for the stream tunnel, sans-IO.
//!
//! Upstream's tunnel peers (gorilla/websocket) send every tunnel frame as a **text** message
//! although its body is binary and seldom valid UTF-8 (PROTOCOL.md §7.3). General WebSocket
//! stacks refuse such a message, so the tunnel reads and writes frames here: data messages are
//! handed over as bytes whatever their opcode, fragments are joined, and control frames come
//! out between them as they arrive.
//!
//! ```
//! use bytes::BytesMut;
//! use kubeedge_proto::ws::{Role, WsCodec, WsMessage};
//!
//! // A client masks what it sends; the server's codec unmasks it.
//! let mut wire = BytesMut::new();
//! WsCodec::encode(&WsMessage::Text(vec![0xff, 0x00]), Some([1, 2, 3, 4]), &mut wire);
//! let mut server = WsCodec::new(Role::Server, 1 << 20);
//! assert_eq!(server.decode(&mut wire)?, Some(WsMessage::Text(vec![0xff, 0x00])));
//! # Ok::<(), kubeedge_proto::ws::WsError>(())
//! ```

use bytes::{Buf, BufMut, BytesMut};

/// Which end of the connection decodes: a server requires masked frames, a client unmasked
/// ones (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The accepting end.
    Server,
    /// The dialling end.
    Client,
}

/// One WebSocket message or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message; its bytes are not checked for UTF-8 (see the module docs).
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame: the status code (if any) and the reason bytes.
    Close(Option<u16>, Vec<u8>),
}

/// Why a WebSocket frame was refused. After an error the connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// A reserved bit is set (no extension was negotiated).
    #[error("websocket frame has reserved bits set")]
    Reserved,
    /// An opcode RFC 6455 does not define.
    #[error("websocket frame has unknown opcode {0:#x}")]
    Opcode(u8),
    /// A client frame without a mask, or a server frame with one.
    #[error("websocket frame masking is wrong for this end (masked: {masked})")]
    Mask {
        /// Whether the frame was masked.
        masked: bool,
    },
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("websocket control frame is fragmented or longer than 125 bytes")]
    Control,
    /// A continuation without a message to continue, or a new message inside a fragmented one.
    #[error("websocket fragments out of order")]
    Fragment,
    /// The message is larger than the limit.
    #[error("websocket message of at least {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size seen so far.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A close frame whose payload is one byte long.
    #[error("websocket close frame has a one-byte payload")]
    ClosePayload,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// A stateful WebSocket decoder (joins fragments) with a stateless encoder.
#[derive(Debug)]
pub struct WsCodec {
    role: Role,
    max_message: usize,
    /// The opcode and bytes of a fragmented data message in progress.
    partial: Option<(u8, Vec<u8>)>,
}

impl WsCodec {
    /// A decoder for `role` that refuses data messages over `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Self {
        Self {
            role,
            max_message,
            partial: None,
        }
    }

    /// Take the next complete message or control frame from the front of `buf`; `None` when
    /// `buf` does not hold one yet (read more and call again).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsMessage>, WsError> {
        loop {
            let Some((fin, opcode, payload)) = self.frame(buf)? else {
                return Ok(None);
            };
            match opcode {
                OP_CLOSE => return close(payload).map(Some),
                OP_PING => return Ok(Some(WsMessage::Ping(payload))),
                OP_PONG => return Ok(Some(WsMessage::Pong(payload))),
                OP_CONTINUATION => {
                    let Some((op, mut data)) = self.partial.take() else {
                        return Err(WsError::Fragment);
                    };
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(data_message(op, data)));
                    }
                    self.partial = Some((op, data));
                }
                op => {
                    if self.partial.is_some() {
                        return Err(WsError::Fragment);
                    }
                    if fin {
                        return Ok(Some(data_message(op, payload)));
                    }
                    self.partial = Some((op, payload));
                }
            }
        }
    }

    /// One frame off the front of `buf`, checked: (fin, opcode, unmasked payload).
    fn frame(&self, buf: &mut BytesMut) -> Result<Option<(bool, u8, Vec<u8>)>, WsError> {
        let [b0, b1, ..] = buf[..] else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::Reserved);
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(WsError::Opcode(opcode));
        }
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return Err(WsError::Mask { masked });
        }
        let (len, mut at) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(WsError::Control);
        }
        let sofar = self.partial.as_ref().map_or(0, |(_, d)| d.len());
        let total = len.saturating_add(sofar as u64);
        if total > self.max_message as u64 {
            return Err(WsError::TooLarge {
                size: total,
                max: self.max_message,
            });
        }
        let key = if masked {
            match buf
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
            {
                Some(k) => {
                    at += 4;
                    Some(k)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        // Fits in usize: at most max_message, itself a usize.
        let len = usize::try_from(len).map_err(|_| WsError::TooLarge {
            size: len,
            max: self.max_message,
        })?;
        if buf.len() < at + len {
            buf.reserve(at + len - buf.len());
            return Ok(None);
        }
        buf.advance(at);
        let mut payload = buf.split_to(len).to_vec();
        if let Some(k) = key {
            apply_mask(&mut payload, k);
        }
        Ok(Some((fin, opcode, payload)))
    }

    /// Append `msg` as one frame to `out`, masked with `mask` (a client must mask, a server
    /// must not).
    pub fn encode(msg: &WsMessage, mask: Option<[u8; 4]>, out: &mut BytesMut) {
        let (opcode, close_code, payload): (u8, Option<u16>, &[u8]) = match msg {
            WsMessage::Text(d) => (OP_TEXT, None, d),
            WsMessage::Binary(d) => (OP_BINARY, None, d),
            WsMessage::Ping(d) => (OP_PING, None, d),
            WsMessage::Pong(d) => (OP_PONG, None, d),
            WsMessage::Close(code, reason) => (OP_CLOSE, *code, reason),
        };
        let len = payload.len() + if close_code.is_some() { 2 } else { 0 };
        out.reserve(len + 14);
        out.put_u8(0x80 | opcode);
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match len {
            n @ 0..=125 => out.put_u8(mask_bit | n as u8),
            n if u16::try_from(n).is_ok() => {
                out.put_u8(mask_bit | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(mask_bit | 127);
                out.put_u64(n as u64);
            }
        }
        if let Some(k) = mask {
            out.put_slice(&k);
        }
        // The payload goes in once and is masked where it lies.
        let start = out.len();
        if let Some(code) = close_code {
            out.put_u16(code);
        }
        out.put_slice(payload);
        if let Some(k) = mask {
            apply_mask(&mut out[start..], k);
        }
    }
}

/// `tokio_util::codec` glue (feature `codec`): frame a socket with `Framed::new(io, codec)`;
/// a client's frames are masked with a fresh random key each.
#[cfg(feature = "codec")]
mod codec {
    use super::{Role, WsCodec, WsError, WsMessage};
    use bytes::BytesMut;

    impl tokio_util::codec::Decoder for WsCodec {
        type Item = WsMessage;
        type Error = std::io::Error;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<WsMessage>, std::io::Error> {
            WsCodec::decode(self, src).map_err(io_error)
        }
    }

    impl tokio_util::codec::Encoder<WsMessage> for WsCodec {
        type Error = std::io::Error;

        fn encode(&mut self, msg: WsMessage, dst: &mut BytesMut) -> Result<(), std::io::Error> {
            let mask = (self.role == Role::Client).then(|| fastrand::u32(..).to_be_bytes());
            WsCodec::encode(&msg, mask, dst);
            Ok(())
        }
    }

    fn io_error(e: WsError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn data_message(opcode: u8, data: Vec<u8>) -> WsMessage {
    if opcode == OP_TEXT {
        WsMessage::Text(data)
    } else {
        WsMessage::Binary(data)
    }
}

fn close(payload: Vec<u8>) -> Result<WsMessage, WsError> {
    match payload.len() {
        0 => Ok(WsMessage::Close(None, Vec::new())),
        1 => Err(WsError::ClosePayload),
        _ => Ok(WsMessage::Close(
            Some(u16::from_be_bytes([payload[0], payload[1]])),
            payload[2..].to_vec(),
        )),
    }
}

/// XOR `data` with the repeating 4-byte `key`, eight bytes at a time (the tunnel masks every
/// byte the edge sends, so this is on its hot path).
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the key is still in phase.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: WsMessage, mask: Option<[u8; 4]>, role: Role) -> WsMessage {
        let mut wire = BytesMut::new();
        WsCodec::encode(&msg, mask, &mut wire);
        let mut c = WsCodec::new(role, 1 << 20);
        let out = c.decode(&mut wire).expect("decodes").expect("complete");
        assert!(wire.is_empty());
        out
    }

    #[test]
    fn every_length_form_round_trips() {
        for n in [0usize, 125, 126, 65535, 65536, 200_000] {
            let m = WsMessage::Binary(vec![7; n]);
            assert_eq!(roundtrip(m.clone(), Some([9, 8, 7, 6]), Role::Server), m);
            assert_eq!(roundtrip(m.clone(), None, Role::Client), m);
        }
    }

    #[test]
    fn text_keeps_invalid_utf8_and_fragments_join() {
        // A gorilla client writes a large text message as a text frame plus continuations.
        let mut wire = BytesMut::from(&[0x01, 0x02, 0xff, 0xfe][..]);
        wire.extend_from_slice(&[0x89, 0x00]); // a ping between fragments
        wire.extend_from_slice(&[0x80, 0x01, 0x00]);
        let mut c = WsCodec::new(Role::Client, 16);
        assert_eq!(c.decode(&mut wire), Ok(Some(WsMessage::Ping(vec![]))));
        assert_eq!(
            c.decode(&mut wire),
            Ok(Some(WsMessage::Text(vec![0xff, 0xfe, 0x00])))
        );
    }

    #[test]
    fn partial_input_waits_and_bad_frames_are_refused() {
        let mut wire = BytesMut::new();
        WsCodec::encode(&WsMessage::Text(b"hello".to_vec()), None, &mut wire);
        let mut head = wire.split_to(3);
        let mut c = WsCodec::new(Role::Client, 16);
        assert_eq!(c.decode(&mut head), Ok(None));
        head.extend_from_slice(&wire);
        assert_eq!(
            c.decode(&mut head),
            Ok(Some(WsMessage::Text(b"hello".to_vec())))
        );
        let bad = |bytes: &[u8], role| WsCodec::new(role, 16).decode(&mut BytesMut::from(bytes));
        assert_eq!(
            bad(&[0x81, 0x00], Role::Server),
            Err(WsError::Mask { masked: false })
        );
        assert_eq!(bad(&[0xc1, 0x00], Role::Client), Err(WsError::Reserved));
        assert_eq!(bad(&[0x83, 0x00], Role::Client), Err(WsError::Opcode(3)));
        assert_eq!(bad(&[0x80, 0x00], Role::Client), Err(WsError::Fragment));
        assert_eq!(bad(&[0x09, 0x00], Role::Client), Err(WsError::Control));
        assert_eq!(
            bad(&[0x88, 0x01, 0x03], Role::Client),
            Err(WsError::ClosePayload)
        );
        assert!(matches!(
            bad(
                &[0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Role::Client
            ),
            Err(WsError::TooLarge { .. })
        ));
    }
}
