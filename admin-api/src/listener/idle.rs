//! The connection's timeouts below HTTP: the first request header must be
//! in within `admin.header_timeout` of accept, and a connection with nothing
//! received or sent for `admin.idle_timeout` is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A TCP stream that fails its pending read once its deadline passes:
/// `timeout` after the last byte received or sent and, until the first
/// request header is in (`header_done`, set when the service is first
/// called), `header_timeout` after accept. hyper's own header timer starts
/// only once the HTTP/1-or-2 sniff has bytes, so without the second a
/// connection that sends nothing held its slot for the whole idle timeout
/// (black-box round 14).
pub(super) struct IdleIo {
    inner: TcpStream,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Until the first header is in: accept + `header_timeout`.
    header_deadline: Option<Instant>,
    header_done: Arc<AtomicBool>,
}

impl IdleIo {
    pub(super) fn new(
        inner: TcpStream,
        timeout: Duration,
        header_timeout: Duration,
        header_done: Arc<AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        let header_deadline = now + header_timeout;
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(header_deadline.min(now + timeout))),
            header_deadline: Some(header_deadline),
            header_done,
        }
    }

    fn touch(&mut self) {
        let mut at = Instant::now() + self.timeout;
        if let Some(h) = self.header_deadline {
            at = at.min(h);
        }
        self.sleep.as_mut().reset(at);
    }

    /// Leave the header phase once the first header is in.
    fn check_header(&mut self) {
        if self.header_deadline.is_some() && self.header_done.load(Ordering::Acquire) {
            self.header_deadline = None;
            self.touch();
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check_header();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    let header = self.header_deadline.is_some_and(|h| Instant::now() >= h);
                    crate::metrics::connection_refused(if header {
                        "header_timeout"
                    } else {
                        "idle"
                    });
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        if header {
                            "no request header within header_timeout"
                        } else {
                            "idle connection closed"
                        },
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
