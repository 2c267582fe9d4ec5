//! `violation_aggregates`: refusals without a valid key (401, 403, and the
//! 429s of the bad-key throttle or of per-IP limits), counted per (minute,
//! route, status, reason, client network) instead of one `violations` row
//! each, so that a flood of junk keys from many addresses costs a bounded
//! number of rows (one per minute × route × status × reason × /24 or /64).
//!
//! Which refusals are aggregated is decided here ([`is_aggregated`]), the
//! client network too ([`client_net`]); the proxy only calls them.

use std::net::IpAddr;

use sqlx::Row;

use super::stmt::{Arg, Stmt};
use super::usage::minute_of;
use super::{Db, DbError, DbKind};

/// Aggregate rows per upsert statement (6 bound values each).
pub const AGGREGATE_BATCH_ROWS: usize = 1_000;
/// Reasons and routes are cut to this many bytes before they are stored.
pub const MAX_REASON: usize = 64;

/// Whether a refusal is counted in `violation_aggregates` rather than stored
/// as a `violations` row: every 401 and 403, and every other refusal of a
/// request that presented no valid key. A valid key over its limits keeps its
/// per-request row (bounded by the keys that exist, and worth seeing one by one).
pub fn is_aggregated(status: u16, key_id: Option<i64>) -> bool {
    status == 401 || status == 403 || key_id.is_none()
}

/// The network a client address is counted under: its /24 (IPv4) or /64
/// (IPv6), in CIDR notation. IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_net(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        None => String::new(),
        Some(IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// The identity of one aggregate row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggregateKey {
    /// Unix ms at the start of the minute.
    pub minute: i64,
    pub route: String,
    pub status: i64,
    pub reason: String,
    pub client_net: String,
}

impl AggregateKey {
    /// The row a refusal at `at_ms` counts in.
    pub fn new(at_ms: i64, route: &str, status: u16, reason: &str, ip: Option<IpAddr>) -> Self {
        Self {
            minute: minute_of(at_ms),
            route: cut(route, 256),
            status: i64::from(status),
            reason: cut(reason, MAX_REASON),
            client_net: client_net(ip),
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// One stored (or to be added) aggregate row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationAggregate {
    pub key: AggregateKey,
    pub count: i64,
}

/// Which aggregate rows to list: minutes in `from..to`, busiest minute first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AggregateFilter {
    pub from: i64,
    pub to: i64,
    pub route: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// The upsert of `rows` (distinct keys) into `violation_aggregates`; counts add up.
pub(crate) fn upsert_stmt(kind: DbKind, rows: &[ViolationAggregate]) -> Stmt<'_> {
    let mut stmt = Stmt::new(kind);
    stmt.push(
        "INSERT INTO violation_aggregates (minute, route, status, reason, client_net, count) VALUES ",
    );
    for (i, r) in rows.iter().enumerate() {
        stmt.push(if i == 0 { "(" } else { ",(" })
            .int(r.key.minute)
            .push(",")
            .text(&r.key.route)
            .push(",")
            .int(r.key.status)
            .push(",")
            .text(&r.key.reason)
            .push(",")
            .text(&r.key.client_net)
            .push(",")
            .int(r.count)
            .push(")");
    }
    stmt.push(
        " ON CONFLICT (minute, route, status, reason, client_net) \
         DO UPDATE SET count = violation_aggregates.count + excluded.count",
    );
    stmt
}

impl AggregateFilter {
    fn condition<'a>(&'a self, stmt: &mut Stmt<'a>) {
        stmt.push(" WHERE minute >= ")
            .int(minute_of(self.from))
            .push(" AND minute < ")
            .int(self.to);
        if let Some(r) = &self.route {
            stmt.push(" AND route = ").text(r);
        }
    }
}

impl Db {
    /// Add `rows` to `violation_aggregates` (outside a usage batch; the proxy
    /// writes them with [`Db::apply_usage_batch`]).
    pub async fn upsert_violation_aggregates(
        &self,
        rows: &[ViolationAggregate],
    ) -> Result<(), DbError> {
        for batch in rows.chunks(AGGREGATE_BATCH_ROWS) {
            upsert_stmt(self.kind(), batch)
                .query()
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// One page of aggregate rows (newest minute first, then the largest
    /// counts), how many rows match, and the refusals they count in all.
    pub async fn list_violation_aggregates(
        &self,
        filter: &AggregateFilter,
    ) -> Result<(Vec<ViolationAggregate>, i64, i64), DbError> {
        let mut count = Stmt::new(self.kind());
        count.push(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(count), 0) AS BIGINT) AS refusals \
             FROM violation_aggregates",
        );
        filter.condition(&mut count);
        let row = count.query().fetch_one(self.pool()).await?;
        let total: i64 = row.try_get("n")?;
        let refusals: i64 = row.try_get("refusals")?;
        let mut stmt = Stmt::new(self.kind());
        stmt.push(
            "SELECT minute, route, status, reason, client_net, count FROM violation_aggregates",
        );
        filter.condition(&mut stmt);
        stmt.push(" ORDER BY minute DESC, count DESC, route, status, reason, client_net LIMIT ")
            .bind(Arg::Int(if filter.limit <= 0 {
                i64::MAX
            } else {
                filter.limit
            }))
            .push(" OFFSET ")
            .int(filter.offset.max(0));
        let rows = stmt.query().fetch_all(self.pool()).await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(ViolationAggregate {
                    key: AggregateKey {
                        minute: row.try_get("minute")?,
                        route: row.try_get("route")?,
                        status: row.try_get("status")?,
                        reason: row.try_get("reason")?,
                        client_net: row.try_get("client_net")?,
                    },
                    count: row.try_get("count")?,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok((items, total, refusals))
    }

    /// Rows in `violation_aggregates` (tests, monitoring).
    pub async fn count_violation_aggregates(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM violation_aggregates")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_per_network() {
        let v4: IpAddr = "203.0.113.77".parse().expect("ip");
        assert_eq!(client_net(Some(v4)), "203.0.113.0/24");
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().expect("ip");
        assert_eq!(client_net(Some(v6)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(client_net(Some(mapped)), "10.1.2.0/24");
        assert_eq!(client_net(None), "");
    }

    #[test]
    fn refusals_without_a_valid_key_are_aggregated() {
        assert!(is_aggregated(401, None));
        assert!(is_aggregated(403, None));
        assert!(is_aggregated(403, Some(7)));
        assert!(is_aggregated(429, None));
        assert!(!is_aggregated(429, Some(7)));
    }

    #[test]
    fn keys_are_cut_and_put_in_their_minute() {
        let k = AggregateKey::new(61_001, &"r".repeat(300), 403, &"é".repeat(40), None);
        assert_eq!(k.minute, 60_000);
        assert_eq!(k.route.len(), 256);
        assert!(k.reason.len() <= MAX_REASON && k.reason.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn counts_add_up_and_list_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::testing::fresh_sqlite(dir.path()).await;
        let row = |minute, net: &str, count| ViolationAggregate {
            key: AggregateKey {
                minute,
                route: "users".into(),
                status: 403,
                reason: "invalid-api-key:unknown".into(),
                client_net: net.into(),
            },
            count,
        };
        db.upsert_violation_aggregates(&[row(0, "10.0.0.0/24", 5), row(60_000, "10.0.0.0/24", 1)])
            .await
            .expect("upsert");
        db.upsert_violation_aggregates(&[row(0, "10.0.0.0/24", 7)])
            .await
            .expect("upsert");
        let (items, total, refusals) = db
            .list_violation_aggregates(&AggregateFilter {
                from: 0,
                to: 120_000,
                ..AggregateFilter::default()
            })
            .await
            .expect("list");
        assert_eq!((total, refusals), (2, 13));
        assert_eq!(
            items,
            vec![row(60_000, "10.0.0.0/24", 1), row(0, "10.0.0.0/24", 12)]
        );
        db.close().await;
    }
}
