//! The verify decision: the request filter's steps, in its order, through
//! the same functions ([`crate::access`], [`crate::gate`],
//! [`crate::state::applicable`], [`Limiters::decide`]) on the same state and
//! limiters, with the client address and method the calling service gives.
//!
//! Fail closed where the proxy would have something to check: without
//! `ip`, a route or key with address rules refuses (`ip-not-allowed`);
//! without `method`, a key whose scopes list methods refuses
//! (`scope-denied`); without `route`, a key whose scopes list routes is
//! checked against the empty route name (only a `*` pattern takes it).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tollgate_core::limits::Decision;
use tollgate_core::rules::access::Denial;

use super::request::VerifyRequest;
use crate::access;
use crate::gate;
use crate::keyset::ActiveKey;
use crate::limiter::backends::{self, Limiters, Verdict};
use crate::limiter::{identity, Bucket};
use crate::metrics::outcome;
use crate::router;
use crate::state::{self, CompiledRoute, ConfigState, DbState, State};

/// What a verify request concluded (`code` in the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Valid,
    KeyInvalid,
    KeyDisabled,
    KeyExpired,
    ScopeDenied,
    IpNotAllowed,
    MethodNotAllowed,
    UnknownPlan,
    RateLimited,
    CreditsExhausted,
    LimiterUnavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "valid",
            Code::KeyInvalid => "key-invalid",
            Code::KeyDisabled => "key-disabled",
            Code::KeyExpired => "key-expired",
            Code::ScopeDenied => "scope-denied",
            Code::IpNotAllowed => "ip-not-allowed",
            Code::MethodNotAllowed => "method-not-allowed",
            Code::UnknownPlan => "unknown-plan",
            Code::RateLimited => "rate-limited",
            Code::CreditsExhausted => "credits-exhausted",
            Code::LimiterUnavailable => "limiter-unavailable",
        }
    }

    /// The status the proxy would have answered (what usage records).
    pub fn status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::MethodNotAllowed => 405,
            Code::RateLimited | Code::CreditsExhausted => 429,
            Code::LimiterUnavailable => 503,
            _ => 403,
        }
    }

    /// The `tollgate_requests_total` outcome.
    pub fn outcome(self) -> &'static str {
        match self {
            Code::Valid => outcome::ALLOWED,
            Code::MethodNotAllowed => outcome::METHOD_NOT_ALLOWED,
            Code::RateLimited | Code::CreditsExhausted => outcome::LIMITED,
            Code::LimiterUnavailable => outcome::UNAVAILABLE,
            _ => outcome::FORBIDDEN,
        }
    }

    fn of_denial(d: &Denial) -> Self {
        if d.kind() == "ip-not-allowed" {
            Code::IpNotAllowed
        } else {
            Code::ScopeDenied
        }
    }
}

/// A verify decision.
#[derive(Debug, Clone)]
pub struct Checked {
    pub code: Code,
    pub key: Option<Arc<ActiveKey>>,
    pub plan: Option<Arc<str>>,
    /// The limits' states (empty unless the limiter was asked).
    pub decision: Option<Decision>,
    /// Usage's reason: the problem type the proxy would have answered.
    pub reason: String,
    /// A shadow route let a refused request through (`valid` stays true).
    pub shadow_limited: bool,
    /// The key's identity (decided requests only).
    pub identity: Option<Arc<crate::identities::ActiveIdentity>>,
    /// The key's prepaid balance after the request (credit holders only).
    pub credits: Option<i64>,
}

impl Checked {
    fn refused(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            key: None,
            plan: None,
            decision: None,
            reason: reason.into(),
            shadow_limited: false,
            identity: None,
            credits: None,
        }
    }

    fn with_key(mut self, key: &Arc<ActiveKey>) -> Self {
        self.key = Some(key.clone());
        self
    }
}

/// Why the request names nothing to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDecided {
    /// `route` names no route of the running config.
    UnknownRoute(String),
    /// `route` is an `auth: none` route: no key is checked there.
    KeylessRoute(String),
}

/// The route named `name`.
pub fn route_named(cfg: &ConfigState, name: &str) -> Result<Arc<CompiledRoute>, NotDecided> {
    let route = cfg
        .router
        .routes()
        .iter()
        .find(|r| &*r.name == name)
        .ok_or_else(|| NotDecided::UnknownRoute(name.to_string()))?;
    if route.route.auth != tollgate_core::config::Auth::ApiKey {
        return Err(NotDecided::KeylessRoute(name.to_string()));
    }
    Ok(route.clone())
}

/// Whether the route or the key has address rules to apply.
fn has_ip_rules(route: Option<&CompiledRoute>, key: &ActiveKey) -> bool {
    route.is_some_and(|r| !r.route.ip_allow.is_empty() || !r.route.ip_deny.is_empty())
        || key
            .access
            .as_deref()
            .is_some_and(|a| a.allowed_ips.is_some())
}

/// Decide `req` on `route` (resolved by the caller) with one snapshot of
/// the config and key set.
pub async fn check(
    state: &State,
    limiters: &Limiters,
    cfg: &ConfigState,
    db: &DbState,
    route: Option<&CompiledRoute>,
    req: &VerifyRequest,
) -> Checked {
    // Route method, then route addresses, as the request filter (405, 403).
    if let (Some(r), Some(m)) = (route, req.method.as_deref()) {
        if !router::route_takes(r, m) {
            return Checked::refused(Code::MethodNotAllowed, "method-not-allowed");
        }
    }
    if let (Some(r), Some(ip)) = (route, req.ip) {
        if let Err(d) = access::route_ip(r, ip) {
            return Checked::refused(Code::of_denial(&d), d.kind());
        }
    }
    let key = (req.key.len() <= super::request::MAX_KEY_LEN).then_some(req.key.as_str());
    let key = match gate::find_key(db, key, tollgate_core::now_ms()) {
        Ok((key, _)) => key,
        Err(why) => {
            let code = match why {
                "disabled" => Code::KeyDisabled,
                "expired" => Code::KeyExpired,
                _ => Code::KeyInvalid,
            };
            return Checked::refused(code, format!("invalid-api-key:{why}"));
        }
    };
    if req.ip.is_none() && has_ip_rules(route, &key) {
        let d = Denial::KeyIpNotAllowed;
        return Checked::refused(Code::IpNotAllowed, d.kind()).with_key(&key);
    }
    if req.method.is_none() && access::scopes(&key, cfg).methods.is_some() {
        return Checked::refused(Code::ScopeDenied, "scope-denied").with_key(&key);
    }
    // Neither is looked at past here without rules that need them.
    let ip = req.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let method = req.method.as_deref().unwrap_or("");
    let scoped = match route {
        Some(r) => access::key(&key, r, method, ip, cfg),
        None => access::key_on(&key, "", method, ip, cfg),
    };
    if let Err(d) = scoped {
        return Checked::refused(Code::of_denial(&d), d.kind()).with_key(&key);
    }
    let applicable = match route {
        Some(r) => state::applicable(r, Some(&key), cfg, db),
        None => state::key_applicable(&key, cfg, db),
    };
    if let Some(plan) = applicable.unknown_plan {
        state.note_unknown_plan(key.id, plan);
        return Checked::refused(Code::UnknownPlan, "unknown-plan").with_key(&key);
    }
    let plan = applicable.plan.cloned();
    // The tokens a proxied request takes (a `cost` route's reservation, which
    // a verified request never settles: it stands, as for a response without
    // the cost header), `cost` times (same buckets).
    let priced = crate::cost::priced(route, &applicable.buckets, req.cost);
    let priced_refs: Vec<&Bucket>;
    let buckets: &[&Bucket] = match &priced {
        Some(p) => {
            priced_refs = p.iter().collect();
            &priced_refs
        }
        None => &applicable.buckets,
    };
    let subject = identity::subject_for(key.id, key.identity_id());
    let deadline = backends::redis_deadline(&cfg.config.limiter);
    // A credit holder spends `cost` credits (× the route's reservation) in
    // the same step, as through the proxy.
    let credit_cost = route
        .map_or(1, crate::credits::cost_of)
        .saturating_mul(req.cost);
    let shadow = route.is_some_and(|r| r.route.shadow);
    let credits = crate::credits::decide_costing(
        limiters,
        &cfg.config.limiter,
        &subject,
        buckets,
        credit_cost,
        shadow,
        deadline,
    )
    .await;
    let verdict = match credits {
        Some(Ok(verdict)) => verdict,
        Some(Err(balance)) => {
            let mut c = Checked::refused(Code::CreditsExhausted, "credits-exhausted");
            c.plan = plan;
            c.credits = Some(balance);
            return c.with_key(&key);
        }
        None => {
            limiters
                .decide(&cfg.config.limiter, &subject, buckets, deadline)
                .await
        }
    };
    let decision = match verdict {
        Verdict::Decided(d, _) => d,
        Verdict::Unavailable => {
            let mut c = Checked::refused(Code::LimiterUnavailable, "limiter-unavailable");
            c.plan = plan;
            return c.with_key(&key);
        }
    };
    let shadow = route.is_some_and(|r| r.route.shadow);
    let (code, reason, shadow_limited) = match (decision.allowed, shadow) {
        (true, _) => (Code::Valid, String::new(), false),
        (false, true) => (Code::Valid, String::new(), true),
        (false, false) => (
            Code::RateLimited,
            crate::answer::limited_reason(&decision),
            false,
        ),
    };
    let credits = decision
        .limits
        .iter()
        .find(|l| &*l.name == crate::limiter::credits::MEMBER)
        .map(|l| i64::try_from(l.remaining).unwrap_or(i64::MAX));
    Checked {
        code,
        key: Some(key.clone()),
        plan,
        decision: Some(decision),
        reason,
        shadow_limited,
        identity: db.keys.identity(&key).cloned(),
        credits,
    }
}
