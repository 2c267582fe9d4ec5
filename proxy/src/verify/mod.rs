//! The verify API (`verify.listen`): `POST /v1/verify` lets a service that
//! is not behind the proxy check a caller's key, scopes, address and limits
//! on the proxy's own key set and limiters — the same buckets, local or
//! Redis, that proxied requests spend — and records usage like the proxy.
//!
//! Steps per request: path and method, the service token (`Authorization:
//! Bearer tgs_…`, [`tokens`]), `Content-Type: application/json`, the body
//! (at most [`request::MAX_BODY_BYTES`], strict JSON, [`request`]), then the
//! decision ([`check`]). Refusals of the request itself are problem+json
//! (401; 400, also for two `Authorization` headers; 404, 405, 413; 415,
//! also for a body in a `Content-Encoding`: none is decoded); decisions are
//! always 200 with `valid` and `code` ([`render`]).

pub mod check;
pub mod render;
pub mod request;
pub mod tokens;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::BytesMut;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::limiter::backends::Limiters;
use crate::metrics;
use crate::state::State;
use crate::usage::{UsageEvent, UsageRecorder};
use check::{Checked, NotDecided};
use request::{Refusal, VerifyRequest, MAX_BODY_BYTES};
use tokens::TokenSet;

/// The one path the listener answers.
pub const PATH: &str = "/v1/verify";

/// The verify listener's app (a Pingora HTTP service in the proxy process).
pub struct VerifyApp {
    pub state: Arc<State>,
    pub limiters: Arc<Limiters>,
    pub usage: Arc<UsageRecorder>,
    pub tokens: Arc<TokenSet>,
}

/// `Expect: 100-continue` gets its `100 Continue` once the request passed
/// the checks before the body (RFC 9110 §10.1.1); any other expectation is
/// `417` and the connection is closed (the body was not read).
async fn expect_continue(session: &mut ServerSession) -> Result<(), Refusal> {
    let Some(v) = session.req_header().headers.get(http::header::EXPECT) else {
        return Ok(());
    };
    if !v
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"100-continue")
    {
        let mut r = Refusal::new(
            "expectation-failed",
            "Expectation Failed",
            417,
            "the verify listener meets Expect: 100-continue only",
        );
        r.close = true;
        return Err(r);
    }
    if session.is_body_empty() {
        return Ok(());
    }
    session.write_continue_response().await.map_err(|e| {
        tracing::debug!("verify: writing 100 Continue failed: {e}");
        let mut r = Refusal::new("bad-request", "Bad Request", 400, "the connection failed");
        r.close = true;
        r
    })
}

/// More than one `Authorization` field line: two credentials, refused
/// with 400 whichever would be valid, as the admin API refuses them (RFC
/// 6750 §3.1 `invalid_request`; the field is a singleton, RFC 9110 §11.6.2).
fn two_credentials(headers: &http::HeaderMap) -> Option<Refusal> {
    (headers.get_all(http::header::AUTHORIZATION).iter().count() > 1).then(|| {
        Refusal::new(
            "bad-request",
            "Bad Request",
            400,
            "more than one Authorization header: send exactly one service token",
        )
    })
}

/// The `Authorization: Bearer` token, if any.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl VerifyApp {
    /// Everything up to a parsed request, or the refusal to send.
    async fn read(&self, session: &mut ServerSession) -> Result<VerifyRequest, Refusal> {
        let req = session.req_header();
        if req.uri.path() != PATH {
            return Err(Refusal::new(
                "not-found",
                "Not Found",
                404,
                format!("the verify listener answers POST {PATH} only"),
            ));
        }
        if req.method != http::Method::POST {
            return Err(Refusal::new(
                "method-not-allowed",
                "Method Not Allowed",
                405,
                format!("{PATH} takes POST"),
            )
            .with("allowed", vec!["POST"]));
        }
        if let Some(refusal) = two_credentials(&req.headers) {
            return Err(refusal);
        }
        if !bearer(&req.headers).is_some_and(|t| self.tokens.accepts(t)) {
            return Err(Refusal::new(
                "invalid-service-token",
                "Unauthorized",
                401,
                "send a current service token as Authorization: Bearer tgs_…",
            ));
        }
        let content_type = req.headers.get(http::header::CONTENT_TYPE);
        if !request::is_json(content_type.map(|v| v.as_bytes())) {
            return Err(Refusal::new(
                "unsupported-media-type",
                "Unsupported Media Type",
                415,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        if let Some(coding) = tollgate_core::headers::content_coding(
            req.headers
                .get_all(http::header::CONTENT_ENCODING)
                .iter()
                .map(|v| v.as_bytes()),
        ) {
            // Read as sent, never decoded: never parsed as if it were plain.
            return Err(Refusal::new(
                "unsupported-media-type",
                "Unsupported Media Type",
                415,
                format!("the body is sent with Content-Encoding {coding:?}; send plain JSON without Content-Encoding"),
            ));
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(Refusal::too_large());
        }
        expect_continue(session).await?;
        let edge = &self.state.config.load().config.proxy.edge;
        session.set_read_timeout(Some(edge.body_timeout));
        // The whole body (at most 8 KiB) within one `body_timeout`, however
        // it trickles in.
        let deadline = tokio::time::Instant::now() + edge.body_timeout;
        let mut body = BytesMut::new();
        loop {
            let piece = tokio::time::timeout_at(deadline, session.read_request_body())
                .await
                .unwrap_or_else(|_| {
                    Err(pingora::Error::explain(
                        pingora::ErrorType::ReadTimedout,
                        "the verify body took longer than body_timeout",
                    ))
                });
            match piece {
                Ok(Some(piece)) => {
                    if body.len() + piece.len() > MAX_BODY_BYTES {
                        return Err(Refusal::too_large());
                    }
                    body.extend_from_slice(&piece);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("verify: reading the body failed: {e}");
                    let mut r = Refusal::new(
                        "bad-request",
                        "Bad Request",
                        400,
                        "the body could not be read",
                    );
                    r.close = true;
                    return Err(r);
                }
            }
        }
        request::parse(&body)
    }

    /// Record the decision as the proxy records a request, under the
    /// calling service's address (`peer`): the body's `ip` is the caller's
    /// word, good for IP rules but not for what is stored, or one service
    /// could write a refusal row per call by varying it.
    fn record(
        &self,
        peer: Option<std::net::IpAddr>,
        req: &VerifyRequest,
        route: Option<&crate::state::CompiledRoute>,
        c: &Checked,
        at_ms: i64,
        start: Instant,
    ) {
        let elapsed = start.elapsed();
        let outcome = if c.shadow_limited {
            metrics::outcome::SHADOW_LIMITED
        } else {
            c.code.outcome()
        };
        match route {
            Some(r) => r.metrics.request(outcome, elapsed),
            None => metrics::unrouted_request(outcome, elapsed),
        }
        self.usage.record(UsageEvent {
            at_ms,
            key_id: c.key.as_ref().map(|k| k.id),
            route: route.map(|r| r.name.clone()).unwrap_or_else(|| "".into()),
            method: req.method.as_deref().unwrap_or("POST"),
            path: PATH,
            client_ip: peer,
            status: c.code.status(),
            outcome,
            violated: c
                .decision
                .as_ref()
                .map(|d| d.violated_names())
                .unwrap_or_default(),
            reason: &c.reason,
            latency_us: elapsed.as_micros() as u64,
        });
    }

    async fn answer(&self, session: &mut ServerSession) -> Result<render::Reply, Refusal> {
        let start = Instant::now();
        let at_ms = tollgate_core::now_ms();
        let req = self.read(session).await?;
        let cfg = self.state.config.load_full();
        let route = match req
            .route
            .as_deref()
            .map(|n| check::route_named(&cfg, n))
            .transpose()
        {
            Ok(r) => r,
            Err(NotDecided::UnknownRoute(n)) => {
                return Err(Refusal::new(
                    "unknown-route",
                    "Bad Request",
                    400,
                    format!("no route named {n:?}"),
                )
                .with("field", "route"));
            }
            Err(NotDecided::KeylessRoute(n)) => {
                return Err(Refusal::new(
                    "unknown-route",
                    "Bad Request",
                    400,
                    format!("route {n:?} takes no API keys (auth: none)"),
                )
                .with("field", "route"));
            }
        };
        let db = self.state.db.load_full();
        let checked = check::check(
            &self.state,
            &self.limiters,
            &cfg,
            &db,
            route.as_deref(),
            &req,
        )
        .await;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        self.record(peer, &req, route.as_deref(), &checked, at_ms, start);
        if cfg.config.log.access_log {
            tracing::info!(
                target: "tollgate::verify",
                route = req.route.as_deref().unwrap_or(""),
                key_id = checked.key.as_ref().map(|k| k.id),
                code = checked.code.as_str(),
                duration_us = start.elapsed().as_micros() as u64,
            );
        }
        Ok(render::decision(&checked))
    }
}

/// Add the verify listener on `addr` and its token refresh to `server`:
/// on the proxy's own state, limiters and usage recorder.
pub fn add_services(
    server: &mut pingora::server::Server,
    addr: std::net::SocketAddr,
    app: VerifyApp,
    database_url: String,
) {
    let refresh = tokens::TokenRefresh {
        tokens: app.tokens.clone(),
        state: app.state.clone(),
        database_url,
    };
    // Behind the proxy's connection edge (header deadline, idle wait,
    // per-address cap, framing checks) with a total cap that leaves most
    // file descriptors to the proxy listener.
    let cap = crate::conn::side_cap(
        crate::conn::VERIFY_MAX_CONNECTIONS,
        crate::conn::nofile_limit(),
        4,
    );
    let state = app.state.clone();
    let app = crate::conn::side_app(app, state, cap);
    let mut service =
        pingora::services::listening::Service::new("tollgate-verify".to_string(), app);
    service.add_tcp(&addr.to_string());
    server.add_service(service);
    server.add_service(pingora::services::background::background_service(
        "tollgate-verify-tokens",
        refresh,
    ));
}

#[async_trait]
impl ServeHttp for VerifyApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Requests sent before this answer was read are served in turn
        // (RFC 9112 §9.3.2), as on the proxy listener; the edge scans each
        // one's header.
        session.set_pipelining_enabled(true);
        let reply = match self.answer(session).await {
            Ok(reply) => reply,
            Err(mut refusal) => {
                // A client that sent `Expect` and was refused may never send
                // its body: the connection cannot carry another request.
                refusal.close |= session
                    .req_header()
                    .headers
                    .contains_key(http::header::EXPECT);
                if refusal.close {
                    session.set_keepalive(None);
                }
                render::refusal(&refusal)
            }
        };
        reply.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer  tgs_abc ".parse().expect("value"));
        assert_eq!(bearer(&h), Some("tgs_abc"));
        h.insert("authorization", "bearer x".parse().expect("value"));
        assert_eq!(bearer(&h), Some("x"));
        for bad in ["Basic x", "Bearer", "Bearer  ", "tgs_abc"] {
            h.insert("authorization", bad.parse().expect("value"));
            assert_eq!(bearer(&h), None, "{bad:?}");
        }
    }
}
