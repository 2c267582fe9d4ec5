//! Test upstreams for bodies and streams: one that counts the request body
//! bytes it receives (as they arrive), one that sends server-sent events
//! paced by what the client has received, and one that holds each request
//! until the test lets it go.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the counting upstream has seen, across all its connections.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests whose head arrived.
    pub requests: AtomicU64,
    /// Body bytes (decoded, without chunk framing) received so far.
    pub bytes: AtomicU64,
}

impl Seen {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

/// An HTTP/1 upstream that reads each request body piece by piece, counting
/// the bytes as they arrive, and answers `200` with the count.
pub async fn counting_upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = super::listener();
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        let mut body = req.into_body();
                        let mut n: u64 = 0;
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Some(d) = frame.data_ref() {
                                n += d.len() as u64;
                                seen.bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(n.to_string()))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Poll `cond` every 5 ms until it holds or `timeout` passes; whether it held.
pub async fn wait_until(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// An upstream answering every request with `events` server-sent events,
/// `every` apart; each carries its index and the microseconds since `base`
/// at which it was written. The next event is written only once the client
/// has counted the previous one in `received` (or after 10 s, when the
/// stream is cut short): a proxy that buffers the stream never lets it
/// finish.
pub async fn sse_upstream(
    events: usize,
    every: Duration,
    base: Instant,
    received: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = super::listener();
    let addr = listener.local_addr().expect("addr");
    super::raw::on_each_head(listener, move |mut s, _| {
        let received = received.clone();
        async move {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let start = received.load(Ordering::SeqCst);
            for i in 0..events {
                let event = format!("id: {i}\ndata: {}\n\n", base.elapsed().as_micros());
                let framed = format!("{:x}\r\n{event}\r\n", event.len());
                if s.write_all(framed.as_bytes()).await.is_err() {
                    return;
                }
                let got = wait_until(Duration::from_secs(10), || {
                    received.load(Ordering::SeqCst) > start + i
                })
                .await;
                if !got {
                    return;
                }
                if i + 1 < events {
                    tokio::time::sleep(every).await;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    });
    addr
}

/// An upstream that answers each request (`200`, `Connection: close`) only
/// when the test releases it: a request it has seen is in flight, holding
/// its concurrency slot, until [`HeldUpstream::release`].
pub struct HeldUpstream {
    pub addr: SocketAddr,
    /// One sender per request seen, in arrival order.
    waiting: Arc<parking_lot::Mutex<Vec<Option<tokio::sync::oneshot::Sender<()>>>>>,
}

impl HeldUpstream {
    pub async fn start() -> Self {
        let listener = super::listener();
        let addr = listener.local_addr().expect("addr");
        let waiting = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let shared = waiting.clone();
        super::raw::on_each_head(listener, move |mut s, _| {
            let waiting = shared.clone();
            async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                waiting.lock().push(Some(tx));
                let _ = rx.await;
                let answer =
                    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nheld";
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        Self { addr, waiting }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Answer the `n`th request seen (from 0).
    pub fn release(&self, n: usize) {
        if let Some(tx) = self.waiting.lock().get_mut(n).and_then(Option::take) {
            let _ = tx.send(());
        }
    }
}

/// An HTTP/1 upstream answering every request `200` with a body of `bytes`
/// bytes (`Content-Length`), written 64 KiB at a time as the reader takes
/// them; it stops writing when the connection is gone. The count is of its
/// answers under way (head read, connection not yet over).
pub async fn large_body_upstream(bytes: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = super::listener();
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    super::raw::on_each_head(listener, move |mut s, _| {
        let open = count.clone();
        async move {
            open.fetch_add(1, Ordering::SeqCst);
            answer_large(&mut s, bytes).await;
            open.fetch_sub(1, Ordering::SeqCst);
        }
    });
    (addr, open)
}

/// Write the large answer until it is whole or the connection is gone.
async fn answer_large(s: &mut tokio::net::TcpStream, bytes: usize) {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let piece = vec![b'x'; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len());
        if s.write_all(&piece[..n]).await.is_err() {
            return;
        }
        left -= n;
    }
    // Whole: held until the proxy closes it, as a slow upstream would.
    let _ = s.read(&mut [0u8; 1]).await;
}
