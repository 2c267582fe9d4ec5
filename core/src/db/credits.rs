//! `credit_adjustments`: every top-up or adjustment of a credit balance, one
//! row each, never changed (issue #20 item 2; rules in [`crate::credits`]).
//! The proxies read them ([`Db::credit_adjustments_since`]) and apply each
//! exactly once to the live balance.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, DbError, DbKind};
use crate::credits::{check_delta, SubjectKind};
use crate::now_ms;

/// One adjustment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CreditAdjustment {
    pub id: i64,
    #[serde(serialize_with = "kind_str")]
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    pub delta: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Who made it (`admin:<name>`, `cli:<user>`, `proxy:<instance>` for
    /// spends).
    pub actor: String,
    /// A local proxy's spends (negative; positive for refunds), not a
    /// top-up: the instance that spent them ([`Db::record_spends`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_by: Option<String>,
    /// Of a spend row: when its first spend happened (Unix ms; the row is
    /// written up to one flush later, at `created_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_at: Option<i64>,
}

/// Spends of one balance by one local proxy, to record
/// ([`Db::record_spends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSpend {
    pub subject_kind: SubjectKind,
    pub subject_id: i64,
    /// What the balance lost (negative), or got back (refunds: positive).
    pub delta: i64,
    /// When the first of them happened (Unix ms).
    pub spent_at: i64,
}

fn kind_str<S: serde::Serializer>(k: &SubjectKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

const COLUMNS: &str = "id, subject_kind, subject_id, delta, created_at, actor, spent_by, spent_at";

fn decode(row: &AnyRow) -> Result<CreditAdjustment, DbError> {
    let kind: String = row.try_get("subject_kind")?;
    Ok(CreditAdjustment {
        id: row.try_get("id")?,
        subject_kind: SubjectKind::parse(&kind)
            .ok_or_else(|| DbError::Corrupt(format!("credit_adjustments.subject_kind {kind:?}")))?,
        subject_id: row.try_get("subject_id")?,
        delta: row.try_get("delta")?,
        created_at: row.try_get("created_at")?,
        actor: row.try_get("actor")?,
        spent_by: row.try_get("spent_by")?,
        spent_at: row.try_get("spent_at")?,
    })
}

/// Whether a running total stays a 64-bit balance.
fn in_range(total: i128) -> bool {
    i64::try_from(total).is_ok()
}

/// `SELECT what` over the rows of one subject (`$1`, `$2`) that `filter`
/// (` AND …`) keeps.
fn of_subject(what: &str, filter: &str) -> String {
    format!(
        "SELECT {what} FROM credit_adjustments \
         WHERE subject_kind = $1 AND subject_id = $2{filter}"
    )
}

/// The sum of `delta` over `filter` (bound to the subject as `$1`, `$2`),
/// exactly, whatever its size: `None` when there is no row. PostgreSQL
/// sums a BIGINT column as NUMERIC (read as text); SQLite's integer `SUM`
/// fails on overflow, then the sum is taken in Rust.
async fn exact_sum(
    conn: &mut sqlx::AnyConnection,
    filter: &str,
    kind: SubjectKind,
    subject_id: i64,
) -> Result<Option<i128>, DbError> {
    let sql = of_subject("CAST(SUM(delta) AS TEXT)", filter);
    let summed: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(&sql)
        .bind(kind.as_str())
        .bind(subject_id)
        .fetch_one(&mut *conn)
        .await;
    match summed {
        Ok(None) => Ok(None),
        Ok(Some(text)) => match text.parse::<i128>() {
            Ok(sum) => Ok(Some(sum)),
            // A delta that is no integer (written around Tollgate: SQLite
            // then sums as a float): the rows the proxies read, one by one.
            Err(_) => row_by_row(conn, filter, kind, subject_id).await,
        },
        Err(e) if e.to_string().contains("integer overflow") => {
            row_by_row(conn, filter, kind, subject_id).await
        }
        Err(e) => Err(e.into()),
    }
}

/// [`exact_sum`] in Rust: the sum of every readable `delta` (an unreadable
/// row is logged and left out, as the proxies leave it out: black-box round
/// 5, N3), `None` when no row is readable.
async fn row_by_row(
    conn: &mut sqlx::AnyConnection,
    filter: &str,
    kind: SubjectKind,
    subject_id: i64,
) -> Result<Option<i128>, DbError> {
    let rows = sqlx::query(&of_subject("delta", filter))
        .bind(kind.as_str())
        .bind(subject_id)
        .fetch_all(&mut *conn)
        .await?;
    let deltas = super::rows::readable(&rows, "credit_adjustments", |row| {
        Ok(row.try_get::<i64, _>("delta")?)
    });
    Ok((!deltas.is_empty()).then(|| deltas.into_iter().map(i128::from).sum()))
}

impl Db {
    /// Record an adjustment of `delta` credits (checked: not 0, within
    /// [`crate::credits::MAX_DELTA`]; an invalid one is a
    /// [`DbError::Conflict`] carrying the reason).
    pub async fn add_credits(
        &self,
        kind: SubjectKind,
        subject_id: i64,
        delta: i64,
        actor: &str,
    ) -> Result<CreditAdjustment, DbError> {
        check_delta(delta).map_err(DbError::Conflict)?;
        let mut tx = self.pool().begin().await?;
        if self.kind() == DbKind::Postgres {
            // One adjustment of a subject at a time, so the total checked
            // below is the total committed (SQLite: the insert takes the
            // one write lock before the sum is read).
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(credit_lock_id(kind, subject_id))
                .fetch_one(&mut *tx)
                .await?;
        }
        let sql = format!(
            "INSERT INTO credit_adjustments (subject_kind, subject_id, delta, created_at, actor) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(subject_id)
            .bind(delta)
            .bind(now_ms())
            .bind(actor)
            .fetch_one(&mut *tx)
            .await?;
        let adjustment = decode(&row)?;
        // The running total (top-ups and spends) must stay a 64-bit
        // balance: an adjustment that would leave the range is not stored.
        let total = exact_sum(&mut tx, "", kind, subject_id).await?;
        if !total.is_none_or(in_range) {
            tx.rollback().await?;
            return Err(DbError::OutOfRange {
                field: "delta",
                message: format!(
                    "the {} total would leave the 64-bit range (−2^63 to 2^63 − 1)",
                    kind.as_str()
                ),
            });
        }
        tx.commit().await?;
        Ok(adjustment)
    }

    /// Record a local proxy's spends (one row per balance, `spent_by`
    /// `instance`), all or none. Rows with a delta of 0 are left out.
    pub async fn record_spends(&self, instance: &str, spends: &[NewSpend]) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        let actor = format!("proxy:{instance}");
        for s in spends.iter().filter(|s| s.delta != 0) {
            insert_spend(&mut tx, s, &actor, instance).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adjustments with an id above `after_id` or created at or after
    /// `since_ms` (Unix ms), by id. A reader that saw every id up to
    /// `after_id` finds a new row by its id whatever clock stamped its
    /// `created_at` (a writer whose clock is behind), and a row whose id was
    /// handed out before `after_id` but committed later by its recent
    /// `created_at`. Two index scans (the key and `created_at`).
    pub async fn credit_adjustments_after(
        &self,
        after_id: i64,
        since_ms: i64,
    ) -> Result<Vec<CreditAdjustment>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM credit_adjustments WHERE id > $1 \
             UNION SELECT {COLUMNS} FROM credit_adjustments WHERE created_at >= $2 \
             ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(after_id)
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        Ok(super::rows::readable(&rows, "credit_adjustments", decode))
    }

    /// Adjustments created at or after `since_ms` (Unix ms), oldest first.
    /// `0` reads them all.
    pub async fn credit_adjustments_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<CreditAdjustment>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM credit_adjustments WHERE created_at >= $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        Ok(super::rows::readable(&rows, "credit_adjustments", decode))
    }

    /// The credits ever granted to a subject (the sum of its adjustments,
    /// spends of local proxies left out; beyond the 64-bit range: the
    /// nearest bound), `None` if it holds no credits.
    pub async fn credits_granted(
        &self,
        kind: SubjectKind,
        subject_id: i64,
    ) -> Result<Option<i64>, DbError> {
        let mut conn = self.pool().acquire().await?;
        let sum = exact_sum(&mut conn, " AND spent_by IS NULL", kind, subject_id).await?;
        Ok(sum.map(|s| i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })))
    }
}

impl Db {
    /// A balance as the local proxies' spend rows leave it: every
    /// adjustment, their spends included (what they spent since their last
    /// usage flush is not in it yet); `None` if it holds no credits. Not
    /// the balance of a holder with a refill (the refill sets it anew each
    /// period), nor with the Redis backend (Redis holds it).
    pub async fn credits_balance_written(
        &self,
        kind: SubjectKind,
        subject_id: i64,
    ) -> Result<Option<i64>, DbError> {
        let mut conn = self.pool().acquire().await?;
        let sum = exact_sum(&mut conn, "", kind, subject_id).await?;
        Ok(sum.map(|s| i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })))
    }
}

impl Db {
    /// The keys of `identity` that hold credits of their own (a top-up or
    /// adjustment row): deleting the identity would detach them and move
    /// their balances out of its hash tag (black-box round 3, B14).
    pub async fn identity_keys_with_own_credits(&self, identity: i64) -> Result<Vec<i64>, DbError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT k.id FROM api_keys k JOIN credit_adjustments c \
             ON c.subject_kind = 'key' AND c.subject_id = k.id AND c.spent_by IS NULL \
             WHERE k.identity_id = $1 ORDER BY k.id",
        )
        .bind(identity)
        .fetch_all(self.pool())
        .await?;
        Ok(ids)
    }
}

/// Write one spend row (`spent_by` set: a proxy's spends, or a fold of
/// them), created now.
pub(super) async fn insert_spend(
    tx: &mut sqlx::AnyConnection,
    s: &NewSpend,
    actor: &str,
    spent_by: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO credit_adjustments \
         (subject_kind, subject_id, delta, created_at, actor, spent_by, spent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(s.subject_kind.as_str())
    .bind(s.subject_id)
    .bind(s.delta)
    .bind(now_ms())
    .bind(actor)
    .bind(spent_by)
    .bind(s.spent_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The advisory lock of one subject's adjustments (PostgreSQL).
fn credit_lock_id(kind: SubjectKind, subject_id: i64) -> i64 {
    // A constant tag in the high bits, the kind, then the id.
    let tag = 0x7467_6372_i64 << 32; // "tgcr"
    let kind = match kind {
        SubjectKind::Key => 0,
        SubjectKind::Identity => 1i64 << 31,
    };
    tag ^ kind ^ (subject_id & 0x7fff_ffff)
}
