//! API keys in the database, on both databases (each test body runs once on
//! a fresh SQLite file and once on a fresh PostgreSQL database): create and
//! read back, list with filters and pages, update and clear, enable and
//! disable, rotate, delete, marking keys used, and corrupt rows read as
//! errors rather than panics.

use std::time::Duration;

use sqlx::Row;
use tollgate_core::db::{ApiKey, Db, DbError, KeyFilter, KeyPatch, NewApiKey};
use tollgate_core::keys;
use tollgate_core::now_ms;
use tollgate_core::rules::access::Scopes;

use crate::common::{create, limit, named};

both!(create_and_get, create_and_get_body);
both!(list_filters_and_pages, list_body);
both!(update_and_clear, update_body);
both!(enable_and_disable, enable_body);
both!(rotate, rotate_body);
both!(delete, delete_body);
both!(corrupt_rows_are_errors, corrupt_body);
both!(last_used, last_used_body);

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
