//! Upgraded sessions (`exec`, `attach`, `portforward`): the edge answers the HTTP upgrade
//! itself, so the cloud is a byte pipe as upstream's stream server is. The response head the
//! edge writes first is parsed here, so that an API server can answer its own client with it
//! and splice the two connections afterwards.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kubeedge_proto::TunnelMessageType;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

use super::{CloudStream, Opened, StreamError};

/// The largest response head accepted from an edge.
const MAX_HEAD: usize = 16 * 1024;
/// Buffer of the in-process pipe between a session and its user.
const PIPE: usize = 256 * 1024;

/// The edge's answer to an upgrade request.
#[derive(Debug)]
pub struct Upgraded {
    /// The HTTP status (101 when the upgrade happened).
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(String, String)>,
    /// The session's bytes after the head, both ways (EOF when the session ends).
    pub io: DuplexStream,
}

impl CloudStream {
    /// Send the upgrade request `method path?query` with `headers` to `node` as a `kind`
    /// session (`EXEC_CONNECT` or `ATTACH_CONNECT`), and read the edge's response head.
    pub async fn upgrade(
        &self,
        node: &str,
        kind: TunnelMessageType,
        method: &str,
        path_and_query: &str,
        headers: BTreeMap<String, Vec<String>>,
    ) -> Result<Upgraded, StreamError> {
        let mut opened = self
            .open(node, kind, Some(method), path_and_query, headers)
            .await?;
        let mut buf = BytesMut::new();
        let (status, headers, used) = loop {
            let Some(b) = opened.recv().await else {
                return Err(StreamError::TunnelClosed(node.to_owned()));
            };
            buf.extend_from_slice(&b);
            match parse_head(&buf)? {
                Some(head) => break head,
                None if buf.len() > MAX_HEAD => {
                    return Err(bad_head("the response head is too large"));
                }
                None => {}
            }
        };
        let rest = buf.split_off(used).freeze();
        let (near, far) = tokio::io::duplex(PIPE);
        tokio::spawn(splice(opened, near, rest));
        Ok(Upgraded {
            status,
            headers,
            io: far,
        })
    }
}

fn bad_head(why: &str) -> StreamError {
    StreamError::Refused {
        code: 502,
        reason: String::new(),
        message: format!("the edge answered the upgrade with a bad response: {why}"),
    }
}

type Head = (u16, Vec<(String, String)>, usize);

/// An HTTP/1.1 response head at the front of `buf`: status, headers and its length.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, StreamError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let code = resp.code.unwrap_or(502);
            let hs = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((code, hs, n)))
        }
        Err(e) => Err(bad_head(&e.to_string())),
    }
}

/// Pump a session to and from the near end of the pipe until either ends; the two
/// directions are separate loops, so neither waits on the other.
async fn splice(mut s: Opened, near: DuplexStream, first: Bytes) {
    let (mut rd, mut wr) = tokio::io::split(near);
    let sender = s.sender();
    let to_user = async {
        if !first.is_empty() && wr.write_all(&first).await.is_err() {
            return;
        }
        while let Some(b) = s.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let to_edge = async {
        // Small while idle, doubled while reads fill it (up to 64 KiB).
        let mut buf = vec![0u8; 4 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                    if n == buf.len() && buf.len() < 64 * 1024 {
                        buf.resize(buf.len() * 2, 0);
                    }
                }
            }
        }
    };
    tokio::select! {
        () = to_user => {}
        () = to_edge => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_partial_and_whole() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n\x82\x00";
        assert!(matches!(parse_head(&head[..20]), Ok(None)));
        let (code, hs, n) = parse_head(head).ok().flatten().expect("complete");
        assert_eq!(code, 101);
        assert_eq!(
            hs[1],
            ("Sec-WebSocket-Protocol".into(), "v5.channel.k8s.io".into())
        );
        assert_eq!(&head[n..], b"\x82\x00");
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
