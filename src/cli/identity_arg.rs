//! The identity a command line names: by id, external id, `id:N` or
//! `ext:X` (shared by `tollgate identities`, `keys` and `refill`).

use anyhow::bail;
use tollgate_core::db::{Db, Identity};
use tollgate_core::rules::identities as identity_rules;

/// An identity by its id (digits) or its external id; `id:N` and `ext:X`
/// say which. Digits that are one identity's id and another's external id
/// are refused as ambiguous rather than guessed (a key must never join the
/// wrong customer).
pub async fn find(db: &Db, which: &str) -> anyhow::Result<Identity> {
    let missing = || anyhow::anyhow!("no identity {which:?} (see `tollgate identities list`)");
    if let Some(id) = which.strip_prefix("id:") {
        let id = id.parse::<i64>().map_err(|_| missing())?;
        return db.get_identity(id).await?.ok_or_else(missing);
    }
    if let Some(ext) = which.strip_prefix("ext:") {
        if identity_rules::check_external_id(ext).is_err() {
            return Err(missing());
        }
        return db
            .get_identity_by_external_id(ext)
            .await?
            .ok_or_else(missing);
    }
    let by_id = match which.parse::<i64>() {
        Ok(id) => db.get_identity(id).await?,
        Err(_) => None,
    };
    let by_external = match identity_rules::check_external_id(which) {
        Ok(()) => db.get_identity_by_external_id(which).await?,
        Err(_) => None,
    };
    match (by_id, by_external) {
        (Some(a), Some(b)) if a.id != b.id => bail!(
            "{which:?} is identity {}'s id and identity {}'s external id: \
             say `id:{which}` or `ext:{which}`",
            a.id,
            b.id
        ),
        (Some(i), _) | (None, Some(i)) => Ok(i),
        (None, None) => Err(missing()),
    }
}
