//! `exec` and `attach` over SPDY/3.1 with `v4.channel.k8s.io`, as the kubelet serves them
//! to kube-apiserver, upstream's cloudstream and kubectl before 1.30: the client opens one
//! stream per channel (`streamtype` header: `error`, `stdin`, `stdout`, `stderr`, `resize`),
//! the server accepts each with `SYN_REPLY`, runs the command once every expected stream is
//! there, and ends with the `metav1.Status` on the error stream. Closing the stdin stream
//! (`FIN`) closes the command's stdin.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt as _;
use kubeedge_proto::spdy::{Frame, Headers, SpdyCodec};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tracing::debug;

use super::exec::{exit_status, failure, start, success, tagged, terminal_size, Prepared, STDERR};
use super::kubelet::Kubelet;
use crate::edged::runtime::StreamIo;
use crate::edged::ContainerRuntime;

/// The stream protocol served over SPDY.
pub(super) const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open its streams (the kubelet's stream creation timeout).
const STREAM_CREATION: Duration = Duration::from_secs(30);
/// The largest SPDY frame accepted.
const MAX_FRAME: usize = 1 << 20;

/// Frames read off a SPDY connection.
pub(super) struct Reader {
    rd: ReadHalf<DuplexStream>,
    buf: BytesMut,
    codec: SpdyCodec,
}

impl Reader {
    /// The next frame; `None` at the end of the connection or on a framing error.
    pub(super) async fn next(&mut self) -> Option<Frame> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => {
                    debug!(error = %e, "bad spdy frame; closing");
                    return None;
                }
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// A SPDY connection on `io`: its reader, a sender of frames and the writer task.
pub(super) fn connection(
    io: DuplexStream,
) -> (Reader, mpsc::Sender<Frame>, tokio::task::JoinHandle<()>) {
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_frames(wr, rx));
    let reader = Reader {
        rd,
        buf: BytesMut::new(),
        codec: SpdyCodec::new(MAX_FRAME),
    };
    (reader, tx, writer)
}

async fn write_frames(mut wr: WriteHalf<DuplexStream>, mut rx: mpsc::Receiver<Frame>) {
    let mut codec = SpdyCodec::new(MAX_FRAME);
    let mut out = BytesMut::new();
    while let Some(f) = rx.recv().await {
        if let Err(e) = codec.encode(&f, &mut out) {
            debug!(error = %e, "spdy frame not encodable");
            continue;
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
    let _ = wr.shutdown().await;
}

/// The header `name`'s first value.
pub(super) fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The channel streams of one session, by type.
#[derive(Debug, Default)]
struct Streams {
    by_type: HashMap<String, u32>,
}

impl Streams {
    fn id(&self, t: &str) -> Option<u32> {
        self.by_type.get(t).copied()
    }
}

/// Answer the upgrade on `io` and run the command (or attach) until it ends.
pub(super) async fn run<R: ContainerRuntime>(
    kubelet: Kubelet<R>,
    p: Prepared,
    mut io: DuplexStream,
) {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {PROTOCOL}\r\n\r\n"
    );
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, tx, writer) = connection(io);
    let tty = p.options.tty;
    let mut wanted: Vec<&str> = vec!["error"];
    for (on, t) in [
        (p.options.stdin, "stdin"),
        (p.output, "stdout"),
        (p.error && !tty, "stderr"),
        (tty, "resize"),
    ] {
        if on {
            wanted.push(t);
        }
    }
    let mut streams = Streams::default();
    let mut early: Vec<Frame> = Vec::new();
    let setup = async {
        while !wanted.iter().all(|t| streams.by_type.contains_key(*t)) {
            match reader.next().await? {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let _ = tx
                        .send(Frame::SynReply {
                            stream_id,
                            fin: false,
                            headers: Vec::new(),
                        })
                        .await;
                    if let Some(t) = header(&headers, "streamtype") {
                        streams.by_type.insert(t.to_owned(), stream_id);
                    }
                }
                Frame::Ping(id) => {
                    let _ = tx.send(Frame::Ping(id)).await;
                }
                f @ Frame::Data { .. } => early.push(f),
                Frame::GoAway { .. } => return None,
                _ => {}
            }
        }
        Some(())
    };
    let ready = matches!(
        tokio::time::timeout(STREAM_CREATION, setup).await,
        Ok(Some(()))
    );
    let Some(error_stream) = streams.id("error").filter(|_| ready) else {
        debug!("the client did not open its streams in time");
        drop(tx);
        let _ = writer.await;
        return;
    };
    let status = match start(&kubelet, &p).await {
        Ok(session) => pump(&mut reader, &tx, session, &streams, early, &p).await,
        Err(status) => Some(status),
    };
    if let Some(status) = status {
        let _ = tx
            .send(Frame::Data {
                stream_id: error_stream,
                fin: true,
                data: serde_json::to_vec(&status).unwrap_or_default(),
            })
            .await;
        for t in ["stdout", "stderr"] {
            if let Some(id) = streams.id(t) {
                let _ = tx
                    .send(Frame::Data {
                        stream_id: id,
                        fin: true,
                        data: Vec::new(),
                    })
                    .await;
            }
        }
        let last = streams.by_type.values().copied().max().unwrap_or(0);
        let _ = tx
            .send(Frame::GoAway {
                last_good: last,
                status: 0,
            })
            .await;
    }
    drop(tx);
    let _ = writer.await;
}

/// Copy the session both ways; the final status once the output has ended (None when the
/// client went away first).
async fn pump(
    reader: &mut Reader,
    tx: &mpsc::Sender<Frame>,
    session: StreamIo,
    streams: &Streams,
    early: Vec<Frame>,
    p: &Prepared,
) -> Option<serde_json::Value> {
    let StreamIo {
        output,
        stderr,
        mut input,
        resize,
        exit,
    } = session;
    let mut output = tagged(output, stderr);
    let err_stream = streams.id("stderr");
    let (stdin, resize_id) = (streams.id("stdin"), streams.id("resize"));
    let out_stream = streams.id("stdout").or(streams.id("stderr"));
    let client = async move {
        let mut pending = early.into_iter();
        let mut resize_buf: Vec<u8> = Vec::new();
        loop {
            let frame = match pending.next() {
                Some(f) => f,
                None => match reader.next().await {
                    Some(f) => f,
                    None => return,
                },
            };
            match frame {
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } if Some(stream_id) == stdin => {
                    // A command that closed its stdin drops what comes after.
                    let _ = input.write_all(&data).await;
                    if fin {
                        let _ = input.shutdown().await;
                    }
                }
                Frame::Data {
                    stream_id, data, ..
                } if Some(stream_id) == resize_id => {
                    resize_buf.extend_from_slice(&data);
                    for size in take_sizes(&mut resize_buf) {
                        if let Some(tx) = &resize {
                            let _ = tx.send(size).await;
                        }
                    }
                }
                Frame::Ping(id) => {
                    let _ = tx.send(Frame::Ping(id)).await;
                }
                Frame::SynStream { stream_id, .. } => {
                    let _ = tx
                        .send(Frame::RstStream {
                            stream_id,
                            status: 3,
                        })
                        .await;
                }
                Frame::GoAway { .. } => return,
                _ => {}
            }
        }
    };
    let command = async {
        while let Some(chunk) = output.next().await {
            let chunk = chunk.map(|(channel, b)| {
                let id = if channel == STDERR {
                    err_stream.or(out_stream)
                } else {
                    out_stream
                };
                (id, b)
            });
            match chunk {
                Ok((Some(id), b)) => {
                    let f = Frame::Data {
                        stream_id: id,
                        fin: false,
                        data: b.to_vec(),
                    };
                    if tx.send(f).await.is_err() {
                        return false;
                    }
                }
                Ok((None, _)) => {}
                Err(e) => {
                    debug!(error = %e, "exec output failed");
                    break;
                }
            }
        }
        true
    };
    let ended = tokio::select! {
        () = client => false,
        ended = command => ended,
    };
    if !ended {
        return None;
    }
    Some(match exit.await {
        Ok(code) => exit_status(Ok(code), p),
        Err(e) if p.attach => {
            debug!(error = %e, "attach ended without an exit code");
            success()
        }
        Err(e) => failure(
            500,
            "InternalError",
            &format!("Internal error occurred: {e}"),
        ),
    })
}

/// Every complete `{"Width":…,"Height":…}` object at the front of `buf` (the resize stream
/// carries a sequence of them), leaving an incomplete tail.
fn take_sizes(buf: &mut Vec<u8>) -> Vec<crate::edged::runtime::TerminalSize> {
    let mut sizes = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    while let Some(Ok(v)) = it.next() {
        used = it.byte_offset();
        if let Some(s) = terminal_size(v.to_string().as_bytes()) {
            sizes.push(s);
        }
    }
    buf.drain(..used);
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_objects_are_read_as_they_complete() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"He"#.to_vec();
        let sizes = take_sizes(&mut buf);
        assert_eq!(sizes.len(), 1);
        assert_eq!((sizes[0].width, sizes[0].height), (80, 24));
        buf.extend_from_slice(br#"ight":30}"#);
        let sizes = take_sizes(&mut buf);
        assert_eq!((sizes[0].width, sizes[0].height), (100, 30));
        assert!(buf.is_empty());
    }
}
