//! SPDY/3.1 framing, sans-IO (feature `spdy`): what kubectl before 1.30, kube-apiserver and
//! upstream's edgestream speak to a kubelet for `exec`, `attach` and `port-forward`
//! (`k8s.io/apimachinery/pkg/util/httpstream/spdy` over `moby/spdystream`).
//!
//! A frame is a control frame (`1 | version 3 | type`, flags, 24-bit length) or a data frame
//! (`0 | stream id`, flags, 24-bit length). Header blocks (`SYN_STREAM`, `SYN_REPLY`,
//! `HEADERS`) are zlib-compressed with the SPDY/3 dictionary, one compression context per
//! direction for the whole connection, so a [`SpdyCodec`] belongs to one connection. Flow
//! control is not enforced: spdystream neither sends nor honours `WINDOW_UPDATE`.
//!
//! ```
//! use bytes::BytesMut;
//! use kubeedge_proto::spdy::{Frame, SpdyCodec};
//!
//! let (mut client, mut server) = (SpdyCodec::new(1 << 20), SpdyCodec::new(1 << 20));
//! let syn = Frame::SynStream {
//!     stream_id: 1,
//!     associated: 0,
//!     priority: 0,
//!     fin: false,
//!     headers: vec![("streamtype".into(), "error".into())],
//! };
//! let mut wire = BytesMut::new();
//! client.encode(&syn, &mut wire)?;
//! assert_eq!(server.decode(&mut wire)?, Some(syn));
//! # Ok::<(), kubeedge_proto::spdy::SpdyError>(())
//! ```

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A header block: lowercase names, one pair per value.
pub type Headers = Vec<(String, String)>;

/// `FLAG_FIN`: the sender's half of the stream ends with this frame.
const FLAG_FIN: u8 = 0x01;
/// The largest uncompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// `SYN_STREAM`: open a stream.
    SynStream {
        /// The new stream (odd from the client, even from the server).
        stream_id: u32,
        /// The stream it is associated with (0: none).
        associated: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// The sender sends nothing more on it.
        fin: bool,
        /// Its headers.
        headers: Headers,
    },
    /// `SYN_REPLY`: accept a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// The sender sends nothing more on it.
        fin: bool,
        /// Its headers.
        headers: Headers,
    },
    /// `RST_STREAM`: abort a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why (1 protocol error, 3 refused, 5 cancel, ...).
        status: u32,
    },
    /// `SETTINGS` (kept as read; nothing here depends on them).
    Settings(Vec<(u8, u32, u32)>),
    /// `PING` with its id (a peer echoes it).
    Ping(u32),
    /// `GOAWAY`: no new streams after the last good one.
    GoAway {
        /// The last stream the sender processed.
        last_good: u32,
        /// 0 ok, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// `HEADERS`: more headers on a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// The sender sends nothing more on it.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// `WINDOW_UPDATE` (ignored, as spdystream ignores it).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// The window increase.
        delta: u32,
    },
    /// A data frame.
    Data {
        /// The stream.
        stream_id: u32,
        /// The sender's half ends here.
        fin: bool,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// Why a SPDY frame was refused. After an error the connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("spdy control frame of version {0}, expected 3")]
    Version(u16),
    /// The frame is larger than the limit.
    #[error("spdy frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The frame's length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A control frame shorter than its fixed fields.
    #[error("spdy {0} frame is truncated")]
    Truncated(&'static str),
    /// A header block that does not inflate or parse.
    #[error("spdy header block is invalid: {0}")]
    HeaderBlock(String),
}

/// One connection's framing state: both zlib contexts.
pub struct SpdyCodec {
    inflate: Decompress,
    deflate: Compress,
    max_frame: usize,
}

impl std::fmt::Debug for SpdyCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyCodec")
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl SpdyCodec {
    /// A codec refusing frames over `max_frame` bytes of payload.
    pub fn new(max_frame: usize) -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Setting the dictionary before any input cannot fail on a fresh stream.
        let _ = deflate.set_dictionary(&dictionary());
        Self {
            inflate: Decompress::new(true),
            deflate,
            max_frame,
        }
    }

    /// Take the next frame off the front of `buf`; `None` when `buf` does not hold one yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        loop {
            match self.decode_one(buf)? {
                Step::Frame(f) => return Ok(Some(f)),
                Step::Incomplete => return Ok(None),
                // An unknown control frame is ignored (SPDY/3 §2.2.1): read the next one.
                Step::Skipped => {}
            }
        }
    }

    fn decode_one(&mut self, buf: &mut BytesMut) -> Result<Step, SpdyError> {
        let Some(head) = buf.get(..8) else {
            return Ok(Step::Incomplete);
        };
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if len > self.max_frame {
            return Err(SpdyError::TooLarge {
                size: len,
                max: self.max_frame,
            });
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(Step::Incomplete);
        }
        buf.advance(8);
        let body = buf.split_to(len);
        let fin = flags & FLAG_FIN != 0;
        if word & 0x8000_0000 == 0 {
            return Ok(Step::Frame(Frame::Data {
                stream_id: word & 0x7fff_ffff,
                fin,
                data: body.to_vec(),
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        let u32_at = |i: usize, what: &'static str| -> Result<u32, SpdyError> {
            body.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(SpdyError::Truncated(what))
        };
        let frame = match word & 0xffff {
            1 => {
                let stream_id = u32_at(0, "SYN_STREAM")? & 0x7fff_ffff;
                let associated = u32_at(4, "SYN_STREAM")? & 0x7fff_ffff;
                let priority = body.get(8).ok_or(SpdyError::Truncated("SYN_STREAM"))? >> 5;
                let headers = self.headers(body.get(10..).unwrap_or_default())?;
                Frame::SynStream {
                    stream_id,
                    associated,
                    priority,
                    fin,
                    headers,
                }
            }
            2 | 8 => {
                let what = if word & 0xffff == 2 {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                let stream_id = u32_at(0, what)? & 0x7fff_ffff;
                let headers = self.headers(body.get(4..).unwrap_or_default())?;
                if what == "SYN_REPLY" {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            3 => Frame::RstStream {
                stream_id: u32_at(0, "RST_STREAM")? & 0x7fff_ffff,
                status: u32_at(4, "RST_STREAM")?,
            },
            4 => {
                let n = u32_at(0, "SETTINGS")? as usize;
                let mut entries = Vec::new();
                for i in 0..n.min(body.len() / 8) {
                    let at = 4 + i * 8;
                    let idw = u32_at(at, "SETTINGS")?;
                    entries.push((
                        (idw >> 24) as u8,
                        idw & 0x00ff_ffff,
                        u32_at(at + 4, "SETTINGS")?,
                    ));
                }
                Frame::Settings(entries)
            }
            6 => Frame::Ping(u32_at(0, "PING")?),
            7 => Frame::GoAway {
                last_good: u32_at(0, "GOAWAY")? & 0x7fff_ffff,
                status: u32_at(4, "GOAWAY").unwrap_or(0),
            },
            9 => Frame::WindowUpdate {
                stream_id: u32_at(0, "WINDOW_UPDATE")? & 0x7fff_ffff,
                delta: u32_at(4, "WINDOW_UPDATE")? & 0x7fff_ffff,
            },
            _ => return Ok(Step::Skipped),
        };
        Ok(Step::Frame(frame))
    }

    /// Inflate and parse one header block (the shared zlib stream continues across blocks).
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let bad = |e: String| SpdyError::HeaderBlock(e);
        let mut out: Vec<u8> = Vec::with_capacity(256);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(bad(format!("larger than {MAX_HEADER_BLOCK} bytes")));
                }
                out.reserve(out.len().max(256));
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let r = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = self.inflate.total_out() - before_out;
            input = input.get(used..).unwrap_or_default();
            match r {
                Ok(Status::StreamEnd) => return Err(bad("the zlib stream ended".into())),
                Ok(_) => {
                    if input.is_empty() && out.capacity() > out.len() {
                        break;
                    }
                    if used == 0 && made == 0 && out.capacity() > out.len() {
                        return Err(bad("zlib made no progress".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&dictionary())
                        .map_err(|e| bad(e.to_string()))?;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
        }
        parse_block(&out).ok_or_else(|| bad("malformed name/value block".into()))
    }

    /// Append `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]| {
            out.put_u16(0x8003);
            out.put_u16(kind);
            out.put_u8(flags);
            put_u24(out, body.len());
            out.put_slice(body);
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > 0x00ff_ffff {
                    return Err(SpdyError::TooLarge {
                        size: data.len(),
                        max: 0x00ff_ffff,
                    });
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u8(fin_flag(*fin));
                put_u24(out, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                fin,
                headers,
            } => {
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(associated & 0x7fff_ffff);
                body.put_u8((priority & 0x7) << 5);
                body.put_u8(0);
                body.extend_from_slice(&self.compress(headers)?);
                control(out, 1, fin_flag(*fin), &body);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    2
                } else {
                    8
                };
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.extend_from_slice(&self.compress(headers)?);
                control(out, kind, fin_flag(*fin), &body);
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, 3, 0, &body);
            }
            Frame::Settings(entries) => {
                let mut body = Vec::new();
                body.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    body.put_u32(u32::from(*flags) << 24 | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                control(out, 4, 0, &body);
            }
            Frame::Ping(id) => control(out, 6, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut body = Vec::new();
                body.put_u32(last_good & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, 7, 0, &body);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(delta & 0x7fff_ffff);
                control(out, 9, 0, &body);
            }
        }
        Ok(())
    }

    /// Serialize and deflate one header block (sync-flushed, so the peer can inflate it now).
    fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut grouped: Vec<(String, Vec<&str>)> = Vec::new();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            match grouped.iter_mut().find(|(n, _)| *n == k) {
                Some((_, vs)) => vs.push(v),
                None => grouped.push((k, vec![v])),
            }
        }
        let mut block = Vec::new();
        block.put_u32(grouped.len() as u32);
        for (k, vs) in &grouped {
            let v = vs.join("\0");
            block.put_u32(k.len() as u32);
            block.put_slice(k.as_bytes());
            block.put_u32(v.len() as u32);
            block.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
            let used = (self.deflate.total_in() - before) as usize;
            input = input.get(used..).unwrap_or_default();
            // Done once all input is in and the flush left room to spare.
            if input.is_empty() && out.capacity() > out.len() {
                return Ok(out);
            }
        }
    }
}

/// What one decoding step found.
enum Step {
    Frame(Frame),
    Incomplete,
    Skipped,
}

fn put_u24(out: &mut BytesMut, n: usize) {
    out.put_u8((n >> 16) as u8);
    out.put_u8((n >> 8) as u8);
    out.put_u8(n as u8);
}

/// A name/value block: `u32 count`, then `u32 len, name, u32 len, value` pairs; a value
/// holding NULs is several values.
fn parse_block(b: &[u8]) -> Option<Headers> {
    let mut at = 0usize;
    let take_u32 = |at: &mut usize| -> Option<usize> {
        let v = b.get(*at..*at + 4)?;
        *at += 4;
        Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize)
    };
    let n = take_u32(&mut at)?;
    let mut headers = Vec::new();
    for _ in 0..n {
        let klen = take_u32(&mut at)?;
        let k = b.get(at..at.checked_add(klen)?)?;
        at += klen;
        let vlen = take_u32(&mut at)?;
        let v = b.get(at..at.checked_add(vlen)?)?;
        at += vlen;
        let k = String::from_utf8_lossy(k).to_ascii_lowercase();
        for v in v.split(|c| *c == 0) {
            headers.push((k.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Some(headers)
}

/// The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1):
/// length-prefixed header names and values, then a run of common strings.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412\
413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not \
Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 \
Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,\
application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,\
deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn frames_round_trip_through_one_connection() {
        let (mut a, mut b) = (SpdyCodec::new(1 << 20), SpdyCodec::new(1 << 20));
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 2,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("port".into(), "80".into()),
                    ("port".into(), "81".into()),
                ],
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: vec![0xff; 70_000],
            },
            Frame::Ping(7),
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::Settings(vec![(0, 4, 1000)]),
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65_536,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::Headers {
                stream_id: 5,
                fin: true,
                headers: vec![("x".into(), "y".into())],
            },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            a.encode(f, &mut wire).expect("encodes");
        }
        let mut got = Vec::new();
        while let Some(f) = b.decode(&mut wire).expect("decodes") {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut c = SpdyCodec::new(16);
        let mut big = BytesMut::from(&[0, 0, 0, 1, 0, 0, 0, 17][..]);
        assert!(matches!(
            c.decode(&mut big),
            Err(SpdyError::TooLarge { .. })
        ));
        let mut v2 = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(
            SpdyCodec::new(64).decode(&mut v2),
            Err(SpdyError::Version(2))
        );
        let mut short = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0][..]);
        assert_eq!(
            SpdyCodec::new(64).decode(&mut short),
            Err(SpdyError::Truncated("RST_STREAM"))
        );
        let mut garbage = BytesMut::from(&[0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        assert!(matches!(
            SpdyCodec::new(64).decode(&mut garbage),
            Err(SpdyError::HeaderBlock(_))
        ));
    }
}
