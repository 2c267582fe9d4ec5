//! The Pingora `ProxyHttp` implementation. Its filters only orchestrate the
//! plain steps of the other modules: route → key → limits → answer or forward.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use tollgate_core::config::Auth;
use tollgate_core::net;
use tollgate_telemetry::Spans;

use crate::access;
use crate::answer::{self, Answer};
use crate::body_limit;
use crate::conn::{self, ConnTable};
use crate::cors;
use crate::edge;
use crate::edge_metrics;
use crate::forward;
use crate::grpc;
use crate::header_edit;
use crate::headers;
use crate::ladder::{Ladder, Step};
use crate::limiter::backends::Limiters;
use crate::limiter::Subject;
use crate::metrics::outcome;
use crate::request_id::RequestId;
use crate::router::{self, Routable, RouteMatch};
use crate::state::{ConfigState, State};
use crate::throttle::{AuthThrottle, UsageReads};
use crate::usage::UsageRecorder;
use crate::websocket;
use crate::ws_hold::{self, Hold};

mod ctx;
mod failure;
mod identify;
mod limits;
mod log;
mod session;
mod upstream;

pub use ctx::Ctx;
use session::{client_ip, end_held_half, is_grpc, is_tls, peer_ip};

/// The gateway: shared state plus the in-process limiters.
pub struct Gateway {
    pub state: Arc<State>,
    pub limiters: Arc<Limiters>,
    pub usage: Arc<UsageRecorder>,
    auth_failures: AuthThrottle,
    /// Reads of `proxy.usage_path`, per key.
    usage_reads: UsageReads,
    /// The steps that run (all but in the load harness's cost ladder).
    ladder: Ladder,
    /// OpenTelemetry span export (`telemetry.otlp_endpoint`).
    spans: Option<Spans>,
    /// The edge's connection table ([`Self::with_conns`]).
    conns: Option<Arc<ConnTable>>,
}

impl Gateway {
    pub fn new(state: Arc<State>, limiters: Arc<Limiters>, usage: Arc<UsageRecorder>) -> Self {
        Self {
            state,
            limiters,
            usage,
            auth_failures: AuthThrottle::default(),
            usage_reads: UsageReads::default(),
            ladder: Ladder::from_env(),
            spans: None,
            conns: None,
        }
    }

    /// Count HTTP/2 streams in flight against their client address, with
    /// the connections of the listener's edge.
    pub fn with_conns(mut self, conns: Arc<ConnTable>) -> Self {
        self.conns = Some(conns);
        self
    }

    /// An HTTP/2 stream takes a slot of its address's connection budget
    /// while in flight (it may take an upstream connection of its own);
    /// `Some(answer)` when the address has none left.
    fn admit_stream(
        &self,
        peer: Option<IpAddr>,
        edge_cfg: &tollgate_core::config::EdgeConfig,
        ctx: &mut Ctx,
    ) -> Option<Answer> {
        let conns = self.conns.as_ref()?;
        let ip = peer
            .map(net::bucket_key)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let cap = conn::connection_cap(peer, edge_cfg);
        match conns.admit_stream(ip, cap) {
            Some(slot) => {
                ctx.stream_slot = Some(slot);
                None
            }
            None => {
                edge_metrics::REFUSED
                    .with_label_values(&[answer::STREAMS_PER_ADDRESS])
                    .inc();
                ctx.outcome = Some(outcome::LIMITED);
                Some(answer::streams_per_address(cap))
            }
        }
    }

    /// Export one span per request.
    pub fn with_spans(mut self, spans: Option<Spans>) -> Self {
        self.spans = spans;
        self
    }

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
                ctx.request_id = RequestId::generate();
                return Some(refusal.answer);
            }
        };
        let (request_id, client_request_id) =
            edge::request_id(session.req_header(), inbound.client.peer_trusted);
        ctx.request_id = request_id;
        ctx.client_request_id = client_request_id;
        if session.is_http2() {
            if let Some(a) = self.admit_stream(peer, edge_cfg, ctx) {
                return Some(a);
            }
        }
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
            RouteMatch::NotFound => Err((outcome::NOT_FOUND, answer::not_found())),
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
        self.limit(&route, subject, &cfg, &db, ctx).await
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
            resp.insert_header("X-Request-Id", RequestId::generate().header())?;
        } else {
            resp.insert_header("X-Request-Id", ctx.request_id.header())?;
        }
        // A HEAD answer is the GET answer's header fields without the body
        // (RFC 9110 §9.3.2): Pingora drops it on HTTP/1 by itself, but would
        // send it as DATA on HTTP/2 (a malformed response, RFC 9113 §8.1.1).
        if session.req_header().method == http::Method::HEAD {
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
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

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(
            self.ladder.on(Step::Usage).then(|| self.usage.open()),
        ))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        edge::redact_method(session.req_header_mut());
        ctx.method = session.req_header().method.clone();
        // The one snapshot of the config this request uses throughout.
        let cfg = self.state.config.load_full();
        let keepalive = cfg.config.proxy.keepalive_timeout;
        // The whole request header is in: the header timeout is met.
        let edge_deadline = crate::conn::header_done_idle(keepalive);
        // On an edge connection the stream's deadline ends the idle wait
        // for the next request (`conn`): Pingora is told "no limit" (0)
        // rather than arm a second timer for every request. Elsewhere: whole
        // seconds, at least 1.
        let secs = keepalive.as_secs() + u64::from(keepalive.subsec_nanos() > 0);
        session.set_keepalive(Some(if edge_deadline { 0 } else { secs.max(1) }));
        // Each read of the request body waits at most body_timeout (HTTP/1;
        // h2 streams have their own flow control and limits).
        let body_timeout = cfg.config.proxy.edge.body_timeout;
        session.set_read_timeout(Some(body_timeout));
        // And each write of the answer (HTTP/1 and h2): a client that stops
        // reading frees its stream slot and upstream connection then.
        session.set_write_timeout(Some(body_timeout));
        // HTTP/1 requests sent before the previous answer was read are
        // served in turn (RFC 9112 §9.3.2; the edge scans each one's header).
        session.set_pipelining_enabled(true);
        if session.is_http2() && !session.is_body_done() {
            ctx.h2_body_since = Some(std::time::Instant::now());
        }
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
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // An upgraded connection's bytes are not a request body.
        if session.was_upgraded() {
            return Ok(());
        }
        if ctx.h2_body_since.is_some() {
            ctx.h2_body_since = (!end_of_stream).then(std::time::Instant::now);
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

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = &ctx.route else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route selected",
            ));
        };
        let pool = &route.upstream;
        match pool.select() {
            Some((backend, target)) => {
                let mut peer = pool.peer(&backend, &target.target);
                ctx.target = Some(target.clone());
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
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.ws_hold != Hold::No {
            // The held-open framing is the proxy's, not the client's.
            ws_hold::release(upstream_request)?;
        }
        if !self.ladder.on(Step::UpstreamHeaders) {
            return Ok(());
        }
        upstream::edit(session, upstream_request, ctx)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream::refuse_unasked_switch(upstream_response, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.answered = upstream_response.status.as_u16();
        ctx.ws_hold = ctx.ws_hold.answered(upstream_response.status);
        if ctx.ws_hold == Hold::Refused {
            // A refused handshake is a plain answer; the held client half
            // (a body that never ends) is ended once it is sent whole. At
            // worst a silent client waits body_timeout.
            session.set_keepalive(None);
            session.set_read_timeout(Some(ctx.body_timeout()));
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
        header_edit::response(upstream_response, |h| {
            h.reserve(3);
            if let Some(d) = ctx.decision.as_ref().filter(|d| !d.limits.is_empty()) {
                // Rendered when the plan and route were compiled.
                let policy = ctx
                    .policy
                    .clone()
                    .or_else(|| headers::policy_header(&d.limits));
                if let Some(v) = policy {
                    h.insert(headers::POLICY_NAME, v);
                }
                if let Some(v) = headers::ratelimit_value(&d.limits) {
                    h.insert(headers::RATELIMIT_NAME, v);
                }
            }
            h.insert(forward::names::X_REQUEST_ID, ctx.request_id.header());
            Ok(())
        })?;
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.cors.as_ref()) {
            cors::apply(policy, &session.req_header().headers, upstream_response)?;
        }
        if ctx.websocket && upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(hash), Some(close), Some(route), Some(inbound)) = (
                ctx.key_hash,
                crate::conn::close_handle(),
                &ctx.route,
                &ctx.inbound,
            ) {
                ctx.ws_open = Some(self.state.websockets.register(
                    hash,
                    &route.route.name,
                    inbound.client.client,
                    close,
                ));
            }
        }
        // Time from arrival to the upstream's response header, per target
        // (the Monitoring page's latency).
        if let (Some(route), Some(target)) = (&ctx.route, &ctx.target) {
            let elapsed = ctx.start.elapsed();
            let at_ms = ctx.start_ms + i64::try_from(elapsed.as_millis()).unwrap_or(0);
            route.upstream.record_response(target, elapsed, at_ms);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if end_of_stream && ctx.ws_hold == Hold::Refused {
            end_held_half(session, ctx);
        }
        Ok(None)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _e: &Error) -> bool {
        ctx.ws_hold == Hold::Ended
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        self.fail(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
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
        self.report(session, e, ctx, status);
        // Reported: the context's drop has nothing left to record.
        ctx.open = None;
    }
}
