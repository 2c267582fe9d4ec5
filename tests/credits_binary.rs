//! Prepaid credits (issue #20 item 2) through the real binary: two
//! `tollgate proxy` processes on one Redis (a redis-server of the test's
//! own) and `tollgate keys credits <id> --add 50`. A top-up of 50 admits
//! exactly 50 more requests across both proxies; then 429
//! `credits-exhausted`, which spends nothing.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::credits::{call, users_on_redis as yaml};
use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use tollgate_core::db::NewApiKey;

fn top_up(config: &std::path::Path, id: i64, n: i64) {
    let out = common::tollgate()
        .arg("keys")
        .arg("--config")
        .arg(config)
        .args(["credits", &id.to_string(), "--add", &n.to_string()])
        .output()
        .expect("run tollgate keys credits");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_of_50_admits_exactly_50_more_across_two_proxies() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (key_row, key) = db
        .create_key(&NewApiKey {
            name: "prepaid".into(),
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
    // Without credits the key is not limited by them.
    for p in &proxies {
        let start = Instant::now();
        loop {
            let (s, c, _) = call(&client, p, &key).await;
            if s == 200 {
                assert_eq!(c, None);
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "status {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    top_up(&proxies[0].config, key_row.id, 50);
    // Until each proxy knows the key holds credits, its requests are not
    // counted against them; from the first one that is, every admitted
    // request spends one credit.
    let mut spent = 0;
    for p in &proxies {
        let start = Instant::now();
        loop {
            let (s, c, _) = call(&client, p, &key).await;
            assert_eq!(s, 200);
            if let Some(left) = c {
                spent += 1;
                assert_eq!(left, 50 - spent, "balance after {spent} requests");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no credits seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Alternate proxies until refused.
    let mut i = 0;
    let refusal = loop {
        let (s, c, body) = call(&client, &proxies[i % 2], &key).await;
        i += 1;
        if s == 429 {
            break (c, body);
        }
        assert_eq!(s, 200);
        spent += 1;
        assert_eq!(c, Some(50 - spent));
        assert!(spent <= 50, "more than 50 admitted");
    };
    assert_eq!(spent, 50, "exactly 50 admitted");
    assert_eq!(refusal.0, Some(0));
    assert!(refusal.1.contains("credits-exhausted"), "{}", refusal.1);
    // Refusals spend nothing.
    for p in &proxies {
        assert_eq!(call(&client, p, &key).await.0, 429);
    }

    // Another 50: exactly 50 more, through both proxies.
    top_up(&proxies[0].config, key_row.id, 50);
    let start = Instant::now();
    let mut admitted = 0;
    let mut i = 0;
    loop {
        let (s, c, _) = call(&client, &proxies[i % 2], &key).await;
        i += 1;
        match s {
            200 => {
                admitted += 1;
                assert_eq!(c, Some(50 - admitted));
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
    assert_eq!(admitted, 50);
}

/// Round 17 (black-box): a reload that points `limiter.redis_url` at
/// another (empty) Redis handed every spent credit out again (the top-ups
/// were applied to the new store; the spends lived in the old one). The
/// running store is kept until a restart, and the reload names it; the
/// rest of the reload applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_redis_hands_out_no_spent_credit() {
    let (Some(a), Some(b)) = (OwnRedis::start(), OwnRedis::start()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (key_row, key) = db
        .create_key(&NewApiKey {
            name: "prepaid".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let upstream = common::demo_upstream().await;
    let p = Proxy::start(dir, db.url(), "", &yaml(&a.url(), upstream)).await;
    let client = reqwest::Client::new();
    top_up(&p.config, key_row.id, 3);
    let start = Instant::now();
    let mut admitted = 0;
    loop {
        match call(&client, &p, &key).await {
            (200, Some(_), _) => admitted += 1,
            (200, None, _) => {}
            (429, Some(0), _) if admitted == 3 => break,
            other => panic!("{other:?}"),
        }
        assert!(admitted <= 3, "more than the 3 credits");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "credits not seen"
        );
    }
    // Point it at the other, empty Redis.
    let text = std::fs::read_to_string(&p.config).expect("config");
    let moved = text.replacen(&a.url(), &b.url(), 1);
    assert_ne!(moved, text);
    let next = p.config.with_extension("yaml.next");
    std::fs::write(&next, moved).expect("write");
    std::fs::rename(&next, &p.config).expect("rename");
    let start = Instant::now();
    while !p
        .metrics()
        .await
        .contains("tollgate_config_reloads_total{result=\"ok\"} 1")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "no reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past a credit refresh or two: still nothing left.
    for _ in 0..20 {
        let (s, c, body) = call(&client, &p, &key).await;
        assert_eq!((s, c), (429, Some(0)), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
