//! A credit holder's balance as it stands, nothing spent (`proxy.usage_path`).

use std::time::Instant;

use tollgate_core::config::LimiterConfig;

use super::Limiters;
use crate::limiter::credits::holder;
use crate::limiter::Subject;
use crate::metrics;

impl Limiters {
    /// The balance a request of `subject` would spend: `None` when it holds
    /// no credits, or when the Redis backend cannot answer, whatever
    /// `on_redis_error` says: the balance lives in Redis only, and this
    /// proxy's book holds the top-ups without the spends (black-box round
    /// 17 re-check: it showed them as the balance), while a credit holder's
    /// requests are refused until Redis answers.
    pub async fn balance(
        &self,
        cfg: &LimiterConfig,
        subject: &Subject,
        deadline: Instant,
    ) -> Option<i64> {
        if !self.credits.holds(subject) {
            return None;
        }
        let local = || Some(self.credits.local_balance(&holder(subject)));
        let result = match self.redis_limiter(cfg) {
            None => return local(),
            Some(Ok(r)) => r.balance(subject, deadline).await,
            Some(Err(e)) => Err(e),
        };
        match result {
            Ok(b) => Some(b),
            Err(e) => {
                metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                tracing::debug!("redis limiter (balance): {e}");
                None
            }
        }
    }
}
