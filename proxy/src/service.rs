//! The Pingora `ProxyHttp` implementation. Its filters only orchestrate the
//! plain steps of the other modules: route → key → limits → answer or forward.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use pingora_limits::inflight::{Guard, Inflight};
use pingora_limits::rate::Rate;
use tollgate_core::config::{Auth, Target};
use tollgate_core::keys;
use tollgate_core::limits::Decision;

use crate::answer::{self, Answer};
use crate::auth::{self, Presented};
use crate::headers;
use crate::keyset::ActiveKey;
use crate::limiter::backends::{Limiters, Verdict};
use crate::limiter::Subject;
use crate::metrics::{self, outcome};
use crate::router::{self, RouteMatch};
use crate::state::{self, CompiledRoute, ConfigState, State};
use crate::usage::{UsageEvent, UsageRecorder};

/// Per-request context.
pub struct Ctx {
    start: Instant,
    start_ms: i64,
    request_id: String,
    config: Option<Arc<ConfigState>>,
    route: Option<Arc<CompiledRoute>>,
    key: Option<Arc<ActiveKey>>,
    plan: Option<String>,
    key_from_bearer: bool,
    decision: Option<Decision>,
    outcome: Option<&'static str>,
    /// Why the proxy answered itself (`Answer::reason`), for usage.
    refusal: String,
    /// Which limiter decided (`local`, `redis`, `fallback`, `allow`).
    backend: &'static str,
    target: Option<Target>,
    _inflight: Option<Guard>,
}

/// The gateway: shared state plus the in-process limiters.
pub struct Gateway {
    pub state: Arc<State>,
    pub limiters: Arc<Limiters>,
    pub usage: Arc<UsageRecorder>,
    auth_failures: Rate,
    inflight: Inflight,
}

impl Gateway {
    pub fn new(state: Arc<State>, limiters: Arc<Limiters>, usage: Arc<UsageRecorder>) -> Self {
        Self {
            state,
            limiters,
            usage,
            auth_failures: Rate::new(std::time::Duration::from_secs(1)),
            inflight: Inflight::new(),
        }
    }

    fn auth_throttled(&self, ip: Option<IpAddr>, per_second: u32) -> bool {
        let Some(ip) = ip else { return false };
        let limit = f64::from(per_second);
        self.auth_failures.rate(&ip) > limit || self.auth_failures.observe(&ip, 0) as f64 > limit
    }

    fn note_auth_failure(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.auth_failures.observe(&ip, 1);
        }
    }

    /// Route, key and limits; `Some(answer)` if the proxy answers itself.
    async fn decide(&self, session: &Session, ctx: &mut Ctx) -> Option<Answer> {
        let cfg = self.state.config.load_full();
        ctx.config = Some(cfg.clone());
        let req = session.req_header();
        let path = req.uri.path();
        let route = match cfg.router.find(path, req.method.as_str()) {
            RouteMatch::Found(route) => route.clone(),
            RouteMatch::MethodNotAllowed(allowed) => {
                ctx.outcome = Some(outcome::METHOD_NOT_ALLOWED);
                return Some(answer::method_not_allowed(req.method.as_str(), &allowed));
            }
            RouteMatch::NotFound => {
                ctx.outcome = Some(outcome::NOT_FOUND);
                return Some(answer::not_found(path));
            }
        };
        ctx.route = Some(route.clone());
        let proxy_cfg = &cfg.config.proxy;
        let client_ip = client_ip(session);
        let db = self.state.db.load_full();

        let subject = match route.route.auth {
            Auth::None => match client_ip {
                Some(ip) => Subject::Ip(ip),
                None => Subject::Key(0),
            },
            Auth::ApiKey => {
                if self.auth_throttled(client_ip, proxy_cfg.auth_failures_per_second) {
                    metrics::AUTH_THROTTLED.inc();
                    ctx.outcome = Some(outcome::LIMITED);
                    return Some(answer::auth_throttled(1));
                }
                let presented = auth::extract(&req.headers, &proxy_cfg.key_header);
                ctx.key_from_bearer = matches!(presented, Presented::Bearer(_));
                let plain = match presented {
                    Presented::Missing => {
                        self.note_auth_failure(client_ip);
                        ctx.outcome = Some(outcome::UNAUTHORIZED);
                        return Some(answer::missing_key(&proxy_cfg.key_header));
                    }
                    Presented::Garbled => None,
                    Presented::Header(k) | Presented::Bearer(k) => Some(k),
                };
                let hash = plain.and_then(|k| keys::parse(k).ok());
                let found = match hash {
                    None => Err("malformed"),
                    Some(hash) => db
                        .keys
                        .lookup(&hash, tollgate_core::now_ms())
                        .map_err(|r| r.as_str()),
                };
                match found {
                    Ok(key) => {
                        ctx.key = Some(key.clone());
                        Subject::Key(key.id)
                    }
                    Err(reason) => {
                        self.note_auth_failure(client_ip);
                        ctx.outcome = Some(outcome::FORBIDDEN);
                        return Some(answer::forbidden_key(reason));
                    }
                }
            }
        };

        let applicable = state::applicable(&route, ctx.key.as_deref(), &cfg, &db);
        if let (Some(plan), Some(key)) = (applicable.unknown_plan, &ctx.key) {
            self.state.note_unknown_plan(key.id, plan);
            ctx.outcome = Some(outcome::FORBIDDEN);
            return Some(answer::unknown_plan());
        }
        ctx.plan = applicable.plan.map(str::to_string);
        if let (Some(max), Some(key)) = (applicable.concurrency, &ctx.key) {
            let (guard, in_flight) = self.inflight.incr(key.id, 1);
            ctx._inflight = Some(guard);
            if in_flight > i64::from(max) as isize && !route.route.shadow {
                ctx.outcome = Some(outcome::LIMITED);
                return Some(answer::concurrency_exceeded(max));
            }
        }

        let verdict = self
            .limiters
            .decide(&cfg.config.limiter, &subject, &applicable.buckets)
            .await;
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
                let a = answer::quota_exceeded(&decision);
                ctx.decision = Some(decision);
                return Some(a);
            }
        }
        ctx.decision = Some(decision);
        None
    }

    async fn respond(&self, session: &mut Session, ctx: &Ctx, a: Answer) -> Result<bool> {
        let mut resp = ResponseHeader::build(a.status, Some(a.headers.len() + 2))?;
        for (name, value) in &a.headers {
            resp.insert_header(*name, value.as_str())?;
        }
        resp.insert_header("Content-Length", a.body.len().to_string())?;
        resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(a.body)), true)
            .await?;
        Ok(true)
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Keep a client's `X-Request-Id` if it is sane, else mint one.
fn request_id(req: &RequestHeader) -> String {
    req.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Header names the proxy owns: a client may not send them to the upstream.
const OWN_HEADERS: [&str; 2] = ["x-tollgate-key-id", "x-tollgate-plan"];

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            start_ms: tollgate_core::now_ms(),
            request_id: String::new(),
            config: None,
            route: None,
            key: None,
            plan: None,
            key_from_bearer: false,
            decision: None,
            outcome: None,
            refusal: String::new(),
            backend: "none",
            target: None,
            _inflight: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = request_id(session.req_header());
        let keepalive = self.state.config.load().config.proxy.keepalive_timeout;
        // Whole seconds, at least 1: Pingora takes 0 to mean "no limit".
        let secs = keepalive.as_secs() + u64::from(keepalive.subsec_nanos() > 0);
        session.set_keepalive(Some(secs.max(1)));
        match self.decide(session, ctx).await {
            Some(mut a) => {
                ctx.refusal = std::mem::take(&mut a.reason);
                self.respond(session, ctx, a).await
            }
            None => Ok(false),
        }
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
                Ok(Box::new(pool.peer(&backend, target)))
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
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(route), Some(cfg)) = (&ctx.route, &ctx.config) else {
            return Ok(());
        };
        if let Some(strip) = &route.route.strip_prefix {
            let uri = &upstream_request.uri;
            let path = router::strip_path(uri.path(), strip);
            let new = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            match new.parse::<http::Uri>() {
                Ok(u) => upstream_request.set_uri(u),
                Err(e) => {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(400),
                        format!("cannot rewrite path: {e}"),
                    ))
                }
            }
        }
        if route.route.auth == Auth::ApiKey {
            upstream_request.remove_header(cfg.config.proxy.key_header.as_str());
            if ctx.key_from_bearer {
                upstream_request.remove_header("authorization");
            }
        }
        for h in OWN_HEADERS {
            upstream_request.remove_header(h);
        }
        if let Some(key) = &ctx.key {
            upstream_request.insert_header("X-Tollgate-Key-Id", key.id_str.as_str())?;
            if let Some(plan) = &ctx.plan {
                upstream_request.insert_header("X-Tollgate-Plan", plan.as_str())?;
            }
        }
        upstream_request.insert_header("X-Request-Id", ctx.request_id.as_str())?;
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
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(d) = &ctx.decision {
            if !d.limits.is_empty() {
                upstream_response.insert_header(headers::POLICY, headers::policy(&d.limits))?;
                upstream_response
                    .insert_header(headers::RATELIMIT, headers::ratelimit(&d.limits))?;
            }
        }
        upstream_response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        // Time from arrival to the upstream's response header, per target
        // (the Monitoring page's latency).
        if let (Some(route), Some(target)) = (&ctx.route, &ctx.target) {
            route.upstream.record_response(target, ctx.start.elapsed());
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
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
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
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
        metrics::REQUESTS.with_label_values(&[route, outcome]).inc();
        metrics::REQUEST_DURATION
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if let Some(r) = &ctx.route {
            let req = session.req_header();
            self.usage.record(UsageEvent {
                at_ms: ctx.start_ms,
                key_id: ctx.key.as_ref().map(|k| k.id),
                route: r.name.clone(),
                method: req.method.as_str().to_string(),
                path: req.uri.path().to_string(),
                client_ip: client_ip(session),
                status,
                outcome,
                violated: ctx
                    .decision
                    .as_ref()
                    .map(|d| d.violated_names().iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                reason: std::mem::take(&mut ctx.refusal),
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
                path = %req.uri.path(),
                status,
                outcome,
                limiter = ctx.backend,
                upstream = ctx.target.as_ref().map(|t| t.to_string()),
                duration_us = elapsed.as_micros() as u64,
            );
        }
    }
}
