//! Folding old credit spend rows (black-box round 4, C5; the rule and why
//! it is safe: [`tollgate_core::credits::fold`]): once at start, before the
//! balances are read, for at most [`START_BUDGET`]; then every
//! [`FOLD_EVERY`] by the `credit-folds` task. Any proxy may fold (on
//! PostgreSQL one at a time); the rows are the same for all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::credits::SubjectKind;
use tollgate_core::db::Db;
use tollgate_core::refill::Refill;

use crate::limiter::backends::Limiters;
use crate::limiter::Subject;
use crate::metrics;
use crate::state::State;

/// How often the task folds.
pub const FOLD_EVERY: Duration = Duration::from_secs(600);

/// How long folding may hold up a proxy's start (the rest is folded by the
/// task).
pub const START_BUDGET: Duration = Duration::from_secs(5);

/// How long one run of the task may fold.
const RUN_BUDGET: Duration = Duration::from_secs(60);

/// Spend rows read per transaction.
const BATCH: i64 = 2_000;

/// One transaction at most this long (it is rolled back past it).
const PASS_TIMEOUT: Duration = Duration::from_secs(10);

/// Fold the spend rows old enough for `key_refresh` until none are left or
/// `budget` is spent; the refill periods of `refills` keep their rows
/// apart. Returns how many rows were folded. Errors are logged: folding is
/// tried again later, nothing depends on it.
pub async fn fold_spends(
    db: &Db,
    refills: &HashMap<Subject, Arc<Refill>>,
    key_refresh: Duration,
    budget: Duration,
) -> usize {
    let age = i64::try_from(crate::limiter::credits::fold_age_here(key_refresh).as_millis())
        .unwrap_or(i64::MAX);
    let older_than = tollgate_core::now_ms().saturating_sub(age);
    let now_us = crate::limiter::quota::wall_now_us();
    let period_start = |kind: SubjectKind, id: i64| {
        let holder = match kind {
            SubjectKind::Key => Subject::Key(id),
            SubjectKind::Identity => Subject::Identity(id),
        };
        refills.get(&holder)?.period_start_us(now_us)
    };
    let started = Instant::now();
    let (mut after, mut folded) = (0, 0);
    while started.elapsed() < budget {
        let pass = db.fold_credit_spends(older_than, after, BATCH, period_start);
        match tokio::time::timeout(PASS_TIMEOUT, pass).await {
            Ok(Ok(pass)) => {
                for s in &pass.skipped {
                    tracing::warn!("{s}");
                }
                folded += pass.folded;
                metrics::CREDIT_ROWS_FOLDED.inc_by(pass.folded as u64);
                match pass.last_id {
                    Some(id) if !pass.busy => after = id,
                    _ => break,
                }
            }
            Ok(Err(e)) => {
                tracing::debug!("folding credit spend rows: {e}");
                break;
            }
            Err(_) => {
                tracing::debug!("folding credit spend rows timed out");
                break;
            }
        }
    }
    if folded > 0 {
        tracing::info!(rows = folded, "credit spend rows folded");
    }
    folded
}

/// The `credit-folds` task.
pub(super) async fn fold_credits(state: Arc<State>, limiters: Arc<Limiters>, url: String) {
    let mut db: Option<Db> = None;
    loop {
        tokio::time::sleep(FOLD_EVERY).await;
        super::connect_once(&mut db, &url).await;
        if let Some(d) = &db {
            let key_refresh = state.config.load().config.storage.key_refresh;
            fold_spends(d, &limiters.credits.refills(), key_refresh, RUN_BUDGET).await;
        }
    }
}
