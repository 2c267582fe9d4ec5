//! `tollgate keys credits <id> --add N` and `tollgate identities credits
//! <id|external id> --add N`: one credit adjustment, written to the
//! database (the proxies apply it exactly once) and to the audit log.

use anyhow::bail;
use serde_json::json;
use tollgate_core::credits::{check_delta, SubjectKind};
use tollgate_core::db::Db;

use super::audit::{cli_event, os_user, record};

pub async fn top_up(db: &Db, id: i64, delta: i64) -> anyhow::Result<()> {
    if let Err(why) = check_delta(delta) {
        bail!("--add: {why}");
    }
    let Some(key) = db.get_key(id).await? else {
        bail!("no key with id {id}");
    };
    let actor = format!("cli:{}", os_user());
    let adj = db.add_credits(SubjectKind::Key, id, delta, &actor).await?;
    let granted = db.credits_granted(SubjectKind::Key, id).await?.unwrap_or(0);
    let event = cli_event("key.credits")
        .target("key", id)
        .changes(json!({ "delta": delta, "adjustment": adj.id }));
    record(db, event).await;
    outln!(
        "key {} ({}): {delta:+} credits (adjustment {}); {granted} granted in all",
        key.id,
        key.name,
        adj.id
    );
    Ok(())
}

/// An identity's top-up: the balance all its keys spend.
pub async fn top_up_identity(db: &Db, which: &str, delta: i64) -> anyhow::Result<()> {
    if let Err(why) = check_delta(delta) {
        bail!("--add: {why}");
    }
    let identity = super::identity_arg::find(db, which).await?;
    let actor = format!("cli:{}", os_user());
    let adj = db
        .add_credits(SubjectKind::Identity, identity.id, delta, &actor)
        .await?;
    let granted = db
        .credits_granted(SubjectKind::Identity, identity.id)
        .await?
        .unwrap_or(0);
    let event = cli_event("identity.credits")
        .target("identity", identity.id)
        .changes(json!({ "delta": delta, "adjustment": adj.id }));
    record(db, event).await;
    outln!(
        "identity {} ({}): {delta:+} credits (adjustment {}); {granted} granted in all",
        identity.id,
        identity.external_id,
        adj.id
    );
    Ok(())
}
