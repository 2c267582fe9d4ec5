//! The request-header deadline inside the stream: [`HeaderDeadline`] wraps a
//! connection's stream for its whole life; Pingora reads every request
//! header of a keep-alive connection through it. After the service said a
//! request is finished ([`super::request_finished`]), the next request
//! first waits at most `keepalive_timeout` for its first byte, then its
//! header must be in within `header_timeout` of that byte. When a deadline
//! passes before the service called [`super::header_done`]:
//!
//! - if bytes of this request arrived, it writes `408 Request Timeout`
//!   (problem+json, `Connection: close`) through the stream, so on TLS the
//!   answer goes inside the TLS session, closes its write side and tells the
//!   edge ([`DeadlineFlags::end`]), which ends the connection;
//! - if nothing arrived (an idle keep-alive connection), it ends the read
//!   (end of file) and Pingora closes the connection quietly.
//!
//! It also follows the request stream as it is read ([`RequestScan`]: each
//! request header from its own first byte, bodies skipped by their framing,
//! pipelined requests included): one byte before Pingora's parser would give
//! up on a header (too many fields, too many bytes) and answer a bare `400`,
//! it passes on only the bytes before that one (earlier pipelined requests
//! are served), then, at the parser's next read, writes `431` problem+json
//! (`Connection: close`) the same way and reads what the client still sends
//! for at most [`super::ANSWER_GRACE`] before the connection ends, so that
//! the answer is not lost to a reset.
//!
//! Writes are timed too: one that makes no progress for `proxy.body_timeout`
//! fails (`TimedOut`), whatever is written (Pingora's answer header, the
//! proxy's own answers, a tunnel), so a client that reads nothing cannot
//! hold its connection.
//!
//! Everything else (digests, ALPN, peek, id) is the wrapped stream's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::answer::{self, Answer};

use super::fields::Over;
use super::framing::RequestScan;
use super::ConnEnd;

/// Shared between a [`HeaderDeadline`] and the edge that waits on it.
#[derive(Debug, Default)]
pub struct DeadlineFlags {
    /// The service has the whole header: the deadline no longer applies.
    pub done: Arc<AtomicBool>,
    /// The 408 was written (or could not be), or the connection is to end
    /// for another reason ([`super::close_handle`]): end it.
    pub end: Arc<ConnEnd>,
    /// A request is finished: the next read starts the next request.
    pub rearm: AtomicBool,
    /// The idle wait before the next request, ms (0: as armed), as the
    /// service last read it from the config.
    pub idle_ms: AtomicU64,
}

enum Phase {
    Reading,
    /// Writing the answer: bytes written so far.
    Answering(usize),
    Closing,
    /// After a refusal: reading (and dropping) what the client still sends,
    /// bytes so far.
    Draining(usize),
    Finished,
}

/// A stream whose request-header reads end at a deadline (see the module).
pub struct HeaderDeadline {
    inner: Stream,
    flags: Arc<DeadlineFlags>,
    /// Fires at or before [`Self::deadline`]: moved later only when it
    /// fires early (a timer reset per request costs more than one per
    /// timeout period).
    sleep: Pin<Box<Sleep>>,
    /// When the header (or the idle wait) is due.
    deadline: Instant,
    timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    keepalive: Duration,
    /// Between requests: the deadline is the idle one (`keepalive`).
    idle: bool,
    /// Bytes read since the deadline was (re)set.
    read: usize,
    phase: Phase,
    answer: Vec<u8>,
    /// The request stream, against the parser's limits.
    scan: RequestScan,
    /// A header went over a limit after the bytes last passed on: refuse at
    /// the next read.
    over: Option<Over>,
    /// `proxy.max_header_bytes`, named by a 431 for too many bytes.
    max_header_bytes: usize,
    /// Drain the client's bytes after the answer (a refusal).
    linger: bool,
    /// `proxy.body_timeout`: the longest a write may make no progress.
    write_timeout: Duration,
    /// Since when a write has made no progress (armed on the first
    /// `Pending`, dropped at any progress).
    write_stall: Option<Pin<Box<Sleep>>>,
}

/// The most bytes a refused connection reads after its answer.
const LINGER_MAX: usize = 1 << 20;

impl fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl HeaderDeadline {
    /// Wrap `stream` (or re-arm it if it is one already, as on a reused
    /// keep-alive connection) with a deadline `deadline` from now for its
    /// first request header; `timeout` is the configured `header_timeout`
    /// (later headers, and the answer), `keepalive` the idle wait before
    /// each later request, `max_header_bytes` the configured limit a 431
    /// names, `write_timeout` the longest a write of an answer may make no
    /// progress (`proxy.body_timeout`).
    pub fn arm(
        stream: Stream,
        flags: Arc<DeadlineFlags>,
        deadline: Duration,
        timeout: Duration,
        keepalive: Duration,
        max_header_bytes: usize,
        write_timeout: Duration,
    ) -> Option<Stream> {
        let inner = if stream.as_any().is::<HeaderDeadline>() {
            // Never fails (the type was just checked); `None` closes.
            stream.into_any().downcast::<HeaderDeadline>().ok()?.inner
        } else {
            stream
        };
        let deadline = Instant::now() + deadline;
        Some(Box::new(Self {
            inner,
            flags,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
            timeout,
            keepalive,
            idle: false,
            read: 0,
            phase: Phase::Reading,
            answer: Vec::new(),
            scan: RequestScan::new(),
            over: None,
            max_header_bytes,
            linger: false,
            write_timeout,
            write_stall: None,
        }))
    }

    /// The next request starts: wait for its first byte (idle), then give
    /// its header `timeout` from that byte.
    fn start_next_request(&mut self) {
        self.read = 0;
        self.idle = true;
        let ms = self.flags.idle_ms.load(Ordering::Acquire);
        if ms > 0 {
            self.keepalive = Duration::from_millis(ms);
        }
        if self.scan.header_begun() {
            // Its first bytes came in an earlier read, with the last
            // request's (pipelined): they are in Pingora's buffer, no read
            // will bring them again. Its header deadline runs from now and
            // ends in a 408 (round 14: it waited out the keep-alive wait).
            self.idle = false;
            self.read = 1;
            self.set_deadline(Instant::now() + self.timeout);
            return;
        }
        self.set_deadline(Instant::now() + self.keepalive);
    }

    /// Due at `at`: the timer is moved only if it would fire too late.
    fn set_deadline(&mut self, at: Instant) {
        self.deadline = at;
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Whether the deadline has passed; a timer that fired early is moved
    /// to the deadline (and registered with `cx`).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            let at = self.deadline;
            self.sleep.as_mut().reset(at);
        }
    }

    /// The deadline passed with the header unfinished.
    fn expire(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.read == 0 {
            // Nothing of a request arrived: end of file, closed quietly.
            if self.idle {
                crate::metrics::IDLE_CLOSED.inc();
            } else {
                crate::edge_metrics::HEADER_TIMEOUTS.inc();
            }
            self.phase = Phase::Finished;
            self.flags.end.end();
            return Poll::Ready(Ok(()));
        }
        crate::edge_metrics::HEADER_TIMEOUTS.inc();
        self.start_answer(&answer::request_timeout(self.timeout), cx)
    }

    /// The header went over a parser limit: 431, then drain and close.
    fn refuse(&mut self, refusal: &crate::edge::Refusal, cx: &mut Context<'_>) -> Poll<()> {
        crate::edge_metrics::REFUSED
            .with_label_values(&[refusal.reason])
            .inc();
        self.linger = true;
        self.start_answer(&refusal.answer, cx).map(|_| ())
    }

    /// Write `a` (closing the connection) instead of reading on.
    fn start_answer(&mut self, a: &Answer, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.answer = answer::to_http1_close(a);
        self.phase = Phase::Answering(0);
        // A client that reads nothing does not hold the connection.
        self.deadline = Instant::now() + super::ANSWER_GRACE;
        let at = self.deadline;
        self.sleep.as_mut().reset(at);
        self.poll_answer_or_give_up(cx);
        Poll::Pending
    }

    /// Drive the 408 until written or until the answer's grace is over.
    fn poll_answer_or_give_up(&mut self, cx: &mut Context<'_>) {
        if self.poll_answer(cx).is_pending() && self.poll_deadline(cx).is_ready() {
            self.phase = Phase::Finished;
            self.flags.end.end();
        }
    }

    /// Drive the 408: write it, flush, close the write side.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.phase {
                Phase::Answering(written) if written < self.answer.len() => {
                    match Pin::new(&mut self.inner).poll_write(cx, &self.answer[written..]) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) if n > 0 => self.phase = Phase::Answering(written + n),
                        Poll::Ready(_) => self.phase = Phase::Finished,
                    }
                }
                Phase::Answering(_) => match Pin::new(&mut self.inner).poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => self.phase = Phase::Closing,
                },
                Phase::Closing => match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) if self.linger => self.phase = Phase::Draining(0),
                    Poll::Ready(_) => self.phase = Phase::Finished,
                },
                Phase::Draining(drained) => {
                    let mut scratch = [0u8; 4096];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() && drained < LINGER_MAX => {
                            self.phase = Phase::Draining(drained + rb.filled().len());
                        }
                        Poll::Ready(_) => self.phase = Phase::Finished,
                    }
                }
                Phase::Finished => {
                    self.flags.end.end();
                    return Poll::Ready(());
                }
                Phase::Reading => return Poll::Ready(()),
            }
        }
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Reading) {
            // The 408 is on its way: the edge ends the connection.
            this.poll_answer_or_give_up(cx);
            return Poll::Pending;
        }
        if this.flags.rearm.swap(false, Ordering::AcqRel) {
            this.start_next_request();
        }
        if let Some(over) = this.over {
            if this.flags.done.load(Ordering::Acquire) {
                // An earlier pipelined request is being served (Pingora's
                // idle probe): its answer goes first; the refused header is
                // the next one Pingora reads.
                return Poll::Pending;
            }
            let refusal = over.refusal(this.max_header_bytes);
            return this.refuse(&refusal, cx).map(Ok);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if let Err((at, over)) = this.scan.feed(&buf.filled()[before..]) {
                // Pingora's parser never sees the bytes from `at` on.
                buf.set_filled(before + at);
                if at == 0 {
                    let refusal = over.refusal(this.max_header_bytes);
                    return this.refuse(&refusal, cx).map(Ok);
                }
                this.over = Some(over);
            }
            let n = buf.filled().len() - before;
            this.read += n;
            if this.idle && n > 0 {
                // The first byte of the next request: its header deadline.
                this.idle = false;
                this.set_deadline(Instant::now() + this.timeout);
            }
        }
        if r.is_ready() || this.flags.done.load(Ordering::Acquire) {
            return r;
        }
        if this.poll_deadline(cx).is_pending() {
            return Poll::Pending;
        }
        this.expire(cx)
    }
}

impl HeaderDeadline {
    /// A write's outcome `r`, ended with `TimedOut` once writes have made no
    /// progress for `write_timeout`. Every answer (Pingora's, the proxy's
    /// own, a tunnel's) is written through here: a client that reads none of
    /// them (a pipelined flood) cannot hold its connection (black-box round
    /// 14; Pingora times writes of a body, not of a header).
    fn timed_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.write_stall = None;
            return r;
        }
        let limit = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stall.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.write_stall = None;
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client took nothing of the answer for {limit:?}"),
        )))
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed_write(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    /// Only HTTP/1 connections are armed: the edge has already seen that
    /// this one does not open with the HTTP/2 preface (`proxy.h2c`). Say so
    /// at once (bytes that are not the preface), so that Pingora's own h2c
    /// check does not wait for 24 bytes outside the header deadline.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        buf.fill(0);
        Ok(true)
    }
}
