//! `identities` and `api_keys.identity_id` against both databases.

use std::time::Duration;

use tollgate_core::db::{
    Db, DbError, IdentityFilter, IdentityPatch, KeyFilter, KeyPatch, NewApiKey, NewIdentity,
};
use tollgate_core::limits::{Limit, LimitScope};

both!(identities_crud, crud_body);
both!(keys_join_and_leave, keys_body);
both!(identities_fingerprint_changes, fingerprint_body);

fn new(external_id: &str, name: &str) -> NewIdentity {
    NewIdentity {
        external_id: external_id.into(),
        name: name.into(),
        ..NewIdentity::default()
    }
}

async fn crud_body(db: &Db) {
    let mut shared = Limit::new("monthly", 100, Duration::from_secs(86_400), None, None);
    shared.scope = LimitScope::Identity;
    let acme = db
        .create_identity(&NewIdentity {
            metadata: Some(serde_json::json!({"tier": "gold"})),
            plan: Some("pro".into()),
            limits: Some(vec![shared.clone()]),
            ..new("cus_acme", "Acme")
        })
        .await
        .expect("create");
    assert_eq!(acme.external_id, "cus_acme");
    assert_eq!(acme.metadata, serde_json::json!({"tier": "gold"}));
    assert_eq!(acme.limits, Some(vec![shared]));
    assert_eq!(
        db.get_identity(acme.id).await.expect("get"),
        Some(acme.clone())
    );
    assert_eq!(
        db.get_identity_by_external_id("cus_acme")
            .await
            .expect("get"),
        Some(acme.clone())
    );
    // A taken external id is a conflict, on create and on update.
    let dup = db.create_identity(&new("cus_acme", "Other")).await;
    assert!(matches!(dup, Err(DbError::Conflict(_))), "{dup:?}");
    let beta = db
        .create_identity(&new("org:beta", "Beta 100%_"))
        .await
        .expect("create");
    let clash = db
        .update_identity(
            beta.id,
            &IdentityPatch {
                external_id: Some("cus_acme".into()),
                ..IdentityPatch::default()
            },
        )
        .await;
    assert!(matches!(clash, Err(DbError::Conflict(_))), "{clash:?}");

    // Search (external id or name, case-insensitive, `%`/`_` literal) and paging.
    let list = |search: Option<&str>, limit, offset| IdentityFilter {
        search: search.map(str::to_string),
        limit,
        offset,
    };
    let (all, total) = db.list_identities(&list(None, 0, 0)).await.expect("list");
    assert_eq!((all.len(), total), (2, 2));
    let (found, total) = db
        .list_identities(&list(Some("ACME"), 0, 0))
        .await
        .expect("l");
    assert_eq!((found[0].id, total), (acme.id, 1));
    let (found, _) = db
        .list_identities(&list(Some("org:"), 0, 0))
        .await
        .expect("l");
    assert_eq!(found[0].id, beta.id);
    let (found, total) = db
        .list_identities(&list(Some("100%_"), 0, 0))
        .await
        .expect("l");
    assert_eq!((found.len(), total), (1, 1));
    let (found, total) = db.list_identities(&list(Some("%"), 0, 0)).await.expect("l");
    assert_eq!((found.len(), total), (1, 1), "% matches itself only");
    let (page, total) = db.list_identities(&list(None, 1, 1)).await.expect("l");
    assert_eq!((page.len(), page[0].id, total), (1, beta.id, 2));

    // Update and clear.
    let up = db
        .update_identity(
            acme.id,
            &IdentityPatch {
                name: Some("Acme Inc".into()),
                plan: Some(None),
                limits: Some(None),
                ..IdentityPatch::default()
            },
        )
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (up.name.as_str(), up.plan, up.limits),
        ("Acme Inc", None, None)
    );
    assert!(up.updated_at > acme.updated_at);
    assert_eq!(
        db.update_identity(9_999, &IdentityPatch::default())
            .await
            .expect("u"),
        None
    );
    assert!(db.delete_identity(beta.id).await.expect("delete"));
    assert!(!db.delete_identity(beta.id).await.expect("delete"));
    assert_eq!(db.get_identity(beta.id).await.expect("get"), None);
}

async fn keys_body(db: &Db) {
    let acme = db
        .create_identity(&new("cus_a", "A"))
        .await
        .expect("create");
    let (k1, _) = db
        .create_key(&NewApiKey {
            name: "k1".into(),
            identity_id: Some(acme.id),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    assert_eq!(k1.identity_id, Some(acme.id));
    let (k2, _) = db
        .create_key(&NewApiKey {
            name: "k2".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    assert_eq!(k2.identity_id, None);
    let k2 = db
        .update_key(
            k2.id,
            &KeyPatch {
                identity_id: Some(Some(acme.id)),
                ..KeyPatch::default()
            },
        )
        .await
        .expect("patch")
        .expect("exists");
    assert_eq!(k2.identity_id, Some(acme.id));
    let of = |id| KeyFilter {
        identity_id: Some(id),
        ..KeyFilter::default()
    };
    let (keys, total) = db.list_keys(&of(acme.id)).await.expect("list");
    assert_eq!((keys.len(), total), (2, 2));
    let records = db.load_key_records().await.expect("records");
    assert!(records.iter().all(|r| r.key.identity_id == Some(acme.id)));
    // A key cannot name an identity that does not exist (foreign key).
    assert!(db
        .update_key(
            k1.id,
            &KeyPatch {
                identity_id: Some(Some(9_999)),
                ..KeyPatch::default()
            },
        )
        .await
        .is_err());
    // Deleting the identity detaches its keys and moves their stamps.
    let before = db.keys_fingerprint().await.expect("fp");
    assert!(db.delete_identity(acme.id).await.expect("delete"));
    let (keys, _) = db.list_keys(&KeyFilter::default()).await.expect("list");
    assert!(keys.iter().all(|k| k.identity_id.is_none()), "{keys:?}");
    assert_ne!(db.keys_fingerprint().await.expect("fp"), before);
    assert_eq!(db.list_keys(&of(acme.id)).await.expect("list").1, 0);
}

async fn fingerprint_body(db: &Db) {
    let fp0 = db.identities_fingerprint().await.expect("fp");
    let a = db.create_identity(&new("a", "A")).await.expect("create");
    let fp1 = db.identities_fingerprint().await.expect("fp");
    assert_ne!(fp0, fp1, "insert");
    db.update_identity(
        a.id,
        &IdentityPatch {
            name: Some("B".into()),
            ..IdentityPatch::default()
        },
    )
    .await
    .expect("update");
    let fp2 = db.identities_fingerprint().await.expect("fp");
    assert_ne!(fp1, fp2, "update");
    assert_eq!(db.load_identities().await.expect("load").len(), 1);
    db.delete_identity(a.id).await.expect("delete");
    assert_ne!(
        db.identities_fingerprint().await.expect("fp"),
        fp2,
        "delete"
    );
}
