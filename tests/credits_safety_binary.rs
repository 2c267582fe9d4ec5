//! Credits are money (black-box findings B7, B13, B10) through the real
//! binary: no Redis fault hands out a credit twice, a restart of a proxy
//! with the local limiter does not give spent credits back, and a request
//! refunded on the route's `refund_on` gets its credits back.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use tollgate_core::db::NewApiKey;

const ROUTES: &str = r#"routes:
  - name: users
    match: { path_prefix: /api/users }
    upstream: demo
    strip_prefix: /api
    default_plan: p
"#;

fn redis_yaml(redis_url: &str, upstream: u16, policy: &str) -> String {
    format!(
        "limiter:\n  backend: redis\n  redis_url: \"{redis_url}\"\n  redis_timeout: 300ms\n  \
         on_redis_error: {policy}\nplans:\n  p: {{ limits: [ {{ name: hour, rate: 100000, per: 1h }} ] }}\n\
         upstreams:\n  demo: {{ targets: [\"127.0.0.1:{upstream}\"] }}\n{ROUTES}"
    )
}

/// One answer: status, the `credits` member's `r` if any, Retry-After, body.
struct Reply {
    status: u16,
    credits: Option<i64>,
    retry_after: Option<String>,
    body: String,
}

async fn call(client: &reqwest::Client, url: &str, key: &str) -> Reply {
    let r = client
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let credits = header("ratelimit").and_then(|v| common::credits::credits_left(&v));
    let retry_after = header("retry-after");
    let body = r.text().await.unwrap_or_default();
    Reply {
        status,
        credits,
        retry_after,
        body,
    }
}

/// Call until a request is admitted spending credits (with Redis, a proxy
/// that has just started may answer `credits-exhausted` until it has
/// applied the top-ups to Redis); returns the balance left.
async fn first_counted(client: &reqwest::Client, url: &str, key: &str) -> i64 {
    let start = Instant::now();
    loop {
        let r = call(client, url, key).await;
        match (r.status, r.credits) {
            (200, Some(left)) => return left,
            (429, Some(0)) => {}
            (s, c) => assert!(c.is_none() && s == 200, "{s} {c:?}: {}", r.body),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no credits seen: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_spends_credits_while_redis_is_down_whatever_on_redis_error_says() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let new = |name: &str| NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    };
    let (paid_row, paid) = db.create_key(&new("paid")).await.expect("key");
    let (_, plain) = db.create_key(&new("plain")).await.expect("key");
    db.add_credits(
        tollgate_core::credits::SubjectKind::Key,
        paid_row.id,
        10,
        "test",
    )
    .await
    .expect("top-up");
    let upstream = common::demo_upstream().await;
    // One proxy per policy that used to hand out credits while Redis failed.
    let mut proxies = Vec::new();
    for policy in ["local", "allow"] {
        let y = redis_yaml(&redis.url(), upstream, policy);
        let p = Proxy::start(tempfile::tempdir().expect("tempdir"), db.url(), "", &y).await;
        proxies.push(p);
    }
    let client = reqwest::Client::new();
    let urls: Vec<String> = proxies.iter().map(|p| p.url("/api/users")).collect();
    assert_eq!(first_counted(&client, &urls[0], &paid).await, 9);
    assert_eq!(first_counted(&client, &urls[1], &paid).await, 8);
    assert_eq!(call(&client, &urls[0], &paid).await.credits, Some(7));

    // Redis answers every write with an error (out of memory): nothing is
    // spent, no credit holder's request is admitted, buckets still follow
    // `on_redis_error` (local, allow: admitted).
    let set = |v: &str| {
        let r = common::redis::raw_command(redis.port, &format!("CONFIG SET maxmemory {v}"))
            .expect("config set");
        assert!(r.starts_with("+OK"), "{r}");
    };
    set("1");
    refused_while_down(&client, &urls, &paid, &plain).await;
    set("0");
    // Back: exactly the 7 left, each request spending one.
    assert_eq!(spend_all(&client, &urls, &paid, 7, 2).await, (2, 5));

    // Redis frozen (every call times out): refused the same way.
    redis.signal("STOP");
    refused_while_down(&client, &urls, &paid, &plain).await;
    redis.signal("CONT");
    // A call that timed out may still run once Redis wakes up (its
    // request was answered 503): it can only have spent, never given.
    let (admitted, left) = spend_all(&client, &urls, &paid, 5, 5).await;
    assert!(
        admitted <= 5 && left >= 0,
        "{admitted} admitted of the 5 left"
    );
}

/// While Redis fails: every request of the credit holder is refused 503
/// `limiter-unavailable` with Retry-After 1, the other key is admitted.
async fn refused_while_down(client: &reqwest::Client, urls: &[String], paid: &str, plain: &str) {
    for round in 0..6 {
        for url in urls {
            let r = call(client, url, paid).await;
            assert_eq!(r.status, 503, "round {round} on {url}: {}", r.body);
            assert!(r.body.contains("limiter-unavailable"), "{}", r.body);
            assert_eq!(r.retry_after.as_deref(), Some("1"));
            assert_eq!(call(client, url, plain).await.status, 200);
        }
    }
}

/// Once Redis is back: admit up to `at_most` requests alternately
/// (`before` credits left, or fewer), each leaving one less; returns how
/// many were admitted before `credits-exhausted` (or `at_most`) and the
/// balance last seen.
async fn spend_all(
    client: &reqwest::Client,
    urls: &[String],
    paid: &str,
    before: i64,
    at_most: i64,
) -> (i64, i64) {
    let start = Instant::now();
    let mut admitted = 0;
    let mut last = before;
    let mut i = 0;
    while admitted < at_most {
        let r = call(client, &urls[i % 2], paid).await;
        i += 1;
        match r.status {
            200 => {
                admitted += 1;
                let left = r.credits.expect("a balance");
                assert!(left < last, "{left} after {last}: {}", r.body);
                last = left;
            }
            503 if admitted == 0 => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "Redis not used again"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            429 => {
                assert!(r.body.contains("credits-exhausted"), "{}", r.body);
                last = r.credits.unwrap_or(last);
                break;
            }
            other => panic!("status {other}: {}", r.body),
        }
    }
    (admitted, last)
}

fn local_yaml(upstream: u16, flush: &str) -> String {
    format!(
        "usage:\n  flush_interval: {flush}\nplans:\n  p: {{ limits: [ {{ name: hour, rate: 100000, per: 1h }} ] }}\n\
         upstreams:\n  demo: {{ targets: [\"127.0.0.1:{upstream}\"] }}\n{ROUTES}"
    )
}

/// A local proxy on `db` with config `y`, stopping within 2 s of SIGTERM.
async fn start_local(db: &tollgate_core::db::Db, y: &str) -> Proxy {
    Proxy::start(
        tempfile::tempdir().expect("tempdir"),
        db.url(),
        "  grace_period: 2s\n",
        y,
    )
    .await
}

/// What local proxies wrote as spent from the key's balance so far.
async fn spent_in_db(db: &tollgate_core::db::Db) -> i64 {
    let all = db.credit_adjustments_since(0).await.expect("rows");
    -all.iter()
        .filter(|a| a.spent_by.is_some())
        .map(|a| a.delta)
        .sum::<i64>()
}

/// Wait until the database holds `want` spent credits (a flush happened).
async fn wait_spent(db: &tollgate_core::db::Db, want: i64) {
    let start = Instant::now();
    loop {
        let spent = spent_in_db(db).await;
        if spent == want {
            return;
        }
        assert!(spent < want, "{spent} spent, {want} expected");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "spends not written: {spent} of {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh SQLite database in `dir` with one key holding 100 credits: the
/// database, the key's id and the key.
async fn prepaid(dir: &std::path::Path) -> (tollgate_core::db::Db, i64, String) {
    let db = tollgate_core::db::testing::fresh_sqlite(dir).await;
    let (row, key) = db
        .create_key(&NewApiKey {
            name: "prepaid".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    db.add_credits(
        tollgate_core::credits::SubjectKind::Key,
        row.id,
        100,
        "test",
    )
    .await
    .expect("top-up");
    (db, row.id, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_local_limiter_spent_credits_stay_spent_across_restarts_and_proxies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _, key) = prepaid(dir.path()).await;
    let upstream = common::demo_upstream().await;
    let y = local_yaml(upstream, "200ms");
    let client = reqwest::Client::new();
    let start_proxy = || start_local(&db, &y);

    // Spend 4 of 100, then an ordinary restart (SIGTERM): the stop writes
    // what was spent.
    let mut p = start_proxy().await;
    let url = p.url("/api/users");
    assert_eq!(first_counted(&client, &url, &key).await, 99);
    for left in [98, 97, 96] {
        assert_eq!(call(&client, &url, &key).await.credits, Some(left));
    }
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(30)).await.success());
    drop(p);
    assert_eq!(spent_in_db(&db).await, 4, "written at the stop");
    let p = start_proxy().await;
    let url = p.url("/api/users");
    // From its very first request (the balance is applied before the
    // listener opens).
    assert_eq!(
        call(&client, &url, &key).await.credits,
        Some(95),
        "the restarted proxy starts from the 96 left, not the 100 granted"
    );
    wait_spent(&db, 5).await;

    // A second local proxy on the same database starts from what is left.
    let q = start_proxy().await;
    let other = q.url("/api/users");
    assert_eq!(call(&client, &other, &key).await.credits, Some(94));
    wait_spent(&db, 6).await;
    // The first proxy applies the second's spend once, within a refresh:
    // until then its n-th request leaves 95 − n, from then on 94 − n.
    let n = requests_until_applied(&client, &url, &key, 95, 94).await;
    // Both stop; a third proxy sees exactly what is left.
    let spent = 6 + n;
    for mut x in [p, q] {
        x.signal("TERM");
        assert!(x.wait_exit(Duration::from_secs(30)).await.success());
    }
    assert_eq!(spent_in_db(&db).await, spent);
    let r = start_proxy().await;
    assert_eq!(
        call(&client, &r.url("/api/users"), &key).await.credits,
        Some(100 - spent - 1)
    );
}

/// A spend row written by a proxy whose clock is an hour behind: its
/// `created_at` lies before the running proxy's re-read window, but its id
/// is new, and the running proxy applies it within a refresh, not only at
/// its next start (black-box round 5, N2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_stamped_by_a_clock_behind_is_applied_by_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, key_id, key) = prepaid(dir.path()).await;
    let kind = tollgate_core::credits::SubjectKind::Key;
    let upstream = common::demo_upstream().await;
    let p = Proxy::start(
        tempfile::tempdir().expect("tempdir"),
        db.url(),
        "",
        &local_yaml(upstream, "200ms"),
    )
    .await;
    let client = reqwest::Client::new();
    let url = p.url("/api/users");
    assert_eq!(first_counted(&client, &url, &key).await, 99);
    let behind = tollgate_core::now_ms() - 3_600_000;
    sqlx::query(
        "INSERT INTO credit_adjustments \
         (subject_kind, subject_id, delta, created_at, actor, spent_by, spent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(kind.as_str())
    .bind(key_id)
    .bind(-10i64)
    .bind(behind)
    .bind("proxy:behind")
    .bind("behind")
    .bind(behind)
    .execute(db.pool())
    .await
    .expect("a spend row stamped an hour ago");
    // Until it is applied the n-th request leaves 99 − n; from then on
    // 89 − n.
    requests_until_applied(&client, &url, &key, 99, 89).await;
}

/// Requests until an adjustment made elsewhere is applied: the n-th leaves
/// `before − n` until then, `after − n` from then on (within 30 s); how
/// many it took.
async fn requests_until_applied(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    before: i64,
    after: i64,
) -> i64 {
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = call(client, url, key).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let left = r.credits.expect("a balance");
        if left == after - n {
            return n;
        }
        assert_eq!(left, before - n, "request {n}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the adjustment was never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cost_yaml(limiter: &str, upstream: u16, closed: u16) -> String {
    format!(
        "{limiter}plans:\n  p: {{ limits: [ {{ name: hour, rate: 100000, per: 1h }} ] }}\n\
         upstreams:\n  llm: {{ targets: [\"127.0.0.1:{upstream}\"] }}\n  \
         down: {{ targets: [\"127.0.0.1:{closed}\"] }}\n\
         routes:\n  - name: llm\n    match: {{ path_prefix: /v1/complete }}\n    upstream: llm\n    \
         default_plan: p\n    cost: {{ reserve: 5, from_response_header: X-Tollgate-Cost, refund_on: [5xx] }}\n  \
         - name: down\n    match: {{ path_prefix: /v1/down }}\n    upstream: down\n    default_plan: p\n    \
         cost: {{ reserve: 5, from_response_header: X-Tollgate-Cost, refund_on: [5xx] }}\n"
    )
}

/// Wait until the proxy has given credits back `n` times.
async fn refunds_counted(p: &Proxy, n: u64) {
    let want = format!("tollgate_cost_settlements_total{{result=\"credits_refunded\"}} {n}");
    let start = Instant::now();
    while !p.metrics().await.lines().any(|l| l == want) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {want} in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Credits are charged the reservation and given back whole on a
/// `refund_on` status (the upstream's 503, the proxy's own 502), with
/// either backend; any other answer keeps them (the actual cost settles
/// only the buckets).
async fn credits_are_refunded_on_refund_on(limiter: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (row, key) = db
        .create_key(&NewApiKey {
            name: "prepaid".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    db.add_credits(tollgate_core::credits::SubjectKind::Key, row.id, 20, "test")
        .await
        .expect("top-up");
    let (_closed_socket, closed) = common::closed_port();
    let y = cost_yaml(limiter, common::cost_upstream().await, closed);
    let p = Proxy::start(tempfile::tempdir().expect("tempdir"), db.url(), "", &y).await;
    let client = reqwest::Client::new();
    let ok = p.url("/v1/complete/200/1");
    assert_eq!(first_counted(&client, &ok, &key).await, 15);
    // The upstream's 503: charged at admission, given back.
    let r = call(&client, &p.url("/v1/complete/503/0"), &key).await;
    assert_eq!(r.status, 503, "{}", r.body);
    refunds_counted(&p, 1).await;
    assert_eq!(call(&client, &ok, &key).await.credits, Some(10));
    // An upstream that cannot be reached: the proxy's 502, given back
    // (when the request is logged, after the answer).
    let r = call(&client, &p.url("/v1/down/x/y"), &key).await;
    assert_eq!(r.status, 502, "{}", r.body);
    refunds_counted(&p, 2).await;
    assert_eq!(call(&client, &ok, &key).await.credits, Some(5));
    // A 4xx is not in refund_on: kept.
    let r = call(&client, &p.url("/v1/complete/404/0"), &key).await;
    assert_eq!((r.status, r.credits), (404, Some(0)));
    let r = call(&client, &ok, &key).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("credits-exhausted"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_refunded_on_refund_on_with_the_local_limiter() {
    credits_are_refunded_on_refund_on("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_refunded_on_refund_on_with_redis() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let limiter = format!(
        "limiter:\n  backend: redis\n  redis_url: \"{}\"\n  redis_timeout: 2s\n  on_redis_error: deny\n",
        redis.url()
    );
    credits_are_refunded_on_refund_on(&limiter).await;
}

/// Finding B1 through the CLI: a top-up that would take the key's total
/// beyond the 64-bit range fails clearly and is not stored; the key can
/// still be corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_total_beyond_64_bits_and_stores_nothing() {
    use tollgate_core::credits::{SubjectKind, MAX_DELTA};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (row, _) = db
        .create_key(&NewApiKey {
            name: "rich".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    for _ in 0..1024 {
        db.add_credits(SubjectKind::Key, row.id, MAX_DELTA, "seed")
            .await
            .expect("in range");
    }
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        format!("storage:\n  database_url: \"{}\"\n", db.url()),
    )
    .expect("config");
    let cli = |delta: i64| {
        common::tollgate()
            .args(["keys", "--config"])
            .arg(&config)
            .args(["credits", &row.id.to_string(), "--add", &delta.to_string()])
            .output()
            .expect("run tollgate keys credits")
    };
    let rows = db.credit_adjustments_since(0).await.expect("rows").len();
    for delta in [MAX_DELTA, 1024] {
        let out = cli(delta);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("delta") && err.contains("64-bit"), "{err}");
    }
    assert_eq!(
        db.credit_adjustments_since(0).await.expect("rows").len(),
        rows
    );
    let out = cli(-5);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{} granted", 1024 * MAX_DELTA - 5)),
        "{said}"
    );
}

/// Old spend rows are folded (black-box round 4, C5: a start read every
/// spend row ever written): a proxy folds them before it reads the
/// balances, and then starts from the same balance out of one row; a proxy
/// that was running meanwhile, having applied the rows one by one, does not
/// apply their fold again; a third proxy started after both stopped sees
/// exactly what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_spend_rows_are_folded_and_every_proxy_keeps_the_balance() {
    use tollgate_core::credits::fold::FOLDED_BY;
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, key_id, key) = prepaid(dir.path()).await;
    let upstream = common::demo_upstream().await;
    let y = local_yaml(upstream, "200ms");
    let start_proxy = || start_local(&db, &y);
    let client = reqwest::Client::new();
    let mut a = start_proxy().await;
    let url_a = a.url("/api/users");
    assert_eq!(first_counted(&client, &url_a, &key).await, 99);
    // 40 spends of a proxy long gone, written an hour ago (one row each),
    // in one transaction: the running proxy sees all or none.
    let old = tollgate_core::now_ms() - 3_600_000;
    let mut tx = db.pool().begin().await.expect("transaction");
    for i in 0..40 {
        sqlx::query(
            "INSERT INTO credit_adjustments \
             (subject_kind, subject_id, delta, created_at, actor, spent_by, spent_at) \
             VALUES ('key', $1, -1, $2, 'proxy:gone', 'gone', $2)",
        )
        .bind(key_id)
        .bind(old + i)
        .execute(&mut *tx)
        .await
        .expect("an old spend row");
    }
    tx.commit().await.expect("commit");
    // The running proxy applies them by id.
    let n = requests_until_applied(&client, &url_a, &key, 99, 59).await;
    let mut left_a = 59 - n;

    // A second proxy folds the 40 rows into one as it starts.
    let mut b = start_proxy().await;
    let rows = db.credit_adjustments_since(0).await.expect("rows");
    assert!(
        !rows.iter().any(|r| r.spent_by.as_deref() == Some("gone")),
        "the old rows are gone: {rows:?}"
    );
    let folds: Vec<_> = rows
        .iter()
        .filter(|r| r.spent_by.as_deref() == Some(FOLDED_BY))
        .collect();
    assert_eq!(folds.len(), 1, "{rows:?}");
    assert_eq!((folds[0].delta, folds[0].spent_at), (-40, Some(old)));
    assert!(
        b.metrics()
            .await
            .contains("tollgate_credit_spend_rows_folded_total 40"),
        "counted"
    );

    // The first proxy reads the fold row within its refreshes and does not
    // spend the 40 again: each request leaves one less, for 2 s.
    let start = Instant::now();
    let mut spent_a = 1 + n;
    while start.elapsed() < Duration::from_secs(2) {
        let r = call(&client, &url_a, &key).await;
        assert_eq!(r.status, 200, "{}", r.body);
        left_a -= 1;
        spent_a += 1;
        assert_eq!(r.credits, Some(left_a), "no second charge of the fold");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The second proxy spends once; both stop (writing what they spent).
    assert_eq!(call(&client, &b.url("/api/users"), &key).await.status, 200);
    for p in [&mut a, &mut b] {
        p.signal("TERM");
        assert!(p.wait_exit(Duration::from_secs(30)).await.success());
    }
    let spent = 40 + spent_a + 1;
    assert_eq!(spent_in_db(&db).await, spent);
    let c = start_proxy().await;
    assert_eq!(
        call(&client, &c.url("/api/users"), &key).await.credits,
        Some(100 - spent - 1),
        "a proxy started later reads the fold and the rows after it"
    );
}

/// Black-box round 11: a proxy that could not read the database for longer
/// than the fold age (here stopped with SIGSTOP) skipped a fold of rows it
/// had never read and handed those credits out again. It now rebuilds its
/// balances from the table after such a gap. The fold age is cut to 4 s by
/// the test hook (`TOLLGATE_TEST_FOLD_AGE_MS`) so the gap fits a test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_stopped_past_the_fold_age_rebuilds_its_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, key_id, key) = prepaid(dir.path()).await;
    let upstream = common::demo_upstream().await;
    let y = local_yaml(upstream, "200ms");
    let env = [("TOLLGATE_TEST_FOLD_AGE_MS", "4000")];
    let start = || async {
        Proxy::start_env(
            tempfile::tempdir().expect("tempdir"),
            db.url(),
            "  grace_period: 2s\n",
            &y,
            &env,
        )
        .await
    };
    let old_spend = |delta: i64| {
        let db = &db;
        async move {
            let old = tollgate_core::now_ms() - 3_600_000;
            sqlx::query(
                "INSERT INTO credit_adjustments \
                 (subject_kind, subject_id, delta, created_at, actor, spent_by, spent_at) \
                 VALUES ('key', $1, $2, $3, 'proxy:gone', 'gone', $3)",
            )
            .bind(key_id)
            .bind(delta)
            .bind(old)
            .execute(db.pool())
            .await
            .expect("an old spend row");
        }
    };
    let client = reqwest::Client::new();
    let a = start().await;
    let url = a.url("/api/users");
    assert_eq!(first_counted(&client, &url, &key).await, 99);
    // One old row the proxy applies while it runs…
    old_spend(-20).await;
    let n = requests_until_applied(&client, &url, &key, 99, 79).await;
    // …two it never reads: it is stopped before they are written, and a
    // second proxy folds all three (and the first one's own spends) as it
    // starts.
    a.signal("STOP");
    old_spend(-20).await;
    old_spend(-20).await;
    let b = start().await;
    let rows = db.credit_adjustments_since(0).await.expect("rows");
    assert!(
        !rows.iter().any(|r| r.spent_by.as_deref() == Some("gone")),
        "folded: {rows:?}"
    );
    drop(b);
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.signal("CONT");
    // 79 − n before; after the rebuild the 40 it never read are spent too.
    requests_until_applied(&client, &url, &key, 79 - n, 39 - n).await;
}
