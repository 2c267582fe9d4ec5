//! The Pingora `ProxyHttp` implementation. Its filters only orchestrate the
//! plain steps of the other modules: route → key → limits → answer or forward.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use tollgate_core::config::{Auth, Target};
use tollgate_core::keys;
use tollgate_core::limits::Decision;
use tollgate_core::net;
use tollgate_core::trace::OsIds;
use tollgate_telemetry::Spans;

use crate::access;
use crate::answer::{self, Answer};
use crate::auth::{self, Presented};
use crate::body_limit;
use crate::cors;
use crate::edge::{self, Inbound};
use crate::edge_metrics;
use crate::forward::{self, Forwarding};
use crate::gate;
use crate::grpc;
use crate::headers;
use crate::keyset::ActiveKey;
use crate::ladder::{Ladder, Step};
use crate::limiter::backends::{self, Concurrency, InFlightHold, Limiters, Verdict};
use crate::limiter::{identity, Subject};
use crate::metrics::{self, outcome};
use crate::request_span::{self, RequestFacts};
use crate::router::{self, Routable, RouteMatch};
use crate::self_usage;
use crate::state::{self, CompiledRoute, ConfigState, DbState, State};
use crate::telemetry::{self, RequestTrace};
use crate::throttle::AuthThrottle;
use crate::usage::{UsageEvent, UsageRecorder};
use crate::websocket;
use crate::ws_hold::{self, Hold};

/// End the client half of a refused, held-open WebSocket handshake
/// ([`ws_hold`]): its next read fails at once, which ends the request (the
/// connection closes; the answer was sent whole).
fn end_held_half(session: &mut Session, ctx: &mut Ctx) {
    ctx.ws_hold = Hold::Ended;
    session.set_read_timeout(Some(Duration::ZERO));
}

/// The request's `proxy.edge.body_timeout`.
fn body_timeout(ctx: &Ctx) -> Duration {
    ctx.config
        .as_ref()
        .map(|c| c.config.proxy.edge.body_timeout)
        .unwrap_or(tollgate_core::config::DEFAULT_BODY_TIMEOUT)
}

/// A read of the client's request body timed out (`proxy.body_timeout`).
fn body_stalled(e: &Error) -> bool {
    matches!(e.esource(), pingora::ErrorSource::Downstream)
        && matches!(e.etype(), ErrorType::ReadTimedout)
}

/// Per-request context.
pub struct Ctx {
    start: Instant,
    start_ms: i64,
    request_id: String,
    /// The client's own `X-Request-Id` when it was not kept.
    client_request_id: Option<String>,
    /// Canonical path, client address, host: set once the edge checks passed.
    inbound: Option<Inbound>,
    /// Close the connection after the answer (framing errors).
    close: bool,
    config: Option<Arc<ConfigState>>,
    route: Option<Arc<CompiledRoute>>,
    key: Option<Arc<ActiveKey>>,
    /// The key's identity (see `ActiveKey::identity_id` for its id).
    identity: Option<Arc<crate::identities::ActiveIdentity>>,
    plan: Option<Arc<str>>,
    /// `RateLimit-Policy` of the applicable limits (rendered at compile time).
    policy: Option<http::HeaderValue>,
    key_from_bearer: bool,
    decision: Option<Decision>,
    outcome: Option<&'static str>,
    /// Why the proxy answered itself (`Answer::reason`), for usage.
    refusal: String,
    /// Which limiter decided (`local`, `redis`, `fallback`, `allow`).
    backend: &'static str,
    target: Option<Target>,
    _inflight: Option<InFlightHold>,
    /// W3C trace context (`telemetry.trace_context`).
    trace: Option<RequestTrace>,
    /// Time in the limiter (hold and buckets), for the span.
    limiter_time: Option<Duration>,
    /// The request body streamed so far against `max_body_bytes`.
    body: body_limit::Counter,
    /// The body went over `max_body_bytes` while streaming.
    body_too_large: bool,
    /// The SHA-256 of the key presented (found in the key set).
    key_hash: Option<keys::KeyHash>,
    /// A WebSocket handshake on a `websocket` route.
    websocket: bool,
    /// The open WebSocket, in the registry until the connection ends.
    ws_open: Option<websocket::Registration>,
    /// The handshake's client half held open until the upstream answers
    /// (Pingora #946 workaround, see [`ws_hold`]).
    ws_hold: Hold,
    /// A `routes[].cost` reservation not settled yet.
    cost: Option<crate::cost::Pending>,
}

/// The gateway: shared state plus the in-process limiters.
pub struct Gateway {
    pub state: Arc<State>,
    pub limiters: Arc<Limiters>,
    pub usage: Arc<UsageRecorder>,
    auth_failures: AuthThrottle,
    /// The steps that run (all but in the load harness's cost ladder).
    ladder: Ladder,
    /// OpenTelemetry span export (`telemetry.otlp_endpoint`).
    spans: Option<Spans>,
}

impl Gateway {
    pub fn new(state: Arc<State>, limiters: Arc<Limiters>, usage: Arc<UsageRecorder>) -> Self {
        Self {
            state,
            limiters,
            usage,
            auth_failures: AuthThrottle::default(),
            ladder: Ladder::from_env(),
            spans: None,
        }
    }

    /// Export one span per request.
    pub fn with_spans(mut self, spans: Option<Spans>) -> Self {
        self.spans = spans;
        self
    }

    /// Count a missing or invalid key from `addr`; `Some(429)` when the
    /// address has used up its failures (`proxy.auth_failures_per_second`).
    fn auth_failure(&self, addr: IpAddr, per_second: u32, ctx: &mut Ctx) -> Option<Answer> {
        let (ok, evicted) =
            self.auth_failures
                .fail(net::bucket_key(addr), per_second, Instant::now());
        if evicted > 0 {
            edge_metrics::THROTTLE_EVICTIONS.inc_by(evicted as u64);
        }
        if ok {
            return None;
        }
        metrics::AUTH_THROTTLED.inc();
        ctx.outcome = Some(outcome::LIMITED);
        Some(answer::auth_throttled(1))
    }

    /// The caller's key (`Authorization: Bearer` or the key header), or the
    /// 401/403 (or 429 of the bad-key throttle) to answer.
    fn authenticate(
        &self,
        req: &RequestHeader,
        client_addr: IpAddr,
        cfg: &ConfigState,
        db: &DbState,
        ctx: &mut Ctx,
    ) -> Result<Arc<ActiveKey>, Answer> {
        let proxy_cfg = &cfg.config.proxy;
        let per_second = proxy_cfg.auth_failures_per_second;
        // The key is looked up first (in memory): a valid key is never
        // refused for other callers' failures.
        let presented = auth::extract(&req.headers, &proxy_cfg.key_header);
        ctx.key_from_bearer = matches!(presented, Presented::Bearer(_));
        let plain = match presented {
            Presented::Missing => {
                if let Some(a) = self.auth_failure(client_addr, per_second, ctx) {
                    return Err(a);
                }
                ctx.outcome = Some(outcome::UNAUTHORIZED);
                return Err(answer::missing_key(&proxy_cfg.key_header));
            }
            Presented::Garbled => None,
            Presented::Header(k) | Presented::Bearer(k) => Some(k),
        };
        match gate::find_key(db, plain, tollgate_core::now_ms()) {
            Ok((key, hash)) => {
                ctx.key_hash = Some(hash);
                Ok(key)
            }
            Err(reason) => {
                if let Some(a) = self.auth_failure(client_addr, per_second, ctx) {
                    return Err(a);
                }
                ctx.outcome = Some(outcome::FORBIDDEN);
                Err(answer::forbidden_key(reason))
            }
        }
    }

    /// `proxy.usage_path`: the caller's own limits, read without taking
    /// (see [`self_usage`]); never forwarded, never counted as route usage.
    async fn self_usage(
        &self,
        req: &RequestHeader,
        client_addr: IpAddr,
        cfg: &ConfigState,
        ctx: &mut Ctx,
    ) -> Answer {
        let method = req.method.as_str();
        if method != "GET" {
            ctx.outcome = Some(outcome::METHOD_NOT_ALLOWED);
            return answer::method_not_allowed(method, &["GET".to_string()]);
        }
        let db = self.state.db.load_full();
        let key = match self.authenticate(req, client_addr, cfg, &db, ctx) {
            Ok(key) => key,
            Err(a) => return a,
        };
        ctx.key = Some(key.clone());
        let allowed_ips = key.access.as_deref().and_then(|a| a.allowed_ips.as_deref());
        if let Err(d) = tollgate_core::rules::access::check_key(
            Default::default(),
            allowed_ips,
            "",
            method,
            client_addr,
        ) {
            ctx.outcome = Some(outcome::FORBIDDEN);
            return answer::access_denied(&d);
        }
        let listed = self_usage::buckets(&key, cfg, &db);
        let refs: Vec<&crate::limiter::Bucket> = listed.iter().map(|l| l.bucket).collect();
        let limiter = &cfg.config.limiter;
        let deadline = backends::redis_deadline(limiter);
        match self
            .limiters
            .peek(
                limiter,
                &identity::subject_for(key.id, key.identity_id()),
                &refs,
                deadline,
            )
            .await
        {
            Some((states, backend)) => {
                ctx.backend = backend;
                ctx.outcome = Some(outcome::ALLOWED);
                let credits = self_usage::credits(&self.limiters, limiter, &key, deadline).await;
                self_usage::render(&key, None, &listed, &states, backend, cfg, credits)
            }
            None => {
                ctx.outcome = Some(outcome::UNAVAILABLE);
                ctx.backend = "redis";
                answer::limiter_unavailable()
            }
        }
    }

    /// Edge checks, route, key and limits with the request's one snapshot
    /// of the config; `Some(answer)` if the proxy answers itself.
    async fn decide(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        cfg: Arc<ConfigState>,
    ) -> Option<Answer> {
        ctx.config = Some(cfg.clone());
        let edge_cfg = &cfg.config.proxy.edge;
        let peer = peer_ip(session);
        let raw_head = session.as_http1().map(|h| h.get_headers_raw_bytes());
        let inbound = match edge::inspect(session.req_header(), raw_head.as_deref(), peer, edge_cfg)
        {
            Ok(i) => i,
            Err(refusal) => {
                edge_metrics::REFUSED
                    .with_label_values(&[refusal.reason])
                    .inc();
                ctx.outcome = Some(edge_metrics::BAD_REQUEST);
                ctx.close = refusal.close;
                ctx.request_id = edge::new_request_id();
                return Some(refusal.answer);
            }
        };
        let (request_id, client_request_id) =
            edge::request_id(session.req_header(), inbound.client.peer_trusted);
        ctx.request_id = request_id;
        ctx.client_request_id = client_request_id;
        if let Some(authority) = &inbound.canonical.authority {
            // Absolute-form: the URL's host is the request's host (RFC 9112 §3.2.2).
            if let Err(e) = session
                .req_header_mut()
                .insert_header("Host", authority.as_str())
            {
                tracing::debug!("cannot set Host from an absolute-form target: {e}");
            }
        }
        let client_addr = inbound.client.client;
        let req = session.req_header();
        if cfg.config.proxy.usage_path.as_deref() == Some(inbound.canonical.path.as_str()) {
            ctx.inbound = Some(inbound);
            return Some(self.self_usage(req, client_addr, &cfg, ctx).await);
        }
        if let Some(a) = preflight(&cfg, &inbound.canonical.path, req, ctx) {
            ctx.inbound = Some(inbound);
            return Some(a);
        }
        // Routed on the canonical path, borrowed from `inbound` (no copy).
        let routed = match cfg
            .router
            .find(&inbound.canonical.path, req.method.as_str())
        {
            RouteMatch::Found(route) => Ok(route.clone()),
            RouteMatch::MethodNotAllowed(allowed) => Err((
                outcome::METHOD_NOT_ALLOWED,
                answer::method_not_allowed(req.method.as_str(), &allowed),
            )),
            RouteMatch::NotFound => Err((
                outcome::NOT_FOUND,
                answer::not_found(&inbound.canonical.path),
            )),
        };
        ctx.inbound = Some(inbound);
        let route = match routed {
            Ok(route) => route,
            Err((refused, a)) => {
                ctx.outcome = Some(refused);
                return Some(a);
            }
        };
        if route.route.allow_method_override {
            // The method the upstream will act on must be one the route takes.
            if let Some(m) =
                forward::overridden_methods(req).find(|m| !router::route_takes(route.as_ref(), m))
            {
                ctx.outcome = Some(outcome::METHOD_NOT_ALLOWED);
                let allowed = route.methods().map(<[String]>::to_vec).unwrap_or_default();
                return Some(answer::method_not_allowed(&m, &allowed));
            }
        }
        ctx.route = Some(route.clone());
        if let Err(d) = access::route_ip(&route, client_addr) {
            ctx.outcome = Some(outcome::FORBIDDEN);
            return Some(answer::access_denied(&d));
        }
        let max_body = route.route.max_body_bytes;
        if body_limit::declared_over(req, max_body) {
            // The body is not read: the connection cannot carry another request.
            ctx.outcome = Some(edge_metrics::BAD_REQUEST);
            ctx.close = true;
            return Some(answer::body_too_large(max_body));
        }
        ctx.body = body_limit::Counter::new(max_body);
        ctx.websocket = route.route.websocket && websocket::is_handshake(req);
        if !self.ladder.on(Step::Key) {
            return None;
        }
        let db = self.state.db.load_full();

        let subject = match route.route.auth {
            Auth::None => Subject::Ip(net::bucket_key(client_addr)),
            Auth::ApiKey => {
                let key = match self.authenticate(req, client_addr, &cfg, &db, ctx) {
                    Ok(key) => key,
                    Err(a) => return Some(a),
                };
                ctx.key = Some(key.clone());
                ctx.identity = db.keys.identity(&key).cloned();
                // The scopes hold for the method the upstream will act on
                // too: each override a route forwards.
                let overridden = route
                    .route
                    .allow_method_override
                    .then(|| forward::overridden_methods(req));
                let checked = access::key(&key, &route, req.method.as_str(), client_addr, &cfg)
                    .and_then(|()| {
                        overridden
                            .into_iter()
                            .flatten()
                            .try_for_each(|m| access::key(&key, &route, &m, client_addr, &cfg))
                    });
                if let Err(d) = checked {
                    ctx.outcome = Some(outcome::FORBIDDEN);
                    return Some(answer::access_denied(&d));
                }
                Subject::Key(key.id)
            }
        };

        if !self.ladder.on(Step::Limiter) {
            return None;
        }
        let applicable = state::applicable(&route, ctx.key.as_deref(), &cfg, &db);
        if let (Some(plan), Some(key)) = (applicable.unknown_plan, &ctx.key) {
            self.state.note_unknown_plan(key.id, plan);
            ctx.outcome = Some(outcome::FORBIDDEN);
            return Some(answer::unknown_plan());
        }
        ctx.plan = applicable.plan.cloned();
        ctx.policy = applicable.policy;
        // One Redis deadline for the hold and the buckets together.
        let deadline = backends::redis_deadline(&cfg.config.limiter);
        let limiter_start = Instant::now();
        if let (Some(max), Some(key)) = (applicable.concurrency, &ctx.key) {
            match self
                .limiters
                .acquire(&cfg.config.limiter, key.id, max, deadline)
                .await
            {
                Concurrency::Held(hold) => ctx._inflight = Some(hold),
                Concurrency::Full if route.route.shadow => {}
                Concurrency::Full => {
                    ctx.outcome = Some(outcome::LIMITED);
                    return Some(answer::concurrency_exceeded(max));
                }
                Concurrency::Unavailable => {
                    ctx.outcome = Some(outcome::UNAVAILABLE);
                    ctx.backend = "redis";
                    return Some(answer::limiter_unavailable());
                }
            }
        }

        let identity = ctx.key.as_ref().and_then(|k| k.identity_id());
        let subject = identity::member_subject(subject, identity);
        let reservation = crate::cost::Reservation::for_route(&route, &applicable.buckets);
        let reserving = reservation.as_ref().map(|r| r.refs());
        let buckets = reserving.as_deref().unwrap_or(&applicable.buckets);
        let credits = crate::credits::decide(
            &self.limiters,
            &cfg.config.limiter,
            &subject,
            buckets,
            &route,
            deadline,
        )
        .await;
        let verdict = match credits {
            Some(Ok(verdict)) => verdict,
            Some(Err(exhausted)) => {
                ctx.outcome = Some(outcome::LIMITED);
                return Some(exhausted);
            }
            None => {
                self.limiters
                    .decide(&cfg.config.limiter, &subject, buckets, deadline)
                    .await
            }
        };
        ctx.limiter_time = Some(limiter_start.elapsed());
        drop(reserving);
        let (decision, backend) = match verdict {
            Verdict::Decided(d, backend) => (d, backend),
            Verdict::Unavailable => {
                ctx.outcome = Some(outcome::UNAVAILABLE);
                ctx.backend = "redis";
                return Some(answer::limiter_unavailable());
            }
        };
        ctx.backend = backend;
        if !decision.allowed {
            if route.route.shadow {
                ctx.outcome = Some(outcome::SHADOW_LIMITED);
            } else {
                ctx.outcome = Some(outcome::LIMITED);
                let a = answer::limited(&applicable.buckets, &decision);
                ctx.decision = Some(decision);
                return Some(a);
            }
        }
        ctx.cost = reservation.and_then(|r| r.admitted(subject, &decision, backend));
        ctx.decision = Some(decision);
        None
    }

    async fn respond(&self, session: &mut Session, ctx: &Ctx, a: Answer) -> Result<bool> {
        let mut resp = ResponseHeader::build(a.status, Some(a.headers.len() + 2))?;
        for (name, value) in &a.headers {
            resp.insert_header(*name, value.as_str())?;
        }
        resp.insert_header("Content-Length", a.body.len().to_string())?;
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref()) {
            if ctx.outcome != Some(cors::PREFLIGHT) {
                for (name, value) in policy.response_headers(&session.req_header().headers) {
                    resp.append_header(name, value)?;
                }
            }
        }
        if ctx.request_id.is_empty() {
            // Answered before the request had an id (not expected).
            resp.insert_header("X-Request-Id", edge::new_request_id())?;
        } else {
            resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        }
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(a.body)), true)
            .await?;
        Ok(true)
    }
}

/// A CORS preflight for a route with `cors`: answered here, before the key
/// is looked for (and so never counted as an auth failure).
fn preflight(cfg: &ConfigState, path: &str, req: &RequestHeader, ctx: &mut Ctx) -> Option<Answer> {
    let method = cors::preflight_method(req)?;
    let RouteMatch::Found(route) = cfg.router.find(path, method) else {
        return None;
    };
    let a = route.cors.as_ref()?.preflight(req, method);
    ctx.outcome = Some(cors::PREFLIGHT);
    ctx.route = Some(route.clone());
    Some(a)
}

/// The TCP peer, or the PROXY-protocol source on listeners that take one.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client address: resolved through trusted proxies, else the peer.
fn client_ip(session: &Session, ctx: &Ctx) -> Option<IpAddr> {
    match &ctx.inbound {
        Some(i) => Some(i.client.client),
        None => peer_ip(session),
    }
}

/// A gRPC call (its refusals are answered as gRPC status). Looked at only
/// when the proxy answers itself: allowed requests do not pay for it.
fn is_grpc(session: &Session) -> bool {
    grpc::is_grpc(
        session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
    )
}

/// Whether the request came in on the TLS listener.
fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            start_ms: tollgate_core::now_ms(),
            request_id: String::new(),
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
        }
    }

    async fn early_request_filter(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // The whole request header is in: the header timeout is met.
        crate::conn::header_done();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        crate::conn::header_done();
        // The one snapshot of the config this request uses throughout.
        let cfg = self.state.config.load_full();
        let keepalive = cfg.config.proxy.keepalive_timeout;
        // Whole seconds, at least 1: Pingora takes 0 to mean "no limit".
        let secs = keepalive.as_secs() + u64::from(keepalive.subsec_nanos() > 0);
        session.set_keepalive(Some(secs.max(1)));
        // Each read of the request body waits at most body_timeout (HTTP/1;
        // h2 streams have their own flow control and limits).
        session.set_read_timeout(Some(cfg.config.proxy.edge.body_timeout));
        if !self.ladder.on(Step::Route) {
            // Cost ladder, step 0: straight to the first route's upstream.
            ctx.route = cfg.router.routes().first().cloned();
            ctx.config = Some(cfg);
            return Ok(false);
        }
        match self.decide(session, ctx, cfg).await {
            Some(mut a) => {
                if is_grpc(session) {
                    a = grpc::answer(a);
                }
                ctx.refusal = std::mem::take(&mut a.reason);
                if ctx.close {
                    session.set_keepalive(None);
                    a = a.with_header("Connection", "close".to_string());
                }
                self.respond(session, ctx, a).await
            }
            None => {
                if ctx.websocket {
                    // An upgraded connection may be quiet for long: no
                    // body timeout on its reads.
                    session.set_read_timeout(None);
                    // Pingora 0.9.1 can tear the tunnel down right after
                    // the 101 when the handshake has no body
                    // (cloudflare/pingora#946): it is made to declare one
                    // that never ends, before Pingora first reads the body.
                    if ws_hold::hold_open(session.req_header_mut())? {
                        ctx.ws_hold = Hold::Waiting;
                    }
                }
                Ok(false)
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An upgraded connection's bytes are not a request body.
        if session.was_upgraded() {
            return Ok(());
        }
        if let Some(piece) = body {
            if !ctx.body.take(piece.len()) {
                // Not one byte of this piece goes on.
                *body = None;
                ctx.body_too_large = true;
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_body_bytes",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = &ctx.route else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route selected",
            ));
        };
        let pool = &route.upstream;
        match pool.select() {
            Some((backend, target)) => {
                ctx.target = Some(target.clone());
                let mut peer = pool.peer(&backend, target);
                if ctx.websocket {
                    // Nor on the upstream side of the tunnel.
                    peer.options.read_timeout = None;
                }
                Ok(Box::new(peer))
            }
            None => {
                ctx.outcome = Some(outcome::UPSTREAM_ERROR);
                Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    format!("no healthy target in upstream {}", pool.name()),
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.ws_hold != Hold::No {
            // The held-open framing is the proxy's, not the client's.
            ws_hold::release(upstream_request)?;
        }
        if !self.ladder.on(Step::UpstreamHeaders) {
            return Ok(());
        }
        let (Some(route), Some(cfg), Some(inbound)) = (&ctx.route, &ctx.config, &ctx.inbound)
        else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route selected",
            ));
        };
        // Exactly the canonical path that was routed on (less strip_prefix);
        // most requests already carry it as sent, and keep their target.
        let as_sent = route.route.strip_prefix.is_none()
            && upstream_request.uri.authority().is_none()
            && forward::same_target(
                upstream_request.raw_path(),
                &inbound.canonical.path,
                inbound.canonical.query.as_deref(),
            );
        if !as_sent {
            let path = match &route.route.strip_prefix {
                Some(strip) => router::strip_path_case(
                    &inbound.canonical.path,
                    strip,
                    route.route.case_insensitive,
                ),
                None => inbound.canonical.path.as_str().into(),
            };
            let target = match &inbound.canonical.query {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            match target.parse::<http::Uri>() {
                Ok(u) => upstream_request.set_uri(u),
                Err(e) => {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(400),
                        format!("cannot rewrite path: {e}"),
                    ))
                }
            }
        }
        let mut id_buf = [0u8; 20];
        let buf = &mut id_buf;
        let key_id = ctx.key.as_ref().map(move |k| forward::id_text(k.id, buf));
        forward::apply(
            upstream_request,
            &Forwarding {
                key_header: &cfg.config.proxy.key_header,
                key_from_bearer: ctx.key_from_bearer,
                allow_method_override: route.route.allow_method_override,
                websocket: ctx.websocket,
                client: &inbound.client,
                proto: net::forwarded_proto(
                    inbound.client.peer_trusted,
                    session
                        .req_header()
                        .headers
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok()),
                    is_tls(session),
                ),
                host: inbound.host.as_deref(),
                request_id: &ctx.request_id,
                client_request_id: ctx.client_request_id.as_deref(),
                key_id,
                plan: ctx.key.as_ref().and(ctx.plan.as_deref()),
                identity: crate::identities::header_value(ctx.identity.as_deref()),
            },
        )?;
        if cfg.config.telemetry.trace_context {
            let t = telemetry::start(session.req_header(), &mut OsIds);
            telemetry::propagate(&t, upstream_request)?;
            ctx.trace = Some(t);
        }
        if let Some(target) = &ctx.target {
            if !route.upstream.config.preserve_host {
                let default_port = if target.tls { 443 } else { 80 };
                let host = if target.port == default_port {
                    target.host.clone()
                } else {
                    target.authority()
                };
                upstream_request.insert_header("Host", host)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.ws_hold = ctx.ws_hold.answered(upstream_response.status);
        if ctx.ws_hold == Hold::Refused {
            // A refused handshake is a plain answer; the held client half
            // (a body that never ends) is ended once it is sent whole. At
            // worst a silent client waits body_timeout.
            session.set_keepalive(None);
            session.set_read_timeout(Some(body_timeout(ctx)));
            if ws_hold::bodiless(upstream_response) {
                end_held_half(session, ctx);
            }
        }
        crate::cost::on_response(
            &self.limiters,
            ctx.config.as_deref(),
            ctx.route.as_deref(),
            &mut ctx.cost,
            upstream_response,
        )
        .await;
        if !self.ladder.on(Step::ResponseHeaders) {
            return Ok(());
        }
        if let Some(d) = &ctx.decision {
            if !d.limits.is_empty() {
                match &ctx.policy {
                    // Rendered when the plan and route were compiled.
                    Some(p) => upstream_response.insert_header(headers::POLICY, p.clone())?,
                    None => upstream_response
                        .insert_header(headers::POLICY, headers::policy(&d.limits))?,
                }
                upstream_response
                    .insert_header(headers::RATELIMIT, headers::ratelimit(&d.limits))?;
            }
        }
        upstream_response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref()) {
            cors::apply(policy, &session.req_header().headers, upstream_response)?;
        }
        if ctx.websocket && upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(hash), Some(close)) = (ctx.key_hash, crate::conn::close_handle()) {
                ctx.ws_open = Some(self.state.websockets.register(hash, close));
            }
        }
        // Time from arrival to the upstream's response header, per target
        // (the Monitoring page's latency).
        if let (Some(route), Some(target)) = (&ctx.route, &ctx.target) {
            route.upstream.record_response(target, ctx.start.elapsed());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if end_of_stream && ctx.ws_hold == Hold::Refused {
            end_held_half(session, ctx);
        }
        Ok(None)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _e: &Error) -> bool {
        ctx.ws_hold == Hold::Ended
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
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
        if body_stalled(e) {
            // The client's body stopped coming: its fault, answered 408.
            ctx.outcome = Some(edge_metrics::BAD_REQUEST);
            session.set_keepalive(None);
            let body_timeout = body_timeout(ctx);
            let a = answer::body_timeout(body_timeout).with_header("Connection", "close".into());
            if let Err(e) = self.respond(session, ctx, a).await {
                tracing::debug!("cannot send the body timeout answer: {e}");
            }
            return FailToProxy {
                error_code: 408,
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

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // Ending a refused handshake's held half is no failure.
        let e = e.filter(|_| ctx.ws_hold != Hold::Ended);
        // Pingora calls this once per request, before it reads the next one
        // on a keep-alive connection: that one gets its own header deadline.
        crate::conn::request_finished();
        // The upgraded connection (if any) is over.
        ctx.ws_open = None;
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        crate::cost::on_end(
            &self.limiters,
            ctx.config.as_deref(),
            ctx.route.as_deref(),
            ctx.cost.take(),
            status,
        )
        .await;
        let outcome = ctx.outcome.unwrap_or(if e.is_some() || status >= 500 {
            outcome::UPSTREAM_ERROR
        } else {
            outcome::ALLOWED
        });
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
        if let Some(r) = ctx.route.as_ref().filter(|_| self.ladder.on(Step::Usage)) {
            let req = session.req_header();
            self.usage.record(UsageEvent {
                at_ms: ctx.start_ms,
                key_id: ctx.key.as_ref().map(|k| k.id),
                route: r.name.clone(),
                method: req.method.as_str(),
                path: ctx
                    .inbound
                    .as_ref()
                    .map(|i| i.canonical.path.as_str())
                    .unwrap_or_else(|| req.uri.path()),
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
        let access_log = ctx.config.as_ref().is_some_and(|c| c.config.log.access_log);
        if access_log {
            let req = session.req_header();
            tracing::info!(
                target: "tollgate::access",
                request_id = %ctx.request_id,
                route,
                key_id = ctx.key.as_ref().map(|k| k.id),
                method = %req.method,
                path = %ctx.inbound.as_ref().map(|i| i.canonical.path.as_str()).unwrap_or_else(|| req.uri.path()),
                client = ?client_ip(session, ctx),
                status,
                outcome,
                limiter = ctx.backend,
                upstream = ctx.target.as_ref().map(|t| t.to_string()),
                trace_id = ctx.trace.as_ref().map(|t| t.span.trace_id_hex()),
                duration_us = elapsed.as_micros() as u64,
            );
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
                    started = telemetry::start(session.req_header(), &mut OsIds);
                    &started
                }
            };
            spans.record(request_span::span(trace, &facts, elapsed));
        }
    }
}

/// What the request did, for its span (the caller adds route, status,
/// decision and error).
fn span_facts<'a>(session: &'a Session, ctx: &'a Ctx) -> RequestFacts<'a> {
    let req = session.req_header();
    let redis = ctx.backend == "redis";
    RequestFacts {
        method: req.method.as_str(),
        path: ctx
            .inbound
            .as_ref()
            .map(|i| i.canonical.path.as_str())
            .unwrap_or_else(|| req.uri.path()),
        key_id: ctx.key.as_ref().map(|k| k.id),
        identity: ctx
            .identity
            .as_deref()
            .and_then(|i| i.external_id.as_deref())
            .unwrap_or(""),
        request_id: &ctx.request_id,
        violated: ctx
            .decision
            .as_ref()
            .map(|d| d.violated_names())
            .unwrap_or_default(),
        limiter: ctx.backend,
        redis_time: ctx.limiter_time.filter(|_| redis),
        upstream: ctx.target.as_ref().map(|t| t.to_string()),
        ..RequestFacts::default()
    }
}
