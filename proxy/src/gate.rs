//! The key step shared by the request filter ([`crate::service`]) and the
//! verify API ([`crate::verify`]): one way from a presented secret to the
//! key it opens, so both refuse exactly the same secrets.

use std::sync::Arc;

use tollgate_core::keys::{self, KeyHash};

use crate::keyset::ActiveKey;
use crate::state::DbState;

/// The key `plain` opens at `now_ms`, and the secret's hash; else why not:
/// `malformed` (shape or checksum, no lookup), `unknown`, `disabled` or
/// `expired`.
pub fn find_key(
    db: &DbState,
    plain: Option<&str>,
    now_ms: i64,
) -> Result<(Arc<ActiveKey>, KeyHash), &'static str> {
    let hash = plain.and_then(|k| keys::parse(k).ok()).ok_or("malformed")?;
    match db.keys.lookup(&hash, now_ms) {
        Ok(key) => Ok((key.clone(), hash)),
        Err(r) => Err(r.as_str()),
    }
}
