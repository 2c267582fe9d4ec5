//! Plans in the database, on both databases: create, list, update, delete,
//! a duplicate name refused, and corrupt limits read as an error.

use tollgate_core::db::{Db, DbError, KeyPatch, NewApiKey};
use tollgate_core::now_ms;

use crate::common::{create, limit, named};

both!(plans_crud, plans_body);

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
