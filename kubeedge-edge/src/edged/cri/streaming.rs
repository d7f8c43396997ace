//! The client side of a CRI runtime's streaming server (containerd's `pkg/cri/streaming`,
//! the kubelet's `cri/streaming` before it): `Exec`, `Attach` and `PortForward` answer with a
//! one-time URL on that server, which speaks the Kubernetes channel protocol over WebSocket.
//!
//! - Subprotocol `v4.channel.k8s.io` (binary): every message starts with one byte naming its
//!   channel. For exec and attach: 0 stdin (client → server), 1 stdout, 2 stderr, 3 the error
//!   channel, which carries a `metav1.Status` as JSON once the command has ended (`Success`,
//!   or `Failure` with reason `NonZeroExitCode` and the code in a cause of type `ExitCode`),
//!   4 terminal resize (client → server, `{"Width":…,"Height":…}`). The server first sends an
//!   empty message on the lowest output channel. v4 has no half-close: stdin stays open until
//!   the connection ends.
//! - Port forward, one port per connection: channel 0 carries data both ways, channel 1 the
//!   server's error text; the server starts each channel with the port as two little-endian
//!   bytes.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::FutureExt;
use futures_util::stream::{self, SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::edged::runtime::{PortStream, Result, RuntimeError, StreamIo, TerminalSize};

/// The subprotocol spoken (containerd 1.6 and later serve it for exec, attach and port
/// forward).
pub(super) const PROTOCOL: &str = "v4.channel.k8s.io";
/// The bound of connecting to the stream server and upgrading.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Buffer between the caller's stdin writer (or forwarded connection) and the session task.
const PIPE: usize = 64 * 1024;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

type Ws = WebSocketStream<TcpStream>;

fn unavailable(url: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Unavailable(format!("stream server {url}: {e}"))
}

/// Connect to `url` (`http://host:port/…`, as the runtime returned it) and upgrade to a
/// WebSocket speaking [`PROTOCOL`].
async fn connect(url: &str) -> Result<Ws> {
    let uri: http::Uri = url.parse().map_err(|e| unavailable(url, e))?;
    if uri.scheme_str() != Some("http") {
        return Err(RuntimeError::Unsupported(format!(
            "stream server URL {url} (only a plain-HTTP stream server is supported)"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| unavailable(url, "no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = format!("ws://{authority}{path}")
        .into_client_request()
        .map_err(|e| unavailable(url, e))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static(PROTOCOL),
    );
    let upgrade = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| unavailable(url, e))?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async(req, tcp)
            .await
            .map_err(|e| unavailable(url, e))
    };
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, upgrade)
        .await
        .map_err(|_| RuntimeError::Timeout(CONNECT_TIMEOUT))??;
    Ok(ws)
}

/// One frame on `channel`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

/// The session's outcome from the error channel's `metav1.Status` (None: no status came).
pub(super) fn exit_of(status: &[u8]) -> Result<Option<i64>> {
    if status.is_empty() {
        return Err(RuntimeError::Unavailable(
            "the stream ended without an exit status".into(),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(status).map_err(|e| {
        RuntimeError::Unavailable(format!(
            "unreadable status on the error channel ({e}): {}",
            String::from_utf8_lossy(status)
        ))
    })?;
    if v["status"] == "Success" {
        return Ok(Some(0));
    }
    if v["reason"] == "NonZeroExitCode" {
        let code = v["details"]["causes"].as_array().and_then(|causes| {
            causes
                .iter()
                .find(|c| c["reason"] == "ExitCode" || c["type"] == "ExitCode")
                .and_then(|c| c["message"].as_str()?.parse::<i64>().ok())
        });
        if let Some(code) = code {
            return Ok(Some(code));
        }
    }
    Err(RuntimeError::Refused {
        status: v["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500),
        message: v["message"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_owned),
    })
}

/// An exec or attach session on `url`: its output, a stdin writer, a resize sender (with a
/// TTY) and the exit status from the error channel.
pub(super) async fn remote_command(url: &str, tty: bool, separate: bool) -> Result<StreamIo> {
    let ws = connect(url).await?;
    let (out_tx, mut out_rx) = mpsc::channel::<Result<Bytes>>(16);
    let (err_tx, stderr) = if separate && !tty {
        let (tx, mut rx) = mpsc::channel::<Result<Bytes>>(16);
        (
            Some(tx),
            Some(stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()),
        )
    } else {
        (None, None)
    };
    let (exit_tx, exit_rx) = oneshot::channel();
    let (user_in, task_in) = tokio::io::duplex(PIPE);
    let (resize, resize_rx) = if tty {
        let (tx, rx) = mpsc::channel::<TerminalSize>(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let url = url.to_owned();
    tokio::spawn(async move {
        let status = pump_command(ws, (out_tx, err_tx), task_in, resize_rx).await;
        let _ = exit_tx.send(
            status
                .map_err(|e| unavailable(&url, e))
                .and_then(|s| exit_of(&s)),
        );
    });
    let output = stream::poll_fn(move |cx| out_rx.poll_recv(cx)).boxed();
    let exit = async move {
        exit_rx
            .await
            .unwrap_or_else(|_| Err(RuntimeError::Unavailable("the stream task ended".into())))
    };
    Ok(StreamIo {
        output,
        stderr,
        input: Box::pin(user_in),
        resize,
        exit: exit.boxed(),
    })
}

/// Move bytes between the WebSocket and the caller until the server ends the session (or
/// the caller drops the output); returns what came on the error channel.
async fn pump_command(
    ws: Ws,
    (out, err): (
        mpsc::Sender<Result<Bytes>>,
        Option<mpsc::Sender<Result<Bytes>>>,
    ),
    mut stdin: DuplexStream,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
) -> std::result::Result<Vec<u8>, tokio_tungstenite::tungstenite::Error> {
    let (mut tx, mut rx) = ws.split();
    let mut status = Vec::new();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            msg = next_binary(&mut rx) => {
                let Some(data) = msg? else { break };
                let Some((&channel, payload)) = data.split_first() else { continue };
                tracing::trace!(channel, len = payload.len(), "stream frame");
                if channel == ERROR {
                    status.extend_from_slice(payload);
                } else if (channel == STDOUT || channel == STDERR)
                    && !payload.is_empty()
                    && match (&err, channel) {
                        (Some(e), STDERR) => e.send(Ok(data.slice(1..))).await.is_err(),
                        _ => out.send(Ok(data.slice(1..))).await.is_err(),
                    }
                {
                    // Nobody reads the output any more: end the session.
                    let _ = tx.close().await;
                    break;
                }
            }
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => tx.send(frame(STDIN, &buf[..n])).await?,
            },
            size = recv_some(&mut resize) => match size {
                Some(s) => {
                    let body = serde_json::json!({"Width": s.width, "Height": s.height});
                    tx.send(frame(RESIZE, body.to_string().as_bytes())).await?;
                }
                None => resize = None,
            },
        }
    }
    Ok(status)
}

/// The next binary frame (its channel byte first), skipping other frames; `None` once the
/// server closed the session.
async fn next_binary(
    rx: &mut SplitStream<Ws>,
) -> std::result::Result<Option<Bytes>, tokio_tungstenite::tungstenite::Error> {
    loop {
        match rx.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
        }
    }
}

/// The next item of an optional receiver (pending forever without one).
async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A forwarded connection on `url` (a `PortForward` URL for one port).
pub(super) async fn port_forward(url: &str) -> Result<Box<dyn PortStream>> {
    let ws = connect(url).await?;
    let (user, mine) = tokio::io::duplex(PIPE);
    let url = url.to_owned();
    tokio::spawn(async move {
        match pump_port(ws, mine).await {
            Ok(error) if error.is_empty() => {}
            Ok(error) => {
                debug!(%url, error = %String::from_utf8_lossy(&error), "port forward failed")
            }
            Err(e) => debug!(%url, error = %e, "port forward stream broke"),
        }
    });
    Ok(Box::new(user))
}

/// Move bytes between the WebSocket and the local end until either side ends; returns the
/// server's error text (empty when there was none).
async fn pump_port(
    ws: Ws,
    mut local: DuplexStream,
) -> std::result::Result<Vec<u8>, tokio_tungstenite::tungstenite::Error> {
    let (mut tx, mut rx) = ws.split();
    // Each channel starts with the port number (two bytes), which is not data.
    let mut skip = [2usize, 2usize];
    let mut error = Vec::new();
    let mut local_open = true;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            msg = next_binary(&mut rx) => {
                let Some(data) = msg? else { break };
                let Some((&channel, payload)) = data.split_first() else { continue };
                let Some(skip) = skip.get_mut(usize::from(channel)) else { continue };
                let cut = (*skip).min(payload.len());
                *skip -= cut;
                let payload = &payload[cut..];
                if channel == 1 {
                    error.extend_from_slice(payload);
                } else if !payload.is_empty() && local.write_all(payload).await.is_err() {
                    break;
                }
            }
            n = local.read(&mut buf), if local_open => match n {
                Ok(0) | Err(_) => {
                    // v4 cannot half-close: the connection ends when the pod's side does,
                    // or when the caller drops its end (the write above then fails).
                    local_open = false;
                }
                Ok(n) => tx.send(frame(0, &buf[..n])).await?,
            },
        }
    }
    let _ = local.shutdown().await;
    close(tx).await;
    Ok(error)
}

async fn close(mut tx: SplitSink<Ws, Message>) {
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::exit_of;

    #[test]
    fn statuses_from_the_error_channel() {
        assert_eq!(
            exit_of(br#"{"metadata":{},"status":"Success"}"#).ok(),
            Some(Some(0))
        );
        let nonzero = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_of(nonzero).ok(), Some(Some(3)));
        let internal = br#"{"metadata":{},"status":"Failure","message":"Internal error occurred: exec failed: no such file","reason":"InternalError","code":500}"#;
        let e = exit_of(internal)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no such file"), "{e}");
        assert!(exit_of(b"").is_err());
    }
}
