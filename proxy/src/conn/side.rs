//! The side listeners of the proxy process (the verify API, `verify.listen`,
//! and the metrics endpoint, `proxy.metrics_listen`) behind the same
//! connection edge as the proxy listener ([`EdgeApp`]): the per-address
//! cap, the idle wait and the request-header deadline, plus a total cap per
//! side listener so that it can never take the file descriptors the proxy
//! listener needs ([`side_cap`]).
//!
//! [`SideHttp`] wraps the listener's HTTP app: it tells the edge when a
//! request header is in and when a request is finished (the hooks the
//! proxy's request filter calls), and applies the proxy's HTTP/1 framing
//! checks ([`crate::edge::check_framing`]) before the app sees the request:
//! `Content-Length` beside `Transfer-Encoding`, repeated or list-valued
//! `Content-Length`, a bad `Host` are `400` and the connection is closed; a
//! header over `proxy.max_header_bytes`, or with more fields than Pingora's
//! parser takes, is `431` problem+json (round 12: it was a silent close).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use super::{ConnTable, EdgeApp, HandshakeWatch};
use crate::answer::Answer;
use crate::edge;
use crate::edge_metrics;
use crate::state::State;

/// The most connections the verify listener holds open at once (fewer with
/// a low `RLIMIT_NOFILE`: [`side_cap`]).
pub const VERIFY_MAX_CONNECTIONS: u32 = 1024;
/// The most connections the metrics listener holds open at once.
pub const METRICS_MAX_CONNECTIONS: u32 = 64;

/// A side listener's total connection cap: `wanted`, but at most a
/// `1/share` of the process's file descriptor limit (`nofile`), at least 8.
pub fn side_cap(wanted: u32, nofile: u64, share: u64) -> u32 {
    let part = u32::try_from(nofile / share.max(1)).unwrap_or(u32::MAX);
    wanted.min(part).max(8)
}

/// The soft `RLIMIT_NOFILE` of this process (1024 when it cannot be read).
pub fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// A side listener's HTTP app behind the connection edge (see the module).
pub struct SideHttp<S> {
    pub inner: S,
    /// For `proxy.max_header_bytes` (as the proxy listener reads it).
    pub state: Arc<State>,
}

/// `a` as a Pingora response; `close` adds `Connection: close`.
pub fn answer_response(a: &Answer, close: bool) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(a.status)
        .header("Content-Length", a.body.len())
        .header("Cache-Control", "no-store");
    for (name, value) in &a.headers {
        b = b.header(*name, value.as_str());
    }
    if close {
        b = b.header("Connection", "close");
    }
    b.body(a.body.clone()).unwrap_or_default()
}

impl<S: ServeHttp + Send + Sync> SideHttp<S> {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // The whole request header is in: the header deadline is met.
        super::header_done();
        let raw = session.as_http1().map(|h| h.get_headers_raw_bytes());
        let max = self.state.config.load().config.proxy.edge.max_header_bytes;
        let checked = edge::check_size(session.req_header(), raw.as_deref(), max)
            .and_then(|()| edge::check_framing(session.req_header(), raw.as_deref()));
        let resp = match checked {
            Ok(()) => self.inner.response(session).await,
            Err(refusal) => {
                if refusal.close {
                    session.set_keepalive(None);
                }
                refused(&refusal)
            }
        };
        // The next request on this connection gets its own deadlines.
        super::request_finished();
        resp
    }
}

/// Count `refusal` and build its answer.
fn refused(refusal: &edge::Refusal) -> Response<Vec<u8>> {
    edge_metrics::REFUSED
        .with_label_values(&[refusal.reason])
        .inc();
    answer_response(&refusal.answer, refusal.close)
}

/// Pingora's `ServeHttp` loop (read the header, answer, finish), except that
/// a header its parser gives up on (too many fields, too large, malformed)
/// is answered as the proxy listener answers it — 431 or 400 problem+json,
/// then closed — instead of a silent close.
#[async_trait]
impl<S: ServeHttp + Send + Sync> HttpServerApp for SideHttp<S> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                let max = self.state.config.load().config.proxy.edge.max_header_bytes;
                if let Some(refusal) = edge::unreadable_header(&e, max) {
                    let (parts, body) = refused(&refusal).into_parts();
                    let header = ResponseHeader::from(parts);
                    if let Err(e) = http.write_error_response(header, body.into()).await {
                        tracing::debug!("side listener: writing the refusal failed: {e}");
                    }
                } else {
                    tracing::debug!("side listener: reading the request failed: {e}");
                }
                return None;
            }
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let (parts, body) = self.response(&mut http).await.into_parts();
        if let Err(e) = http.write_response_header(Box::new(parts.into())).await {
            tracing::debug!("side listener: writing the response failed: {e}");
            return None;
        }
        if !body.is_empty() {
            if let Err(e) = http.write_response_body(body.into(), true).await {
                tracing::debug!("side listener: writing the response failed: {e}");
                return None;
            }
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!("side listener: finishing the request failed: {e}");
                None
            }
        }
    }
}

/// `app` behind the connection edge, as a side listener with a total cap of
/// `max_total` open connections.
pub fn side_app<S: ServeHttp + Send + Sync + 'static>(
    app: S,
    state: Arc<State>,
    max_total: u32,
) -> EdgeApp<SideHttp<S>> {
    EdgeApp {
        inner: Arc::new(SideHttp {
            inner: app,
            state: state.clone(),
        }),
        state,
        conns: Arc::new(ConnTable::with_total_cap(max_total)),
        handshakes: Arc::new(HandshakeWatch::default()),
        h2c: false,
        side: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_caps_leave_most_descriptors_to_the_proxy() {
        assert_eq!(side_cap(1024, 1_048_576, 4), 1024);
        assert_eq!(side_cap(1024, 1024, 4), 256);
        assert_eq!(side_cap(64, 1024, 16), 64);
        assert_eq!(side_cap(64, 256, 16), 16);
        assert_eq!(side_cap(1024, 0, 4), 8);
        assert_eq!(side_cap(1024, 4096, 0), 1024);
        assert!(nofile_limit() > 0);
    }

    #[test]
    fn answers_carry_the_problem_and_close() {
        let a = crate::answer::bad_request("bad-content-length", "x");
        let r = answer_response(&a, true);
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.headers().get("connection").and_then(|v| v.to_str().ok()),
            Some("close")
        );
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(tollgate_core::problem::CONTENT_TYPE)
        );
        assert_eq!(r.body(), &a.body);
    }
}
