//! A request that failed after the request filter let it through: the
//! client's body went over `max_body_bytes` or stalled, the client stopped
//! reading the answer, or the upstream
//! could not be reached or did not answer. The client gets a problem
//! answer (or gRPC status) when no response header went out yet.

use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use pingora::ErrorType;

use crate::answer;
use crate::edge_metrics;
use crate::grpc;
use crate::metrics::outcome;
use crate::ws_hold::Hold;

use super::{is_grpc, Ctx, Gateway};

/// A read of the client's request body timed out (`proxy.body_timeout`).
fn body_stalled(e: &Error) -> bool {
    matches!(e.esource(), pingora::ErrorSource::Downstream)
        && matches!(e.etype(), ErrorType::ReadTimedout)
}

/// The upstream timed out while an HTTP/2 request body had made no
/// progress for `proxy.body_timeout`: the client's fault, not the
/// upstream's (Pingora 0.9.1 has no h2 body read timeout, so this is only
/// found at the upstream's timeout).
fn h2_body_stalled(e: &Error, ctx: &Ctx) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) && !matches!(e.esource(), pingora::ErrorSource::Downstream)
        && ctx
            .h2_body_since
            .is_some_and(|t| t.elapsed() >= ctx.body_timeout())
}

/// A write of the answer to the client made no progress for
/// `proxy.body_timeout`: the client stopped reading.
fn answer_stalled(e: &Error) -> bool {
    matches!(e.esource(), pingora::ErrorSource::Downstream)
        && matches!(e.etype(), ErrorType::WriteTimedout)
}

impl Gateway {
    /// Answer the failure (if anything can still be sent) and tell Pingora
    /// the status and that the connection is not reused.
    pub(super) async fn fail(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        if ctx.ws_hold == Hold::Ended
            || (ctx.ws_hold == Hold::Refused && session.response_written().is_some())
        {
            // The end of a refused handshake's held half, its answer sent
            // (whole, or cut by a stalled upstream past body_timeout).
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if ctx.body_too_large {
            // The rest of the body is unread: the connection is closed.
            ctx.outcome = Some(edge_metrics::BAD_REQUEST);
            session.set_keepalive(None);
            let a =
                answer::body_too_large(ctx.body.max()).with_header("Connection", "close".into());
            ctx.refusal = "body-too-large".into();
            // A gRPC caller reads RESOURCE_EXHAUSTED, as for other refusals
            // (while no response header went out yet).
            let a = if is_grpc(session) { grpc::answer(a) } else { a };
            if session.response_written().is_some() {
                // Too late for an answer: the connection is just closed.
            } else if let Err(e) = self.respond(session, ctx, a).await {
                tracing::debug!("cannot send the body-too-large answer: {e}");
            }
            return FailToProxy {
                error_code: 413,
                can_reuse_downstream: false,
            };
        }
        if body_stalled(e) || h2_body_stalled(e, ctx) {
            // The client's body stopped coming: its fault, answered 408.
            ctx.outcome = Some(edge_metrics::BAD_REQUEST);
            session.set_keepalive(None);
            let body_timeout = ctx.body_timeout();
            let a = answer::body_timeout(body_timeout).with_header("Connection", "close".into());
            if let Err(e) = self.respond(session, ctx, a).await {
                tracing::debug!("cannot send the body timeout answer: {e}");
            }
            return FailToProxy {
                error_code: 408,
                can_reuse_downstream: false,
            };
        }
        if answer_stalled(e) {
            // Admitted and served; the client stopped taking the answer.
            // Nothing can be sent: the request ends, and with it its stream
            // slot and upstream connection.
            ctx.outcome = Some(outcome::ALLOWED);
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            // The upstream got the request and did not answer in time.
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            // It could not be reached at all (down, or not answering SYNs).
            ErrorType::ConnectTimedout => 502,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => 502,
                pingora::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 502,
            },
        };
        if code >= 500 {
            ctx.outcome = Some(outcome::UPSTREAM_ERROR);
        }
        if code > 0 {
            // The connection is not reused after this answer (see below): say
            // so, or a client may send its next request into a closing socket.
            session.set_keepalive(None);
            let a = match (code, &ctx.route) {
                (502, Some(route)) if ctx.target.is_none() => {
                    answer::no_healthy_upstream(route.upstream.name())
                }
                _ => answer::upstream_failed(code),
            };
            let a = match &ctx.decision {
                Some(d) => a.with_rate_limit_headers(d),
                None => a,
            };
            let a = if is_grpc(session) { grpc::answer(a) } else { a };
            if let Err(e) = self.respond(session, ctx, a).await {
                tracing::debug!("cannot send error response: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
