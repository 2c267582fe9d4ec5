//! The key-set and plan-set fingerprints (what the proxies poll to know
//! when to reload), on both databases: every write moves them, even several
//! within one millisecond; reading does not, and a change to the plans
//! leaves the keys' fingerprint alone.

use std::time::Duration;

use tollgate_core::db::{Db, Fingerprint, KeyFilter, KeyPatch};
use tollgate_core::now_ms;

use crate::common::{create, limit, named};

both!(fingerprint_changes, fingerprint_body);
both!(plans_fingerprint_changes, plans_fingerprint_body);

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
