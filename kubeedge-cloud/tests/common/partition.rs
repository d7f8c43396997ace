//! A network partition between one replica and the API: the replica's client goes through
//! [`Partition`], which, once cut, fails every new request and breaks every open answer (watch
//! streams included), as a lost link to the API or to etcd would.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::BoxError;

/// A kube client's service that the test can cut off.
#[derive(Clone)]
pub struct Partition<S> {
    inner: S,
    cut: CancellationToken,
}

impl<S> Partition<S> {
    /// `inner`, cut off once `cut` is cancelled.
    pub fn new(inner: S, cut: CancellationToken) -> Self {
        Self { inner, cut }
    }
}

fn partitioned() -> BoxError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "partitioned from the API").into()
}

impl<S, Req, B> tower::Service<Req> for Partition<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CutBody<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let cut = self.cut.clone();
        if cut.is_cancelled() {
            return Box::pin(async { Err(partitioned()) });
        }
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = tokio::select! {
                r = answer => r.map_err(Into::into)?,
                () = cut.cancelled() => return Err(partitioned()),
            };
            Ok(resp.map(|inner| CutBody {
                inner,
                cut: Box::pin(cut.cancelled_owned()),
            }))
        })
    }
}

/// An answer's body that breaks when the partition starts.
pub struct CutBody<B> {
    inner: B,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<B> Body for CutBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, BoxError>>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(partitioned())));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }
}
