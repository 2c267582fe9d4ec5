//! Quota and credit webhook events (issue #21 item 5), noticed by the proxy
//! from its limiter's decisions and sent off the request path.
//!
//! - The limiter step hands each decision to [`Notices`]: a request with no
//!   quota and no credit balance costs one pass over its buckets; a
//!   threshold crossed ([`detect`]) is looked up in a bounded set of the
//!   occurrences this process already sent, and only a new one is built and
//!   pushed onto a bounded queue (never waiting: a full queue drops and
//!   counts).
//! - The `webhook-events` background task (`crate::background`) drains the
//!   queue into the database's outbox with `tollgate_core::webhooks::
//!   enqueue_event`, whose UNIQUE dedup key (`type:subject:period`) makes
//!   the events of every proxy one: exactly one `quota.warning` per key (or
//!   identity), quota and period. An event the database refused after its
//!   retries is forgotten here, so the next request past the threshold
//!   sends it again.
//! - Only decisions of the configured backend count (the local limiter, or
//!   Redis): not the `on_redis_error` fallback, whose counts are this
//!   proxy's alone.

pub mod detect;

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tollgate_core::limits::Decision;

use crate::limiter::credits::CreditVerdict;
use crate::limiter::credits::{holder, CreditBook};
use crate::limiter::{quota, Bucket, Subject};
use crate::metrics;
use detect::{About, DedupKey};

/// Events waiting for the background task, at most.
pub const QUEUE_CAP: usize = 1_024;
/// Occurrences remembered as sent, at most (then the set starts again: a
/// forgotten one is sent again and the outbox drops the duplicate).
pub const SENT_CAP: usize = 65_536;

/// An event ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: DedupKey,
    pub event_type: &'static str,
    /// `key:42` or `identity:7`.
    pub subject: String,
    /// The quota and its period's start, or the last top-up.
    pub period: String,
    pub data: serde_json::Value,
}

/// The events one proxy noticed and has not handed to the outbox yet.
#[derive(Debug, Default)]
pub struct Notices {
    queue: Mutex<VecDeque<Notice>>,
    sent: Mutex<HashSet<DedupKey>>,
    ready: Notify,
}

impl Notices {
    pub fn new() -> Self {
        Self::default()
    }

    /// Note the quota events of a decision of `subject` on `buckets`.
    pub fn quotas(&self, subject: &Subject, buckets: &[&Bucket], decision: &Decision) {
        if matches!(subject, Subject::Ip(_)) || !quota::any_quota(buckets) {
            return;
        }
        let now_us = quota::wall_now_us();
        for c in detect::quota_crossings(subject, buckets, decision, now_us) {
            self.offer(c.dedup(), || (c.about, c.period_name(), c.data()));
        }
    }

    /// Note the credit events of a credit holder's decision: `balance`
    /// after it, `refused` when the balance was too short.
    pub fn credits(&self, book: &CreditBook, subject: &Subject, balance: i64, refused: bool) {
        let about = match holder(subject) {
            Subject::Key(k) => About::Key(k),
            Subject::Identity(i) => About::Identity(i),
            Subject::Member { .. } | Subject::Ip(_) => return,
        };
        let top_up = book.last_top_up(&holder(subject));
        let low = top_up.is_some_and(|(_, amount)| balance <= detect::low_threshold(amount));
        if !refused && balance > 0 && !low {
            return;
        }
        for c in detect::credit_crossings(about, balance, refused, top_up) {
            self.offer(c.dedup(), || (c.about, c.period_name(), c.data()));
        }
    }

    /// Note the events of a credit holder's limiter step: its quotas and
    /// its balance, when the configured backend decided it.
    pub fn credit_verdict(
        &self,
        book: &CreditBook,
        subject: &Subject,
        buckets: &[&Bucket],
        verdict: &CreditVerdict,
    ) {
        match verdict {
            CreditVerdict::Decided(d, "local" | "redis", Some(balance)) => {
                self.quotas(subject, buckets, d);
                self.credits(book, subject, *balance, false);
            }
            CreditVerdict::Exhausted(balance) => self.credits(book, subject, *balance, true),
            CreditVerdict::Decided(..) | CreditVerdict::Unavailable => {}
        }
    }

    /// Queue an occurrence not sent yet; `build` makes its payload.
    fn offer(&self, key: DedupKey, build: impl FnOnce() -> (About, String, serde_json::Value)) {
        {
            let mut sent = self.sent.lock();
            if sent.contains(&key) {
                return;
            }
            if sent.len() >= SENT_CAP {
                sent.clear();
            }
            sent.insert(key);
        }
        let (about, period, data) = build();
        let notice = Notice {
            key,
            event_type: key.kind.event_type(),
            subject: about.subject(),
            period,
            data,
        };
        let mut queue = self.queue.lock();
        if queue.len() >= QUEUE_CAP {
            drop(queue);
            self.forget(&key);
            metrics::WEBHOOK_EVENTS
                .with_label_values(&["dropped"])
                .inc();
            return;
        }
        queue.push_back(notice);
        drop(queue);
        metrics::WEBHOOK_EVENTS
            .with_label_values(&["noticed"])
            .inc();
        self.ready.notify_one();
    }

    /// Forget that an occurrence was sent (the outbox did not take it):
    /// the next request past its threshold offers it again.
    pub fn forget(&self, key: &DedupKey) {
        self.sent.lock().remove(key);
    }

    /// Take everything queued, waiting until something is.
    pub async fn next_batch(&self) -> Vec<Notice> {
        loop {
            let batch: Vec<Notice> = self.queue.lock().drain(..).collect();
            if !batch.is_empty() {
                return batch;
            }
            self.ready.notified().await;
        }
    }

    /// How many events wait.
    pub fn queued(&self) -> usize {
        self.queue.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{LocalLimiter, Scope};
    use tollgate_core::db::credits::CreditAdjustment;
    use tollgate_core::limits::Limit;
    use tollgate_core::quota::{Period, QuotaSpec};

    fn daily(n: u64) -> Bucket {
        let spec = QuotaSpec {
            period: Period::Day,
            anchor: None,
            time_zone: None,
        };
        Bucket::new(Scope::Key, Limit::new_quota("daily", n, spec, None))
    }

    #[tokio::test]
    async fn each_occurrence_is_queued_once_and_again_when_forgotten() {
        let n = Notices::new();
        let l = LocalLimiter::new(1);
        let b = daily(10);
        let s = Subject::Key(1);
        for _ in 0..15 {
            let d = l.check(&s, &[&b]);
            n.quotas(&s, &[&b], &d);
        }
        let batch = n.next_batch().await;
        let types: Vec<&str> = batch.iter().map(|e| e.event_type).collect();
        assert_eq!(types, ["quota.warning", "quota.exhausted"]);
        assert_eq!(batch[0].subject, "key:1");
        assert!(batch[0].period.starts_with("daily:"));
        assert_eq!(batch[0].data["used"], 8);
        assert_eq!(n.queued(), 0);
        // Refused by the outbox: offered again by the next request.
        n.forget(&batch[1].key);
        let d = l.check(&s, &[&b]);
        n.quotas(&s, &[&b], &d);
        let again = n.next_batch().await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event_type, "quota.exhausted");
        assert_eq!(again[0].data["used"], 10);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_a_dropped_event_is_offered_again() {
        let n = Notices::new();
        let l = LocalLimiter::new(1);
        let b = daily(1);
        for k in 0..(QUEUE_CAP as i64 + 10) {
            let s = Subject::Key(k);
            let d = l.check(&s, &[&b]);
            n.quotas(&s, &[&b], &d);
        }
        assert_eq!(n.queued(), QUEUE_CAP);
        let _ = n.next_batch().await;
        let s = Subject::Key(QUEUE_CAP as i64 + 5);
        let d = l.check(&s, &[&b]);
        n.quotas(&s, &[&b], &d);
        assert_eq!(n.queued(), 2, "the dropped occurrence's two events");
    }

    #[tokio::test]
    async fn credits_events_follow_the_holders_last_top_up() {
        let n = Notices::new();
        let book = CreditBook::new();
        let adj = |id, delta| CreditAdjustment {
            id,
            subject_kind: tollgate_core::credits::SubjectKind::Key,
            subject_id: 4,
            delta,
            created_at: 0,
            actor: String::new(),
            spent_by: None,
            spent_at: None,
        };
        book.apply_local(&[adj(1, 20)]);
        let m = Subject::Member {
            key: 4,
            identity: 2,
        };
        n.credits(&book, &m, 3, false);
        assert_eq!(n.queued(), 0, "3 of a top-up of 20 is not low");
        n.credits(&book, &m, 2, false);
        n.credits(&book, &m, 1, false);
        n.credits(&book, &m, 0, false);
        n.credits(&book, &m, 0, true);
        let batch = n.next_batch().await;
        let types: Vec<&str> = batch.iter().map(|e| e.event_type).collect();
        assert_eq!(types, ["credits.low", "credits.exhausted"]);
        assert_eq!(
            batch[0].subject, "key:4",
            "a member spends its key's balance"
        );
        assert_eq!(batch[0].period, "top-up:1");
        assert_eq!(batch[0].data["balance"], 2);
        // A new top-up: a new occurrence of each.
        book.apply_local(&[adj(2, 5), adj(3, -1)]);
        n.credits(&book, &m, 0, true);
        let batch = n.next_batch().await;
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|e| e.period == "top-up:2"));
    }
}
