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
const STDOUT: u8 = 1;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A checked exec or attach request, ready to answer.
#[derive(Debug)]
pub(super) struct Prepared {
    attach: bool,
    id: String,
    options: StreamOptions,
    stdout: bool,
    accept: String,
    protocol: &'static str,
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
    let header = |k: &str| -> Vec<&str> {
        c.header
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(k))
            .flat_map(|(_, vs)| vs.iter().flat_map(|v| v.split(',')).map(str::trim))
            .collect()
    };
    let upgrade = header("Upgrade");
    if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(bad(
            400,
            format!(
                "this edge node serves exec and attach over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io); upgrade to {upgrade:?} is not served yet"
            ),
        ));
    }
    let key = header("Sec-WebSocket-Key")
        .first()
        .map(|k| (*k).to_owned())
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
    };
    Ok(Prepared {
        attach,
        id,
        options,
        stdout: flag("output") || flag("error"),
        accept: derive_accept_key(key.as_bytes()),
        protocol,
    })
}

/// Answer the upgrade on `io` and run the command (or attach) until it ends.
pub(super) async fn run<R: ContainerRuntime>(
    kubelet: Kubelet<R>,
    p: Prepared,
    mut io: DuplexStream,
) {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        p.accept, p.protocol
    );
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = Framed::new(io, WsCodec::new(Role::Server, 1 << 20));
    let rt = kubelet.runtime();
    let session = if p.attach {
        rt.attach(&p.id, p.options.clone()).await
    } else {
        rt.exec(&p.id, p.options.clone()).await
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            let status = failure(
                500,
                "InternalError",
                &format!("Internal error occurred: error executing command in container: {e}"),
            );
            finish(&mut ws, &status).await;
            return;
        }
    };
    if p.stdout {
        let _ = ws.send(WsMessage::Binary(vec![STDOUT])).await;
    }
    let status = pump(&mut ws, session, &p).await;
    finish(&mut ws, &status).await;
}

/// Copy the session both ways; the final status once the output has ended. The client's
/// messages and the command's output run as two loops, so that neither direction waits on the
/// other (a command blocked writing its output while its stdin is full cannot stall both).
async fn pump(
    ws: &mut Framed<DuplexStream, WsCodec>,
    session: StreamIo,
    p: &Prepared,
) -> serde_json::Value {
    let StreamIo {
        mut output,
        mut input,
        resize,
        exit,
    } = session;
    let v5 = p.protocol.starts_with("v5");
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
                    Some(Ok(b)) => {
                        let mut m = Vec::with_capacity(b.len() + 1);
                        m.push(STDOUT);
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
    match exit.await {
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

fn terminal_size(data: &[u8]) -> Option<TerminalSize> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some(TerminalSize {
        width: u16::try_from(v.get("Width")?.as_u64()?).ok()?,
        height: u16::try_from(v.get("Height")?.as_u64()?).ok()?,
    })
}

fn success() -> serde_json::Value {
    serde_json::json!({"metadata": {}, "status": "Success"})
}

/// A `Failure` status; `code` 0 leaves the code out (as the kubelet's exit-code status does).
fn failure(code: u16, reason: &str, message: &str) -> serde_json::Value {
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
