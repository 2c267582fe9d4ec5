//! The login limiter: every attempt is counted *before* the password is
//! verified (and refunded when it was right), per client address and per
//! username, with a back-off that doubles with every failure beyond the
//! first few.
//!
//! A username's back-off only applies to addresses that have failed
//! themselves: an attacker hammering `admin` from elsewhere cannot lock the
//! real admin out of a clean address. IPv6 addresses are counted per /64
//! (one customer's whole network), so rotating addresses does not escape
//! the per-address limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Attempts allowed before the back-off starts.
pub const FREE_ATTEMPTS: u32 = 5;
/// The first back-off; it doubles with every further failure.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten this long after the back-off they caused ended.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Entries tracked per map; beyond it, untracked addresses count as failed.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    /// ns since the guard's epoch.
    blocked_until: u64,
    last: u64,
}

impl Entry {
    fn fresh(&mut self, now: u64) {
        let forget = duration_ns(FORGET_AFTER);
        if self.failures > 0 && now > self.blocked_until.max(self.last).saturating_add(forget) {
            *self = Entry::default();
        }
    }

    fn wait(&self, now: u64) -> Option<u64> {
        (self.blocked_until > now)
            .then(|| (self.blocked_until - now).div_ceil(1_000_000_000).max(1))
    }

    fn count(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        self.last = now;
        if self.failures >= FREE_ATTEMPTS {
            let doublings = (self.failures - FREE_ATTEMPTS).min(20);
            let backoff = BASE_BACKOFF
                .saturating_mul(1u32 << doublings)
                .min(MAX_BACKOFF);
            self.blocked_until = now.saturating_add(duration_ns(backoff));
        }
    }

    fn refund(&mut self) {
        self.failures = self.failures.saturating_sub(1);
        if self.failures < FREE_ATTEMPTS {
            self.blocked_until = 0;
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The unit an address is counted in: IPv4 address, IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(u128);

impl AddrKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddrKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(u128::from(u32::from(v4))),
                None => AddrKey((u128::from(v6) >> 64) << 64 | 1),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Maps {
    addrs: HashMap<AddrKey, Entry>,
    users: HashMap<String, Entry>,
}

/// What [`LoginGuard::begin`] counted; hand it back to refund a success.
#[derive(Debug)]
pub struct Attempt {
    addr: Option<AddrKey>,
    user: Option<String>,
}

#[derive(Debug)]
pub struct LoginGuard {
    epoch: Instant,
    maps: Mutex<Maps>,
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            maps: Mutex::new(Maps::default()),
        }
    }
}

fn tracked<'m, K: Hash + Eq + Clone>(
    map: &'m mut HashMap<K, Entry>,
    key: &K,
    now: u64,
) -> Option<&'m mut Entry> {
    if !map.contains_key(key) && map.len() >= MAX_TRACKED {
        let forget = duration_ns(FORGET_AFTER);
        map.retain(|_, e| now <= e.blocked_until.max(e.last).saturating_add(forget));
        if map.len() >= MAX_TRACKED {
            return None;
        }
    }
    let e = map.entry(key.clone()).or_default();
    e.fresh(now);
    Some(e)
}

impl LoginGuard {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Count an attempt by `ip` for `username` (lower-cased by the caller),
    /// or `Err(seconds to wait)` while either may not try.
    pub fn begin(&self, ip: Option<IpAddr>, username: &str) -> Result<Attempt, u64> {
        let now = self.now();
        let mut maps = self.maps.lock();
        let maps = &mut *maps;
        let addr = ip.map(AddrKey::of);
        // An address counts as having failed when it has, when it is not
        // known, or when it cannot be tracked.
        let mut addr_failed = true;
        if let Some(key) = addr {
            if let Some(e) = tracked(&mut maps.addrs, &key, now) {
                if let Some(wait) = e.wait(now) {
                    return Err(wait);
                }
                addr_failed = e.failures > 0;
            }
        }
        let user_known = match tracked(&mut maps.users, &username.to_string(), now) {
            Some(e) => {
                if addr_failed {
                    if let Some(wait) = e.wait(now) {
                        return Err(wait);
                    }
                }
                e.count(now);
                true
            }
            None => false,
        };
        let addr_counted = match addr.and_then(|k| maps.addrs.get_mut(&k).map(|e| (k, e))) {
            Some((k, e)) => {
                e.count(now);
                Some(k)
            }
            None => None,
        };
        Ok(Attempt {
            addr: addr_counted,
            user: user_known.then(|| username.to_string()),
        })
    }

    /// The attempt was right: give back what it counted.
    pub fn succeed(&self, attempt: Attempt) {
        let mut maps = self.maps.lock();
        if let Some(k) = attempt.addr {
            if let Some(e) = maps.addrs.get_mut(&k) {
                e.refund();
            }
        }
        if let Some(u) = attempt.user {
            if let Some(e) = maps.users.get_mut(&u) {
                e.refund();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn attempts_are_counted_before_the_check_and_back_off_grows() {
        let g = LoginGuard::default();
        for _ in 0..FREE_ATTEMPTS {
            g.begin(ip("10.0.0.1"), "bob").expect("free attempt");
        }
        let first = g.begin(ip("10.0.0.1"), "bob").expect_err("blocked");
        assert!((1..=1).contains(&first), "{first}");
        // Another name from the same address is blocked (per address) …
        assert!(g.begin(ip("10.0.0.1"), "alice").is_err());
        // … an address that never failed may still try the same name …
        let a = g.begin(ip("10.0.0.2"), "bob").expect("clean address");
        g.succeed(a);
        // … but an address that failed is held back by the name's back-off.
        for _ in 0..2 {
            let _ = g.begin(ip("10.0.0.3"), "carol");
        }
        assert!(g.begin(ip("10.0.0.3"), "bob").is_err());
    }

    #[test]
    fn backoff_doubles() {
        let mut e = Entry::default();
        let s = 1_000_000_000;
        for _ in 0..FREE_ATTEMPTS {
            e.count(0);
        }
        assert_eq!(e.blocked_until, s);
        e.count(0);
        assert_eq!(e.blocked_until, 2 * s);
        e.count(0);
        assert_eq!(e.blocked_until, 4 * s);
        for _ in 0..40 {
            e.count(0);
        }
        assert_eq!(e.blocked_until, duration_ns(MAX_BACKOFF));
    }

    #[test]
    fn successes_are_refunded() {
        let g = LoginGuard::default();
        for _ in 0..20 {
            let a = g.begin(ip("10.0.0.1"), "bob").expect("never blocked");
            g.succeed(a);
        }
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(
            AddrKey::of("2001:db8::1".parse().expect("ip")),
            AddrKey::of("2001:db8::ffff:1".parse().expect("ip"))
        );
        assert_ne!(
            AddrKey::of("2001:db8::1".parse().expect("ip")),
            AddrKey::of("2001:db8:0:1::1".parse().expect("ip"))
        );
        assert_eq!(
            AddrKey::of("::ffff:10.0.0.1".parse().expect("ip")),
            AddrKey::of("10.0.0.1".parse().expect("ip"))
        );
    }
}
