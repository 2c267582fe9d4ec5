//! `proxy.usage_path`: a caller, authenticated by its own key, reads its
//! limits (`GET`/`HEAD`). Nothing is spent, nothing reaches an upstream,
//! and the request is not counted as usage of any route.
//!
//! The limits are those that apply to the key on each `api_key` route its
//! scopes allow ([`crate::state::applicable`]): its own or its plan's (one
//! set of buckets shared by every route, listed once with `route: null`),
//! and each route's extra limits (`route: "<name>"`); and the key's credit
//! balance (`credits`, null without one).

use std::collections::HashSet;

use serde::Serialize;
use tollgate_core::config::Auth;
use tollgate_core::limits::LimitState;

use std::time::Instant;

use tollgate_core::config::LimiterConfig;

use crate::answer::Answer;
use crate::keyset::ActiveKey;
use crate::limiter::backends::Limiters;
use crate::limiter::Bucket;
use crate::state::{self, ConfigState, DbState};

/// A bucket the caller has, and the route it belongs to (`None`: the key's
/// own or plan limits, shared by every route).
pub struct Listed<'a> {
    pub route: Option<&'a str>,
    pub bucket: &'a Bucket,
}

/// Every bucket of `key`, each once, in route order.
pub fn buckets<'a>(key: &'a ActiveKey, cfg: &'a ConfigState, db: &'a DbState) -> Vec<Listed<'a>> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut out = Vec::new();
    for route in cfg.router.routes() {
        if route.route.auth != Auth::ApiKey || !route_in_scope(key, route, cfg) {
            continue;
        }
        let applicable = state::applicable(route, Some(key), cfg, db);
        for b in applicable.buckets {
            if !seen.insert((b.id, b.fingerprint)) {
                continue;
            }
            let own_route = route.buckets.iter().any(|r| std::ptr::eq(r, b));
            out.push(Listed {
                route: own_route.then_some(route.route.name.as_str()),
                bucket: b,
            });
        }
    }
    out
}

/// Whether the key's scopes allow the route with some method.
fn route_in_scope(key: &ActiveKey, route: &crate::state::CompiledRoute, cfg: &ConfigState) -> bool {
    let scopes = crate::access::scopes(key, cfg);
    scopes.routes.is_none_or(|patterns| {
        patterns
            .iter()
            .any(|p| tollgate_core::rules::access::glob_match(p, &route.route.name))
    })
}

#[derive(Serialize)]
struct Body<'a> {
    key: KeyInfo<'a>,
    limits: Vec<LimitView<'a>>,
    /// Which limiter answered (`local`, `redis`, `fallback`).
    limiter: &'a str,
    /// The prepaid balance the key's requests spend (null: it holds no
    /// credits, or Redis could not say).
    credits: Option<i64>,
}

#[derive(Serialize)]
struct KeyInfo<'a> {
    id: i64,
    plan: Option<&'a str>,
    /// Unix ms.
    expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<&'a [String]>,
}

#[derive(Serialize)]
struct LimitView<'a> {
    name: &'a str,
    route: Option<&'a str>,
    /// Tokens per window.
    limit: u64,
    window_seconds: u64,
    remaining: u64,
    /// Seconds until the bucket is full again.
    reset_seconds: u64,
}

/// The balance `key`'s requests spend, read without spending (see
/// [`Limiters::balance`]).
pub async fn credits(
    limiters: &Limiters,
    cfg: &LimiterConfig,
    key: &ActiveKey,
    deadline: Instant,
) -> Option<i64> {
    let subject = crate::limiter::identity::subject_for(key.id, key.identity_id());
    limiters.balance(cfg, &subject, deadline).await
}

/// The 200 answer: the key and each listed bucket's state (same order).
pub fn render(
    key: &ActiveKey,
    plan: Option<&str>,
    listed: &[Listed<'_>],
    states: &[LimitState],
    limiter: &str,
    cfg: &ConfigState,
    credits: Option<i64>,
) -> Answer {
    let scopes = crate::access::scopes(key, cfg);
    let body = Body {
        key: KeyInfo {
            id: key.id,
            plan: plan.or(key.plan.as_deref()),
            expires_at: key.expires_at,
            routes: scopes.routes,
            methods: scopes.methods,
        },
        limits: listed
            .iter()
            .zip(states)
            .map(|(l, s)| LimitView {
                name: &l.bucket.limit.name,
                route: l.route,
                limit: s.quota,
                window_seconds: s.window_secs,
                remaining: s.remaining,
                reset_seconds: s.reset_secs,
            })
            .collect(),
        limiter,
        credits,
    };
    Answer {
        status: 200,
        headers: vec![
            ("Content-Type", "application/json".to_string()),
            ("Cache-Control", "no-store".to_string()),
        ],
        body: serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()),
        reason: String::new(),
    }
}
