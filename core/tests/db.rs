//! The database layer against both databases: every test body runs once on a
//! fresh SQLite file and once on a fresh PostgreSQL database (the latter is
//! skipped with a notice when `TOLLGATE_TEST_POSTGRES_URL` is unset, and fails
//! instead when `CI` or `TOLLGATE_REQUIRE_SERVICES` is set).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::Row;
use tollgate_core::db::testing::{fresh_postgres, fresh_sqlite};
use tollgate_core::db::{ApiKey, Db, DbError, DbKind, Fingerprint, KeyFilter, KeyPatch, NewApiKey};
use tollgate_core::keys;
use tollgate_core::limits::Limit;
use tollgate_core::now_ms;
use tollgate_core::rules::access::Scopes;

both!(create_and_get, create_and_get_body);
both!(list_filters_and_pages, list_body);
both!(update_and_clear, update_body);
both!(enable_and_disable, enable_body);
both!(rotate, rotate_body);
both!(delete, delete_body);
both!(fingerprint_changes, fingerprint_body);
both!(corrupt_rows_are_errors, corrupt_body);
both!(last_used, last_used_body);
both!(plans_crud, plans_body);
both!(plans_fingerprint_changes, plans_fingerprint_body);
both!(other_tables_accept_rows, other_tables_body);

fn limit(name: &str, rate: u64, per_s: u64) -> Limit {
    Limit::new(name, rate, Duration::from_secs(per_s), Some(rate * 2), None)
}

fn named(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    }
}

async fn create(db: &Db, new: NewApiKey) -> (ApiKey, String) {
    db.create_key(&new).await.expect("create key")
}

async fn create_and_get_body(db: &Db) {
    let before = now_ms();
    let new = NewApiKey {
        name: "Checkout service".into(),
        owner: Some("team-a".into()),
        metadata: Some(serde_json::json!({"env": "prod", "n": 3})),
        plan: Some("pro".into()),
        limits: Some(vec![limit("second", 5, 1), limit("day", 1000, 86400)]),
        concurrency: Some(4),
        expires_at: Some(before + 86_400_000),
        scopes: Some(Scopes {
            routes: Some(vec!["users".into(), "billing-*".into()]),
            methods: Some(vec!["GET".into()]),
        }),
        allowed_ips: Some(vec!["203.0.113.0/24".into(), "2001:db8::/32".into()]),
        identity_id: None,
    };
    let (key, plain) = create(db, new.clone()).await;
    assert_eq!(keys::validate(&plain), Ok(()));
    assert_eq!(key.key_prefix, keys::display_prefix(&plain));
    assert!(key.key_prefix.starts_with("tg_"));
    assert!(key.id > 0);
    assert_eq!(key.name, new.name);
    assert_eq!(key.owner, new.owner);
    assert_eq!(key.metadata, serde_json::json!({"env": "prod", "n": 3}));
    assert_eq!(key.plan.as_deref(), Some("pro"));
    assert_eq!(key.limits, new.limits);
    assert_eq!(key.concurrency, Some(4));
    assert_eq!(key.scopes, new.scopes);
    assert_eq!(key.allowed_ips, new.allowed_ips);
    assert!(key.enabled);
    assert_eq!(key.expires_at, new.expires_at);
    assert!(key.created_at >= before && key.created_at <= now_ms());
    assert!(key.updated_at >= key.created_at);
    assert_eq!(key.last_used_at, None);

    let got = db.get_key(key.id).await.expect("get").expect("exists");
    assert_eq!(got, key);
    assert_eq!(db.get_key(key.id + 1000).await.expect("get"), None);

    // Defaults: empty metadata object, no plan, no limits.
    let (bare, plain2) = create(db, named("bare")).await;
    assert_ne!(plain, plain2);
    assert_eq!(bare.metadata, serde_json::json!({}));
    assert_eq!(
        (bare.owner, bare.plan, bare.limits, bare.concurrency),
        (None, None, None, None)
    );
    assert!(bare.id > key.id);

    // Only the hash is stored, and it is the key's SHA-256.
    let records = db.load_key_records().await.expect("records");
    assert_eq!(records.len(), 2);
    let rec = records.iter().find(|r| r.key.id == key.id).expect("record");
    assert_eq!(rec.hash, keys::hash(&plain));
    assert_eq!(rec.previous, None);
    assert_eq!(rec.key, key);
    let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(key.id)
        .fetch_one(db.pool())
        .await
        .expect("raw hash");
    assert_eq!(stored, hex::encode(keys::hash(&plain)));
    let raw: Vec<String> =
        sqlx::query_scalar("SELECT name || key_prefix || key_hash || metadata FROM api_keys")
            .fetch_all(db.pool())
            .await
            .expect("raw rows");
    assert!(raw
        .iter()
        .all(|r| !r.contains(&plain) && !r.contains(&plain2)));
}

async fn list_body(db: &Db) {
    let names = [
        "alpha",
        "Alphabet",
        "beta",
        "100%_real",
        "100x real",
        "under_score",
        "underXscore",
        "gamma",
        "ALPHA-2",
        "back\\slash",
    ];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let new = NewApiKey {
            name: (*name).into(),
            plan: Some(if i % 2 == 0 { "free" } else { "pro" }.into()),
            ..NewApiKey::default()
        };
        ids.push(create(db, new).await.0.id);
    }
    db.update_key(
        ids[0],
        &KeyPatch {
            enabled: Some(false),
            ..KeyPatch::default()
        },
    )
    .await
    .expect("disable")
    .expect("exists");

    let list = |filter: KeyFilter| async move {
        let (keys, total) = db.list_keys(&filter).await.expect("list");
        (keys.into_iter().map(|k| k.name).collect::<Vec<_>>(), total)
    };
    let all = KeyFilter::default();
    let (every, total) = list(all.clone()).await;
    assert_eq!(total, names.len() as i64);
    assert_eq!(
        every,
        names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "ordered by id, limit 0 = all"
    );

    // Name: case-insensitive substring.
    let (found, total) = list(KeyFilter {
        name: Some("ALPHA".into()),
        ..all.clone()
    })
    .await;
    assert_eq!(found, ["alpha", "Alphabet", "ALPHA-2"]);
    assert_eq!(total, 3);
    // `%` and `_` in the filter match only themselves.
    let cases: [(&str, &[&str]); 5] = [
        ("0%_", &["100%_real"]),
        ("r_s", &["under_score"]),
        ("%", &["100%_real"]),
        ("k\\s", &["back\\slash"]),
        ("nope", &[]),
    ];
    for (name, want) in cases {
        let (found, total) = list(KeyFilter {
            name: Some(name.into()),
            ..all.clone()
        })
        .await;
        assert_eq!(found, want, "name filter {name:?}");
        assert_eq!(total, want.len() as i64, "name filter {name:?}");
    }

    // Plan and state.
    let (found, total) = list(KeyFilter {
        plan: Some("pro".into()),
        ..all.clone()
    })
    .await;
    assert_eq!(total, 5);
    assert_eq!(
        found,
        [
            "Alphabet",
            "100%_real",
            "under_score",
            "gamma",
            "back\\slash"
        ]
    );
    let (found, total) = list(KeyFilter {
        enabled: Some(false),
        ..all.clone()
    })
    .await;
    assert_eq!((found, total), (vec!["alpha".to_string()], 1));
    let (_, total) = list(KeyFilter {
        enabled: Some(true),
        ..all.clone()
    })
    .await;
    assert_eq!(total, 9);
    let (found, total) = list(KeyFilter {
        name: Some("alpha".into()),
        plan: Some("free".into()),
        enabled: Some(true),
        ..all.clone()
    })
    .await;
    assert_eq!((found, total), (vec!["ALPHA-2".to_string()], 1));

    // Paging: pages cover everything once, total stays the full count.
    let mut seen = Vec::new();
    for page in 0..4 {
        let (found, total) = list(KeyFilter {
            limit: 3,
            offset: page * 3,
            ..all.clone()
        })
        .await;
        assert_eq!(total, 10);
        assert!(found.len() <= 3);
        seen.extend(found);
    }
    assert_eq!(seen, every);
    let (found, total) = list(KeyFilter {
        limit: 3,
        offset: 100,
        ..all.clone()
    })
    .await;
    assert!(found.is_empty());
    assert_eq!(total, 10);
    let (found, _) = list(KeyFilter {
        limit: 2,
        offset: -5,
        ..all.clone()
    })
    .await;
    assert_eq!(found, ["alpha", "Alphabet"]);
    let (found, total) = list(KeyFilter {
        plan: Some("pro".into()),
        limit: 2,
        offset: 2,
        ..all.clone()
    })
    .await;
    assert_eq!(
        (found, total),
        (vec!["under_score".to_string(), "gamma".to_string()], 5)
    );
}

async fn update_body(db: &Db) {
    let (key, _) = create(
        db,
        NewApiKey {
            name: "orig".into(),
            owner: Some("o".into()),
            metadata: Some(serde_json::json!({"a": 1})),
            plan: Some("free".into()),
            limits: Some(vec![limit("m", 60, 60)]),
            concurrency: Some(2),
            expires_at: Some(now_ms() + 1000),
            scopes: None,
            allowed_ips: Some(vec!["10.0.0.0/8".into()]),
            identity_id: None,
        },
    )
    .await;
    let (other, _) = create(db, named("other")).await;

    // Change every field.
    let patch = KeyPatch {
        name: Some("renamed".into()),
        owner: Some(Some("p".into())),
        metadata: Some(serde_json::json!({"b": [1, 2]})),
        plan: Some(Some("pro".into())),
        limits: Some(Some(vec![limit("s", 1, 1)])),
        concurrency: Some(Some(9)),
        enabled: Some(false),
        expires_at: Some(Some(123)),
        scopes: Some(Some(Scopes {
            routes: None,
            methods: Some(vec!["POST".into()]),
        })),
        allowed_ips: Some(Some(vec!["192.0.2.1/32".into()])),
        identity_id: None,
    };
    let up = db
        .update_key(key.id, &patch)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(up.name, "renamed");
    assert_eq!(up.owner.as_deref(), Some("p"));
    assert_eq!(up.metadata, serde_json::json!({"b": [1, 2]}));
    assert_eq!(up.plan.as_deref(), Some("pro"));
    assert_eq!(up.limits, Some(vec![limit("s", 1, 1)]));
    assert_eq!(up.concurrency, Some(9));
    assert!(!up.enabled);
    assert_eq!(up.expires_at, Some(123));
    assert_eq!(
        up.scopes.as_ref().and_then(|s| s.methods.clone()),
        Some(vec!["POST".into()])
    );
    assert_eq!(up.scopes.as_ref().and_then(|s| s.routes.clone()), None);
    assert_eq!(up.allowed_ips, Some(vec!["192.0.2.1/32".into()]));
    assert_eq!(up.created_at, key.created_at);
    assert_eq!(up.key_prefix, key.key_prefix);
    assert!(up.updated_at > key.updated_at);
    assert_eq!(db.get_key(key.id).await.expect("get"), Some(up.clone()));

    // Only what the patch names changes.
    let up2 = db
        .update_key(
            key.id,
            &KeyPatch {
                owner: Some(Some("q".into())),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        up2,
        ApiKey {
            owner: Some("q".into()),
            updated_at: up2.updated_at,
            ..up.clone()
        }
    );
    assert!(up2.updated_at > up.updated_at);

    // `Some(None)` clears every nullable field.
    let cleared = db
        .update_key(
            key.id,
            &KeyPatch {
                owner: Some(None),
                plan: Some(None),
                limits: Some(None),
                concurrency: Some(None),
                expires_at: Some(None),
                scopes: Some(None),
                allowed_ips: Some(None),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("clear")
        .expect("exists");
    assert_eq!(
        (
            cleared.owner.clone(),
            cleared.plan.clone(),
            cleared.limits.clone()
        ),
        (None, None, None)
    );
    assert_eq!((cleared.concurrency, cleared.expires_at), (None, None));
    assert_eq!(
        (cleared.scopes.clone(), cleared.allowed_ips.clone()),
        (None, None)
    );
    assert_eq!(cleared.name, "renamed");
    assert_eq!(cleared.metadata, serde_json::json!({"b": [1, 2]}));

    // An empty patch changes nothing.
    let same = db
        .update_key(key.id, &KeyPatch::default())
        .await
        .expect("noop")
        .expect("exists");
    assert_eq!(same, cleared);

    // Unknown id; the other key is untouched.
    assert_eq!(db.update_key(99_999, &patch).await.expect("update"), None);
    assert_eq!(db.get_key(other.id).await.expect("get"), Some(other));
}

async fn enable_body(db: &Db) {
    let (key, plain) = create(db, named("toggle")).await;
    let off = db
        .set_key_enabled(key.id, false)
        .await
        .expect("disable")
        .expect("exists");
    assert!(!off.enabled);
    let rec = db.load_key_records().await.expect("records");
    assert!(!rec[0].key.enabled);
    assert_eq!(rec[0].hash, keys::hash(&plain));
    let on = db
        .update_key(
            key.id,
            &KeyPatch {
                enabled: Some(true),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("enable")
        .expect("exists");
    assert!(on.enabled);
    assert!(on.updated_at > off.updated_at);
    assert_eq!(db.set_key_enabled(4242, true).await.expect("unknown"), None);
}

async fn rotate_body(db: &Db) {
    let (key, first) = create(db, named("rot")).await;

    // With a grace period the old secret stays valid until now + grace.
    let before = now_ms();
    let (rotated, second) = db
        .rotate_key(key.id, Duration::from_secs(3600))
        .await
        .expect("rotate")
        .expect("exists");
    let after = now_ms();
    assert_ne!(first, second);
    assert_eq!(keys::validate(&second), Ok(()));
    assert_eq!(rotated.id, key.id);
    assert_eq!(rotated.key_prefix, keys::display_prefix(&second));
    assert_eq!(rotated.name, key.name);
    assert!(rotated.updated_at > key.updated_at);
    let rec = db.load_key_records().await.expect("records").remove(0);
    assert_eq!(rec.hash, keys::hash(&second));
    let (prev, until) = rec.previous.expect("previous secret during grace");
    assert_eq!(prev, keys::hash(&first));
    assert!(
        until >= before + 3_600_000 && until <= after + 3_600_000,
        "{until}"
    );

    // Rotating again keeps only the immediately previous secret.
    let (_, third) = db
        .rotate_key(key.id, Duration::from_millis(1))
        .await
        .expect("rotate")
        .expect("exists");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let rec = db.load_key_records().await.expect("records").remove(0);
    assert_eq!(rec.hash, keys::hash(&third));
    assert_eq!(rec.previous, None, "an expired grace period is not loaded");

    // Without grace the old secret is gone at once.
    let (_, fourth) = db
        .rotate_key(key.id, Duration::from_secs(3600))
        .await
        .expect("rotate")
        .expect("exists");
    let (_, fifth) = db
        .rotate_key(key.id, Duration::ZERO)
        .await
        .expect("rotate")
        .expect("exists");
    let rec = db.load_key_records().await.expect("records").remove(0);
    assert_eq!(rec.hash, keys::hash(&fifth));
    assert_eq!(rec.previous, None);
    let raw = sqlx::query("SELECT prev_key_hash, prev_valid_until FROM api_keys WHERE id = $1")
        .bind(key.id)
        .fetch_one(db.pool())
        .await
        .expect("raw");
    assert_eq!(raw.try_get::<Option<String>, _>(0).expect("col"), None);
    assert_eq!(raw.try_get::<Option<i64>, _>(1).expect("col"), None);
    assert_ne!(fourth, fifth);

    assert!(db
        .rotate_key(key.id + 1, Duration::ZERO)
        .await
        .expect("rotate")
        .is_none());
}

async fn delete_body(db: &Db) {
    let (a, _) = create(db, named("a")).await;
    let (b, _) = create(db, named("b")).await;
    assert!(db.delete_key(a.id).await.expect("delete"));
    assert!(!db.delete_key(a.id).await.expect("delete twice"));
    assert_eq!(db.get_key(a.id).await.expect("get"), None);
    let (left, total) = db.list_keys(&KeyFilter::default()).await.expect("list");
    assert_eq!((left, total), (vec![b.clone()], 1));
    assert_eq!(db.load_key_records().await.expect("records").len(), 1);
    // Ids are never reused.
    let (c, _) = create(db, named("c")).await;
    assert!(c.id > b.id);
}

async fn fingerprint_body(db: &Db) {
    let mut last = db.keys_fingerprint().await.expect("fp");
    assert_eq!(last, Fingerprint::default());
    let mut check = |fp: Fingerprint, what: &str| {
        assert_ne!(fp, last, "fingerprint did not change after {what}");
        last = fp;
    };

    let (a, _) = create(db, named("a")).await;
    check(db.keys_fingerprint().await.expect("fp"), "insert");
    let (b, _) = create(db, named("b")).await;
    check(
        db.keys_fingerprint().await.expect("fp"),
        "second insert (maybe same ms)",
    );

    // Many updates back to back: several land in the same millisecond.
    for i in 0..20 {
        let patch = KeyPatch {
            owner: Some(Some(format!("o{i}"))),
            ..KeyPatch::default()
        };
        db.update_key(a.id, &patch)
            .await
            .expect("update")
            .expect("exists");
        check(db.keys_fingerprint().await.expect("fp"), "update");
    }
    // Two updates within one millisecond, only read afterwards.
    let fp0 = db.keys_fingerprint().await.expect("fp");
    db.set_key_enabled(a.id, false).await.expect("u1");
    db.set_key_enabled(b.id, false).await.expect("u2");
    let fp1 = db.keys_fingerprint().await.expect("fp");
    assert_ne!(fp0, fp1);
    assert!(
        fp1.max_updated >= fp0.max_updated + 2,
        "every write gets a newer stamp"
    );
    check(fp1, "two updates");

    db.rotate_key(a.id, Duration::ZERO)
        .await
        .expect("rotate")
        .expect("exists");
    check(db.keys_fingerprint().await.expect("fp"), "rotate");
    db.rotate_key(a.id, Duration::from_secs(60))
        .await
        .expect("rotate")
        .expect("exists");
    check(
        db.keys_fingerprint().await.expect("fp"),
        "rotate with grace",
    );

    assert!(db.delete_key(b.id).await.expect("delete"));
    check(db.keys_fingerprint().await.expect("fp"), "delete");
    // Delete one and insert one in the same breath: same count, still new.
    assert!(db.delete_key(a.id).await.expect("delete"));
    create(db, named("c")).await;
    check(db.keys_fingerprint().await.expect("fp"), "delete + insert");

    // Writes within one millisecond (simulated by stamping the row ahead of
    // the clock): each still gets a newer stamp, so the fingerprint moves.
    let ahead = now_ms() + 3_600_000;
    sqlx::query("UPDATE api_keys SET updated_at = $1")
        .bind(ahead)
        .execute(db.pool())
        .await
        .expect("raw stamp");
    let before = db.keys_fingerprint().await.expect("fp");
    let c = db.list_keys(&KeyFilter::default()).await.expect("list").0[0].id;
    let u1 = db
        .set_key_enabled(c, false)
        .await
        .expect("u1")
        .expect("exists");
    assert_eq!(u1.updated_at, ahead + 1);
    let after1 = db.keys_fingerprint().await.expect("fp");
    assert_ne!(after1, before);
    let u2 = db
        .set_key_enabled(c, true)
        .await
        .expect("u2")
        .expect("exists");
    assert_eq!(u2.updated_at, ahead + 2);
    let after2 = db.keys_fingerprint().await.expect("fp");
    assert_ne!(after2, after1);
    let (d, _) = create(db, named("d")).await;
    assert_eq!(
        d.updated_at,
        ahead + 3,
        "inserts are stamped after every earlier write"
    );
    assert!(d.created_at < ahead, "created_at is the real time");
    check(
        db.keys_fingerprint().await.expect("fp"),
        "insert after same-ms updates",
    );
    assert!(db.delete_key(d.id).await.expect("delete"));
    check(db.keys_fingerprint().await.expect("fp"), "delete");

    // Reading does not change it.
    let fp = db.keys_fingerprint().await.expect("fp");
    db.list_keys(&KeyFilter::default()).await.expect("list");
    db.load_key_records().await.expect("records");
    assert_eq!(db.keys_fingerprint().await.expect("fp"), fp);
    assert_eq!(fp.count, 1);
}

async fn corrupt_body(db: &Db) {
    let (key, _) = create(db, named("victim")).await;
    let set = |sql: &'static str| async move {
        sqlx::query(sql)
            .bind(key.id)
            .execute(db.pool())
            .await
            .expect("raw update");
    };
    set("UPDATE api_keys SET key_hash = 'not hex' WHERE id = $1").await;
    assert!(matches!(
        db.load_key_records().await,
        Err(DbError::Corrupt(_))
    ));
    set("UPDATE api_keys SET key_hash = 'abcd' WHERE id = $1").await;
    assert!(
        matches!(db.load_key_records().await, Err(DbError::Corrupt(_))),
        "short hash"
    );
    set("UPDATE api_keys SET key_hash = 'ab', limits = '[{\"nope\": 1}]' WHERE id = $1").await;
    assert!(matches!(db.get_key(key.id).await, Err(DbError::Corrupt(_))));
    assert!(matches!(
        db.list_keys(&KeyFilter::default()).await,
        Err(DbError::Corrupt(_))
    ));
    set("UPDATE api_keys SET limits = NULL, metadata = '{' WHERE id = $1").await;
    assert!(matches!(db.get_key(key.id).await, Err(DbError::Corrupt(_))));
    set("UPDATE api_keys SET metadata = '{}', concurrency = -1 WHERE id = $1").await;
    assert!(matches!(db.get_key(key.id).await, Err(DbError::Corrupt(_))));
    set("UPDATE api_keys SET concurrency = NULL WHERE id = $1").await;
    assert!(db.get_key(key.id).await.expect("healthy again").is_some());
}

async fn last_used_body(db: &Db) {
    let (a, _) = create(db, named("a")).await;
    let (b, _) = create(db, named("b")).await;
    let fp = db.keys_fingerprint().await.expect("fp");
    db.mark_keys_used(&[a.id, b.id, 777], 5_000)
        .await
        .expect("mark");
    db.mark_keys_used(&[a.id], 4_000)
        .await
        .expect("older is ignored");
    db.mark_keys_used(&[], 9_000).await.expect("nothing");
    assert_eq!(
        db.get_key(a.id)
            .await
            .expect("get")
            .expect("a")
            .last_used_at,
        Some(5_000)
    );
    db.mark_keys_used(&[b.id], 6_000).await.expect("mark");
    assert_eq!(
        db.get_key(b.id)
            .await
            .expect("get")
            .expect("b")
            .last_used_at,
        Some(6_000)
    );
    assert_eq!(
        db.keys_fingerprint().await.expect("fp"),
        fp,
        "usage is not a key-set change"
    );
}

async fn plans_body(db: &Db) {
    assert!(db.list_plans().await.expect("list").is_empty());
    let before = now_ms();
    let gold = db
        .create_plan("gold", &[limit("second", 10, 1)], Some(3))
        .await
        .expect("create");
    assert_eq!(gold.name, "gold");
    assert_eq!(gold.limits, vec![limit("second", 10, 1)]);
    assert_eq!(gold.concurrency, Some(3));
    assert!(gold.created_at >= before && gold.updated_at >= gold.created_at);
    let basic = db.create_plan("basic", &[], None).await.expect("create");
    assert!(basic.limits.is_empty() && basic.concurrency.is_none());

    match db.create_plan("gold", &[], None).await {
        Err(DbError::Conflict(msg)) => assert!(msg.contains("gold"), "{msg}"),
        other => panic!("duplicate plan: {other:?}"),
    }
    assert_eq!(db.get_plan("gold").await.expect("get"), Some(gold.clone()));
    assert_eq!(db.get_plan("nope").await.expect("get"), None);
    let names: Vec<String> = db
        .list_plans()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["basic", "gold"]);

    // Update limits only, then concurrency only, then clear concurrency.
    let new_limits = vec![limit("minute", 100, 60), limit("day", 5000, 86400)];
    let up = db
        .update_plan("gold", Some(&new_limits), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (up.limits.clone(), up.concurrency),
        (new_limits.clone(), Some(3))
    );
    assert!(up.updated_at > gold.updated_at);
    assert_eq!(up.created_at, gold.created_at);
    let up2 = db
        .update_plan("gold", None, Some(Some(8)))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (up2.limits.clone(), up2.concurrency),
        (new_limits.clone(), Some(8))
    );
    let up3 = db
        .update_plan("gold", None, Some(None))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(up3.concurrency, None);
    assert!(up3.updated_at > up2.updated_at && up2.updated_at > up.updated_at);
    let same = db
        .update_plan("gold", None, None)
        .await
        .expect("noop")
        .expect("exists");
    assert_eq!(same, up3);
    assert_eq!(
        db.update_plan("nope", Some(&[]), None)
            .await
            .expect("update"),
        None
    );

    // A plan in use cannot be deleted.
    let (key, _) = create(
        db,
        NewApiKey {
            plan: Some("gold".into()),
            ..named("user")
        },
    )
    .await;
    match db.delete_plan("gold").await {
        Err(DbError::Conflict(msg)) => assert!(msg.contains("gold"), "{msg}"),
        other => panic!("delete in use: {other:?}"),
    }
    assert!(db.get_plan("gold").await.expect("get").is_some());
    db.update_key(
        key.id,
        &KeyPatch {
            plan: Some(Some("basic".into())),
            ..KeyPatch::default()
        },
    )
    .await
    .expect("move")
    .expect("exists");
    assert!(db.delete_plan("gold").await.expect("delete"));
    assert!(!db.delete_plan("gold").await.expect("delete twice"));
    assert!(!db.delete_plan("nope").await.expect("delete unknown"));
    // A key naming a plan that is not stored (e.g. a YAML plan) blocks nothing.
    create(
        db,
        NewApiKey {
            plan: Some("yaml-only".into()),
            ..named("y")
        },
    )
    .await;
    assert!(!db.delete_plan("yaml-only").await.expect("delete unknown"));
    let names: Vec<String> = db
        .list_plans()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["basic"]);

    // Corrupt limits are an error, not a panic.
    sqlx::query("UPDATE plans SET limits = 'x' WHERE name = $1")
        .bind("basic")
        .execute(db.pool())
        .await
        .expect("raw");
    assert!(matches!(db.list_plans().await, Err(DbError::Corrupt(_))));
}

async fn plans_fingerprint_body(db: &Db) {
    let mut last = db.plans_fingerprint().await.expect("fp");
    let mut check = |fp: Fingerprint, what: &str| {
        assert_ne!(fp, last, "plans fingerprint did not change after {what}");
        last = fp;
    };
    db.create_plan("p", &[limit("s", 1, 1)], None)
        .await
        .expect("create");
    check(db.plans_fingerprint().await.expect("fp"), "create");
    for i in 0..5 {
        db.update_plan("p", Some(&[limit("s", i + 2, 1)]), None)
            .await
            .expect("update")
            .expect("exists");
        check(db.plans_fingerprint().await.expect("fp"), "update");
    }
    let keys_fp = db.keys_fingerprint().await.expect("fp");
    assert!(db.delete_plan("p").await.expect("delete"));
    check(db.plans_fingerprint().await.expect("fp"), "delete");
    assert_eq!(db.keys_fingerprint().await.expect("fp"), keys_fp);
}

/// The tables other modules write get rows of the documented shape.
async fn other_tables_body(db: &Db) {
    let mut cols = String::from("minute, key_id, route, allowed, limited, unauthorized, forbidden, upstream_errors, latency_sum_us");
    let mut vals = String::from("$1, $2, $3, 1, 2, 3, 4, 5, 600");
    for i in 0..tollgate_core::db::LATENCY_BUCKETS {
        cols.push_str(&format!(", lat_b{i}"));
        vals.push_str(&format!(", {i}"));
    }
    let sql = format!("INSERT INTO usage_minute ({cols}) VALUES ({vals})");
    for key_id in [0i64, 7] {
        sqlx::query(&sql)
            .bind(60_000i64)
            .bind(key_id)
            .bind("users")
            .execute(db.pool())
            .await
            .expect("usage row");
    }
    let dup = sqlx::query(&sql)
        .bind(60_000i64)
        .bind(7i64)
        .bind("users")
        .execute(db.pool())
        .await;
    assert!(dup.is_err(), "(minute, key_id, route) is the primary key");
    let sum: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(lat_b11 + allowed) AS BIGINT) FROM usage_minute WHERE minute = $1",
    )
    .bind(60_000i64)
    .fetch_one(db.pool())
    .await
    .expect("sum");
    assert_eq!(sum, 2 * (11 + 1));

    sqlx::query(
        "INSERT INTO violations (at, key_id, route, method, path, client_ip, limit_name, status) \
         VALUES ($1, NULL, 'users', 'GET', '/api/users', '127.0.0.1', NULL, 401)",
    )
    .bind(now_ms())
    .execute(db.pool())
    .await
    .expect("violation");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM violations WHERE key_id IS NULL")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(n, 1);

    let admin = db.create_admin("root", "$argon2id$x").await.expect("admin");
    assert!(matches!(
        db.create_admin("root", "h").await,
        Err(DbError::Conflict(_))
    ));
    assert_eq!(db.list_admins().await.expect("admins"), vec![admin]);
}

// --- schema and connection ---------------------------------------------------

/// Table → column names, without sqlx's bookkeeping.
type Schema = BTreeMap<String, BTreeSet<String>>;

async fn sqlite_schema(db: &Db) -> Schema {
    let rows = sqlx::query(
        "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
    )
    .fetch_all(db.pool())
    .await
    .expect("sqlite schema");
    collect(rows)
}

async fn postgres_schema(db: &Db) -> Schema {
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(db.pool())
    .await
    .expect("postgres schema");
    collect(rows)
}

fn collect(rows: Vec<sqlx::any::AnyRow>) -> Schema {
    let mut schema = Schema::new();
    for r in rows {
        let t: String = r.try_get("t").expect("table");
        let c: String = r.try_get("c").expect("column");
        schema.entry(t).or_default().insert(c);
    }
    schema
}

#[tokio::test]
async fn both_migration_sets_build_the_same_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = fresh_sqlite(dir.path()).await;
    let lite_schema = sqlite_schema(&lite).await;
    for (table, cols) in [
        (
            "admins",
            &[
                "id",
                "username",
                "password_hash",
                "created_at",
                "role",
                "session_gen",
            ][..],
        ),
        (
            "plans",
            &["name", "limits", "concurrency", "created_at", "updated_at"][..],
        ),
        (
            "identities",
            &[
                "id",
                "external_id",
                "name",
                "metadata",
                "plan",
                "limits",
                "created_at",
                "updated_at",
            ][..],
        ),
        (
            "instances",
            &[
                "id",
                "address",
                "version",
                "started_at",
                "last_seen",
                "stats",
                "upstream_health",
                // Migration 0017: the quota-count name (round 5, N1).
                "counter",
                // Migration 0018: its own heartbeat period (round 17).
                "beat_every_ms",
            ][..],
        ),
        (
            "violations",
            &[
                "id",
                "at",
                "key_id",
                "route",
                "method",
                "path",
                "client_ip",
                "limit_name",
                "status",
            ][..],
        ),
    ] {
        let want: BTreeSet<String> = cols.iter().map(|s| s.to_string()).collect();
        assert_eq!(lite_schema.get(table), Some(&want), "{table}");
    }
    // 18 + `identity_id` (migration 0007).
    assert_eq!(lite_schema["api_keys"].len(), 19);
    assert_eq!(
        lite_schema["usage_minute"].len(),
        9 + tollgate_core::db::LATENCY_BUCKETS
    );
    let Some(pg) = fresh_postgres().await else {
        return;
    };
    let pg_schema = postgres_schema(&pg).await;
    assert_eq!(lite_schema, pg_schema);
    pg.close().await;
}

#[tokio::test]
async fn sqlite_is_set_up_for_several_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub.db");
    let url = format!("sqlite://{}", path.display());
    // Several "processes" open the missing file at once: all migrate fine.
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Db::connect(&url).await })
    });
    let mut dbs = Vec::new();
    for h in opens {
        dbs.push(h.await.expect("join").expect("connect"));
    }
    assert!(path.exists());
    let db = &dbs[0];
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .expect("mode");
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.pool())
        .await
        .expect("fk");
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(db.pool())
        .await
        .expect("busy");
    assert!(busy >= 1000, "{busy}");
    // What one writes, another sees; writers from both do not fail.
    let (k, _) = dbs[1].create_key(&named("shared")).await.expect("create");
    let mut tasks = Vec::new();
    for (i, d) in dbs.iter().enumerate() {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..10 {
                d.create_key(&named(&format!("w{i}-{j}")))
                    .await
                    .expect("concurrent create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(
        dbs[2].get_key(k.id).await.expect("get").map(|k| k.name),
        Some("shared".into())
    );
    assert_eq!(
        dbs[3]
            .list_keys(&KeyFilter::default())
            .await
            .expect("list")
            .1,
        41
    );
    // Reconnecting runs no migration twice.
    for d in &dbs {
        d.close().await;
    }
    let again = Db::connect(&url).await.expect("reconnect");
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(again.pool())
        .await
        .expect("migrations");
    assert!(applied >= 1);
    assert_eq!(
        again
            .list_keys(&KeyFilter::default())
            .await
            .expect("list")
            .1,
        41
    );
}

#[tokio::test]
async fn urls_are_checked() {
    for bad in ["mysql://u@h/d", "tollgate.db", "", "redis://h"] {
        assert!(
            matches!(Db::connect(bad).await, Err(DbError::UnsupportedUrl(_))),
            "{bad}"
        );
    }
    let db = Db::connect("sqlite::memory:").await.expect("memory");
    assert_eq!(db.kind(), DbKind::Sqlite);
    db.create_key(&named("m")).await.expect("create");
    assert_eq!(
        db.list_keys(&KeyFilter::default()).await.expect("list").1,
        1
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("missing.db").display()
    );
    assert!(Db::connect(&ro).await.is_err(), "an explicit mode is kept");
}

#[tokio::test]
async fn postgres_migrations_run_once_under_concurrent_starts() {
    let Some(db) = fresh_postgres().await else {
        return;
    };
    let url = tollgate_core::db::testing::url_of(&db);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Db::connect(&url).await })
        })
        .collect();
    for h in opens {
        let d = h.await.expect("join").expect("connect");
        assert_eq!(d.kind(), DbKind::Postgres);
        d.close().await;
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(db.pool())
            .await
            .expect("versions");
    let unique: BTreeSet<i64> = versions.iter().copied().collect();
    assert_eq!(unique.len(), versions.len());
    assert!(versions.contains(&1));
    db.close().await;
}
