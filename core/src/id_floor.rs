//! Reading an append-only table by id, when ids are handed out at insert
//! but become visible at commit: a lower id can appear after a higher one
//! (its transaction was longer), and some ids never appear (rolled back).
//! [`IdFloor`] says from which id to read again: every id at or below it
//! was seen or given up; an id missing below the highest seen (a gap) holds
//! the floor until it appears, or for `patience` of the reader's own clock
//! (so no writer's clock decides it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// At most this many missing ids are waited for; a jump of more ids than
/// this (a sequence moved by hand) gives the oldest of them up at once.
pub const MAX_GAPS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct IdFloor {
    floor: i64,
    top: i64,
    /// Missing ids in `(floor, top]`, and when each was first missed.
    gaps: BTreeMap<i64, Instant>,
    patience: Duration,
}

impl IdFloor {
    /// Every id up to `top` was seen (none if 0).
    pub fn new(top: i64, patience: Duration) -> Self {
        Self {
            floor: top,
            top,
            gaps: BTreeMap::new(),
            patience,
        }
    }

    /// Read the ids above this.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// Ids missing below the highest seen, waited for now.
    pub fn gaps(&self) -> usize {
        self.gaps.len()
    }

    /// The ids of one read (any order; those at or below the floor are
    /// ignored), at `now`.
    pub fn saw(&mut self, ids: impl IntoIterator<Item = i64>, now: Instant) {
        let mut ids: Vec<i64> = ids.into_iter().filter(|&i| i > self.floor).collect();
        ids.sort_unstable();
        ids.dedup();
        if let Some(&max) = ids.last() {
            if max > self.top {
                // The ids between the old top and the new one that this
                // read did not hold are gaps from now (the newest
                // MAX_GAPS of them at most).
                let from = self.top.max(max.saturating_sub(MAX_GAPS as i64));
                let mut seen = ids.iter().peekable();
                for id in from.saturating_add(1)..max {
                    while seen.next_if(|&&s| s < id).is_some() {}
                    if seen.peek() != Some(&&id) {
                        self.gaps.insert(id, now);
                    }
                }
                self.top = max;
            }
        }
        for id in &ids {
            self.gaps.remove(id);
        }
        let patience = self.patience;
        self.gaps
            .retain(|_, first| now.saturating_duration_since(*first) < patience);
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_first();
        }
        self.floor = match self.gaps.first_key_value() {
            Some((&lowest, _)) => lowest - 1,
            None => self.top,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Duration = Duration::from_secs(300);

    #[test]
    fn contiguous_ids_move_the_floor_to_the_top() {
        let t = Instant::now();
        let mut f = IdFloor::new(10, P);
        f.saw([11, 12, 13], t);
        assert_eq!((f.floor(), f.gaps()), (13, 0));
        f.saw([], t);
        assert_eq!(f.floor(), 13);
    }

    #[test]
    fn a_late_commit_below_the_top_is_waited_for_then_seen() {
        let t = Instant::now();
        let mut f = IdFloor::new(10, P);
        // 12 commits before 11.
        f.saw([12], t);
        assert_eq!((f.floor(), f.gaps()), (10, 1));
        // Read again from 10: 12 again, 11 not yet.
        f.saw([12], t + Duration::from_secs(1));
        assert_eq!(f.floor(), 10);
        f.saw([11, 12, 14], t + Duration::from_secs(2));
        assert_eq!((f.floor(), f.gaps()), (12, 1), "13 is missing now");
    }

    #[test]
    fn a_gap_is_given_up_after_the_patience_of_the_readers_clock() {
        let t = Instant::now();
        let mut f = IdFloor::new(0, P);
        f.saw([1, 3], t);
        assert_eq!(f.floor(), 1);
        f.saw([3], t + P - Duration::from_millis(1));
        assert_eq!(f.floor(), 1);
        f.saw([], t + P);
        assert_eq!((f.floor(), f.gaps()), (3, 0));
    }

    #[test]
    fn a_huge_jump_waits_for_the_newest_ids_only() {
        let t = Instant::now();
        let mut f = IdFloor::new(0, P);
        f.saw([1_000_000], t);
        assert_eq!(f.gaps(), MAX_GAPS - 1);
        assert_eq!(f.floor(), 1_000_000 - MAX_GAPS as i64);
    }

    proptest! {
        /// Whatever order the ids commit in, every id is either seen by a
        /// read from the floor, or its gap was older than the patience.
        #[test]
        fn no_id_is_skipped_while_it_is_waited_for(order in Just((1..=40i64).collect::<Vec<_>>()).prop_shuffle(), batch in 1usize..6) {
            let t = Instant::now();
            let mut f = IdFloor::new(0, P);
            let mut committed: Vec<i64> = Vec::new();
            for (step, chunk) in order.chunks(batch).enumerate() {
                committed.extend_from_slice(chunk);
                let floor = f.floor();
                let read: Vec<i64> = committed.iter().copied().filter(|&i| i > floor).collect();
                f.saw(read, t + Duration::from_millis(step as u64));
                // Every committed id at or below the floor was read at
                // some point: the floor passes an id only once it is seen.
                for id in 1..=f.floor() {
                    prop_assert!(committed.contains(&id), "floor {} passed {} before it committed", f.floor(), id);
                }
            }
            prop_assert_eq!(f.floor(), 40);
        }
    }
}
