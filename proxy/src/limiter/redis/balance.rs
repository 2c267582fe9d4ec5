//! Reading a credit balance in Redis without spending (`proxy.usage_path`).

use std::sync::LazyLock;
use std::time::Instant;

use ::redis::Script;

use super::credits::balance_key;
use super::{RedisLimitError, RedisLimiter};
use crate::limiter::Subject;

/// `GET` of the balance key (a missing key is 0), read-only.
static BALANCE: LazyLock<Script> =
    LazyLock::new(|| Script::new("return tonumber(redis.call('GET', KEYS[1]) or '0')"));

impl RedisLimiter {
    /// The balance `subject`'s requests spend, as it stands; bounded by
    /// `deadline` and the circuit breaker like an admission.
    pub async fn balance(
        &self,
        subject: &Subject,
        deadline: Instant,
    ) -> Result<i64, RedisLimitError> {
        if Instant::now() >= deadline {
            return Err(RedisLimitError::Timeout(self.timeout));
        }
        if !self.breaker.allow() {
            return Err(RedisLimitError::CircuitOpen);
        }
        let mut inv = BALANCE.prepare_invoke();
        inv.key(balance_key(subject));
        let result = self
            .run(deadline, move |mut conn| async move {
                conn.invoke_i64(&inv).await
            })
            .await;
        match &result {
            Ok(_) => self.breaker.success(),
            Err(_) => self.failed(),
        }
        result
    }
}
