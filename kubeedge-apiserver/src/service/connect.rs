//! `pods/exec`, `pods/attach` and `pods/portforward`, as kube-apiserver serves them
//! (`pkg/registry/core/pod/rest/subresources.go`, `pod.ExecLocation` and friends): the pod and
//! container checked, the kubelet URL built with the kubelet's parameter names (`input`,
//! `output`, `error`, `tty`, `command`, `port`), then the upgrade handed to the node's kubelet
//! and the two connections spliced. The kubelet (here the edge) speaks the stream protocol
//! the client asked for (WebSocket `v5.channel.k8s.io`/`v4.channel.k8s.io`, or SPDY).

use bytes::Bytes;
use http::{HeaderMap, Method};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::log::{reason, validate_container};
use super::{target_name, ApiError, Inner, Res, Target};
use crate::body::ResponseBody;
use crate::nodeproxy::UpgradeKind;
use crate::store::Store;

/// Request headers the kubelet needs to answer the upgrade.
const FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

pub(super) async fn connect<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    method: &Method,
    raw_query: &str,
    headers: &HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Res {
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        ));
    }
    let name = target_name(t);
    let pod = super::read::load_target(inner, t).await?;
    let query: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let flag = |k: &str| matches!(get(k), Some("true" | "1" | "True" | "TRUE" | "t" | "T"));
    let ns = t.namespace.as_deref().unwrap_or_default();
    let (kind, path) = match t.sub.as_deref() {
        Some(sub @ ("exec" | "attach")) => {
            let container = validate_container(get("container").unwrap_or_default(), &pod, name)?;
            let (stdin, stdout, stderr, tty) =
                (flag("stdin"), flag("stdout"), flag("stderr"), flag("tty"));
            if !(stdin || stdout || stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            let mut params = form_urlencoded::Serializer::new(String::new());
            if sub == "exec" {
                for (k, v) in &query {
                    if k == "command" {
                        params.append_pair("command", v);
                    }
                }
            }
            for (on, key) in [
                (stderr, "error"),
                (stdin, "input"),
                (stdout, "output"),
                (tty, "tty"),
            ] {
                if on {
                    params.append_pair(key, "1");
                }
            }
            let kind = if sub == "exec" {
                UpgradeKind::Exec
            } else {
                UpgradeKind::Attach
            };
            (
                kind,
                format!("/{sub}/{ns}/{name}/{container}?{}", params.finish()),
            )
        }
        _ => {
            let mut params = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &query {
                if k == "ports" {
                    params.append_pair("port", v);
                }
            }
            let q = params.finish();
            let path = if q.is_empty() {
                format!("/portForward/{ns}/{name}")
            } else {
                format!("/portForward/{ns}/{name}?{q}")
            };
            (UpgradeKind::PortForward, path)
        }
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let upgrade_asked = headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
        && headers.contains_key(http::header::UPGRADE);
    let Some(on_upgrade) = on_upgrade.filter(|_| upgrade_asked) else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let Some(proxy) = &inner.config.node_proxy else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no connection to node {node:?} is configured"),
        ));
    };
    let forwarded: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| FORWARDED.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let resp = proxy
        .0
        .upgrade(node, kind, method.as_str(), &path, forwarded)
        .await
        .map_err(|e| ApiError::new(e.code, reason(e.code), e.message))?;
    let mut out = http::Response::new(ResponseBody::full(Bytes::new()));
    *out.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    for (k, v) in &resp.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    if resp.status == 101 {
        let io = resp.io;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => {
                    splice(TokioIo::new(up), io).await;
                }
                Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
            }
        });
    }
    Ok(out)
}

/// Copy both ways between the client and the node until either side ends. Toward the client
/// the buffer starts at 4 KiB and doubles while reads fill it (to 64 KiB), so an idle session
/// stays small and a busy one writes large TLS records.
async fn splice<A, B>(client: A, node: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut node_rd, mut node_wr) = tokio::io::split(node);
    // The client's end (EOF) is passed on as a shutdown; the session ends with the node's side.
    let up = async {
        let _ = tokio::io::copy(&mut client_rd, &mut node_wr).await;
        let _ = node_wr.shutdown().await;
        std::future::pending::<()>().await;
    };
    let down = async {
        let mut buf = vec![0u8; 4 * 1024];
        loop {
            match node_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client_wr.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    if n == buf.len() && buf.len() < 64 * 1024 {
                        buf.resize(buf.len() * 2, 0);
                    }
                }
            }
        }
        let _ = client_wr.shutdown().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
