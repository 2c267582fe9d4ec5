//! How long an `/api` request may take, and whose fault it is when it takes
//! longer: a request body that has not arrived in time is the client's
//! (408 `request-timeout`, then the connection is closed); a handler still
//! busy at [`REQUEST_DEADLINE`] with its body read (or none to read) is
//! waiting on the database (503 `database-unavailable`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::ApiError;
use crate::state::AppState;

/// How long an `/api` request may take. Handlers wait on nothing but the
/// client's body and the database (and argon2, well under a second), so a
/// request past this with its body in is a database that does not answer:
/// a refused or black-holed connection the pool keeps retrying for its 10 s
/// acquire timeout, or a query on a connection that went silent (which
/// nothing else would ever end). Longer than SQLite's 5 s busy timeout (a
/// legitimate wait for another writer) plus argon2 on a loaded machine.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(9);

/// The time a request body has to arrive whole, from the end of its header:
/// `admin.header_timeout`, at most [`REQUEST_DEADLINE`].
pub fn body_deadline(header_timeout: Duration) -> Duration {
    header_timeout.min(REQUEST_DEADLINE)
}

/// Answer 503 `database-unavailable` (with `Retry-After`) instead of hanging
/// when a request outlives [`REQUEST_DEADLINE`], and 408 `request-timeout`
/// when the request body did not arrive within [`body_deadline`] (or was
/// still arriving at the deadline). Dropping the handler rolls back
/// whatever transaction it had open.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let http1 = req.version() <= Version::HTTP_11;
    let for_body = body_deadline(state.config().admin.header_timeout);
    let (parts, body) = req.into_parts();
    let (body, progress) = TimedBody::wrap(body, for_body);
    let req = Request::from_parts(parts, body);
    let outcome = tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await;
    match (outcome, progress.load(Ordering::Acquire)) {
        (_, TIMED_OUT) | (Err(_), WAITING) => {
            tracing::info!(%path, "request body not received in time");
            crate::metrics::connection_refused("body_timeout");
            let mut res = ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} ms",
                for_body.as_millis()
            ))
            .into_response();
            // HTTP/2 has no `Connection` header (the stream is reset instead).
            if http1 {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }
        (Ok(res), _) => res,
        (Err(_), _) => {
            tracing::warn!(%path, "request timed out waiting for the database");
            ApiError::DatabaseUnavailable(format!(
                "the database did not answer within {} s",
                REQUEST_DEADLINE.as_secs()
            ))
            .into_response()
        }
    }
}

/// The body has not been read yet, or its last read got bytes.
const IDLE: u8 = 0;
/// The handler waits for bytes the client has not sent.
const WAITING: u8 = 1;
/// The whole body was read (or there was none).
const DONE: u8 = 2;
/// The body did not arrive within its deadline.
const TIMED_OUT: u8 = 3;

/// A request body that fails once its deadline passes while its reader
/// waits for the client, and tells the middleware how far it got.
struct TimedBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    progress: Arc<AtomicU8>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl TimedBody {
    fn wrap(inner: Body, deadline: Duration) -> (Body, Arc<AtomicU8>) {
        use hyper::body::Body as _;
        let start = if inner.is_end_stream() { DONE } else { IDLE };
        let progress = Arc::new(AtomicU8::new(start));
        let body = Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(deadline)),
            progress: progress.clone(),
        };
        (Body::new(body), progress)
    }

    fn mark(&self, state: u8) {
        self.progress.store(state, Ordering::Release);
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.progress.load(Ordering::Acquire) == TIMED_OUT {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.mark(DONE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                let end = hyper::body::Body::is_end_stream(&self.inner);
                self.mark(if end { DONE } else { IDLE });
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    self.mark(TIMED_OUT);
                    Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
                } else {
                    self.mark(WAITING);
                    Poll::Pending
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
