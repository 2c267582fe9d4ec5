//! The local limiter's quota counts written to the database and read back
//! at start (`tollgate_core::db::quota_counts`), so a restart does not
//! hand a period's quota out again (issue #20). A count changed since it
//! was last written is *dirty*; [`LocalLimiter::take_dirty_quotas`] takes
//! them whole (the last writer wins: exact for one proxy), and what could
//! not be written is marked dirty again. A crash loses at most the changes
//! of one usage flush interval (a graceful or fast stop writes them).

use tollgate_core::db::quota_counts::{CountHolder, QuotaCount};
use tollgate_core::quota::PeriodBounds;

use super::Count;
use crate::limiter::{slot_for_name, slot_name, LocalLimiter, Subject};

/// A holder's name in `quota_counts.holder`; `None` for a client address
/// (its counts are not written: any client could make rows by the
/// address) and a member (never a holder: it counts under its identity).
fn holder_name(holder: &Subject) -> Option<String> {
    let h = match *holder {
        Subject::Key(k) => CountHolder::Key(k),
        Subject::Identity(i) => CountHolder::Identity(i),
        Subject::Ip(_) | Subject::Member { .. } => return None,
    };
    Some(h.name())
}

fn parse_holder(s: &str) -> Option<Subject> {
    Some(match CountHolder::parse(s)? {
        CountHolder::Key(k) => Subject::Key(k),
        CountHolder::Identity(i) => Subject::Identity(i),
    })
}

impl LocalLimiter {
    /// The counts changed since the last call, as rows, marked clean.
    pub fn take_dirty_quotas(&self) -> Vec<QuotaCount> {
        let mut out = Vec::new();
        self.quotas.retain(|holder, counts| {
            for c in counts.iter_mut().filter(|c| c.dirty) {
                c.dirty = false;
                let (Some(h), Some(bucket)) = (holder_name(holder), slot_name(c.slot)) else {
                    continue;
                };
                out.push(QuotaCount {
                    holder: h,
                    owner_key: c.key,
                    bucket: bucket.to_string(),
                    period: PeriodBounds {
                        start_us: c.start_us,
                        end_us: c.end_us,
                    },
                    used: c.used,
                    adjusted_through: c.adjusted_through,
                });
            }
            true
        });
        out
    }

    /// Mark the counts of `rows` dirty again (their write failed), unless
    /// a newer period replaced them.
    pub fn restore_dirty_quotas(&self, rows: &[QuotaCount]) {
        for r in rows {
            let Some(holder) = parse_holder(&r.holder) else {
                continue;
            };
            let slot = slot_for_name(&r.bucket);
            if let Some(counts) = self.quotas.lock(&holder).get_mut(&holder) {
                for c in counts.iter_mut() {
                    if c.slot == slot && c.key == r.owner_key && c.start_us == r.period.start_us {
                        c.dirty = true;
                    }
                }
            }
        }
    }

    /// Take the counts read back at start. A count this process already
    /// has for the same or a later period is kept. Rows naming no holder
    /// this proxy knows how to count are skipped. Returns how many were
    /// taken.
    pub fn seed_quotas(&self, rows: &[QuotaCount]) -> usize {
        let mut taken = 0;
        for r in rows {
            let Some(holder) = parse_holder(&r.holder) else {
                continue;
            };
            let slot = slot_for_name(&r.bucket);
            let seeded = Count {
                slot,
                key: r.owner_key,
                start_us: r.period.start_us,
                end_us: r.period.end_us,
                used: r.used,
                adjusted_through: r.adjusted_through,
                dirty: false,
            };
            let mut map = self.quotas.lock(&holder);
            let counts = map.entry(holder).or_default();
            match counts
                .iter_mut()
                .find(|c| c.slot == slot && c.key == r.owner_key)
            {
                Some(c) if c.start_us >= r.period.start_us => continue,
                Some(c) => *c = seeded,
                None => counts.push(seeded),
            }
            taken += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tollgate_core::limits::LimitScope;
    use tollgate_core::quota::adjust::QuotaChange;

    use super::super::test_support::{daily, NOON, S};
    use super::*;
    use crate::limiter::cost::reserving;
    use crate::limiter::quota::bounds;
    use crate::limiter::{Bucket, Scope};
    use tollgate_core::cost::Settle;

    fn admit(l: &LocalLimiter, s: &Subject, b: &Bucket, n: usize) {
        for _ in 0..n {
            assert!(l.check_quotas_at(s, &[b], S, NOON).allowed);
        }
    }

    #[test]
    fn holders_round_trip() {
        for h in [Subject::Key(42), Subject::Identity(-7)] {
            let name = holder_name(&h).expect("a holder");
            assert_eq!(parse_holder(&name), Some(h), "{name}");
        }
        // Not written: a client address's counts, and a member (it counts
        // under its identity).
        let ip = Subject::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(holder_name(&ip), None);
        let member = Subject::Member {
            key: 1,
            identity: 2,
        };
        assert_eq!(holder_name(&member), None);
    }

    #[test]
    fn counts_written_and_read_back_count_on() {
        let plan = daily(Scope::Key, "cp-daily", 5, LimitScope::Key);
        let route = daily(Scope::Route("llm"), "cp-route", 4, LimitScope::Key);
        let team = daily(Scope::Key, "cp-team", 9, LimitScope::Identity);
        let (k, m) = (
            Subject::Key(1),
            Subject::Member {
                key: 2,
                identity: 3,
            },
        );
        let a = LocalLimiter::new(4);
        admit(&a, &k, &plan, 3);
        admit(&a, &k, &route, 1);
        admit(&a, &m, &team, 2);
        admit(&a, &m, &plan, 1);
        admit(&a, &Subject::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), &route, 1);
        a.adjust_quota(
            &k,
            &plan,
            bounds(&plan, NOON).expect("day"),
            QuotaChange::Delta(1),
            11,
        );
        let mut rows = a.take_dirty_quotas();
        rows.sort_by(|x, y| {
            (&x.holder, x.owner_key, &x.bucket).cmp(&(&y.holder, y.owner_key, &y.bucket))
        });
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.holder.as_str(),
                    r.owner_key,
                    r.bucket.as_str(),
                    r.used,
                    r.adjusted_through,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("i3", 0, "p:cp-team", 2, 0),
                ("i3", 2, "p:cp-daily", 1, 0),
                ("k1", 0, "p:cp-daily", 4, 11),
                ("k1", 0, "r:llm:cp-route", 1, 0),
            ]
        );
        // Clean now; a failed write marks them dirty again.
        assert!(a.take_dirty_quotas().is_empty());
        a.restore_dirty_quotas(&rows);
        assert_eq!(a.take_dirty_quotas().len(), 4);
        // A settlement is a change too; a settlement of nothing is not.
        let r = reserving(&plan, 1);
        a.settle_quotas(&k, &[&r], Settle::Return(1), NOON, NOON);
        assert_eq!(a.take_dirty_quotas().len(), 1);
        a.settle_quotas(&Subject::Key(99), &[&r], Settle::Return(1), NOON, NOON);
        assert!(a.take_dirty_quotas().is_empty());

        // A new process reads them back: the quotas go on where they were.
        let b = LocalLimiter::new(4);
        assert_eq!(b.seed_quotas(&rows), 4);
        assert_eq!(b.peek_quota(&k, &plan, NOON).remaining, 1);
        assert_eq!(b.peek_quota(&k, &route, NOON).remaining, 3);
        assert_eq!(b.peek_quota(&m, &team, NOON).remaining, 7);
        assert_eq!(b.peek_quota(&m, &plan, NOON).remaining, 4);
        admit(&b, &k, &plan, 1);
        assert!(!b.check_quotas_at(&k, &[&plan], S, NOON).allowed);
        // The adjustment already in the count is not applied again.
        b.adjust_quota(
            &k,
            &plan,
            bounds(&plan, NOON).expect("day"),
            QuotaChange::Delta(-5),
            11,
        );
        assert!(!b.check_quotas_at(&k, &[&plan], S, NOON).allowed);
        // Seeding again keeps what this process counted since.
        assert_eq!(b.seed_quotas(&rows), 0);
        assert_eq!(b.peek_quota(&k, &plan, NOON).remaining, 0);
        // Unknown holders are skipped.
        let mut odd = rows[0].clone();
        odd.holder = "zz".into();
        assert_eq!(LocalLimiter::new(1).seed_quotas(&[odd]), 0);
    }
}
