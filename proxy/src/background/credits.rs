//! Applying credit adjustments (top-ups) from the database to the live
//! balances, every `storage.key_refresh`: each adjustment exactly once
//! (see [`crate::limiter::credits`]); and, on the same beat, which
//! balances refill (the plans of the keys and identities loaded).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::db::Db;
use tollgate_core::id_floor::IdFloor;

use crate::limiter::backends::Limiters;
use crate::limiter::credits::needs_rebuild;
use crate::state::State;

/// Each pass reads the rows above an id floor ([`IdFloor`]: every id below
/// it was seen, or missing for longer than this on the proxy's own clock),
/// and those created in the last `REREAD` again. A row is missed only if
/// its transaction commits more than this after a later id was read *and*
/// its `created_at` is older than this too (black-box round 5, N2: a spend
/// row stamped by a proxy whose clock is behind is found by its id).
const REREAD: Duration = Duration::from_secs(300);

pub(super) async fn apply_credits(state: Arc<State>, limiters: Arc<Limiters>, url: String) {
    let mut db: Option<Db> = None;
    let window = i64::try_from(REREAD.as_millis()).unwrap_or(i64::MAX);
    // From where the read at start left off (not from the first row: a
    // table of millions of spend rows read again here timed out every
    // pass, so no new top-up was ever applied; black-box round 4, C5).
    let mut since = limiters
        .credits
        .read_at()
        .map_or(0, |at| at.saturating_sub(window));
    let mut floor = IdFloor::new(limiters.credits.read_upto(), REREAD);
    // When the last read that succeeded started (the start's read, if it
    // succeeded): after a long gap, folds may hold rows never read here.
    let mut last_read = limiters.credits.read_at().and_then(|at| {
        let ago = tollgate_core::now_ms().saturating_sub(at);
        Instant::now().checked_sub(Duration::from_millis(u64::try_from(ago).unwrap_or(0)))
    });
    // The keys' and identities' own refills, as last read.
    let mut own = Vec::new();
    loop {
        let every = state.config.load().config.storage.key_refresh;
        super::connect_once(&mut db, &url).await;
        if let Some(d) = &db {
            match tokio::time::timeout(Duration::from_secs(5), d.credit_refills()).await {
                Ok(Ok(rows)) => own = rows,
                Ok(Err(e)) => tracing::debug!("reading credit refills: {e}"),
                Err(_) => tracing::debug!("reading credit refills timed out"),
            }
        }
        // Which balances refill: the plans of the keys and identities loaded
        // now, and their own refills (which win).
        let refills = crate::refills::refills_of(
            &state.db.load().keys,
            &state.config.load().config.plans,
            &own,
        );
        limiters.credits.set_refills(refills);
        // The gap runs from the start of the last read that succeeded to
        // the end of this one: a stall in the middle of a read counts too.
        let gap_over =
            |last: Option<Instant>| last.is_some_and(|t| needs_rebuild(t.elapsed(), every));
        let mut rebuild = gap_over(last_read);
        if let (Some(d), false) = (&db, rebuild) {
            let started = Instant::now();
            let read_at = tollgate_core::now_ms();
            let read = d.credit_adjustments_after(floor.floor(), since);
            match tokio::time::timeout(Duration::from_secs(5), read).await {
                // The read itself spanned a long gap: rebuild instead.
                Ok(Ok(_)) if gap_over(last_read) => rebuild = true,
                Ok(Ok(rows)) => {
                    let cfg = state.config.load().config.limiter.clone();
                    let identities = key_identities(d, &rows).await;
                    limiters.apply_adjustments(&cfg, &rows, &identities).await;
                    // Every row is applied now (this was the first read if
                    // the start's failed): later folds add nothing.
                    limiters.credits.mark_built();
                    let ids: HashSet<i64> = rows.iter().map(|a| a.id).collect();
                    limiters.credits.forget_applied(&ids);
                    since = read_at.saturating_sub(window);
                    floor.saw(ids.iter().copied(), Instant::now());
                    last_read = Some(started);
                }
                Ok(Err(e)) => tracing::debug!("reading credit adjustments: {e}"),
                Err(_) => tracing::debug!("reading credit adjustments timed out"),
            }
        }
        if let (Some(d), true) = (&db, rebuild) {
            // No spend is written meanwhile (none is taken but unwritten).
            let _writing = limiters.credits.spends.writing().await;
            let started = Instant::now();
            let read_at = tollgate_core::now_ms();
            let read = d.credit_adjustments_since(0);
            match tokio::time::timeout(Duration::from_secs(30), read).await {
                Ok(Ok(all)) => {
                    tracing::warn!(
                        gap_s = last_read.map_or(0, |t| t.elapsed().as_secs()),
                        "credit balances rebuilt from the database after a long gap in reading it"
                    );
                    let cfg = state.config.load().config.limiter.clone();
                    let identities = key_identities(d, &all).await;
                    limiters.rebuild_from(&cfg, &all, &identities).await;
                    let upto = all.iter().map(|a| a.id).max().unwrap_or(0);
                    floor = IdFloor::new(upto.max(floor.floor()), REREAD);
                    since = read_at.saturating_sub(window);
                    last_read = Some(started);
                }
                Ok(Err(e)) => tracing::debug!("reading every credit adjustment: {e}"),
                Err(_) => tracing::debug!("reading every credit adjustment timed out"),
            }
        }
        crate::period::wait(|| state.config.load().config.storage.key_refresh).await;
    }
}

/// The identity of each key that `rows` adjust (keys of none are left
/// out): a key of an identity keeps its Redis balance in the identity's
/// slot. Adjustments are rare; one read per key and pass.
async fn key_identities(
    db: &Db,
    rows: &[tollgate_core::db::credits::CreditAdjustment],
) -> std::collections::HashMap<i64, i64> {
    let mut out = std::collections::HashMap::new();
    for a in rows {
        // Spends of local proxies never go to Redis: no lookup for them.
        if a.subject_kind != tollgate_core::credits::SubjectKind::Key
            || a.spent_by.is_some()
            || out.contains_key(&a.subject_id)
        {
            continue;
        }
        if let Ok(Ok(Some(k))) =
            tokio::time::timeout(Duration::from_secs(5), db.get_key(a.subject_id)).await
        {
            if let Some(identity) = k.identity_id {
                out.insert(a.subject_id, identity);
            }
        }
    }
    out
}
