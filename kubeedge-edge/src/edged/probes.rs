//! Running probes and lifecycle handlers: exec in the container, HTTP GET and TCP connect to
//! the pod's address.

use std::time::Duration;

use http_body_util::Empty;
use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use super::runtime::ContainerRuntime;

/// One check to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// Run a command; exit 0 passes.
    Exec(Vec<String>),
    /// GET; 2xx/3xx passes.
    Http {
        /// Port.
        port: u16,
        /// Path and query.
        path: String,
        /// Host header override.
        host: Option<String>,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// Connect; success passes.
    Tcp {
        /// Port.
        port: u16,
    },
    /// Wait (preStop `sleep`).
    Sleep(Duration),
}

fn port(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

fn from_parts(
    c: &Container,
    exec: Option<&ExecAction>,
    http: Option<&HTTPGetAction>,
    tcp: Option<&TCPSocketAction>,
) -> Option<Check> {
    if let Some(e) = exec {
        return Some(Check::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = http {
        return Some(Check::Http {
            port: port(c, &h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone(),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = tcp {
        return Some(Check::Tcp {
            port: port(c, &t.port)?,
        });
    }
    None
}

/// The check of a probe (None for unsupported kinds, e.g. gRPC).
pub(crate) fn probe_check(c: &Container, p: &Probe) -> Option<Check> {
    from_parts(
        c,
        p.exec.as_ref(),
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
    )
}

/// The check of a lifecycle handler (preStop).
pub(crate) fn handler_check(c: &Container, h: &LifecycleHandler) -> Option<Check> {
    if let Some(s) = &h.sleep {
        return Some(Check::Sleep(Duration::from_secs(s.seconds.max(0) as u64)));
    }
    from_parts(
        c,
        h.exec.as_ref(),
        h.http_get.as_ref(),
        h.tcp_socket.as_ref(),
    )
}

async fn http_get(
    addr: &str,
    port: u16,
    path: &str,
    host: Option<&str>,
    headers: &[(String, String)],
) -> bool {
    let Ok(stream) = TcpStream::connect((addr, port)).await else {
        return false;
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(io).await else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let mut req = http::Request::get(path)
        .header(http::header::HOST, host.unwrap_or(addr))
        .header(http::header::USER_AGENT, "kube-probe/1.29");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let ok = match req.body(Empty::<bytes::Bytes>::new()) {
        Ok(r) => send
            .send_request(r)
            .await
            .map(|resp| (200..400).contains(&resp.status().as_u16()))
            .unwrap_or(false),
        Err(_) => false,
    };
    conn.abort();
    ok
}

/// Run `check` against container `id` at `addr`, within `timeout`.
pub(crate) async fn run<R: ContainerRuntime>(
    runtime: &R,
    id: &str,
    addr: &str,
    check: &Check,
    timeout: Duration,
) -> bool {
    let work = async {
        match check {
            Check::Exec(cmd) => runtime
                .exec_sync(id, cmd.clone(), timeout)
                .await
                .map(|o| o.exit_code == 0)
                .unwrap_or(false),
            Check::Http {
                port,
                path,
                host,
                headers,
            } => http_get(addr, *port, path, host.as_deref(), headers).await,
            Check::Tcp { port } => TcpStream::connect((addr, *port)).await.is_ok(),
            Check::Sleep(d) => {
                tokio::time::sleep(*d).await;
                true
            }
        }
    };
    tokio::time::timeout(timeout, work).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edged::DockerRuntime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn http_and_tcp_checks() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for i in 0.. {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if i % 2 == 0 { "200 OK" } else { "500 Oops" };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let rt = DockerRuntime::new("/nonexistent.sock");
        let http = Check::Http {
            port,
            path: "/healthz".into(),
            host: None,
            headers: vec![],
        };
        let t = Duration::from_secs(2);
        assert!(run(&rt, "x", "127.0.0.1", &http, t).await);
        assert!(!run(&rt, "x", "127.0.0.1", &http, t).await, "500 fails");
        assert!(run(&rt, "x", "127.0.0.1", &Check::Tcp { port }, t).await);
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(!run(&rt, "x", "127.0.0.1", &Check::Tcp { port: closed }, t).await);
        assert!(
            !run(&rt, "x", "127.0.0.1", &Check::Exec(vec!["true".into()]), t).await,
            "no runtime: exec fails"
        );
    }
}
