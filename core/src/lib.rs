//! Tollgate's core: what the proxy and the admin API share.
//!
//! No Pingora and no axum in here: configuration (raw YAML model, validation,
//! the validated model and its defaults), the rules every way of changing
//! the configuration shares ([`rules`]: plans, limits, key fields, which
//! limits apply to a key), the API key format, limit policies and
//! token-bucket arithmetic, usage counting ([`usage`]), problem details, and
//! the database layer. Test harnesses (`db::testing`, `db::own_postgres`,
//! `rules::cases`) exist only with the `testing` feature.

pub mod config;
pub mod cost;
pub mod credits;
pub mod db;
pub mod duration;
pub mod effective_limits;
pub mod files;
pub mod id_floor;
pub mod keys;
pub mod limit_scope;
pub mod limits;
pub mod net;
pub mod path;
pub mod problem;
pub mod quota;
pub mod quota_adjust;
pub mod redis_url;
pub mod refill;
pub mod rules;
pub mod service_tokens;
pub mod trace;
pub mod usage;
pub mod webhooks;

/// Milliseconds since the Unix epoch: how every timestamp is stored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
