//! The request and response bodies more than one resource uses: a limit
//! ([`LimitBody`], in plans and keys), a key ([`KeyView`], in keys and
//! analytics) and an admin ([`AdminView`], in admins and login).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::db::admins::{Admin, Role};
use tollgate_core::db::ApiKey;
use tollgate_core::duration;
use tollgate_core::limits::{Limit, LimitScope};
use tollgate_core::rules::access::Scopes;
use utoipa::ToSchema;

/// Which routes and methods a key may use. A list left out is not
/// restricted by the key (the plan's list applies, if it has one); a request
/// must match both lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesBody {
    /// Route names; `*` matches any run of characters (`billing-*`). 1–64
    /// patterns of 1–128 characters, at most 4 `*`, never `**`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 64, example = json!(["users", "billing-*"]))]
    pub routes: Option<Vec<String>>,
    /// HTTP methods (tokens, upper-cased on save). 1–32 entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 32, example = json!(["GET", "HEAD"]))]
    pub methods: Option<Vec<String>>,
}

impl From<ScopesBody> for Scopes {
    fn from(b: ScopesBody) -> Self {
        Scopes {
            routes: b.routes,
            methods: b.methods,
        }
    }
}

impl From<Scopes> for ScopesBody {
    fn from(s: Scopes) -> Self {
        ScopesBody {
            routes: s.routes,
            methods: s.methods,
        }
    }
}

/// One limit: a token bucket (`rate` tokens per `per`, capacity `burst`,
/// default `rate`) or a calendar quota (`quota` uses per `period`, from
/// `anchor` in `time_zone`); each request costs `cost` (default 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`; unique within the list.
    #[schema(
        example = "minute",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$"
    )]
    pub name: String,
    /// A bucket's refill (required for a bucket, absent for a quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 60, minimum = 1, maximum = 1_000_000_000)]
    pub rate: Option<u64>,
    /// An integer and a unit: `ms`, `s`, `m`, `h` or `d`; more than 0, at
    /// most `366d` (required for a bucket, absent for a quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "1m", pattern = "^[0-9]+(ms|s|m|h|d)$")]
    pub per: Option<String>,
    /// Capacity of the bucket (default `rate`); at least `cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 10, minimum = 1, format = Int64)]
    pub burst: Option<u64>,
    /// Tokens one request takes (default 1); at most `burst` (or `quota`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, format = Int64)]
    pub cost: Option<u64>,
    /// Who shares the bucket: `key` (default, one per key) or `identity`
    /// (one for all keys of the key's identity; per key for a key without one).
    #[serde(default, skip_serializing_if = "LimitScope::is_key")]
    #[schema(value_type = Option<String>, example = "identity")]
    pub scope: LimitScope,
    /// A calendar quota: uses per period (1 to 2^50); with `period`,
    /// instead of `rate`/`per`/`burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 100000, minimum = 1, format = Int64)]
    pub quota: Option<u64>,
    /// `day`, `week`, `month` or `year`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "month")]
    pub period: Option<String>,
    /// Where a period starts: day of month `1`–`31` (clamped to the month's
    /// last day), a weekday (`monday`…), or `MM-DD` for a year. Default:
    /// the 1st, Monday, `01-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "15")]
    pub anchor: Option<String>,
    /// IANA time zone of the period's midnight (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Europe/Paris")]
    pub time_zone: Option<String>,
}

impl From<&Limit> for LimitBody {
    fn from(l: &Limit) -> Self {
        match &l.quota {
            Some(q) => Self {
                name: l.name.clone(),
                rate: None,
                per: None,
                burst: None,
                cost: l.cost,
                quota: Some(l.rate),
                period: Some(q.period.to_string()),
                anchor: q.anchor.clone(),
                time_zone: q.time_zone.clone(),
                scope: l.scope,
            },
            None => Self {
                name: l.name.clone(),
                rate: Some(l.rate),
                per: Some(duration::format(l.per)),
                burst: l.burst,
                cost: l.cost,
                quota: None,
                period: None,
                anchor: None,
                time_zone: None,
                scope: l.scope,
            },
        }
    }
}

/// An API key record. The secret itself is never part of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub owner: Option<String>,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The plan whose limits apply (unless `limits` is set).
    pub plan: Option<String>,
    /// The key's own limits, used instead of the plan's when set.
    pub limits: Option<Vec<LimitBody>>,
    /// Maximum in-flight requests.
    pub concurrency: Option<u32>,
    /// Routes and methods the key may use (`null`: its plan's, else all).
    pub scopes: Option<ScopesBody>,
    /// Client networks (CIDR) the key may be used from (`null`: anywhere).
    #[schema(example = json!(["203.0.113.0/24"]))]
    pub allowed_ips: Option<Vec<String>>,
    /// The identity the key belongs to (`/api/identities/{id}`), if any.
    pub identity_id: Option<i64>,
    pub enabled: bool,
    /// Unix ms; the key is refused after it.
    pub expires_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms.
    pub last_used_at: Option<i64>,
    /// `tg_` plus the first characters of the key, to recognise it.
    #[schema(example = "tg_4fZq81Ab")]
    pub key_prefix: String,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            owner: k.owner,
            metadata: k.metadata,
            plan: k.plan,
            limits: k.limits.map(|ls| ls.iter().map(LimitBody::from).collect()),
            concurrency: k.concurrency,
            scopes: k.scopes.map(ScopesBody::from),
            allowed_ips: k.allowed_ips,
            identity_id: k.identity_id,
            enabled: k.enabled,
            expires_at: k.expires_at,
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            key_prefix: k.key_prefix,
        }
    }
}

/// An admin (the password hash is never shown).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminView {
    pub id: i64,
    pub username: String,
    /// `owner` (admins, settings), `admin` (keys, plans) or `viewer` (read-only).
    #[schema(value_type = String, example = "admin")]
    pub role: Role,
    /// Unix ms.
    pub created_at: i64,
}

impl From<Admin> for AdminView {
    fn from(a: Admin) -> Self {
        Self {
            id: a.id,
            username: a.username,
            role: a.role,
            created_at: a.created_at,
        }
    }
}
