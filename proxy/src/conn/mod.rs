//! The connection edge, wrapped around Pingora's HTTP app: the PROXY protocol
//! header, the per-address connection cap, the idle wait for a first byte and
//! the request-header deadline.
//!
//! Pingora hands each connection to [`ServerApp::process_new`] once and
//! serves all requests of an HTTP/1 keep-alive connection inside that call.
//! [`EdgeApp`] runs before it:
//!
//! - on a PROXY-protocol listener, the first call reads the v1/v2 header
//!   (within `proxy.header_timeout`) and replaces the socket's peer address
//!   with the source it names, so everything after sees the real client;
//! - the first call also counts the connection against its client address
//!   (IPv6: /64); over `proxy.max_connections_per_ip` it is closed at once.
//!   The count is released when Pingora is done with the connection;
//! - it waits at most `proxy.keepalive_timeout` for a first byte (plain
//!   TCP), then gives the request header `proxy.header_timeout` to arrive in
//!   full: the service calls [`header_done`] as soon as it has the header
//!   ([`deadline::HeaderDeadline`]). Every later request on the connection
//!   gets the same ([`request_finished`] re-arms the deadline): at most
//!   `keepalive_timeout` idle, then `header_timeout` from its first byte. A
//!   connection that misses a deadline gets `408 Request Timeout` if part of
//!   a request arrived, and is closed;
//! - on TLS listeners the handshake (and the PROXY header before it) must be
//!   done within `proxy.header_timeout` too ([`HandshakeWatch`]);
//! - on the proxy listener the table keeps each open connection's socket
//!   ([`live::Socket`]), so that a SIGINT during a graceful stop can end
//!   them all ([`ConnTable::shut_down_live`]) and their requests record
//!   their usage before the process exits.

mod deadline;
mod fields;
mod framing;
mod handshake;
mod live;
mod side;
mod table;

pub use crate::conn_end::ConnEnd;
pub use handshake::HandshakeWatch;
pub use live::Socket;
pub use side::{
    nofile_limit, side_app, side_cap, SideHttp, METRICS_MAX_CONNECTIONS, VERIFY_MAX_CONNECTIONS,
};
pub use table::{ConnTable, StreamSlot};

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::ALPN;
use pingora::protocols::SocketDigest;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tollgate_core::net::{self, ProxyHeader, MAX_PROXY_HEADER};

use crate::edge_metrics;
use crate::metrics;
use crate::state::State;
use deadline::{DeadlineFlags, HeaderDeadline};

tokio::task_local! {
    static HEADER_DONE: Arc<DeadlineFlags>;
}

/// A handle that ends this HTTP/1 connection (an upgraded WebSocket whose
/// key is no longer valid). Outside an [`EdgeApp`] (HTTP/2 streams) `None`.
pub fn close_handle() -> Option<Arc<ConnEnd>> {
    HEADER_DONE.try_with(|f| f.end.clone()).ok()
}

/// Called by the service once the request header is in: the header deadline
/// of this request no longer applies. Outside an [`EdgeApp`] a no-op.
pub fn header_done() {
    let _ = HEADER_DONE.try_with(|f| f.done.store(true, Ordering::Release));
}

/// [`header_done`], and the idle wait before this connection's next
/// request: the current `keepalive_timeout` (a reload applies to open
/// connections too). Returns whether the request came through an
/// [`EdgeApp`], whose stream ends that wait itself.
pub fn header_done_idle(idle: Duration) -> bool {
    let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
    HEADER_DONE
        .try_with(|f| {
            f.done.store(true, Ordering::Release);
            f.idle_ms.store(ms, Ordering::Release);
        })
        .is_ok()
}

/// Called by the service when a request is finished (answered and logged):
/// on a keep-alive connection the next request header gets its own deadline
/// (`keepalive_timeout` for its first byte, then `header_timeout`). (The
/// scan against the parser's limits follows the byte stream itself, bodies
/// and pipelined requests included: `framing`.) Outside an
/// [`EdgeApp`] (HTTP/2 streams) a no-op.
pub fn request_finished() {
    let _ = HEADER_DONE.try_with(|f| {
        f.done.store(false, Ordering::Release);
        f.rearm.store(true, Ordering::Release);
    });
}

/// Releases a connection's count (and forgets its socket) when dropped,
/// right after Pingora is done with the connection, unless kept (the
/// connection goes back to Pingora for its next request).
struct Counted<'a> {
    table: &'a ConnTable,
    id: i32,
    keep: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.table.release(self.id);
        }
    }
}

/// Pingora's HTTP app behind the connection edge.
pub struct EdgeApp<A> {
    pub inner: Arc<A>,
    pub state: Arc<State>,
    pub conns: Arc<ConnTable>,
    /// Shared with the listener's [`PreTlsEdge`].
    pub handshakes: Arc<HandshakeWatch>,
    /// `proxy.h2c` as the server was built with (Pingora's own h2c switch
    /// is fixed at start too).
    pub h2c: bool,
    /// A side listener (verify, metrics: [`side_app`]): its clients send no
    /// PROXY protocol header.
    pub side: bool,
}

/// How long after the header deadline the edge stops waiting for the 408 to
/// be written (a client that reads nothing) and drops the connection.
pub(crate) const ANSWER_GRACE: Duration = Duration::from_secs(1);

fn peer_of(stream: &Stream) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// The cap on open connections for a connection from `peer` (after a PROXY
/// header, its source): `max_connections_per_ip`, except for a peer in
/// `trusted_proxies` (a load balancer carries many clients, told apart per
/// request by `X-Forwarded-For`): 0, no cap.
pub(crate) fn connection_cap(
    peer: Option<IpAddr>,
    edge: &tollgate_core::config::EdgeConfig,
) -> u32 {
    match peer {
        Some(ip) if edge.trusted_proxies.contains(ip) => 0,
        _ => edge.max_connections_per_ip,
    }
}

/// Read a PROXY header from the start of `stream` and make its source the
/// stream's peer address. Bytes read past the header are put back.
pub async fn read_proxy_header(stream: &mut L4Stream) -> Result<(), &'static str> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        match net::parse_proxy_header(&buf) {
            ProxyHeader::Incomplete => {}
            ProxyHeader::Invalid => return Err("not a PROXY protocol header"),
            ProxyHeader::Done { consumed, source } => {
                stream.rewind(&buf[consumed..]);
                if let Some(src) = source {
                    use std::os::unix::io::AsRawFd;
                    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                    let _ = digest.peer_addr.set(Some(PSocketAddr::Inet(src)));
                    stream.set_socket_digest(digest);
                }
                return Ok(());
            }
        }
        // Never read past what a header can be, beyond one chunk.
        if buf.len() > MAX_PROXY_HEADER {
            return Err("PROXY protocol header too long");
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| "connection error in the PROXY protocol header")?;
        if n == 0 {
            return Err("connection closed in the PROXY protocol header");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Before a TLS handshake: start its deadline ([`HandshakeWatch`]) and, on
/// PROXY-protocol listeners, read the PROXY header.
pub struct PreTlsEdge {
    pub state: Arc<State>,
    pub handshakes: Arc<HandshakeWatch>,
}

#[async_trait]
impl PreTlsProcess for PreTlsEdge {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        use std::os::unix::io::AsRawFd;
        let config = self.state.config.load_full();
        let edge = &config.config.proxy.edge;
        self.handshakes
            .start(stream.as_raw_fd(), edge.header_timeout);
        if !edge.proxy_protocol {
            return Ok(());
        }
        let res = tokio::time::timeout(edge.header_timeout, read_proxy_header(stream)).await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => {
                edge_metrics::CONNECTIONS_REFUSED
                    .with_label_values(&["proxy_protocol"])
                    .inc();
                Err(pingora::Error::explain(pingora::ErrorType::ReadError, why))
            }
            Err(_) => {
                edge_metrics::HEADER_TIMEOUTS.inc();
                Err(pingora::Error::explain(
                    pingora::ErrorType::ReadTimedout,
                    "PROXY protocol header timed out",
                ))
            }
        }
    }
}

/// The client preface that starts an HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection starts with the HTTP/2 preface (peeked, left
/// in place). `None` (close) when 24 bytes do not arrive within `timeout`:
/// with `proxy.h2c` on, an HTTP/1 request starting with `P` must be at
/// least that long, as every real one is (`PUT / HTTP/1.1` plus `Host`).
async fn h2c_preface(stream: &mut Stream, timeout: Duration) -> Option<bool> {
    let mut buf = [0u8; 24];
    match tokio::time::timeout(timeout, stream.try_peek(&mut buf)).await {
        Ok(Ok(peeked)) => Some(peeked && buf == *H2_PREFACE),
        Ok(Err(_)) => None,
        Err(_) => {
            edge_metrics::HEADER_TIMEOUTS.inc();
            None
        }
    }
}

impl<A: ServerApp + Send + Sync + 'static> EdgeApp<A> {
    /// The first call on a plain TCP connection of a PROXY-protocol
    /// listener: read the header. `None` closes the connection.
    async fn proxy_protocol(&self, stream: Stream, timeout: Duration) -> Option<Stream> {
        if !stream.as_any().is::<L4Stream>() {
            // TLS: read before the handshake by `PreTlsEdge`.
            return Some(stream);
        }
        let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        match tokio::time::timeout(timeout, read_proxy_header(&mut l4)).await {
            Ok(Ok(())) => Some(l4),
            Ok(Err(why)) => {
                tracing::debug!("connection closed: {why}");
                edge_metrics::CONNECTIONS_REFUSED
                    .with_label_values(&["proxy_protocol"])
                    .inc();
                None
            }
            Err(_) => {
                edge_metrics::HEADER_TIMEOUTS.inc();
                None
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for EdgeApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let config = self.state.config.load_full();
        let proxy = &config.config.proxy;
        let edge = &proxy.edge;
        let id = stream.id();
        let reused = self.conns.is_open(id);
        if !reused {
            // A TLS connection's handshake is over once it gets here.
            self.handshakes.finished(id);
            if edge.proxy_protocol && !self.side {
                stream = self.proxy_protocol(stream, edge.header_timeout).await?;
            }
            let peer = peer_of(&stream);
            let ip = peer
                .map(net::bucket_key)
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let cap = connection_cap(peer, edge);
            // The proxy listener's sockets, for a SIGINT that cuts a
            // graceful stop short (once per connection).
            let socket = if self.side { None } else { Socket::of(id) };
            if let Err(reason) = self.conns.admit_socket(id, ip, cap, socket) {
                edge_metrics::CONNECTIONS_REFUSED
                    .with_label_values(&[reason])
                    .inc();
                return None;
            }
        }
        let mut counted = Counted {
            table: &self.conns,
            id,
            keep: false,
        };

        // Plain TCP peeks one byte (and puts it back); TLS streams do not
        // peek and go straight on (their handshake is already done).
        let mut first = [0u8; 1];
        let peeked = match tokio::time::timeout(
            proxy.keepalive_timeout,
            stream.try_peek(&mut first),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return None,
            Err(_) => {
                metrics::IDLE_CLOSED.inc();
                return None;
            }
        };
        // A reused TLS connection may idle first: give it the keep-alive
        // time on top of the header deadline.
        let deadline = if reused && !peeked {
            edge.header_timeout + proxy.keepalive_timeout
        } else {
            edge.header_timeout
        };
        // `proxy.h2c`: a plain connection that opens with the HTTP/2 preface
        // is HTTP/2 by prior knowledge (gRPC clients), served as an h2 one.
        let h2c = self.h2c
            && peeked
            && first[0] == H2_PREFACE[0]
            && stream.selected_alpn_proto().is_none()
            && h2c_preface(&mut stream, edge.header_timeout).await?;
        if h2c || stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2 serves its streams on tasks of their own; its frames
            // are read by Pingora's h2 server with its own limits.
            let r = self.inner.process_new(stream, shutdown).await;
            counted.keep = r.is_some();
            return r;
        }
        let flags = Arc::new(DeadlineFlags::default());
        let stream = HeaderDeadline::arm(
            stream,
            flags.clone(),
            deadline,
            edge.header_timeout,
            proxy.keepalive_timeout,
            edge.max_header_bytes,
            edge.body_timeout,
        )?;
        // Pingora serves every request of an HTTP/1 keep-alive connection
        // inside this one call; the stream re-arms its deadline per request.
        let fut = HEADER_DONE.scope(flags.clone(), self.inner.process_new(stream, shutdown));
        tokio::pin!(fut);
        let result = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            // The 408 is written, given up on, or nothing had arrived; or
            // the service wants the connection gone (a revoked WebSocket):
            // dropping the future closes the connection.
            Poll::Pending if flags.end.poll_ended(cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        counted.keep = result.is_some();
        result
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_not_capped_by_their_own_address() {
        let mut edge = tollgate_core::config::EdgeConfig {
            max_connections_per_ip: 7,
            ..Default::default()
        };
        edge.trusted_proxies =
            tollgate_core::net::TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let lb: IpAddr = "10.1.2.3".parse().expect("ip");
        let client: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(connection_cap(Some(lb), &edge), 0);
        assert_eq!(connection_cap(Some(client), &edge), 7);
        assert_eq!(connection_cap(None, &edge), 7);
    }
}
