//! ServiceBus: the cloud's Router calls an HTTP app on this node through the hub (upstream
//! `edge/pkg/servicebus`). A `router_servicebus` message whose resource is `<port>:<path>` and
//! whose operation is the HTTP method carries an [`HttpRequest`]; the app at
//! `http://127.0.0.1:<port><path>` answers, and the answer goes back as an [`HttpResponse`]
//! (operation `upload`, the request's ID as parent). A failed call is answered with 400, 404
//! or 500 and the reason, as upstream's, but as an `upload` so that the Router gets it (an
//! upstream edge sends errors with an empty operation, which its cloud never routes back).
//!
//! `start` and `stop` messages name the URLs edge apps may send to the cloud through
//! ServiceBus's local listener; they are recorded for it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use kubeedge_proto::servicebus::{split_target, HttpRequest, HttpResponse};
use kubeedge_proto::{Content, Message, Route};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::hub;

/// The most response body read from an app (upstream's 5e6 bytes).
pub const MAX_BODY: usize = 5_000_000;

/// How long an app has to answer (upstream's fixed 10 s).
pub const APP_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls at once; further requests wait.
const CONCURRENCY: usize = 64;

/// The ServiceBus module: a `tower::Service<Message>` for the edge router. Each request runs
/// in its own task, so a slow app holds up no other message.
#[derive(Clone)]
pub struct ServiceBus {
    client: hub::Client,
    timeout: Duration,
    permits: Arc<Semaphore>,
    urls: Arc<Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for ServiceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBus")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ServiceBus {
    /// ServiceBus answering through `client`.
    pub fn new(client: hub::Client) -> Self {
        Self {
            client,
            timeout: APP_TIMEOUT,
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            urls: Arc::default(),
        }
    }

    /// How long an app has to answer.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URLs the cloud allowed edge apps to send to (`start` minus `stop`).
    pub fn allowed_urls(&self) -> Vec<String> {
        self.urls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    async fn answer(&self, msg: Message) {
        let resp = match self.call_app(&msg).await {
            Ok(r) => r,
            Err((code, why)) => {
                debug!(msg_id = %msg.id(), resource = %msg.route.resource, %why, "servicebus call failed");
                HttpResponse {
                    header: [("Server".to_owned(), vec!["kubeedge-edgecore".to_owned()])].into(),
                    status_code: code,
                    body: why.into_bytes(),
                }
            }
        };
        let content = match Content::json(&resp) {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "servicebus answer not encoded");
                return;
            }
        };
        let reply = Message::new(Route::new("servicebus", "user", "upload", ""), content)
            .with_parent(msg.id().clone());
        if let Err(e) = self.client.send(reply).await {
            debug!(error = %e, "servicebus answer not sent");
        }
    }

    async fn call_app(&self, msg: &Message) -> Result<HttpResponse, (u16, String)> {
        let (port, path) = split_target(&msg.route.resource).ok_or_else(|| {
            (
                400,
                format!("invalid servicebus resource {:?}", msg.route.resource),
            )
        })?;
        let req: HttpRequest = msg
            .content
            .decode()
            .map_err(|e| (400, format!("invalid servicebus request: {e}")))?;
        let method = if req.method.is_empty() {
            msg.route.operation_str().to_owned()
        } else {
            req.method.clone()
        };
        let fail = |e: &dyn std::fmt::Display| (404, format!("error to call service: {e}"));
        let call = async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| fail(&e))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail(&e))?;
            tokio::spawn(conn);
            let mut b = http::Request::builder()
                .method(method.as_str())
                .uri(if path.is_empty() { "/" } else { path })
                .header(http::header::HOST, format!("127.0.0.1:{port}"));
            for (k, vs) in &req.header {
                if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
                    continue;
                }
                for v in vs {
                    b = b.header(k.as_str(), v.as_str());
                }
            }
            if !req.header.keys().any(|k| k.eq_ignore_ascii_case("accept")) {
                b = b.header(http::header::ACCEPT, "*/*");
            }
            let request = b
                .body(Full::new(Bytes::from(req.body.clone())))
                .map_err(|e| (400, format!("invalid servicebus request: {e}")))?;
            let resp = send.send_request(request).await.map_err(|e| fail(&e))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| (500, format!("cannot read the service's answer: {e}")))?
                .to_bytes();
            let mut header = std::collections::BTreeMap::<String, Vec<String>>::new();
            for (k, v) in &parts.headers {
                if let Ok(v) = v.to_str() {
                    header
                        .entry(canonical(k.as_str()))
                        .or_default()
                        .push(v.to_owned());
                }
            }
            Ok(HttpResponse {
                header,
                status_code: parts.status.as_u16(),
                body: body.to_vec(),
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| fail(&"the service did not answer in time"))?
    }
}

/// Go's canonical header form (`content-type` → `Content-Type`), as upstream's maps hold it.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl tower::Service<Message> for ServiceBus {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<(), Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        match msg.route.operation_str() {
            "start" | "stop" => {
                let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
                if msg.route.operation_str() == "start" {
                    urls.insert(msg.route.resource.clone());
                } else {
                    urls.remove(&msg.route.resource);
                }
            }
            _ => {
                let this = self.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                        return;
                    };
                    this.answer(msg).await;
                });
            }
        }
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_take_go_canonical_form() {
        assert_eq!(super::canonical("content-type"), "Content-Type");
        assert_eq!(super::canonical("x-request-id"), "X-Request-Id");
    }
}
