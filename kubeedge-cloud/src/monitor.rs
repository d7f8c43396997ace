//! The monitor server of `commonConfig.monitorServer` (127.0.0.1:9091 by default, as
//! upstream's): `/metrics` in the Prometheus (OpenMetrics) text format, and `/healthz` and
//! `/readyz` for probes, and with profiling on ([`Monitor::with_profiling`], feature
//! `profiling`) Go's pprof CPU profile. Plain HTTP, meant for loopback or a scrape network.

#[cfg(feature = "profiling")]
mod pprof;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

/// OpenMetrics' text format, which Prometheus scrapes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the monitor server shows.
#[derive(Debug, Clone)]
pub struct Monitor {
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
    #[cfg(feature = "profiling")]
    profiling: bool,
}

impl Monitor {
    /// Serve `registry`'s metrics; `/readyz` answers 200 while `ready` holds `true`.
    pub fn new(registry: Arc<Registry>, ready: watch::Receiver<bool>) -> Self {
        Self {
            registry,
            ready,
            #[cfg(feature = "profiling")]
            profiling: false,
        }
    }

    /// Also serve `/debug/pprof/` (`enableProfiling`): a CPU profile of the process in
    /// pprof's format at `/debug/pprof/profile?seconds=N`, and the command line.
    #[cfg(feature = "profiling")]
    pub fn with_profiling(mut self) -> Self {
        self.profiling = true;
        self
    }

    /// Answer one request, the profiles included.
    pub async fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        #[cfg(feature = "profiling")]
        if self.profiling && req.method() == Method::GET {
            if let Some(r) = pprof::handle(req.uri().path(), req.uri().query()).await {
                return r;
            }
        }
        self.handle(req)
    }

    /// Answer one request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match req.uri().path() {
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => Response::builder()
                        .header(header::CONTENT_TYPE, OPENMETRICS)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default(),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
                }
            }
            "/healthz" | "/livez" => text(StatusCode::OK, "ok"),
            "/readyz" if *self.ready.borrow() => text(StatusCode::OK, "ok"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Serve on `listener` until `cancel`.
    pub async fn serve(self, listener: TcpListener, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        info!(addr = ?listener.local_addr().ok(), "monitor server listening");
        while let Some((tcp, peer)) = crate::hub::next_conn(&listener, &cancel).await {
            let monitor = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let monitor = monitor.clone();
                    async move { Ok::<_, std::convert::Infallible>(monitor.answer(&req).await) }
                });
                let timeout = Duration::from_secs(10);
                if let Err(e) = crate::hub::serve_http1(tcp, svc, timeout, &cancel).await {
                    debug!(%peer, error = %e, "monitor connection error");
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
