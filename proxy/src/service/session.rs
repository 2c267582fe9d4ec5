//! What the proxy reads from a Pingora session beside the request header:
//! the peer and client addresses, gRPC, TLS, and ending a held-open
//! WebSocket handshake's client half.

use std::net::IpAddr;
use std::time::Duration;

use pingora::proxy::Session;

use super::Ctx;
use crate::grpc;
use crate::ws_hold::Hold;

/// End the client half of a refused, held-open WebSocket handshake
/// ([`ws_hold`]): its next read fails at once (within Pingora's 10 ms timer
/// tick), which ends the request (the connection closes; the answer was
/// sent whole). Not zero: Pingora's fast timer rounds a deadline that falls
/// at its own start by computing 0 − 1 (a panic in debug builds, wrapped
/// arithmetic in release), and sub-second timeouts always take that timer
/// (longer ones take tokio's: `server`).
pub(super) fn end_held_half(session: &mut Session, ctx: &mut Ctx) {
    ctx.ws_hold = Hold::Ended;
    session.set_read_timeout(Some(END_NOW));
}

/// The shortest read timeout, for [`end_held_half`].
const END_NOW: Duration = Duration::from_millis(1);

/// The TCP peer, or the PROXY-protocol source on listeners that take one.
pub(super) fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client address: resolved through trusted proxies, else the peer.
pub(super) fn client_ip(session: &Session, ctx: &Ctx) -> Option<IpAddr> {
    match &ctx.inbound {
        Some(i) => Some(i.client.client),
        None => peer_ip(session),
    }
}

/// A gRPC call (its refusals are answered as gRPC status). Looked at only
/// when the proxy answers itself: allowed requests do not pay for it.
pub(super) fn is_grpc(session: &Session) -> bool {
    grpc::is_grpc(
        session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
    )
}

/// Whether the request came in on the TLS listener.
pub(super) fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}
