//! The response body: a whole buffer, or a watch stream produced step by step as hyper polls it
//! (no spawned task: dropping the body drops the watch).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// The next chunk of a stream and the source of the rest.
pub(crate) type Next = Option<(Bytes, Box<dyn WatchSource>)>;

pub(crate) type Step = Pin<Box<dyn Future<Output = Next> + Send>>;

/// Something that yields the next chunk of a streamed response.
pub(crate) trait WatchSource: Send + 'static {
    /// The next chunk, or `None` at the end of the stream.
    fn next(self: Box<Self>) -> Step;
}

/// A stream of chunks as a [`WatchSource`].
struct Chunks(futures_util::stream::BoxStream<'static, Bytes>);

impl WatchSource for Chunks {
    fn next(mut self: Box<Self>) -> Step {
        Box::pin(async move {
            let b = futures_util::StreamExt::next(&mut self.0).await?;
            Some((b, self as Box<dyn WatchSource>))
        })
    }
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Option<Step>),
}

/// The body of every [`ApiService`](crate::ApiService) response.
pub struct ResponseBody {
    kind: Kind,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Full(b) => f
                .debug_tuple("Full")
                .field(&b.as_ref().map(Bytes::len))
                .finish(),
            Kind::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl ResponseBody {
    /// A whole body (for services that front an [`ApiService`](crate::ApiService) and answer
    /// some requests themselves).
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Self {
            kind: Kind::Full(if b.is_empty() { None } else { Some(b) }),
        }
    }

    /// A body streamed from `chunks` as they come (a `pods/log` answer).
    pub fn from_stream(chunks: futures_util::stream::BoxStream<'static, Bytes>) -> Self {
        Self::stream(Box::new(Chunks(chunks)))
    }

    pub(crate) fn stream(src: Box<dyn WatchSource>) -> Self {
        Self {
            kind: Kind::Stream(Some(src.next())),
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(step) => {
                let Some(fut) = step.as_mut() else {
                    return Poll::Ready(None);
                };
                match fut.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        *step = None;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some((chunk, src))) => {
                        *step = Some(src.next());
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Stream(s) => s.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
