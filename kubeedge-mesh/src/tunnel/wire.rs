//! The tunnel's stream header: what the opening side asks for (upstream's `Proxy` message:
//! protocol, node name, IP and port) and what the serving side answers, each a JSON object
//! behind a two-byte big-endian length.
//!
//! The decoder reads at most [`MAX_FRAME`] bytes and never panics: anything else is a
//! [`WireError`], which the serving side answers with `FAILED` and the reason before it closes.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest header either side accepts.
pub const MAX_FRAME: usize = 4096;

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The stream failed or ended before the whole header.
    #[error("tunnel header: {0}")]
    Io(#[from] std::io::Error),
    /// The length is over [`MAX_FRAME`].
    #[error("tunnel header of {0} bytes (at most {MAX_FRAME})")]
    TooLong(usize),
    /// The header is not the JSON object expected.
    #[error("tunnel header: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The transport the far side dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// A TCP connection.
    Tcp,
    /// UDP datagrams, each behind its two-byte length.
    Udp,
}

/// What the opening side asks for: connect to `ip:port` on `node_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The transport.
    pub protocol: Proto,
    /// The node the endpoint runs on (the serving node checks it is itself).
    pub node_name: String,
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// The endpoint's port.
    pub port: u16,
}

impl Request {
    /// The endpoint's address.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// The serving side's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum Response {
    /// Connected: the stream now carries the endpoint's bytes.
    Success,
    /// Not connected, and why; the stream closes.
    Failed {
        /// The reason.
        message: String,
    },
}

/// Writes `msg` as one frame.
pub async fn write<W, T>(w: &mut W, msg: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let len = u16::try_from(body.len())
        .ok()
        .filter(|n| usize::from(*n) <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other(WireError::TooLong(body.len())))?;
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one frame as a `T`.
pub async fn read<R, T>(r: &mut R) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Writes one datagram of a UDP flow (at most 65,535 bytes).
pub async fn write_datagram<W: AsyncWrite + Unpin>(
    w: &mut W,
    datagram: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(datagram.len())
        .map_err(|_| std::io::Error::other(WireError::TooLong(datagram.len())))?;
    let mut frame = Vec::with_capacity(2 + datagram.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(datagram);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one datagram of a UDP flow into `buf` (65,535 bytes hold any); its length, or `None`
/// at the end of the flow.
pub async fn read_datagram<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> std::io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    let into = buf
        .get_mut(..len)
        .ok_or_else(|| std::io::Error::other(WireError::TooLong(len)))?;
    r.read_exact(into).await?;
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_request_and_an_answer_go_through() {
        block_on(async {
            let req = Request {
                protocol: Proto::Tcp,
                node_name: "edge-1".into(),
                ip: [172, 17, 0, 2].into(),
                port: 80,
            };
            let mut buf = Vec::new();
            write(&mut buf, &req).await.expect("written");
            write(
                &mut buf,
                &Response::Failed {
                    message: "refused".into(),
                },
            )
            .await
            .expect("written");
            let mut r = buf.as_slice();
            assert_eq!(read::<_, Request>(&mut r).await.expect("read"), req);
            assert!(matches!(
                read::<_, Response>(&mut r).await.expect("read"),
                Response::Failed { message } if message == "refused"
            ));
        });
    }

    #[test]
    fn an_overlong_header_is_refused_before_it_is_read() {
        block_on(async {
            let mut r: &[u8] = &[0xff, 0xff, b'{'];
            assert!(matches!(
                read::<_, Request>(&mut r).await,
                Err(WireError::TooLong(65535))
            ));
        });
    }

    #[test]
    fn datagrams_keep_their_bounds() {
        block_on(async {
            let mut buf = Vec::new();
            write_datagram(&mut buf, b"one").await.expect("written");
            write_datagram(&mut buf, b"").await.expect("written");
            write_datagram(&mut buf, &[7u8; 1500])
                .await
                .expect("written");
            let mut r = buf.as_slice();
            let mut d = vec![0u8; 65_535];
            assert_eq!(read_datagram(&mut r, &mut d).await.expect("read"), Some(3));
            assert_eq!(&d[..3], b"one");
            assert_eq!(read_datagram(&mut r, &mut d).await.expect("read"), Some(0));
            assert_eq!(
                read_datagram(&mut r, &mut d).await.expect("read"),
                Some(1500)
            );
            assert_eq!(read_datagram(&mut r, &mut d).await.expect("end"), None);
            let mut small = [0u8; 4];
            let mut r: &[u8] = &[0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9];
            assert!(
                read_datagram(&mut r, &mut small).await.is_err(),
                "too long for the buffer"
            );
        });
    }

    proptest! {
        #[test]
        fn any_bytes_read_as_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            block_on(async {
                let mut r = bytes.as_slice();
                let mut d = vec![0u8; 64];
                while let Ok(Some(_)) = read_datagram(&mut r, &mut d).await {}
            });
        }

        #[test]
        fn any_bytes_decode_to_a_header_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            block_on(async {
                let mut r = bytes.as_slice();
                let _ = read::<_, Request>(&mut r).await;
                let mut r = bytes.as_slice();
                let _ = read::<_, Response>(&mut r).await;
            });
        }

        #[test]
        fn a_framed_json_of_any_shape_does_not_panic(body in "\\PC{0,200}") {
            block_on(async {
                let mut frame = (body.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(body.as_bytes());
                let mut r = frame.as_slice();
                let _ = read::<_, Request>(&mut r).await;
            });
        }
    }
}
