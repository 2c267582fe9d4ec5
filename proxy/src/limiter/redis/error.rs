//! Why a Redis call gave no answer, in the few kinds the policy and the
//! metrics tell apart.

use std::time::Duration;

use ::redis::{ErrorKind, RedisError, ServerErrorKind};

/// Why a Redis check gave no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisLimitError {
    /// No answer within `redis_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Not connected, connection refused or lost, cluster unreachable.
    #[error("redis connection failed: {0}")]
    Connection(String),
    /// The script failed or answered something unexpected.
    #[error("redis script failed: {0}")]
    Script(String),
    /// The circuit breaker is open: Redis was not asked.
    #[error("redis skipped: circuit breaker open")]
    CircuitOpen,
    /// A bad `redis_url` or options.
    #[error("invalid redis configuration: {0}")]
    Config(String),
    #[error("redis error: {0}")]
    Other(String),
}

impl RedisLimitError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisLimitError::Timeout(_) => "timeout",
            RedisLimitError::Connection(_) => "connection",
            RedisLimitError::Script(_) => "script",
            RedisLimitError::CircuitOpen => "circuit_open",
            RedisLimitError::Config(_) => "config",
            RedisLimitError::Other(_) => "other",
        }
    }

    pub(super) fn from_redis(e: &RedisError) -> Self {
        let msg = e.to_string();
        if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            return RedisLimitError::Connection(msg);
        }
        if e.is_timeout() {
            return RedisLimitError::Connection(msg);
        }
        match e.kind() {
            ErrorKind::ClusterConnectionNotFound
            | ErrorKind::AuthenticationFailed
            | ErrorKind::Server(
                ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain,
            ) => RedisLimitError::Connection(msg),
            ErrorKind::Server(
                ServerErrorKind::ResponseError
                | ServerErrorKind::NoScript
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::CrossSlot,
            )
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Parse => RedisLimitError::Script(msg),
            ErrorKind::InvalidClientConfig => RedisLimitError::Config(msg),
            _ => RedisLimitError::Other(msg),
        }
    }
}
