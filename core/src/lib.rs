//! Tollgate's core: what the proxy and the admin API share.
//!
//! No Pingora and no axum in here: configuration (raw YAML model, validation,
//! the validated model), the API key format, limit policies and token-bucket
//! arithmetic, problem details, and the database layer.

pub mod config;
pub mod db;
pub mod duration;
pub mod files;
pub mod keys;
pub mod limits;
pub mod net;
pub mod path;
pub mod problem;
pub mod redis_url;
pub mod rules;
pub mod usage;

/// Milliseconds since the Unix epoch: how every timestamp is stored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
