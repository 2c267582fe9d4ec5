//! What the flusher holds until it is written ([`Pending`]), and writing it
//! as batches that count once ([`write_pending`]).
//!
//! Each batch gets a random id and is applied in one transaction that
//! claims the id ([`Db::apply_usage_batch`]). A batch whose write failed or
//! timed out stays *in flight*, unchanged, and is retried first with the same
//! id: if the timed-out attempt committed after all, the retry is skipped by
//! the database instead of counting the usage twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tollgate_core::db::usage::{Counts, NewViolation, UsageRow};
use tollgate_core::db::usage::{USAGE_BATCH_ROWS, VIOLATION_BATCH_ROWS};
use tollgate_core::db::usage_batch::UsageBatch;
use tollgate_core::db::violation_aggregates::{
    AggregateKey, ViolationAggregate, AGGREGATE_BATCH_ROWS,
};
use tollgate_core::db::Db;

use super::recorder::{Drained, RowKey, MAX_HELD_AGGREGATES, MAX_HELD_VIOLATIONS};
use crate::metrics;

/// Held rows merged by identity (sorted, so concurrent proxies lock rows in
/// the same order), violations oldest first, violation counts, keys' last
/// use, and the batch being written.
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) rows: BTreeMap<RowKey, Counts>,
    violations: VecDeque<NewViolation>,
    aggregates: BTreeMap<AggregateKey, i64>,
    last_used: HashMap<i64, i64>,
    /// Taken out of the above, written or retried as a whole.
    in_flight: Option<UsageBatch>,
}

impl Pending {
    /// Merge what the recorder held, within `max_rows` rows,
    /// [`MAX_HELD_VIOLATIONS`] violations and [`MAX_HELD_AGGREGATES`]
    /// counts; returns the requests whose rows were dropped and the
    /// refusals dropped.
    pub fn absorb(&mut self, drained: Drained, max_rows: usize) -> (u64, u64) {
        let mut dropped_requests = 0;
        for (key, counts) in drained.rows {
            if let Some(c) = self.rows.get_mut(&key) {
                c.add(&counts);
            } else if self.rows.len() < max_rows {
                self.rows.insert(key, counts);
            } else {
                dropped_requests += u64::try_from(counts.total()).unwrap_or(0);
            }
        }
        let mut dropped_refusals = 0;
        for v in drained.violations {
            if self.violations.len() >= MAX_HELD_VIOLATIONS {
                self.violations.pop_front();
                dropped_refusals += 1;
            }
            self.violations.push_back(v);
        }
        for (key, n) in drained.aggregates {
            if let Some(c) = self.aggregates.get_mut(&key) {
                *c += n;
            } else if self.aggregates.len() < MAX_HELD_AGGREGATES {
                self.aggregates.insert(key, n);
            } else {
                dropped_refusals += u64::try_from(n).unwrap_or(0);
            }
        }
        for (id, at) in drained.last_used {
            let e = self.last_used.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
        (dropped_requests, dropped_refusals)
    }

    /// Usage rows held (including the batch in flight).
    pub fn rows(&self) -> usize {
        self.rows.len() + self.in_flight.as_ref().map_or(0, |b| b.rows.len())
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.violations.is_empty()
            && self.aggregates.is_empty()
            && self.last_used.is_empty()
            && self.in_flight.is_none()
    }

    /// The batch to write next: the one in flight, else a new one taken from
    /// what is held (`None` when nothing is).
    pub fn next_batch(&mut self) -> Option<&UsageBatch> {
        if self.in_flight.is_none() {
            let mut batch = UsageBatch {
                id: uuid::Uuid::new_v4().simple().to_string(),
                ..UsageBatch::default()
            };
            while batch.rows.len() < USAGE_BATCH_ROWS {
                let Some(((minute, key_id, route), counts)) = self.rows.pop_first() else {
                    break;
                };
                batch.rows.push(UsageRow {
                    minute,
                    key_id,
                    route: route.to_string(),
                    counts,
                });
            }
            let n = self.violations.len().min(VIOLATION_BATCH_ROWS);
            batch.violations.extend(self.violations.drain(..n));
            while batch.aggregates.len() < AGGREGATE_BATCH_ROWS {
                let Some((key, count)) = self.aggregates.pop_first() else {
                    break;
                };
                batch.aggregates.push(ViolationAggregate { key, count });
            }
            if batch.is_empty() {
                return None;
            }
            self.in_flight = Some(batch);
        }
        self.in_flight.as_ref()
    }

    /// The batch in flight was written (or found already written).
    fn written(&mut self) -> Option<UsageBatch> {
        self.in_flight.take()
    }
}

/// Why a flush stopped early.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("{0}")]
    Db(#[from] tollgate_core::db::DbError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// `f`, or [`FlushError::Timeout`] after `limit`.
pub async fn bounded<T, E>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, FlushError>
where
    FlushError: From<E>,
{
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(FlushError::from),
        Err(_) => Err(FlushError::Timeout(limit)),
    }
}

/// Write what `pending` holds, batch by batch; a batch that fails stays in
/// flight for the next attempt. Returns usage rows written.
pub async fn write_pending(
    db: &Db,
    pending: &mut Pending,
    limit: Duration,
) -> Result<u64, FlushError> {
    let mut written = 0u64;
    while let Some(batch) = pending.next_batch() {
        let applied = bounded(limit, db.apply_usage_batch(batch)).await?;
        if !applied {
            metrics::USAGE_BATCHES_REPEATED.inc();
            tracing::info!(
                batch = %batch.id,
                "usage batch already written by an attempt that timed out: not counted again"
            );
        }
        if let Some(done) = pending.written() {
            if applied {
                written += done.rows.len() as u64;
                metrics::USAGE_ROWS_WRITTEN.inc_by(done.rows.len() as u64);
            }
        }
        metrics::USAGE_BUFFERED_ROWS.set(pending.rows() as i64);
    }
    if !pending.last_used.is_empty() {
        // Idempotent: `last_used_at` only ever moves forward.
        let used: Vec<(i64, i64)> = pending.last_used.iter().map(|(k, v)| (*k, *v)).collect();
        bounded(limit, db.set_keys_last_used(&used)).await?;
        pending.last_used.clear();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::outcome;
    use crate::usage::{UsageEvent, UsageRecorder};
    use std::sync::Arc;
    use tollgate_core::db::usage::UsageFilter;

    fn allowed(key: i64) -> UsageEvent<'static> {
        UsageEvent {
            at_ms: 120_500,
            key_id: Some(key),
            route: "users".into(),
            method: "GET",
            path: "/",
            client_ip: None,
            status: 200,
            outcome: outcome::ALLOWED,
            violated: vec![],
            reason: "",
            latency_us: 1,
        }
    }

    #[test]
    fn rows_beyond_the_bound_are_dropped() {
        let mut p = Pending::default();
        let again = || {
            let r = UsageRecorder::default();
            for key in 1..=3 {
                r.record(allowed(key));
            }
            r.drain()
        };
        assert_eq!(p.absorb(again(), 2), (1, 0));
        assert_eq!(p.absorb(again(), 2), (1, 0));
        assert_eq!(p.rows(), 2);
        assert!(p.rows.values().all(|c| c.allowed == 2));
    }

    #[test]
    fn batches_are_cut_to_size_and_kept_until_written() {
        let r = UsageRecorder::default();
        for key in 0..(USAGE_BATCH_ROWS as i64 + 3) {
            r.record(allowed(key));
        }
        let mut p = Pending::default();
        p.absorb(r.drain(), usize::MAX);
        let first = p.next_batch().cloned().expect("a batch");
        assert_eq!(first.rows.len(), USAGE_BATCH_ROWS);
        // Not written: the same batch (same id) again.
        assert_eq!(p.next_batch(), Some(&first));
        assert_eq!(p.rows(), USAGE_BATCH_ROWS + 3);
        p.written();
        let second = p.next_batch().cloned().expect("the rest");
        assert_ne!(second.id, first.id);
        assert_eq!(second.rows.len(), 3);
        p.written();
        assert!(p.next_batch().is_none());
    }

    /// The write of a batch timed out after its commit; the retry must not
    /// count it twice.
    #[tokio::test]
    async fn a_flush_retried_after_a_timeout_counts_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
        let r = Arc::new(UsageRecorder::default());
        for _ in 0..5 {
            r.record(allowed(1));
        }
        let mut p = Pending::default();
        p.absorb(r.drain(), 100);
        // The attempt that "timed out": it reached the database.
        let batch = p.next_batch().cloned().expect("batch");
        assert!(db.apply_usage_batch(&batch).await.expect("first attempt"));
        // The flusher still holds it in flight and retries.
        let written = write_pending(&db, &mut p, Duration::from_secs(10))
            .await
            .expect("retry");
        assert_eq!(written, 0);
        assert!(p.is_empty());
        let totals = db
            .usage_totals(&UsageFilter {
                from: 0,
                to: 600_000,
                ..UsageFilter::default()
            })
            .await
            .expect("totals");
        assert_eq!(totals.counts.allowed, 5);
        db.close().await;
    }
}
