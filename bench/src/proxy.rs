//! A TCP proxy for tests that can cut every connection, blackhole traffic (a half-open link)
//! or send new connections elsewhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    blackhole: watch::Sender<bool>,
    down: watch::Sender<bool>,
    target: watch::Sender<SocketAddr>,
    conns: Arc<Mutex<Vec<CancellationToken>>>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

impl Proxy {
    /// Start one in front of `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (blackhole, rx) = watch::channel(false);
        let (down, down_rx) = watch::channel(false);
        let (target, target_rx) = watch::channel(target);
        let conns: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
        let stop = CancellationToken::new();
        let (c, s) = (conns.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => return },
                };
                if *down_rx.borrow() {
                    continue; // the link is down: closed at once
                }
                let to = *target_rx.borrow();
                let Ok(outbound) = TcpStream::connect(to).await else {
                    continue;
                };
                let token = CancellationToken::new();
                c.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(token.clone());
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, rx.clone(), token.clone()));
                tokio::spawn(pump(ro, wi, rx.clone(), token));
            }
        });
        Ok(Self {
            addr,
            blackhole,
            down,
            target,
            conns,
            stop,
        })
    }

    /// Close every current connection (both directions, like a broken link).
    pub fn cut(&self) {
        for t in self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            t.cancel();
        }
    }

    /// Take the link down (`true`: every connection is closed, new ones are closed at once)
    /// or bring it back (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
        if down {
            self.cut();
        }
    }

    /// Send new connections to `to` (a load balancer that moved to another backend); the
    /// current ones stay until [`Proxy::cut`].
    pub fn retarget(&self, to: SocketAddr) {
        self.target.send_replace(to);
    }

    /// Drop all bytes in both directions while keeping the sockets open; a close on one side
    /// does not reach the other.
    pub fn blackhole(&self, on: bool) {
        let _ = self.blackhole.send(on);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackhole: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    // A blackholed link carries no close either: the other side keeps a
                    // connection that is gone (half-open) until the proxy cuts it.
                    if *blackhole.borrow() {
                        cancel.cancelled().await;
                    }
                    return;
                }
                Ok(n) => n,
            },
        };
        if *blackhole.borrow() {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
