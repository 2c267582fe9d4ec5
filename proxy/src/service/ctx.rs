//! The per-request context the gateway's filters share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::request_id::RequestId;
use crate::upstreams::Picked;
use tollgate_core::keys;
use tollgate_core::limits::Decision;

use crate::body_limit;
use crate::edge::Inbound;
use crate::keyset::ActiveKey;
use crate::limiter::backends::InFlightHold;
use crate::state::{CompiledRoute, ConfigState};
use crate::telemetry::RequestTrace;
use crate::usage::open::Open;
use crate::usage::UsageEvent;
use crate::websocket;
use crate::ws_hold::Hold;

/// Per-request context.
pub struct Ctx {
    pub(super) start: Instant,
    pub(super) start_ms: i64,
    pub(super) request_id: RequestId,
    /// The client's own `X-Request-Id` when it was not kept.
    pub(super) client_request_id: Option<String>,
    /// Canonical path, client address, host: set once the edge checks passed.
    pub(super) inbound: Option<Inbound>,
    /// Close the connection after the answer (framing errors).
    pub(super) close: bool,
    pub(super) config: Option<Arc<ConfigState>>,
    pub(super) route: Option<Arc<CompiledRoute>>,
    pub(super) key: Option<Arc<ActiveKey>>,
    /// The key's identity (see `ActiveKey::identity_id` for its id).
    pub(super) identity: Option<Arc<crate::identities::ActiveIdentity>>,
    pub(super) plan: Option<Arc<str>>,
    /// `RateLimit-Policy` of the applicable limits (rendered at compile time).
    pub(super) policy: Option<http::HeaderValue>,
    pub(super) key_from_bearer: bool,
    pub(super) decision: Option<Decision>,
    pub(super) outcome: Option<&'static str>,
    /// Why the proxy answered itself (`Answer::reason`), for usage.
    pub(super) refusal: String,
    /// Which limiter decided (`local`, `redis`, `fallback`, `allow`).
    pub(super) backend: &'static str,
    pub(super) target: Option<Arc<Picked>>,
    pub(super) _inflight: Option<InFlightHold>,
    /// W3C trace context (`telemetry.trace_context`).
    pub(super) trace: Option<RequestTrace>,
    /// Time in the limiter (hold and buckets), for the span.
    pub(super) limiter_time: Option<Duration>,
    /// The request body streamed so far against `max_body_bytes`.
    pub(super) body: body_limit::Counter,
    /// The body went over `max_body_bytes` while streaming.
    pub(super) body_too_large: bool,
    /// The SHA-256 of the key presented (found in the key set).
    pub(super) key_hash: Option<keys::KeyHash>,
    /// A WebSocket handshake on a `websocket` route.
    pub(super) websocket: bool,
    /// The open WebSocket, in the registry until the connection ends.
    pub(super) ws_open: Option<websocket::Registration>,
    /// The handshake's client half held open until the upstream answers
    /// (Pingora #946 workaround, see [`crate::ws_hold`]).
    pub(super) ws_hold: Hold,
    /// A `routes[].cost` reservation not settled yet.
    pub(super) cost: Option<crate::cost::Pending>,
    /// An HTTP/2 stream's slot in its address's connection budget.
    pub(super) stream_slot: Option<crate::conn::StreamSlot>,
    /// Usage not reported yet: taken by `logging`; a context dropped with
    /// it (a stop cut the request) records itself ([`Drop`] below).
    pub(super) open: Option<Open>,
    /// The request's method (for a request cut before `logging`).
    pub(super) method: http::Method,
    /// The upstream's answer status, 0 before it came.
    pub(super) answered: u16,
    /// While an HTTP/2 request body is still coming: when its last piece
    /// came (Pingora 0.9.1 has no read timeout for h2 bodies).
    pub(super) h2_body_since: Option<Instant>,
}

impl Ctx {
    /// A request that just arrived.
    pub(super) fn new(open: Option<Open>) -> Self {
        Self {
            start: Instant::now(),
            start_ms: tollgate_core::now_ms(),
            request_id: RequestId::default(),
            client_request_id: None,
            inbound: None,
            close: false,
            config: None,
            route: None,
            key: None,
            identity: None,
            plan: None,
            policy: None,
            key_from_bearer: false,
            decision: None,
            outcome: None,
            refusal: String::new(),
            backend: "none",
            target: None,
            _inflight: None,
            trace: None,
            limiter_time: None,
            body: body_limit::Counter::default(),
            body_too_large: false,
            key_hash: None,
            websocket: false,
            ws_open: None,
            ws_hold: Hold::No,
            cost: None,
            stream_slot: None,
            open,
            method: http::Method::GET,
            answered: 0,
            h2_body_since: None,
        }
    }

    /// The request's `proxy.edge.body_timeout`.
    pub(super) fn body_timeout(&self) -> Duration {
        self.config
            .as_ref()
            .map(|c| c.config.proxy.edge.body_timeout)
            .unwrap_or(tollgate_core::config::DEFAULT_BODY_TIMEOUT)
    }

    /// The path routed on (canonical), else the one requested.
    pub(super) fn path<'a>(&'a self, requested: &'a http::Uri) -> &'a str {
        self.inbound
            .as_ref()
            .map(|i| i.canonical.path.as_str())
            .unwrap_or_else(|| requested.path())
    }
}

impl Drop for Ctx {
    /// A request dropped before `logging` (the end of a stop's grace period
    /// drops every request in flight) is still counted and recorded: with
    /// the outcome it had (`allowed` once admitted), the upstream's status
    /// (0 if none came) and its latency so far.
    fn drop(&mut self) {
        let (Some(open), Some(route)) = (self.open.take(), self.route.as_ref()) else {
            return;
        };
        let outcome = self
            .outcome
            .unwrap_or_else(|| super::log::outcome_of(None, self.answered));
        let elapsed = self.start.elapsed();
        route.metrics.request(outcome, elapsed);
        let violated = self
            .decision
            .as_ref()
            .map(|d| d.violated_names())
            .unwrap_or_default();
        open.recorder().record(UsageEvent {
            at_ms: self.start_ms,
            key_id: self.key.as_ref().map(|k| k.id),
            route: route.name.clone(),
            method: self.method.as_str(),
            path: self
                .inbound
                .as_ref()
                .map_or("", |i| i.canonical.path.as_str()),
            client_ip: self.inbound.as_ref().map(|i| i.client.client),
            status: self.answered,
            outcome,
            violated,
            reason: &self.refusal,
            latency_us: elapsed.as_micros() as u64,
        });
    }
}
