//! The Redis limiter against real Redis: a single node
//! (`TOLLGATE_TEST_REDIS_URL`), the 3-master cluster
//! (`TOLLGATE_TEST_REDIS_CLUSTER_URL`), and throw-away servers this test
//! starts itself (`redis-server` on a free port) for timeouts and restarts.
//!
//! Without the env vars the tests print a notice and pass, unless `CI` or
//! `TOLLGATE_REQUIRE_SERVICES` is set: then they fail. `eval "$(scripts/services)"`
//! provides them.
//!
//! Tests share Redis and run in parallel: each run and each test uses its own
//! subjects (see `base`), and nothing here flushes or pauses a shared server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate_core::limits::Limit;
use tollgate_proxy::limiter::breaker::BreakerConfig;
use tollgate_proxy::limiter::quota::wall_now_us;
use tollgate_proxy::limiter::redis::{
    bucket_key, RedisLimitError, RedisLimiter, RedisLimiterOptions,
};
use tollgate_proxy::limiter::scenarios::{self, Outcome, Scenario, SubjectSpec};
use tollgate_proxy::limiter::{Bucket, Scope, Subject};

mod common;

use common::redis::{raw_command, service_url, single_and_cluster, OwnRedis};

// --- helpers -----------------------------------------------------------------

/// A subject base unique to this run and test: runs against a persistent
/// Redis never see each other's buckets.
fn base(test: i64) -> i64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let run = i64::try_from(micros % 1_000_000_000_000).expect("fits");
    let seq = i64::try_from(SEQ.fetch_add(1, Ordering::Relaxed)).expect("fits");
    run * 1_000_000 + test * 10_000 + seq * 100
}

/// The timeout of tests that are about decisions, not latency: a loaded test
/// box must not turn them into timeouts (a timed-out check may or may not
/// have taken tokens, which would spoil the counts).
const GENEROUS_MS: u64 = 5_000;

fn options(timeout_ms: u64) -> RedisLimiterOptions {
    RedisLimiterOptions {
        timeout: Duration::from_millis(timeout_ms),
        ..RedisLimiterOptions::default()
    }
}

fn limit(name: &str, rate: u64, per: Duration, burst: u64) -> Limit {
    Limit::new(name, rate, per, Some(burst), None)
}

const DAY: Duration = Duration::from_secs(86_400);

// --- scenarios: Redis decides exactly like the local limiter -----------------

async fn run_redis(limiter: &RedisLimiter, s: &Scenario, base: i64) -> Vec<Outcome> {
    let start = tokio::time::Instant::now();
    let mut out = Vec::new();
    for step in &s.steps {
        tokio::time::sleep_until(start + Duration::from_millis(step.at_ms)).await;
        let buckets = s.step_buckets(step);
        if let Some(settle) = step.settle {
            let settled = limiter
                .settle_by(
                    &step.subject.subject(base),
                    &buckets,
                    settle,
                    wall_now_us(),
                    limiter.deadline(),
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let applied: Vec<i64> = settled.iter().map(|s| s.applied).collect();
            out.push(Outcome::settled(&buckets, &applied));
            continue;
        }
        let d = limiter
            .check(&step.subject.subject(base), &buckets)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        out.push(Outcome::from(&d));
    }
    out
}

async fn scenarios_match_local(url: &str, test: i64) {
    // With the over-limit cache (as in production) and without it (every
    // request reaches the script).
    for cache in [true, false] {
        scenarios_match_local_with(url, test, cache).await;
    }
}

async fn scenarios_match_local_with(url: &str, test: i64, cache: bool) {
    let opts = RedisLimiterOptions {
        over_limit_capacity: if cache { 100_000 } else { 0 },
        ..options(GENEROUS_MS)
    };
    let limiter = RedisLimiter::with_options(url, opts).expect("limiter");
    let table = scenarios::scenarios();
    let mut runs = tokio::task::JoinSet::new();
    let limiter = Arc::new(limiter);
    for s in table {
        let limiter = limiter.clone();
        runs.spawn(async move {
            let b = base(test);
            let local = scenarios::run_local(&s, b);
            let redis = run_redis(&limiter, &s, b).await;
            scenarios::compare(&s, &local, &redis).map(|()| s.name)
        });
    }
    let mut passed = Vec::new();
    while let Some(r) = runs.join_next().await {
        passed.push(r.expect("scenario task").unwrap_or_else(|e| panic!("{e}")));
    }
    eprintln!(
        "{url} (over-limit cache {}): {} scenarios identical to the local limiter: {passed:?}",
        if cache { "on" } else { "off" },
        passed.len()
    );
}

single_and_cluster!(scenarios_single_node: 1, scenarios_cluster: 2, scenarios_match_local);

// --- the script's arithmetic equals core's, at chosen instants ---------------

/// xorshift64*: reproducible pseudo-random steps without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).expect("index")]
    }
}

/// Random limits and instants, the same requests to the local limiter
/// (`check_at`) and to the script (`check_at_us`, "now" passed in): the
/// decisions must be equal field by field, reset and retry-after included.
/// Emission intervals are whole microseconds (so µs and ns arithmetic agree)
/// and ≥ 60 s (so Redis' real-time key expiry, which follows the simulated
/// TATs, cannot fire during the test).
async fn script_equals_core(url: &str, test: i64) {
    let limiter = RedisLimiter::with_options(url, options(GENEROUS_MS)).expect("limiter");
    let seed = u64::try_from(base(test)).expect("positive") | 1;
    let mut rng = Rng(seed);
    let pers = [3_600u64, 86_400, 7 * 86_400];
    let rates = [1u64, 2, 3, 5, 6, 10, 12, 30, 60];
    let mut pool = Vec::new();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let per = rng.pick(&pers);
        let rate = rng.pick(&rates);
        let burst = 1 + rng.below(2 * rate);
        let cost = match rng.below(8) {
            0 => burst + 1,
            1 => 2.min(burst),
            2 => 1 + rng.below(burst),
            _ => 1,
        };
        let l = Limit {
            name: (*name).into(),
            rate,
            per: Duration::from_secs(per),
            burst: Some(burst),
            cost: Some(cost),
            quota: None,
            scope: Default::default(),
        };
        let scope = if i < 2 { Scope::Key } else { Scope::Route("r") };
        pool.push(Bucket::new(scope, l));
    }
    let local = tollgate_proxy::limiter::LocalLimiter::new(4);
    let b = base(test);
    let subjects = [Subject::Key(b), Subject::Key(b + 1)];
    let mut now_us = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_micros(),
    )
    .expect("fits");
    // Emission intervals in µs, fastest first.
    let mut intervals: Vec<u64> = pool
        .iter()
        .map(|b| u64::try_from(b.limit.per.as_micros() / u128::from(b.limit.rate)).expect("fits"))
        .collect();
    intervals.sort_unstable();
    let (mut admitted, mut refused) = (0u32, 0u32);
    let mut i = 0;
    // At least 1500 requests, and on until both outcomes were seen often
    // enough whatever limits the seed drew.
    while i < 1500 || (i < 10_000 && (admitted <= 100 || refused <= 100)) {
        i += 1;
        // Mostly bursts at one instant, sometimes a jump of up to ~2 intervals
        // of one of the buckets: of the fastest when refusals lag behind, of
        // the slowest when admissions do.
        if rng.below(3) == 0 {
            let interval = if refused * 4 < admitted {
                intervals[0]
            } else if admitted * 4 < refused {
                intervals[intervals.len() - 1]
            } else {
                rng.pick(&intervals)
            };
            now_us += rng.below(2 * interval);
        }
        let subject = rng.pick(&subjects);
        let mut buckets: Vec<&Bucket> = pool.iter().filter(|_| rng.below(2) == 0).collect();
        if buckets.is_empty() {
            buckets.push(&pool[usize::try_from(rng.below(4)).expect("index")]);
        }
        let want = local.check_at(&subject, &buckets, now_us * 1_000);
        let got = limiter
            .check_at_us(&subject, &buckets, now_us)
            .await
            .expect("check");
        assert_eq!(got, want, "step {i}, seed {seed}, buckets {buckets:?}");
        if want.allowed {
            admitted += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("{url}: {i} random requests, script == core ({admitted} admitted, {refused} refused, seed {seed})");
    assert!(admitted > 100 && refused > 100, "{admitted} / {refused}");
}

single_and_cluster!(script_arithmetic_equals_core_single_node: 7, script_arithmetic_equals_core_cluster: 8, script_equals_core);

/// Policies whose spans pass 2^50 µs (35 years) are clamped, never mangled
/// by Lua's doubles: tokens are still counted one by one, and the script
/// never errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_limits_stay_exact() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let limiter = RedisLimiter::with_options(&url, options(GENEROUS_MS)).expect("limiter");
    // One token a day, a burst of a million (2700 years to refill), cost 3.
    let huge = Bucket::new(
        Scope::Key,
        Limit {
            name: "huge".into(),
            rate: 1,
            per: DAY,
            burst: Some(1_000_000),
            cost: Some(3),
            quota: None,
            scope: Default::default(),
        },
    );
    let fast = Bucket::new(
        Scope::Key,
        limit("fast", 1_000_000_000, Duration::from_secs(1), 2),
    );
    let args = tollgate_proxy::limiter::redis::ScriptArgs::new(&huge.limit);
    assert!(args.burst > 10_000, "{args:?}");
    let subject = Subject::Key(base(9));
    for i in 1..=5u64 {
        let d = limiter
            .check(&subject, &[&huge, &fast])
            .await
            .expect("check");
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, args.burst - 3 * i);
    }
    // One token per 1000 years: clamped to one per 2^50 µs.
    let never = Bucket::new(
        Scope::Key,
        limit("millennium", 1, Duration::from_secs(86_400 * 365 * 1000), 5),
    );
    let d = limiter.check(&subject, &[&never]).await.expect("check");
    assert!(d.allowed);
    let d = limiter.check(&subject, &[&never]).await.expect("check");
    assert!(!d.allowed);
    assert!(d.retry_after_secs() > 30 * 365 * 86_400, "{d:?}");
}

// --- runtimes: the connection lives on the limiter's own runtime -------------

#[test]
fn usable_from_other_runtimes() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    // Built (and first used) on a runtime that is then shut down.
    let limiter = {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let l = rt.block_on(async {
            // No leases: this counts admissions the moment the callers stop,
            // while a lease may still hold tokens back (redis_leases.rs
            // counts them in once they are given back).
            let opts = RedisLimiterOptions {
                lease_ttl: Duration::ZERO,
                ..options(GENEROUS_MS)
            };
            let l = RedisLimiter::with_options(&url, opts).expect("limiter");
            l.ping().await.expect("ping");
            l
        });
        drop(rt);
        Arc::new(l)
    };
    let bucket = Arc::new(Bucket::new(Scope::Key, limit("day", 300, DAY, 300)));
    let subject = Subject::Key(base(3));
    let admitted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (limiter, bucket, admitted) = (limiter.clone(), bucket.clone(), admitted.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("rt");
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..500 {
                        let (limiter, bucket, admitted) =
                            (limiter.clone(), bucket.clone(), admitted.clone());
                        set.spawn(async move {
                            let d = limiter.check(&subject, &[&bucket]).await.expect("check");
                            if d.allowed {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    while let Some(r) = set.join_next().await {
                        r.expect("task");
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let admitted = admitted.load(Ordering::Relaxed);
    eprintln!("two runtimes × 500 concurrent checks against a bucket of 300: {admitted} admitted");
    assert_eq!(admitted, 300);
    // Dropping the limiter from inside a runtime is fine too.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async move { drop(limiter) });
}

// --- exactness: two "proxies" share one bucket --------------------------------

struct Hammer {
    admitted: u64,
    requests: u64,
    elapsed: Duration,
}

/// Two limiters (two proxies), `workers` tasks each, one request per ms per
/// task, for `run`: far above the limit.
async fn hammer(url: &str, subject: Subject, bucket: Bucket, cache: bool, run: Duration) -> Hammer {
    let opts = RedisLimiterOptions {
        over_limit_capacity: if cache { 100_000 } else { 0 },
        ..options(GENEROUS_MS)
    };
    let proxies = [
        Arc::new(RedisLimiter::with_options(url, opts.clone()).expect("limiter")),
        Arc::new(RedisLimiter::with_options(url, opts).expect("limiter")),
    ];
    for p in &proxies {
        p.ping().await.expect("ping");
    }
    let bucket = Arc::new(bucket);
    let admitted = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let mut set = tokio::task::JoinSet::new();
    for p in &proxies {
        for _ in 0..16 {
            let (p, bucket, admitted, requests) = (
                p.clone(),
                bucket.clone(),
                admitted.clone(),
                requests.clone(),
            );
            set.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                while Instant::now() < deadline {
                    tick.tick().await;
                    let d = p.check(&subject, &[&bucket]).await.expect("check");
                    requests.fetch_add(1, Ordering::Relaxed);
                    if d.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r.expect("worker");
    }
    Hammer {
        admitted: admitted.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

async fn two_proxies_exact(url: &str, test: i64) {
    let (rate, burst) = (200u64, 50u64);
    for cache in [true, false] {
        let bucket = Bucket::new(
            Scope::Key,
            limit("second", rate, Duration::from_secs(1), burst),
        );
        let h = hammer(
            url,
            Subject::Key(base(test)),
            bucket,
            cache,
            Duration::from_secs(3),
        )
        .await;
        let bound = burst as f64 + rate as f64 * h.elapsed.as_secs_f64();
        eprintln!(
            "{url} (over-limit cache {}): 2 proxies, {} requests in {:.3} s ({:.0}/s): \
             admitted {} of bound burst + rate × t = {:.1} ({:.2} %)",
            if cache { "on" } else { "off" },
            h.requests,
            h.elapsed.as_secs_f64(),
            h.requests as f64 / h.elapsed.as_secs_f64(),
            h.admitted,
            bound,
            100.0 * h.admitted as f64 / bound
        );
        assert!(h.requests as f64 > 3.0 * bound, "not hammered hard enough");
        assert!(
            h.admitted as f64 <= bound,
            "admitted more than burst + rate × t"
        );
        assert!(
            h.admitted as f64 >= 0.8 * bound,
            "admitted much less than the bound"
        );
    }
}

single_and_cluster!(two_proxies_admit_no_more_than_the_bound_single_node: 4, two_proxies_admit_no_more_than_the_bound_cluster: 5, two_proxies_exact);

// --- cluster: one slot per request, many slots overall ------------------------

fn cluster_ports(url: &str) -> Vec<u16> {
    url.trim_start_matches("redis+cluster://")
        .split(',')
        .map(|h| h.rsplit(':').next().expect("port").parse().expect("port"))
        .collect()
}

/// Parse an integer reply `:N`.
fn int_reply(r: &str) -> u64 {
    r.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("integer reply expected, got {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_of_a_request_share_a_slot() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    let ports = cluster_ports(&url);
    // Which node serves which slot: ask each node for the keys it owns.
    let key_bucket = Bucket::new(Scope::Key, limit("minute", 60, Duration::from_secs(60), 1));
    let route_bucket = Bucket::new(Scope::Route("users"), limit("route", 10, DAY, 5));
    let b = base(6);
    let subjects: Vec<Subject> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                Subject::Key(b + i)
            } else {
                SubjectSpec::Ip(u16::try_from(i).expect("small")).subject(b)
            }
        })
        .collect();
    let mut slots = std::collections::BTreeSet::new();
    for s in &subjects {
        let k1 = bucket_key(s, &key_bucket);
        let k2 = bucket_key(s, &route_bucket);
        let s1 =
            int_reply(&raw_command(ports[0], &format!("CLUSTER KEYSLOT {k1}")).expect("keyslot"));
        let s2 =
            int_reply(&raw_command(ports[0], &format!("CLUSTER KEYSLOT {k2}")).expect("keyslot"));
        assert_eq!(s1, s2, "{k1} and {k2} in different slots");
        slots.insert(s1);
    }
    let limiter = RedisLimiter::with_options(&url, options(GENEROUS_MS)).expect("limiter");
    for s in &subjects {
        let d = limiter
            .check(s, &[&key_bucket, &route_bucket])
            .await
            .expect("check");
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, 0);
        assert_eq!(d.limits[1].remaining, 4);
        let d = limiter
            .check(s, &[&key_bucket, &route_bucket])
            .await
            .expect("check");
        assert!(!d.allowed);
        assert_eq!(d.violated_names(), vec!["minute"]);
        assert_eq!(d.limits[1].remaining, 4, "refusal took nothing");
    }
    // The buckets are spread over every master: each holds some of them.
    let mut per_node = Vec::new();
    for &p in &ports {
        let mut n = 0;
        for s in &subjects {
            let key = bucket_key(s, &route_bucket);
            let r = raw_command(p, &format!("EXISTS {key}")).expect("exists");
            // A node that does not own the slot answers -MOVED.
            if r.starts_with(":1") {
                n += 1;
            }
        }
        per_node.push(n);
    }
    eprintln!(
        "cluster: 200 subjects in {} distinct slots; route buckets per master {per_node:?}",
        slots.len()
    );
    assert_eq!(per_node.iter().sum::<u64>(), 200);
    assert!(
        per_node.iter().all(|&n| n > 0),
        "every master used: {per_node:?}"
    );
}

// --- failures: timeouts, kill and restart ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_redis_times_out_then_recovers() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let limiter = RedisLimiter::with_options(&redis.url(), options(50)).expect("limiter");
    let bucket = Bucket::new(Scope::Key, limit("day", 100, DAY, 100));
    let subject = Subject::Key(1);
    // Warm up (connect, load the script); generous for a loaded test box.
    let mut warm = false;
    for _ in 0..20 {
        if limiter.check(&subject, &[&bucket]).await.is_ok() {
            warm = true;
            break;
        }
    }
    assert!(warm, "limiter never answered");
    let paused = Instant::now();
    let r = raw_command(redis.port, "CLIENT PAUSE 500 ALL").expect("pause");
    assert!(r.starts_with("+OK"), "{r}");
    let t = Instant::now();
    let e = limiter
        .check(&subject, &[&bucket])
        .await
        .expect_err("paused redis must time out");
    let took = t.elapsed();
    eprintln!("paused redis: {e} after {took:?} (timeout 50 ms)");
    assert!(matches!(e, RedisLimitError::Timeout(_)), "{e:?}");
    assert_eq!(e.kind(), "timeout");
    assert!(took < Duration::from_millis(250), "took {took:?}");
    // After the pause it answers again, on the same connection.
    tokio::time::sleep_until((paused + Duration::from_millis(600)).into()).await;
    let d = limiter
        .check(&subject, &[&bucket])
        .await
        .expect("after the pause");
    assert!(d.allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_errors_fast_and_restart_reconnects() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let timeout = Duration::from_millis(100);
    let limiter = RedisLimiter::with_options(
        &redis.url(),
        RedisLimiterOptions {
            timeout,
            breaker: BreakerConfig::default(),
            ..RedisLimiterOptions::default()
        },
    )
    .expect("limiter");
    let bucket = Bucket::new(Scope::Key, limit("day", 1000, DAY, 1000));
    let subject = Subject::Key(2);
    let mut warm = false;
    for _ in 0..20 {
        if limiter.check(&subject, &[&bucket]).await.is_ok() {
            warm = true;
            break;
        }
    }
    assert!(warm, "limiter never answered");

    redis.kill();
    let mut kinds = std::collections::BTreeMap::<&str, u32>::new();
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let t = Instant::now();
        let e = limiter
            .check(&subject, &[&bucket])
            .await
            .expect_err("redis is down");
        slowest = slowest.max(t.elapsed());
        *kinds.entry(e.kind()).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("redis killed: errors {kinds:?}, slowest {slowest:?} (timeout {timeout:?})");
    assert!(
        slowest < timeout + Duration::from_millis(200),
        "slowest {slowest:?}"
    );
    assert!(
        kinds.contains_key("circuit_open"),
        "the breaker opened: {kinds:?}"
    );

    redis.restart();
    let restarted = Instant::now();
    let mut errors = 0;
    loop {
        match limiter.check(&subject, &[&bucket]).await {
            Ok(d) => {
                assert!(d.allowed);
                break;
            }
            Err(_) => errors += 1,
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "no recovery within 2 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "redis restarted: answering again after {:?} ({errors} errors meanwhile)",
        restarted.elapsed()
    );
}
