//! `GET /api/keys/{id}/quotas` and `GET /api/identities/{id}/quotas`: each
//! quota's use in its current period and the credit balance.
//!
//! The admin API does not own the limiter: with the Redis backend it reads
//! the counts where the proxies keep them (one `GET` per quota, at the keys
//! `tollgate_core::quota::redis_keys` names, on the connection the health
//! probe keeps); with the local backend it reads the counts the proxies
//! write with each usage flush (`quota_counts`: `counted: database`, as of
//! the last flush; each local proxy counts on its own, the last writer's
//! count is shown), and a balance from the spend rows they write with it
//! (`balance: null` for a holder with a refill).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use tollgate_core::config::LimiterBackend;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_counts::CountHolder;
use tollgate_core::limits::{Limit, LimitScope};
use tollgate_core::quota::redis_keys::{key_balance_key, quota_count_key, Holder};
use tollgate_core::quota::PeriodBounds;
use tollgate_core::rules::quota_adjust::current_period;
use utoipa::ToSchema;

use crate::auth::AuthAdmin;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, PathParam};
use crate::health_report::{redis_conn, RedisConn};
use crate::state::AppState;

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// One quota in its current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUse {
    pub name: String,
    /// The amount per period.
    pub quota: u64,
    /// `day`, `week`, `month` or `year`.
    pub period: String,
    /// `key` (counted per key) or `identity` (one count for all the
    /// identity's keys).
    pub scope: String,
    /// Uses counted in the current period; `null` when not known here
    /// (`counted` is not `redis`).
    pub used: Option<u64>,
    /// Uses left (`quota − used`, at least 0); `null` with `used`.
    pub remaining: Option<u64>,
    /// The current period (Unix ms): it began at `period_start` and resets
    /// at `resets_at`.
    pub period_start: i64,
    pub resets_at: i64,
}

/// A credit balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditUse {
    /// Every credit ever granted (the sum of the top-ups and adjustments).
    pub granted: i64,
    /// The live balance (granted − spent): read from Redis, or with the
    /// local backend from the spends the proxies wrote (within one
    /// `usage.flush_interval`); `null` when not known here (Redis before a
    /// proxy applied a top-up; a local holder with a refill).
    pub balance: Option<i64>,
}

/// Quota and credit use of a key or an identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUsage {
    /// Where the counts come from: `redis` (exact, across every proxy),
    /// `database` (local backend: as the proxy last wrote them, within one
    /// `usage.flush_interval`) or `unavailable` (Redis or the database did
    /// not answer).
    pub counted: String,
    /// The quotas that apply (its own limits, its identity's or its plan's;
    /// route quotas are per route and not listed).
    pub quotas: Vec<QuotaUse>,
    /// `null` when it holds no credits.
    pub credits: Option<CreditUse>,
}

/// The values at `keys` (`None` each for a missing key), or `None` if
/// Redis cannot answer (or the backend is local).
async fn read(state: &AppState, keys: &[String]) -> Result<Vec<Option<i64>>, &'static str> {
    let config = state.config();
    let (LimiterBackend::Redis, Some(url)) = (config.limiter.backend, &config.limiter.redis_url)
    else {
        return Err("per-proxy");
    };
    let cache = state.health_cache();
    let ca_file = config.limiter.redis_ca_file.as_deref();
    let read = async {
        match gets(cache, url, ca_file, keys).await {
            Ok(v) => Ok(v),
            // The kept connection may have died with a Redis that is back
            // now (round 17): these are reads, so once more on a new one.
            Err(()) => {
                cache.forget_redis().await;
                gets(cache, url, ca_file, keys).await
            }
        }
    };
    match tokio::time::timeout(REDIS_TIMEOUT, read).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(())) => {
            // Reconnect next time rather than trust a broken connection.
            cache.forget_redis().await;
            Err("unavailable")
        }
        Err(_) => Err("unavailable"),
    }
}

/// `GET` of each of `keys` on the kept (or a new) connection.
async fn gets(
    cache: &crate::health_report::HealthCache,
    url: &str,
    ca_file: Option<&std::path::Path>,
    keys: &[String],
) -> Result<Vec<Option<i64>>, ()> {
    let conn = redis_conn(cache, url, ca_file).await.map_err(|_| ())?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let cmd = redis::cmd("GET").arg(k).clone();
        let v: Option<i64> = match conn.clone() {
            RedisConn::Single(mut c) => cmd.query_async(&mut c).await,
            RedisConn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
        .map_err(|_| ())?;
        out.push(v);
    }
    Ok(out)
}

/// The counts the local proxies last wrote of `periods` (each quota and
/// its current period), as [`read`] gives Redis' values.
async fn stored(
    state: &AppState,
    periods: &[(&Limit, PeriodBounds)],
    holder: &impl Fn(&Limit) -> Holder,
) -> Result<Vec<Option<i64>>, ApiError> {
    let mut out = Vec::with_capacity(periods.len());
    for (q, p) in periods {
        let (h, owner) = match holder(q) {
            Holder::Key(k) => (CountHolder::Key(k), 0),
            Holder::Member { key, identity } => (CountHolder::Identity(identity), key),
            Holder::Identity(i) => (CountHolder::Identity(i), 0),
        };
        let used = state
            .db()
            .quota_count(h, owner, &format!("p:{}", q.name), p.start_us)
            .await?;
        out.push(used.map(|u| i64::try_from(u).unwrap_or(i64::MAX)));
    }
    Ok(out)
}

/// The use of `quotas`, each counted by the holder `holder` gives it.
async fn usage(
    state: &AppState,
    quotas: Vec<&Limit>,
    holder: impl Fn(&Limit) -> Holder,
    balance_key: Option<String>,
    credits_granted: Option<i64>,
) -> QuotaUsage {
    let now_us = tollgate_core::now_ms().saturating_mul(1_000);
    let periods: Vec<_> = quotas
        .into_iter()
        .filter_map(|q| Some((q, current_period(q, now_us)?)))
        .collect();
    let mut keys: Vec<String> = periods
        .iter()
        .map(|(q, p)| quota_count_key(holder(q), &q.name, p.start_us))
        .collect();
    if let (Some(k), Some(_)) = (&balance_key, credits_granted) {
        keys.push(k.clone());
    }
    let (counted, values) = match read(state, &keys).await {
        Ok(v) => ("redis", Some(v)),
        Err("per-proxy") => match stored(state, &periods, &holder).await {
            Ok(v) => ("database", Some(v)),
            Err(_) => ("unavailable", None),
        },
        Err(why) => (why, None),
    };
    let value = |i: usize| values.as_ref().map(|v| v.get(i).copied().flatten());
    let quotas = periods
        .iter()
        .enumerate()
        .map(|(i, (q, p))| {
            let used = value(i).map(|v| v.map_or(0, |n| u64::try_from(n).unwrap_or(0)));
            QuotaUse {
                name: q.name.clone(),
                quota: q.rate,
                period: q
                    .quota
                    .as_ref()
                    .map_or_else(String::new, |s| s.period.to_string()),
                scope: match q.scope {
                    LimitScope::Key => "key".into(),
                    LimitScope::Identity => "identity".into(),
                },
                used,
                remaining: used.map(|u| q.rate.saturating_sub(u)),
                period_start: p.start_us.div_euclid(1_000),
                resets_at: p.end_us.div_euclid(1_000),
            }
        })
        .collect();
    let credits = credits_granted.map(|granted| CreditUse {
        granted,
        balance: balance_key.and_then(|_| value(periods.len()).flatten()),
    });
    QuotaUsage {
        counted: counted.into(),
        quotas,
        credits,
    }
}

/// With the local backend (`counted: database`): the balance the spend
/// rows give, for a holder without a refill (its own, or its plan's).
async fn local_balance(
    state: &AppState,
    u: &mut QuotaUsage,
    kind: SubjectKind,
    id: i64,
    plan: Option<&str>,
) -> ApiResult<()> {
    let Some(credits) = u.credits.as_mut() else {
        return Ok(());
    };
    if u.counted != "database" {
        return Ok(());
    }
    let plan_refills = plan
        .and_then(|p| {
            state
                .config()
                .plans
                .get(p)
                .map(|p| p.credits_refill.is_some())
        })
        .unwrap_or(false);
    if plan_refills || state.db().credit_refill(kind, id).await?.is_some() {
        return Ok(());
    }
    credits.balance = state.db().credits_balance_written(kind, id).await?;
    Ok(())
}

/// Each quota's use in its current period and the credit balance of a key.
#[utoipa::path(
    get,
    path = "/api/keys/{id}/quotas",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    responses(
        (status = 200, description = "The key's quotas and credits", body = QuotaUsage),
        (status = 404, description = "No such key", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn key_quotas(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<QuotaUsage>> {
    let id = parse_id(&id)?;
    let key = state
        .db()
        .get_key(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no key with id {id}")))?;
    let limits = state
        .db()
        .key_limits(&state.config().plans, &key)
        .await?
        .limits;
    let granted = state.db().credits_granted(SubjectKind::Key, id).await?;
    let identity = key.identity_id;
    let quotas = limits.iter().filter(|l| l.is_quota()).collect();
    let mut u = usage(
        &state,
        quotas,
        |q| Holder::of_key(id, identity, q.scope == LimitScope::Identity),
        Some(key_balance_key(id, identity)),
        granted,
    )
    .await;
    local_balance(&state, &mut u, SubjectKind::Key, id, key.plan.as_deref()).await?;
    Ok(Json(u))
}

/// Each shared quota's use (`scope: identity`) in its current period and
/// the credits granted to an identity.
#[utoipa::path(
    get,
    path = "/api/identities/{id}/quotas",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    responses(
        (status = 200, description = "The identity's shared quotas and credits", body = QuotaUsage),
        (status = 404, description = "No such identity", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn identity_quotas(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<QuotaUsage>> {
    let id = parse_id(&id)?;
    let identity = state
        .db()
        .get_identity(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no identity with id {id}")))?;
    let limits = state
        .db()
        .identity_limits(&state.config().plans, &identity)
        .await?;
    let granted = state
        .db()
        .credits_granted(SubjectKind::Identity, id)
        .await?;
    let quotas = limits
        .iter()
        .filter(|l| l.is_quota() && l.scope == LimitScope::Identity)
        .collect();
    let mut u = usage(&state, quotas, |_| Holder::Identity(id), None, granted).await;
    let plan = identity.plan.as_deref();
    local_balance(&state, &mut u, SubjectKind::Identity, id, plan).await?;
    Ok(Json(u))
}
