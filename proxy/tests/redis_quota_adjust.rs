//! Quota resets and adjustments in Redis (single node and cluster): two
//! limiters (two proxies) both send every row, it is applied exactly once,
//! to the count requests use (a key's own, a member's own, an identity's
//! shared), and only in its period.
//!
//! Without the env vars the tests print a notice and pass, unless `CI` or
//! `TOLLGATE_REQUIRE_SERVICES` is set: then they fail.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_adjustments::QuotaAdjustment;
use tollgate_core::limits::{Limit, LimitScope};
use tollgate_core::quota::adjust::QuotaChange;
use tollgate_core::quota::{Period, QuotaSpec};
use tollgate_proxy::limiter::quota::{bounds, wall_now_us};
use tollgate_proxy::limiter::quota_adjust::target;
use tollgate_proxy::limiter::redis::{RedisLimiter, RedisLimiterOptions};
use tollgate_proxy::limiter::{Bucket, Scope, Subject};

mod common;

use common::redis::single_and_cluster;

/// Ids no other run of this test uses (the markers outlive a run).
fn fresh_id() -> i64 {
    static SEQ: AtomicI64 = AtomicI64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    i64::try_from(micros % 1_000_000_000_000).expect("fits") * 1_000
        + SEQ.fetch_add(1, Ordering::Relaxed)
}

fn limiter(url: &str) -> RedisLimiter {
    RedisLimiter::with_options(
        url,
        RedisLimiterOptions {
            // Decisions, not latency: a busy box must not time out.
            timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(5),
            ..RedisLimiterOptions::default()
        },
    )
    .expect("limiter")
}

fn daily(amount: u64, scope: LimitScope) -> Bucket {
    let spec = QuotaSpec {
        period: Period::Day,
        anchor: None,
        time_zone: None,
    };
    let mut l = Limit::new_quota("daily", amount, spec, None);
    l.scope = scope;
    Bucket::new(Scope::Key, l)
}

fn row(kind: SubjectKind, subject_id: i64, q: &Bucket, change: QuotaChange) -> QuotaAdjustment {
    QuotaAdjustment {
        id: fresh_id(),
        subject_kind: kind,
        subject_id,
        quota: "daily".into(),
        period: bounds(q, wall_now_us()).expect("today"),
        change,
        created_at: 0,
        actor: "test".into(),
    }
}

/// Requests admitted in a row (at most 50), alternating proxies.
async fn admitted(proxies: &[RedisLimiter; 2], s: &Subject, q: &Bucket) -> u64 {
    let mut n = 0;
    while n < 50 {
        let d = proxies[(n % 2) as usize]
            .check(s, &[q])
            .await
            .expect("check");
        if !d.allowed {
            break;
        }
        n += 1;
    }
    n
}

/// Both proxies send the row; `true` if exactly one applied it.
async fn send_from_both(
    proxies: &[RedisLimiter; 2],
    a: &QuotaAdjustment,
    key_identity: Option<i64>,
) {
    let t = target(a, key_identity);
    let now = wall_now_us();
    let first = proxies[0]
        .adjust_quota(&t.subject, &t.bucket, a, now)
        .await
        .expect("adjust");
    let second = proxies[1]
        .adjust_quota(&t.subject, &t.bucket, a, now)
        .await
        .expect("adjust");
    assert!(first.is_some(), "the first call applies it");
    assert_eq!(second, None, "the second call changes nothing");
}

async fn applied_once_across_two_proxies(url: &str, _test: i64) {
    let proxies = [limiter(url), limiter(url)];
    let q = daily(5, LimitScope::Key);
    let key = fresh_id();
    let k = Subject::Key(key);
    assert_eq!(admitted(&proxies, &k, &q).await, 5);
    // A reset: exactly 5 more, whichever proxy asks.
    let reset = row(SubjectKind::Key, key, &q, QuotaChange::Reset);
    send_from_both(&proxies, &reset, None).await;
    assert_eq!(admitted(&proxies, &k, &q).await, 5);
    // Sent again later (a restarted proxy): still nothing.
    let t = target(&reset, None);
    assert_eq!(
        proxies[1]
            .adjust_quota(&t.subject, &t.bucket, &reset, wall_now_us())
            .await
            .expect("again"),
        None
    );
    assert_eq!(admitted(&proxies, &k, &q).await, 0);
    // Given back 2: exactly 2 more. 10 back (floored at 0), then 3 used: 2 more.
    send_from_both(
        &proxies,
        &row(SubjectKind::Key, key, &q, QuotaChange::Delta(-2)),
        None,
    )
    .await;
    assert_eq!(admitted(&proxies, &k, &q).await, 2);
    send_from_both(
        &proxies,
        &row(SubjectKind::Key, key, &q, QuotaChange::Delta(-10)),
        None,
    )
    .await;
    send_from_both(
        &proxies,
        &row(SubjectKind::Key, key, &q, QuotaChange::Delta(3)),
        None,
    )
    .await;
    assert_eq!(admitted(&proxies, &k, &q).await, 2);

    // A member's own count and its identity's shared one.
    let (mkey, identity) = (fresh_id(), fresh_id());
    let m = Subject::Member {
        key: mkey,
        identity,
    };
    let shared = daily(3, LimitScope::Identity);
    assert_eq!(admitted(&proxies, &m, &q).await, 5);
    assert_eq!(admitted(&proxies, &m, &shared).await, 3);
    let own = row(SubjectKind::Key, mkey, &q, QuotaChange::Reset);
    send_from_both(&proxies, &own, Some(identity)).await;
    assert_eq!(admitted(&proxies, &m, &shared).await, 0, "shared untouched");
    assert_eq!(admitted(&proxies, &m, &q).await, 5);
    let whole = row(SubjectKind::Identity, identity, &shared, QuotaChange::Reset);
    send_from_both(&proxies, &whole, None).await;
    assert_eq!(admitted(&proxies, &m, &shared).await, 3);
    assert_eq!(admitted(&proxies, &m, &q).await, 0, "own untouched");

    // Yesterday's reset changes nothing today.
    let mut old = row(SubjectKind::Key, key, &q, QuotaChange::Reset);
    old.period.start_us -= 86_400_000_000;
    old.period.end_us -= 86_400_000_000;
    let t = target(&old, None);
    let _ = proxies[0]
        .adjust_quota(&t.subject, &t.bucket, &old, wall_now_us())
        .await
        .expect("old");
    assert_eq!(admitted(&proxies, &k, &q).await, 0);
}

single_and_cluster!(
    adjust_once_single: 1,
    adjust_once_cluster: 2,
    applied_once_across_two_proxies
);
