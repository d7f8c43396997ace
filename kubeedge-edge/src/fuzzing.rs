//! Entry points for the fuzz targets in `fuzz/` and for this crate's no-panic proptests. Built
//! with the `fuzzing` feature (and in tests). Not a stable API: nothing outside `fuzz/` should
//! use it.
//!
//! [`broker_sessions`] drives the embedded MQTT broker's real session code (rumqttc's codec,
//! the per-client state, routing between clients) over in-memory streams, so one input runs
//! without sockets and in microseconds.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{Connect, Packet, Publish, QoS, Subscribe};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::eventbus::broker::{Broker, BrokerConfig};

/// Bytes each in-memory connection buffers in either direction.
const PIPE: usize = 64 * 1024;
/// A whole input (every session and the probe) finishes within this, or it is a hang.
const DEADLINE: Duration = Duration::from_secs(10);
/// Largest packet either side writes or reads.
const MAX_PACKET: usize = 1 << 20;

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's current-thread runtime (made once, reused by every input).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    RUNTIME.with(|cell| {
        let mut rt = cell.borrow_mut();
        if rt.is_none() {
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            *rt = Some(built);
        }
        match rt.as_ref() {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err("no runtime".into()),
        }
    })
}

/// One client: writes `input`, half-closes, and reads what the broker answers until it closes.
async fn client(io: DuplexStream, input: Vec<u8>) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let send = async {
        // The broker may hang up mid-input (a malformed packet, a takeover): not an error.
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
    };
    let recv = async {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
    };
    tokio::join!(send, recv);
}

/// A well-formed client after the fuzzed ones: it must connect, subscribe, publish at QoS 1
/// and receive its own publish, which proves the broker still serves.
async fn probe(broker: &Broker, cancel: &CancellationToken) -> Result<(), String> {
    let (mut io, server) = tokio::io::duplex(PIPE);
    let b = broker.clone();
    let c = cancel.child_token();
    let session = tokio::spawn(async move { b.connection(server, c).await });
    let topic = "$probe/echo";
    let payload = b"still serving".to_vec();
    let mut out = BytesMut::new();
    let mut c = Connect::new("fuzz-probe");
    c.keep_alive = 30;
    let mut sub = Subscribe::new(topic, QoS::AtLeastOnce);
    sub.pkid = 1;
    let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.clone());
    publish.pkid = 2;
    for p in [
        Packet::Connect(c),
        Packet::Subscribe(sub),
        Packet::Publish(publish),
    ] {
        p.write(&mut out, MAX_PACKET)
            .map_err(|e| format!("probe encode: {e}"))?;
    }
    io.write_all(&out)
        .await
        .map_err(|e| format!("probe write: {e}"))?;
    let mut buf = BytesMut::new();
    let (mut connack, mut suback, mut puback, mut echo) = (false, false, false, false);
    while !(connack && suback && puback && echo) {
        match Packet::read(&mut buf, MAX_PACKET) {
            Ok(Packet::ConnAck(a)) => connack = a.code == rumqttc::ConnectReturnCode::Success,
            Ok(Packet::SubAck(_)) => suback = true,
            Ok(Packet::PubAck(_)) => puback = true,
            // A fuzzed client may have left a retained message on the probe's topic.
            Ok(Packet::Publish(p)) => echo |= !p.retain && p.payload[..] == payload[..],
            Ok(other) => return Err(format!("probe got {other:?}")),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                let n = io
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| format!("probe read: {e}"))?;
                if n == 0 {
                    return Err(format!(
                        "broker closed the probe: connack {connack} suback {suback} puback {puback} echo {echo}"
                    ));
                }
            }
            Err(e) => return Err(format!("probe decode: {e}")),
        }
    }
    out.clear();
    Packet::Disconnect
        .write(&mut out, MAX_PACKET)
        .map_err(|e| format!("probe encode: {e}"))?;
    io.write_all(&out)
        .await
        .map_err(|e| format!("probe write: {e}"))?;
    match session.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("probe session ended with {e}")),
        Err(e) => Err(format!("probe session: {e}")),
    }
}

/// Runs one broker: one concurrent session per element of `clients` (each the bytes a client
/// sends before it half-closes), then a well-formed client. A panic in a session is re-raised
/// here; an error means the broker hung or stopped serving the next client.
pub fn broker_sessions(clients: &[&[u8]]) -> Result<(), String> {
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = BrokerConfig::new(listen);
    config.max_payload = 16 * 1024;
    config.client_queue = 64;
    let broker = Broker::new(config);
    let cancel = CancellationToken::new();
    let run = async {
        let mut tasks = Vec::new();
        for input in clients {
            let (io, server) = tokio::io::duplex(PIPE);
            let b = broker.clone();
            let c = cancel.child_token();
            tasks.push(tokio::spawn(async move {
                // Every way a session ends is fine, as long as it ends without a panic.
                let _ = b.connection(server, c).await;
            }));
            tasks.push(tokio::spawn(client(io, input.to_vec())));
        }
        for t in tasks {
            if let Err(e) = t.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
                return Err(format!("session task: {e}"));
            }
        }
        probe(&broker, &cancel).await
    };
    let result = block_on(async { tokio::time::timeout(DEADLINE, run).await })?;
    cancel.cancel();
    result.map_err(|_| "the broker hung".to_owned())?
}

/// Splits a fuzz input into the byte streams of up to four clients at each `0xF0 0xF0` (a
/// reserved MQTT 3.1.1 packet type, so it is never the start of a valid packet).
pub fn split_clients(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 3 {
        match rest.windows(2).position(|w| w == [0xF0, 0xF0]) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A CONNECT with `id`, so that the arbitrary bytes after it reach the session loop.
    fn connect(id: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        let _ = Packet::Connect(Connect::new(id)).write(&mut out, MAX_PACKET);
        out.to_vec()
    }

    #[test]
    fn well_formed_sessions_and_a_takeover_leave_the_broker_serving() {
        let mut a = connect("a");
        let mut out = BytesMut::new();
        let mut sub = Subscribe::new("#", QoS::ExactlyOnce);
        sub.pkid = 1;
        for p in [
            Packet::Subscribe(sub),
            Packet::Publish({
                let mut p = Publish::new("x/y", QoS::ExactlyOnce, b"hi".to_vec());
                p.pkid = 1;
                p.retain = true;
                p
            }),
            Packet::PingReq,
        ] {
            p.write(&mut out, MAX_PACKET).expect("encode");
        }
        a.extend_from_slice(&out);
        broker_sessions(&[&a, &connect("a"), b"\x10\xff\xff\xff\xff\x7f"]).expect("serving");
    }

    proptest! {
        #[test]
        fn arbitrary_session_bytes_never_panic(
            raw in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..4),
            ids in proptest::collection::vec("[a-c]{0,2}", 3),
            with_connect in any::<bool>(),
        ) {
            let inputs: Vec<Vec<u8>> = raw
                .into_iter()
                .zip(ids.iter().cycle())
                .map(|(bytes, id)| if with_connect { [connect(id), bytes].concat() } else { bytes })
                .collect();
            let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(broker_sessions(&refs), Ok(()));
        }
    }
}
