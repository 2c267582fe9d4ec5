//! Redis token leases against real Redis: the script grants and gives back
//! exactly like the lease model the property tests use, a hot key far below
//! its limit costs few Redis commands per request, unspent tokens go back
//! to Redis when a subject goes idle, and with leases every token is either
//! admitted or still in Redis (nothing is created, nothing stays lost).
//!
//! Without the env vars the tests print a notice and pass, unless `CI` or
//! `TOLLGATE_REQUIRE_SERVICES` is set. Tests that count commands use a
//! redis-server of their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate_core::limits::Limit;
use tollgate_proxy::limiter::redis::lease::{model, LeaseArgs};
use tollgate_proxy::limiter::redis::{bucket_key, RedisLimiter, RedisLimiterOptions, ScriptArgs};
use tollgate_proxy::limiter::{Bucket, Scope, Subject};

mod common;

use common::redis::{service_url, OwnRedis};

/// A subject base unique to this run and test (see redis_limiter.rs).
fn base(test: i64) -> i64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let run = i64::try_from(micros % 1_000_000_000_000).expect("fits");
    let seq = i64::try_from(SEQ.fetch_add(1, Ordering::Relaxed)).expect("fits");
    run * 1_000_000 + test * 10_000 + seq * 100 + 50
}

fn options(ttl: Duration) -> RedisLimiterOptions {
    RedisLimiterOptions {
        // Decisions, not latency: a loaded box must not turn them into timeouts.
        timeout: Duration::from_secs(5),
        lease_ttl: ttl,
        ..RedisLimiterOptions::default()
    }
}

fn bucket(scope: Scope<'_>, name: &str, rate: u64, per: Duration, burst: u64, cost: u64) -> Bucket {
    Bucket::new(
        scope,
        Limit {
            name: name.into(),
            rate,
            per,
            burst: Some(burst),
            cost: Some(cost),
            quota: None,
            scope: Default::default(),
        },
    )
}

const DAY: Duration = Duration::from_secs(86_400);

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random grants and returns at chosen instants: the script's replies equal
/// the model's, call by call. Intervals ≥ 60 s keep Redis' real-time key
/// expiry out of the way (as in redis_limiter.rs).
async fn script_equals_model(url: &str, test: i64) {
    let limiter = RedisLimiter::with_options(url, options(Duration::ZERO)).expect("limiter");
    let seed = u64::try_from(base(test)).expect("positive") | 1;
    let mut rng = Rng(seed);
    let pool: Vec<Bucket> = (0..4)
        .map(|i| {
            // Whatever the seed, one tight limit (refusals) and one ample
            // limit (leases above the cost) are in the pool; the other two
            // are drawn freely.
            let rate = match i {
                0 => 1 + rng.below(4),
                1 => 30 + rng.below(31),
                _ => 1 + rng.below(60),
            };
            let burst = match i {
                0 => 1 + rng.below(3),
                _ => 1 + rng.below(4 * rate),
            };
            let cost = match if i < 2 { 5 } else { rng.below(6) } {
                0 => burst + 1,
                1 => 1 + rng.below(3).min(burst - 1),
                _ => 1,
            };
            let scope = if i < 2 { Scope::Key } else { Scope::Route("r") };
            bucket(
                scope,
                &format!("l{i}"),
                rate,
                Duration::from_secs(3_600 * (1 + rng.below(24))),
                burst,
                cost,
            )
        })
        .collect();
    let subject = Subject::Key(base(test));
    let mut tats: HashMap<u64, u64> = HashMap::new();
    let mut now_us = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_micros(),
    )
    .expect("fits");
    let (mut granted_more, mut refused) = (0, 0);
    for step in 0..1500 {
        if rng.below(4) == 0 {
            now_us += rng.below(120_000_000);
        }
        let mut buckets: Vec<&Bucket> = pool.iter().filter(|_| rng.below(2) == 0).collect();
        if buckets.is_empty() {
            buckets.push(&pool[0]);
        }
        let args: Vec<ScriptArgs> = buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        let asked: Vec<LeaseArgs> = args
            .iter()
            .map(|a| LeaseArgs {
                ret: if rng.below(3) == 0 {
                    rng.below(a.burst + 2)
                } else {
                    0
                },
                want: rng.below(3 * a.burst + 2),
            })
            .collect();
        let mut model_tats: Vec<u64> = buckets
            .iter()
            .map(|b| tats.get(&b.id).copied().unwrap_or(0))
            .collect();
        let want = model::script(&mut model_tats, now_us, &args, &asked);
        for (b, t) in buckets.iter().zip(&model_tats) {
            tats.insert(b.id, *t);
        }
        let got = limiter
            .lease_call_at_us(&subject, &buckets, &asked, now_us)
            .await
            .expect("script");
        assert_eq!(got, want, "step {step}, seed {seed}, {args:?} {asked:?}");
        if got.iter().all(|r| r.allowed) {
            if got.iter().zip(&args).any(|(r, a)| r.granted > a.cost) {
                granted_more += 1;
            }
        } else {
            refused += 1;
        }
    }
    eprintln!("{url}: 1500 lease calls, script == model ({granted_more} leases, {refused} refused, seed {seed})");
    assert!(
        granted_more > 50 && refused > 50,
        "{granted_more} / {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_leases_equal_the_model_single_node() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    script_equals_model(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_leases_equal_the_model_cluster() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    script_equals_model(&url, 2).await;
}

/// `INFO commandstats` of a redis-server: calls per command name.
fn command_calls(url: &str) -> HashMap<String, u64> {
    let client = redis::Client::open(url).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("info");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Commands a client sent (the script's own TIME, MGET, SET and DEL run
/// inside EVALSHA and are counted apart by Redis; INFO is ours; PING is
/// the keepalive's, per 100 ms, not per request).
fn client_commands(calls: &HashMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "time" | "mget" | "set" | "del" | "info" | "config|resetstat" | "ping"
            )
        })
        .map(|(_, n)| n)
        .sum()
}

/// A hot key far below its limit: 16 concurrent callers, 20,000 requests.
/// With leases the proxy asks Redis at most once per 10 requests (measured
/// with `INFO commandstats` on a Redis of this test's own); without, once
/// per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_far_below_its_limit_costs_few_redis_commands() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let url = redis.url();
    let b = Arc::new(bucket(
        Scope::Key,
        "second",
        1_000_000,
        Duration::from_secs(1),
        1_000_000,
        1,
    ));
    let mut ratios = Vec::new();
    for (i, ttl) in [Duration::from_millis(200), Duration::ZERO]
        .into_iter()
        .enumerate()
    {
        let limiter = Arc::new(RedisLimiter::with_options(&url, options(ttl)).expect("limiter"));
        limiter.ping().await.expect("ping");
        let subject = Subject::Key(1000 + i64::try_from(i).expect("small"));
        let mut conn = redis::Client::open(url.as_str())
            .expect("client")
            .get_connection()
            .expect("connection");
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut conn)
            .expect("resetstat");
        let (tasks, per_task) = (16u64, 1_250u64);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (limiter, b) = (limiter.clone(), b.clone());
            set.spawn(async move {
                for _ in 0..per_task {
                    let d = limiter.check(&subject, &[&b]).await.expect("check");
                    assert!(d.allowed);
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task");
        }
        let calls = command_calls(&url);
        let sent = client_commands(&calls);
        let requests = tasks * per_task;
        let ratio = sent as f64 / requests as f64;
        eprintln!(
            "lease_ttl {ttl:?}: {requests} requests, {sent} Redis commands ({ratio:.4} per request), \
             {} served from leases; {calls:?}",
            limiter.leases().hits()
        );
        ratios.push(ratio);
    }
    assert!(
        ratios[0] <= 0.1,
        "with leases: {} commands per request",
        ratios[0]
    );
    assert!(
        ratios[1] >= 1.0,
        "without leases every request asks Redis: {}",
        ratios[1]
    );
}

/// Tokens taken from a bucket, as Redis holds it now (its TAT minus Redis' time).
fn taken_in_redis(url: &str, key: &str, interval_us: u64) -> u64 {
    let client = redis::Client::open(url).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let (tat, (secs, micros)): (Option<u64>, (u64, u64)) = redis::pipe()
        .get(key)
        .cmd("TIME")
        .query(&mut conn)
        .expect("get + time");
    let now = secs * 1_000_000 + micros;
    tat.map_or(0, |t| t.saturating_sub(now).div_ceil(interval_us))
}

/// A subject that goes idle: its lease's unspent tokens are back in Redis
/// within about two lease lifetimes, and Redis then holds exactly the tokens
/// that were admitted.
async fn idle_leases_go_back(url: &str, test: i64) {
    // Long enough that the 100 requests below finish well within it on a
    // loaded machine.
    let ttl = Duration::from_secs(1);
    let limiter = RedisLimiter::with_options(url, options(ttl)).expect("limiter");
    // 1000 a day: no token comes back during the test.
    let b = bucket(Scope::Key, "day", 1000, DAY, 1000, 1);
    let subject = Subject::Key(base(test));
    let key = bucket_key(&subject, &b);
    let interval = ScriptArgs::new(&b.limit).interval_us;
    let mut admitted = 0u64;
    for _ in 0..100 {
        assert!(limiter.check(&subject, &[&b]).await.expect("check").allowed);
        admitted += 1;
    }
    let held = limiter.leases().outstanding();
    let taken = taken_in_redis(url, &key, interval);
    eprintln!("{url}: {admitted} admitted, {held} held in the lease, Redis counts {taken} taken");
    assert!(held > 0, "a hot subject holds a lease");
    assert!(
        taken >= admitted + held,
        "the lease is taken from the bucket"
    );
    let start = Instant::now();
    loop {
        let (held, taken) = (
            limiter.leases().outstanding(),
            taken_in_redis(url, &key, interval),
        );
        if held == 0 && taken == admitted {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not given back: {held} held, Redis counts {taken} taken of {admitted} admitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{url}: given back after {:?} (lease_ttl {ttl:?})",
        start.elapsed()
    );
    // Every token is still there: the bucket admits exactly what is left.
    let exact = RedisLimiter::with_options(url, options(Duration::ZERO)).expect("limiter");
    drain_exactly(&exact, &subject, &b, admitted, 1000).await;
}

/// Check until `total` (starting at `admitted`) reaches `bucket`, polling
/// while returns may still be on their way; then the bucket refuses.
async fn drain_exactly(
    exact: &RedisLimiter,
    subject: &Subject,
    b: &Bucket,
    admitted: u64,
    bucket: u64,
) {
    let mut total = admitted;
    let start = Instant::now();
    while total < bucket {
        if exact.check(subject, &[b]).await.expect("check").allowed {
            total += 1;
        } else {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "only {total} of {bucket} admitted in all"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for _ in 0..20 {
        let d = exact.check(subject, &[b]).await.expect("check");
        assert!(!d.allowed, "admitted more than the bucket of {bucket}");
    }
    eprintln!("in all exactly {bucket} admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_leases_go_back_to_redis_single_node() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    idle_leases_go_back(&url, 3).await;
}

/// Two proxies with leases, many concurrent callers on a bucket of 600 with
/// no refill to speak of: after the leases are given back, the bucket
/// has admitted exactly 600, never more (the leases held some back for a
/// while, and returned them).
async fn two_proxies_admit_exactly_the_bucket(url: &str, test: i64) {
    let ttl = Duration::from_millis(100);
    let proxies = [
        Arc::new(RedisLimiter::with_options(url, options(ttl)).expect("limiter")),
        Arc::new(RedisLimiter::with_options(url, options(ttl)).expect("limiter")),
    ];
    let b = Arc::new(bucket(Scope::Key, "day", 600, DAY, 600, 1));
    let subject = Subject::Key(base(test));
    let admitted = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for p in &proxies {
        for _ in 0..8 {
            let (p, b, admitted) = (p.clone(), b.clone(), admitted.clone());
            set.spawn(async move {
                for _ in 0..100 {
                    if p.check(&subject, &[&b]).await.expect("check").allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
    let during = admitted.load(Ordering::Relaxed);
    let held: u64 = proxies.iter().map(|p| p.leases().outstanding()).sum();
    eprintln!("{url}: 1600 requests on 2 proxies: {during} admitted, {held} held in leases");
    assert!(during <= 600);
    assert!(during + held <= 600);
    // Once the leases expire and go back, the rest is admitted, and no more.
    let start = Instant::now();
    while proxies
        .iter()
        .map(|p| p.leases().outstanding())
        .sum::<u64>()
        > 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "leases never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exact = RedisLimiter::with_options(url, options(Duration::ZERO)).expect("limiter");
    drain_exactly(&exact, &subject, &b, during, 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_with_leases_admit_exactly_the_bucket_single_node() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    two_proxies_admit_exactly_the_bucket(&url, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_with_leases_admit_exactly_the_bucket_cluster() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    two_proxies_admit_exactly_the_bucket(&url, 5).await;
}
