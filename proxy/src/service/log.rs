//! The end of a request: what it did, told to the metrics, the usage
//! recorder, the access log and the span exporter. Pingora calls `logging`
//! once per request; this runs after the cost settled.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource};
use tollgate_core::trace::OsIds;

use crate::access_log::{self, Line};
use crate::ladder::Step;
use crate::metrics::{self, outcome};
use crate::request_span::{self, RequestFacts};
use crate::telemetry;
use crate::usage::UsageEvent;

use super::{client_ip, Ctx, Gateway};

impl Gateway {
    /// Report the finished request (`status`: what the client was sent, 0
    /// for nothing; `e`: why it failed, if it did).
    pub(super) fn report(&self, session: &Session, e: Option<&Error>, ctx: &Ctx, status: u16) {
        let outcome = ctx.outcome.unwrap_or_else(|| outcome_of(e, status));
        let route = ctx
            .route
            .as_ref()
            .map(|r| r.route.name.as_str())
            .unwrap_or("");
        let elapsed = ctx.start.elapsed();
        if self.ladder.on(Step::Metrics) {
            match &ctx.route {
                Some(r) => r.metrics.request(outcome, elapsed),
                None => metrics::unrouted_request(outcome, elapsed),
            }
        }
        let req = session.req_header();
        if let Some(r) = ctx.route.as_ref().filter(|_| self.ladder.on(Step::Usage)) {
            self.usage.record(UsageEvent {
                at_ms: ctx.start_ms,
                key_id: ctx.key.as_ref().map(|k| k.id),
                route: r.name.clone(),
                method: req.method.as_str(),
                path: ctx.path(&req.uri),
                client_ip: client_ip(session, ctx),
                status,
                outcome,
                violated: ctx
                    .decision
                    .as_ref()
                    .map(|d| d.violated_names())
                    .unwrap_or_default(),
                reason: &ctx.refusal,
                latency_us: elapsed.as_micros() as u64,
            });
        }
        if ctx.config.as_ref().is_some_and(|c| c.config.log.access_log) {
            access_log::write(&Line {
                request_id: ctx.request_id.as_str(),
                route,
                key_id: ctx.key.as_ref().map(|k| k.id),
                method: req.method.as_str(),
                path: ctx.path(&req.uri),
                client: client_ip(session, ctx),
                status,
                outcome,
                limiter: ctx.backend,
                upstream: ctx.target.as_ref().map(|t| &t.target),
                trace_id: ctx.trace.as_ref().map(|t| &t.span.trace_id),
                duration_us: elapsed.as_micros() as u64,
            });
        }
        if let Some(spans) = &self.spans {
            let facts = RequestFacts {
                route,
                status,
                decision: outcome,
                error: e.map(|e| e.to_string()),
                ..span_facts(session, ctx)
            };
            // A request refused before it went upstream starts its trace here.
            let started;
            let trace = match &ctx.trace {
                Some(t) => t,
                None => {
                    started = telemetry::start(req, &mut OsIds);
                    &started
                }
            };
            spans.record(request_span::span(trace, &facts, elapsed));
        }
    }
}

/// The outcome of a request the proxy did not answer itself: an answer
/// ≥ 500 or a failure is `upstream_error`, except a failure on the
/// client's side (it hung up before the answer, or closed or stopped
/// reading during it): that request was admitted and sent on (`allowed`).
pub(super) fn outcome_of(e: Option<&Error>, status: u16) -> &'static str {
    match e {
        _ if status >= 500 => outcome::UPSTREAM_ERROR,
        Some(e) if *e.esource() == ErrorSource::Downstream => outcome::ALLOWED,
        Some(_) => outcome::UPSTREAM_ERROR,
        None => outcome::ALLOWED,
    }
}

/// What the request did, for its span (the caller adds route, status,
/// decision and error).
fn span_facts<'a>(session: &'a Session, ctx: &'a Ctx) -> RequestFacts<'a> {
    let req = session.req_header();
    let redis = ctx.backend == "redis";
    RequestFacts {
        method: req.method.as_str(),
        path: ctx.path(&req.uri),
        key_id: ctx.key.as_ref().map(|k| k.id),
        identity: ctx
            .identity
            .as_deref()
            .and_then(|i| i.external_id.as_deref())
            .unwrap_or(""),
        request_id: ctx.request_id.as_str(),
        violated: ctx
            .decision
            .as_ref()
            .map(|d| d.violated_names())
            .unwrap_or_default(),
        limiter: ctx.backend,
        redis_time: ctx.limiter_time.filter(|_| redis),
        upstream: ctx.target.as_ref().map(|t| t.target.to_string()),
        ..RequestFacts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::ErrorType;

    #[test]
    fn a_failure_on_the_clients_side_is_allowed() {
        let down = Error::new(ErrorType::ConnectionClosed).into_down();
        let up = Error::new(ErrorType::ConnectionClosed).into_up();
        // Hung up before the answer, or part way through it.
        assert_eq!(outcome_of(Some(&down), 0), outcome::ALLOWED);
        assert_eq!(outcome_of(Some(&down), 200), outcome::ALLOWED);
        // The upstream's failures, and answers ≥ 500, whatever else failed.
        assert_eq!(outcome_of(Some(&down), 502), outcome::UPSTREAM_ERROR);
        assert_eq!(outcome_of(Some(&up), 0), outcome::UPSTREAM_ERROR);
        assert_eq!(outcome_of(Some(&up), 200), outcome::UPSTREAM_ERROR);
        assert_eq!(outcome_of(None, 200), outcome::ALLOWED);
        assert_eq!(outcome_of(None, 503), outcome::UPSTREAM_ERROR);
    }
}
