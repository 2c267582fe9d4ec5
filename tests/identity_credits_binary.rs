//! An identity's prepaid balance (issue #20 item 2) through the real
//! binary: two `tollgate proxy` processes on one Redis (a redis-server of
//! the test's own), an identity with two keys, and `tollgate identities
//! credits <external id> --add N`. A balance of 6 admits exactly 6 requests
//! whichever key and proxy send them, then 429 `credits-exhausted`; a
//! top-up of 4 admits exactly 4 more. The identity's balance comes first:
//! a key's own credits are not spent while its identity holds some.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::credits::{call, users_on_redis as yaml};
use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use tollgate_core::db::{NewApiKey, NewIdentity};

/// `tollgate <what> credits <which> --add n`.
fn top_up(config: &std::path::Path, what: &str, which: &str, n: i64) -> String {
    let out = common::tollgate()
        .arg(what)
        .arg("--config")
        .arg(config)
        .args(["credits", which, "--add", &n.to_string()])
        .output()
        .expect("run tollgate credits");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identitys_6_credits_admit_exactly_6_across_its_keys_and_two_proxies() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let identity = db
        .create_identity(&NewIdentity {
            external_id: "cus_prepaid".into(),
            name: "Prepaid".into(),
            ..NewIdentity::default()
        })
        .await
        .expect("identity");
    let mut keys = Vec::new();
    for name in ["k1", "k2"] {
        let (row, secret) = db
            .create_key(&NewApiKey {
                name: name.into(),
                identity_id: Some(identity.id),
                ..NewApiKey::default()
            })
            .await
            .expect("key");
        keys.push((row.id, secret));
    }
    let y = yaml(&redis.url(), common::demo_upstream().await);
    let mut proxies = Vec::new();
    for _ in 0..2 {
        proxies.push(Proxy::start(tempfile::tempdir().expect("tempdir"), db.url(), "", &y).await);
    }
    let client = reqwest::Client::new();
    // Without credits the keys are not limited by them.
    for p in &proxies {
        let start = Instant::now();
        while call(&client, p, &keys[0].1).await.0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(20), "proxy not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The identity gets 6 (by external id), then key 1 100 of its own (in
    // this order: a proxy never sees key 1's alone), then hostile CLI calls
    // change nothing.
    let config = &proxies[0].config;
    let printed = top_up(config, "identities", "cus_prepaid", 6);
    assert!(printed.contains("+6 credits"), "{printed}");
    top_up(config, "keys", &keys[0].0.to_string(), 100);
    for bad in [
        ["cus_nobody", "5"],
        ["cus_prepaid", "0"],
        ["cus_prepaid", "x"],
    ] {
        let out = common::tollgate()
            .arg("identities")
            .arg("--config")
            .arg(config)
            .args(["credits", bad[0], "--add", bad[1]])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{bad:?} accepted");
    }
    // Until a proxy knows the identity holds credits, its requests are not
    // counted against them; from then on, every admitted request of either
    // key spends one of the identity's (never key 1's own 100).
    let mut spent = 0;
    for (i, p) in proxies.iter().enumerate() {
        let start = Instant::now();
        loop {
            let (s, c, _) = call(&client, p, &keys[i].1).await;
            assert_eq!(s, 200);
            if let Some(left) = c {
                spent += 1;
                assert_eq!(left, 6 - spent, "the identity's balance after {spent}");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no credits seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Alternate keys and proxies until refused.
    let mut i = 0;
    let refusal = loop {
        let (s, c, body) = call(&client, &proxies[i % 2], &keys[(i / 2) % 2].1).await;
        i += 1;
        if s == 429 {
            break (c, body);
        }
        assert_eq!(s, 200);
        spent += 1;
        assert_eq!(c, Some(6 - spent));
        assert!(spent <= 6, "more than 6 admitted");
    };
    assert_eq!(spent, 6, "exactly 6 admitted");
    assert_eq!(refusal.0, Some(0));
    assert!(refusal.1.contains("credits-exhausted"), "{}", refusal.1);
    // Every key on every proxy is refused now, and refusals spend nothing.
    for p in &proxies {
        for (_, k) in &keys {
            assert_eq!(call(&client, p, k).await.0, 429);
        }
    }

    // A top-up of 4 through the admin CLI: exactly 4 more, any key, any proxy.
    top_up(config, "identities", &identity.id.to_string(), 4);
    let start = Instant::now();
    let mut admitted = 0;
    let mut i = 0;
    loop {
        let (s, c, _) = call(&client, &proxies[i % 2], &keys[(i / 2) % 2].1).await;
        i += 1;
        match s {
            200 => {
                admitted += 1;
                assert_eq!(c, Some(4 - admitted));
            }
            429 if admitted == 0 => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "top-up not applied"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            429 => break,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(admitted, 4);
    // Key 1's own balance was never touched: it is its identity's turn.
    let shown = common::tollgate()
        .arg("identities")
        .arg("--config")
        .arg(config)
        .args(["show", "cus_prepaid"])
        .output()
        .expect("run");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("credits:     10 granted"), "{shown}");
}

/// A key's own refill set with `tollgate keys refill`: the first request of
/// the period (on either proxy) sets its balance to 3, exactly once across
/// both proxies; a top-up within the period adds to it. The yearly period
/// is anchored six months away, so no boundary falls within the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_admits_its_amount_once_per_period_across_two_proxies() {
    use chrono::Datelike;
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (row, key) = db
        .create_key(&NewApiKey {
            name: "refilled".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let y = yaml(&redis.url(), common::demo_upstream().await);
    let mut proxies = Vec::new();
    for _ in 0..2 {
        proxies.push(Proxy::start(tempfile::tempdir().expect("tempdir"), db.url(), "", &y).await);
    }
    let client = reqwest::Client::new();
    for p in &proxies {
        let start = Instant::now();
        while call(&client, p, &key).await.0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(20), "proxy not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let config = &proxies[0].config;
    let refill = |args: &[&str]| {
        common::tollgate()
            .arg("keys")
            .arg("--config")
            .arg(config)
            .args(["refill", &row.id.to_string()])
            .args(args)
            .output()
            .expect("run tollgate keys refill")
    };
    // Hostile refills: refused, nothing written.
    for bad in [
        &["--amount", "0", "--every", "1d"][..],
        &["--amount", "3"],
        &["--amount", "3", "--every", "1d", "--period", "month"],
        &["--amount", "3", "--period", "month", "--anchor", "32"],
        &[
            "--amount",
            "3",
            "--period",
            "year",
            "--time-zone",
            "Nowhere/Land",
        ],
        &["--amount", "-3", "--every", "1d"],
        &["--remove", "--amount", "3"],
    ] {
        let out = refill(bad);
        assert!(!out.status.success(), "{bad:?} accepted");
    }
    assert!(db.credit_refills().await.expect("rows").is_empty());
    let anchor = format!("{:02}-01", (chrono::Utc::now().month() + 5) % 12 + 1);
    let out = refill(&["--amount", "3", "--period", "year", "--anchor", &anchor]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Until a proxy knows the refill its requests are not counted; from the
    // first that is, the balance starts at 3 and each admission spends one.
    let mut spent = 0;
    for p in &proxies {
        let start = Instant::now();
        loop {
            let (s, c, _) = call(&client, p, &key).await;
            assert_eq!(s, 200);
            if let Some(left) = c {
                spent += 1;
                assert_eq!(left, 3 - spent, "refilled once, then spent");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no credits seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut i = 0;
    let refusal = loop {
        let (s, c, body) = call(&client, &proxies[i % 2], &key).await;
        i += 1;
        if s == 429 {
            break (c, body);
        }
        assert_eq!(s, 200);
        spent += 1;
        assert_eq!(c, Some(3 - spent));
        assert!(spent <= 3, "more than the refill admitted");
    };
    assert_eq!(spent, 3, "exactly the refill's amount");
    assert!(refusal.1.contains("credits-exhausted"), "{}", refusal.1);
    // A top-up within the period adds to it; no second refill.
    top_up(config, "keys", &row.id.to_string(), 2);
    let start = Instant::now();
    let mut admitted = 0;
    let mut i = 0;
    loop {
        let (s, _, _) = call(&client, &proxies[i % 2], &key).await;
        i += 1;
        match s {
            200 => admitted += 1,
            429 if admitted == 0 => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "top-up not applied"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            429 => break,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(admitted, 2);
}
