//! The request body on its way upstream, streamed frame by frame with an idle timeout: a
//! client that stops sending mid-body would otherwise hold a client and an upstream connection
//! open for as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// The client sent no body bytes for `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
pub struct BodyStalled(pub Duration);

/// The client's request body failed: bad chunked framing (a chunk size that is not hex, a
/// missing CRLF), or a body that ended before its length. The client's error, answered 400,
/// never an upstream error.
#[derive(Debug, thiserror::Error)]
#[error("the request body is malformed or ended early: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// True when `err` (a client error from sending the request upstream) was caused by the
/// client's request body rather than by the upstream.
pub fn is_client_fault(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<ClientBodyError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `Incoming` with an idle timeout between frames.
pub struct IdleTimeout {
    inner: Incoming,
    /// Armed on the first wait, so a body that is already complete (every GET) never
    /// allocates a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    idle: Duration,
}

impl IdleTimeout {
    /// Wraps a request body.
    pub fn new(inner: Incoming, idle: Duration) -> IdleTimeout {
        IdleTimeout {
            inner,
            sleep: None,
            idle,
        }
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(s) = this.sleep.as_mut() {
                    s.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(
                    frame.map(|f| f.map_err(|e| -> Self::Error { Box::new(ClientBodyError(e)) })),
                )
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
