//! Upstream's `messageQPS` / `messageBurst` as a tower layer: a token bucket shared by every
//! service the layer makes, so that all the clones of a client draw from one budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use kubeedge_proto::TokenBucket;
use tokio::time::{sleep_until, Instant, Sleep};

/// Makes [`RateLimit`] services that share one token bucket of `qps` tokens a second, holding
/// at most `burst` (a full bucket at first, as upstream's `flowcontrol` limiter).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimitLayer {
    /// A layer allowing `qps` messages a second with bursts of `burst`.
    pub fn new(qps: u32, burst: u32) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(TokenBucket::new(qps, burst))),
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
            token: false,
            sleep: None,
        }
    }
}

/// A service that is ready only when the shared bucket has a token for the next request and
/// the inner service is ready. Nothing is dropped: a caller over the rate waits in
/// `poll_ready`. A token taken in `poll_ready` is spent by the next `call` (and lost if the
/// service is dropped before it).
#[derive(Debug)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
    token: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for RateLimit<S> {
    /// A clone has its own place in line and holds no token.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            bucket: self.bucket.clone(),
            token: false,
            sleep: None,
        }
    }
}

impl<S, R> tower::Service<R> for RateLimit<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.token {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            let now = Instant::now();
            let wait = self
                .bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now.into_std());
            match wait {
                None => self.token = true,
                Some(at) => self.sleep = Some(Box::pin(sleep_until(Instant::from_std(at)))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.token = false;
        self.inner.call(req)
    }
}
