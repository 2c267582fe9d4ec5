//! Applying quota resets and adjustments (`quota_adjustments`) to the
//! limiters every `storage.key_refresh`: each row of a running period
//! exactly once (see [`crate::limiter::quota_adjust`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_adjustments::QuotaAdjustment;
use tollgate_core::db::Db;

use crate::limiter::backends::Limiters;
use crate::limiter::quota::wall_now_us;
use crate::state::State;

const DB_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn apply_quota_adjustments(
    state: Arc<State>,
    limiters: Arc<Limiters>,
    url: String,
) {
    let mut db: Option<Db> = None;
    // Per row: the identity of the key it names, read once when the row is
    // first seen (the key's count lives under its identity's hash tag).
    let mut key_identity: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
    loop {
        if db.is_none() {
            db = tokio::time::timeout(DB_TIMEOUT, Db::connect(&url))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some(d) = &db {
            match tokio::time::timeout(DB_TIMEOUT, d.quota_adjustments_running(wall_now_us())).await
            {
                Ok(Ok(rows)) => {
                    resolve_keys(d, &rows, &mut key_identity).await;
                    let identities: HashMap<i64, i64> = key_identity
                        .values()
                        .filter_map(|&(key, identity)| Some((key, identity?)))
                        .collect();
                    // A key's row waits until its key's identity is known
                    // (its count's place depends on it).
                    let ready: Vec<QuotaAdjustment> = rows
                        .iter()
                        .filter(|a| {
                            a.subject_kind == SubjectKind::Identity
                                || key_identity.contains_key(&a.id)
                        })
                        .cloned()
                        .collect();
                    let cfg = state.config.load().config.limiter.clone();
                    limiters
                        .apply_quota_adjustments(&cfg, &ready, &identities)
                        .await;
                    let ids: HashSet<i64> = rows.iter().map(|a| a.id).collect();
                    limiters.quota_adjustments.forget_others(&ids);
                    key_identity.retain(|id, _| ids.contains(id));
                }
                Ok(Err(e)) => tracing::debug!("reading quota adjustments: {e}"),
                Err(_) => tracing::debug!("reading quota adjustments timed out"),
            }
        }
        crate::period::wait(|| state.config.load().config.storage.key_refresh).await;
    }
}

/// Read the identity of the key each new key row names.
async fn resolve_keys(
    db: &Db,
    rows: &[QuotaAdjustment],
    out: &mut HashMap<i64, (i64, Option<i64>)>,
) {
    for a in rows {
        if a.subject_kind != SubjectKind::Key || out.contains_key(&a.id) {
            continue;
        }
        match tokio::time::timeout(DB_TIMEOUT, db.get_key(a.subject_id)).await {
            Ok(Ok(key)) => {
                out.insert(a.id, (a.subject_id, key.and_then(|k| k.identity_id)));
            }
            // Not resolved: this row and the rest wait for the next read.
            _ => return,
        }
    }
}
