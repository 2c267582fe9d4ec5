//! `quota_counts`: the local limiter's calendar quota counts, written whole
//! with every usage flush and read at start, so a restarted proxy on the
//! local backend keeps counting its quotas' periods where it stopped (issue
//! #20). One row per count of a key or an identity (holder, owner key,
//! bucket, period): the last
//! writer wins, which is exact for one proxy; N local proxies count apart,
//! as their buckets do. Rows of ended periods are dropped with each write.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::stmt::Stmt;
use super::{Db, DbError};

/// Rows per statement of [`Db::save_quota_counts`] (9 values each: far
/// below either database's limit on bound values).
const BATCH: usize = 500;
use crate::now_ms;
use crate::quota::PeriodBounds;

/// One quota count of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCount {
    /// Whose count: `k42`, `i7` ([`CountHolder::name`]).
    pub holder: String,
    /// The key of an identity member's own quota; 0 otherwise.
    pub owner_key: i64,
    /// The bucket's name: `p:monthly`, `r:llm:daily`.
    pub bucket: String,
    pub period: PeriodBounds,
    pub used: u64,
    /// The last `quota_adjustments` id folded into `used` (0: none).
    pub adjusted_through: i64,
}

/// Whose count a row is (`quota_counts.holder`): a key, or an identity (its
/// shared quotas, and its members' own ones with `owner_key`). A client
/// address's quotas (`auth: none` routes) are not written: any client
/// could make rows by the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountHolder {
    Key(i64),
    Identity(i64),
}

impl CountHolder {
    /// `k42`, `i7`.
    pub fn name(self) -> String {
        match self {
            Self::Key(k) => format!("k{k}"),
            Self::Identity(i) => format!("i{i}"),
        }
    }

    /// The holder [`Self::name`] wrote; `None` for anything else (also for
    /// another spelling of the same number: `k+1`, `k01`).
    pub fn parse(s: &str) -> Option<Self> {
        let id = |rest: &str| rest.parse::<i64>().ok();
        let h = match s.split_at_checked(1)? {
            ("k", rest) => Self::Key(id(rest)?),
            ("i", rest) => Self::Identity(id(rest)?),
            _ => return None,
        };
        (h.name() == s).then_some(h)
    }
}

const COLUMNS: &str = "holder, owner_key, bucket, period_start, period_end, used, adjusted_through";

fn decode(row: &AnyRow) -> Result<QuotaCount, DbError> {
    let used: i64 = row.try_get("used")?;
    Ok(QuotaCount {
        holder: row.try_get("holder")?,
        owner_key: row.try_get("owner_key")?,
        bucket: row.try_get("bucket")?,
        period: PeriodBounds {
            start_us: row.try_get("period_start")?,
            end_us: row.try_get("period_end")?,
        },
        used: u64::try_from(used)
            .map_err(|_| DbError::Corrupt(format!("quota_counts.used {used}")))?,
        adjusted_through: row.try_get("adjusted_through")?,
    })
}

impl Db {
    /// Write `counts` (each replacing its stored row) in one transaction,
    /// [`BATCH`] rows per statement, and drop the rows of periods that
    /// ended by `now_us`.
    pub async fn save_quota_counts(
        &self,
        instance: &str,
        counts: &[QuotaCount],
        now_us: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        let at = now_ms();
        for batch in counts.chunks(BATCH) {
            let mut stmt = Stmt::new(self.kind());
            stmt.push(
                "INSERT INTO quota_counts (instance, holder, owner_key, bucket, period_start, \
                 period_end, used, adjusted_through, updated_at) VALUES ",
            );
            for (i, c) in batch.iter().enumerate() {
                stmt.push(if i == 0 { "(" } else { ",(" })
                    .text(instance)
                    .push(",")
                    .text(&c.holder)
                    .push(",")
                    .int(c.owner_key)
                    .push(",")
                    .text(&c.bucket)
                    .push(",")
                    .int(c.period.start_us)
                    .push(",")
                    .int(c.period.end_us)
                    .push(",")
                    .int(i64::try_from(c.used).unwrap_or(i64::MAX))
                    .push(",")
                    .int(c.adjusted_through)
                    .push(",")
                    .int(at)
                    .push(")");
            }
            stmt.push(
                " ON CONFLICT (instance, holder, owner_key, bucket, period_start) DO UPDATE SET \
                 period_end = excluded.period_end, used = excluded.used, \
                 adjusted_through = excluded.adjusted_through, updated_at = excluded.updated_at",
            );
            stmt.query().execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM quota_counts WHERE period_end <= $1")
            .bind(now_us)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The uses of `bucket` held by `holder` (`owner_key` as written) in
    /// the period starting at `period_start_us` that the local proxies
    /// counted, as they last wrote them (the sum of their counts).
    pub async fn quota_count(
        &self,
        holder: CountHolder,
        owner_key: i64,
        bucket: &str,
        period_start_us: i64,
    ) -> Result<Option<u64>, DbError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT used FROM quota_counts WHERE holder = $1 AND owner_key = $2 \
             AND bucket = $3 AND period_start = $4",
        )
        .bind(holder.name())
        .bind(owner_key)
        .bind(bucket)
        .bind(period_start_us)
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let sum = rows.iter().fold(0u64, |sum, &u| {
            sum.saturating_add(u64::try_from(u).unwrap_or(0))
        });
        Ok(Some(sum))
    }

    /// `instance`'s counts of periods that end after `now_us` (an
    /// unreadable row, e.g. a negative count, is left out alone).
    pub async fn quota_counts_running(
        &self,
        instance: &str,
        now_us: i64,
    ) -> Result<Vec<QuotaCount>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM quota_counts WHERE instance = $1 AND period_end > $2");
        let rows = sqlx::query(&sql)
            .bind(instance)
            .bind(now_us)
            .fetch_all(self.pool())
            .await?;
        Ok(super::rows::readable(&rows, "quota_counts", decode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_round_trip() {
        for h in [CountHolder::Key(42), CountHolder::Identity(-7)] {
            assert_eq!(CountHolder::parse(&h.name()), Some(h));
        }
        for bad in [
            "",
            "k",
            "kx",
            "x1",
            "ip10.0.0.1",
            "i1.5",
            "k 1",
            "é",
            "k+1",
            "k01",
            "i-0",
        ] {
            assert_eq!(CountHolder::parse(bad), None, "{bad:?}");
        }
    }
}
