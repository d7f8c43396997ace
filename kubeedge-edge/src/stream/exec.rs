//! `exec` and `attach` as the kubelet serves them over WebSocket: the channel protocols
//! `v5.channel.k8s.io` (kubectl 1.30+, with the close signal that ends stdin) and
//! `v4.channel.k8s.io`. Every binary message starts with its channel: 0 stdin, 1 stdout,
//! 2 stderr, 3 the error channel (the final `metav1.Status`), 4 terminal resize
//! (`{"Width":…,"Height":…}`); v5 adds 255 (`[255, channel]` closes that channel). The edge
//! answers the upgrade itself: the tunnel carries the response head and the frames.

use std::collections::BTreeMap;

use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_proto::ws::{Role, WsCodec, WsMessage};
use kubeedge_proto::{StreamConnect, TunnelMessageType};
use tokio::io::{AsyncWriteExt as _, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::codec::Framed;
use tracing::debug;

use super::kubelet::{Kubelet, KubeletError};
use crate::edged::runtime::{StreamIo, StreamOptions, TerminalSize};
use crate::edged::ContainerRuntime;

/// The subprotocols served, in no order of preference: the client's order decides.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A checked exec or attach request, ready to answer.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) attach: bool,
    pub(super) id: String,
    pub(super) options: StreamOptions,
    /// The client reads stdout.
    pub(super) output: bool,
    /// The client reads stderr.
    pub(super) error: bool,
    pub(super) transport: Transport,
}

/// How the session is spoken.
#[derive(Debug)]
pub(super) enum Transport {
    /// WebSocket with a channel subprotocol.
    WebSocket {
        /// `Sec-WebSocket-Accept`.
        accept: String,
        /// The chosen subprotocol.
        protocol: &'static str,
    },
    /// SPDY/3.1 with `v4.channel.k8s.io`.
    Spdy,
}

/// Check the connect as the kubelet checks the request, before anything is written.
pub(super) fn prepare<R: ContainerRuntime>(
    kubelet: &Kubelet<R>,
    kind: TunnelMessageType,
    c: &StreamConnect,
) -> Result<Prepared, KubeletError> {
    let bad = |code: u16, message: String| KubeletError { code, message };
    let parts: Vec<&str> = c.url.path.trim_start_matches('/').split('/').collect();
    let (verb, ns, pod, container) = match parts[..] {
        [v @ ("exec" | "attach"), ns, pod, container]
        | [v @ ("exec" | "attach"), ns, pod, _, container] => (v, ns, pod, container),
        ["portForward", ..] => {
            return Err(bad(
                501,
                "port-forward is not served by this edge node yet".into(),
            ))
        }
        _ => return Err(bad(404, format!("404 page not found: {}", c.url.path))),
    };
    if kind == TunnelMessageType::AttachConnect && verb != "attach" {
        return Err(bad(
            400,
            "an attach connect must name an /attach URL".into(),
        ));
    }
    let mut command = Vec::new();
    let mut flags: BTreeMap<String, bool> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(c.url.raw_query.as_bytes()) {
        if k == "command" {
            command.push(v.into_owned());
        } else {
            flags.insert(
                k.into_owned(),
                matches!(&*v, "1" | "true" | "True" | "TRUE"),
            );
        }
    }
    let flag = |k: &str| flags.get(k).copied().unwrap_or(false);
    let header = |k: &str| header_values(c, k);
    let transport = negotiate(&header)?;
    let attach = verb == "attach";
    if !attach && command.is_empty() {
        return Err(bad(
            400,
            "you must specify at least one command for the container".into(),
        ));
    }
    let id = kubelet.running_container_id(ns, pod, container)?;
    let options = StreamOptions {
        command,
        stdin: flag("input"),
        tty: flag("tty"),
        // The client reads stderr on its own channel.
        separate_stderr: flag("error") && !flag("tty"),
    };
    Ok(Prepared {
        attach,
        id,
        options,
        output: flag("output"),
        error: flag("error"),
        transport,
    })
}

/// Every value of header `name` in a connect (names match case-insensitively, comma lists
/// are split).
pub(super) fn header_values(c: &StreamConnect, name: &str) -> Vec<String> {
    c.header
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, vs)| vs.iter().flat_map(|v| v.split(',')))
        .map(|v| v.trim().to_owned())
        .collect()
}

/// The stream protocol the client asked for and this edge speaks: WebSocket (the channel
/// protocols, the client's order decides) or SPDY/3.1 (`v4.channel.k8s.io`, negotiated in
/// `X-Stream-Protocol-Version` as the kubelet does).
fn negotiate(header: &dyn Fn(&str) -> Vec<String>) -> Result<Transport, KubeletError> {
    let bad = |code: u16, message: String| KubeletError { code, message };
    let upgrade = header("Upgrade");
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let key = header("Sec-WebSocket-Key")
            .first()
            .cloned()
            .ok_or_else(|| bad(400, "missing Sec-WebSocket-Key".into()))?;
        let offered = header("Sec-WebSocket-Protocol");
        let protocol = offered
            .iter()
            .find_map(|p| PROTOCOLS.iter().find(|s| *s == p).copied())
            .ok_or_else(|| {
                bad(
                    400,
                    format!("none of the offered stream protocols {offered:?} is supported (supported: {PROTOCOLS:?})"),
                )
            })?;
        return Ok(Transport::WebSocket {
            accept: derive_accept_key(key.as_bytes()),
            protocol,
        });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = header("X-Stream-Protocol-Version");
        if offered.iter().any(|o| o == super::spdy::PROTOCOL) {
            return Ok(Transport::Spdy);
        }
        return Err(bad(
            403,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{:?}]",
                super::spdy::PROTOCOL
            ),
        ));
    }
    Err(bad(400, "Upgrade request required".into()))
}

/// Answer the upgrade on `io` and run the command (or attach) until it ends.
pub(super) async fn run<R: ContainerRuntime>(kubelet: Kubelet<R>, p: Prepared, io: DuplexStream) {
    match &p.transport {
        Transport::Spdy => super::spdy::run(kubelet, p, io).await,
        Transport::WebSocket { accept, protocol } => {
            let (accept, protocol) = (accept.clone(), *protocol);
            run_websocket(kubelet, p, io, &accept, protocol).await;
        }
    }
}

/// Start the command (or attach) for `p`.
pub(super) async fn start<R: ContainerRuntime>(
    kubelet: &Kubelet<R>,
    p: &Prepared,
) -> Result<StreamIo, serde_json::Value> {
    let rt = kubelet.runtime();
    let session = if p.attach {
        rt.attach(&p.id, p.options.clone()).await
    } else {
        rt.exec(&p.id, p.options.clone()).await
    };
    session.map_err(|e| {
        failure(
            500,
            "InternalError",
            &format!("Internal error occurred: error executing command in container: {e}"),
        )
    })
}

async fn run_websocket<R: ContainerRuntime>(
    kubelet: Kubelet<R>,
    p: Prepared,
    mut io: DuplexStream,
    accept: &str,
    protocol: &'static str,
) {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = Framed::new(io, WsCodec::new(Role::Server, 1 << 20));
    let session = match start(&kubelet, &p).await {
        Ok(s) => s,
        Err(status) => return finish(&mut ws, &status).await,
    };
    if p.output || p.error {
        let _ = ws.send(WsMessage::Binary(vec![STDOUT])).await;
    }
    let status = pump(&mut ws, session, &p, protocol).await;
    finish(&mut ws, &status).await;
}

/// Copy the session both ways; the final status once the output has ended. The client's
/// messages and the command's output run as two loops, so that neither direction waits on the
/// other (a command blocked writing its output while its stdin is full cannot stall both).
async fn pump(
    ws: &mut Framed<DuplexStream, WsCodec>,
    session: StreamIo,
    p: &Prepared,
    protocol: &str,
) -> serde_json::Value {
    let StreamIo {
        output,
        stderr,
        mut input,
        resize,
        exit,
    } = session;
    let mut output = tagged(output, stderr);
    let v5 = protocol.starts_with("v5");
    let (mut sink, mut stream) = ws.split();
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::channel::<WsMessage>(8);
    let client = async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(WsMessage::Binary(d) | WsMessage::Text(d)) => match d.split_first() {
                    // A command that closed its stdin drops what comes after.
                    Some((&STDIN, data)) => drop(input.write_all(data).await),
                    Some((&RESIZE, data)) => {
                        if let (Some(tx), Some(size)) = (&resize, terminal_size(data)) {
                            let _ = tx.send(size).await;
                        }
                    }
                    Some((&CLOSE, [STDIN])) if v5 => {
                        let _ = input.shutdown().await;
                    }
                    _ => {}
                },
                Ok(WsMessage::Ping(d)) => {
                    let _ = ctl_tx.send(WsMessage::Pong(d)).await;
                }
                Ok(WsMessage::Pong(_)) => {}
                Ok(WsMessage::Close(..)) | Err(_) => break,
            }
        }
    };
    let command = async {
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok((channel, b))) => {
                        let mut m = Vec::with_capacity(b.len() + 1);
                        m.push(channel);
                        m.extend_from_slice(&b);
                        if sink.send(WsMessage::Binary(m)).await.is_err() {
                            return false;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "exec output failed");
                        return true;
                    }
                    None => return true,
                },
                Some(m) = ctl_rx.recv() => {
                    let _ = sink.send(m).await;
                }
            }
        }
    };
    let ended = tokio::select! {
        // The client went away: dropping stdin and the output stops the session.
        () = client => false,
        ended = command => ended,
    };
    if !ended {
        return success();
    }
    exit_status(exit.await, p)
}

/// The error channel's `Status` for how the session ended.
pub(super) fn exit_status(
    exit: crate::edged::runtime::Result<Option<i64>>,
    p: &Prepared,
) -> serde_json::Value {
    match exit {
        Ok(None | Some(0)) => success(),
        Ok(Some(code)) => {
            let cmd = p.options.command.join(" ");
            let mut status = failure(
                0,
                "NonZeroExitCode",
                &format!("command terminated with non-zero exit code: error executing command [{cmd}], exit code {code}"),
            );
            status["details"] = serde_json::json!({"causes": [{"reason": "ExitCode", "message": code.to_string()}]});
            status
        }
        Err(e) => failure(
            500,
            "InternalError",
            &format!("Internal error occurred: {e}"),
        ),
    }
}

/// stdout (channel 1) and, when apart, stderr (channel 2) as one stream of tagged chunks that
/// ends when both have.
pub(super) fn tagged(
    output: futures_util::stream::BoxStream<'static, crate::edged::runtime::Result<bytes::Bytes>>,
    stderr: Option<
        futures_util::stream::BoxStream<'static, crate::edged::runtime::Result<bytes::Bytes>>,
    >,
) -> futures_util::stream::BoxStream<'static, crate::edged::runtime::Result<(u8, bytes::Bytes)>> {
    let out = output.map(|r| r.map(|b| (STDOUT, b)));
    match stderr {
        Some(err) => futures_util::stream::select(out, err.map(|r| r.map(|b| (STDERR, b)))).boxed(),
        None => out.boxed(),
    }
}

pub(super) fn terminal_size(data: &[u8]) -> Option<TerminalSize> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some(TerminalSize {
        width: u16::try_from(v.get("Width")?.as_u64()?).ok()?,
        height: u16::try_from(v.get("Height")?.as_u64()?).ok()?,
    })
}

pub(super) fn success() -> serde_json::Value {
    serde_json::json!({"metadata": {}, "status": "Success"})
}

/// A `Failure` status; `code` 0 leaves the code out (as the kubelet's exit-code status does).
pub(super) fn failure(code: u16, reason: &str, message: &str) -> serde_json::Value {
    let mut v = serde_json::json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason});
    if code != 0 {
        v["code"] = code.into();
    }
    v
}

/// The status on the error channel, then a normal close.
async fn finish(ws: &mut Framed<DuplexStream, WsCodec>, status: &serde_json::Value) {
    let mut m = vec![ERROR];
    m.extend_from_slice(&serde_json::to_vec(status).unwrap_or_default());
    let _ = ws.send(WsMessage::Binary(m)).await;
    let _ = ws.send(WsMessage::Close(Some(1000), Vec::new())).await;
}
