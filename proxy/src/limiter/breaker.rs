//! A small lock-free circuit breaker for the Redis limiter.
//!
//! Closed: every call goes through; `failures` consecutive failures open it.
//! Open: calls are refused ([`CircuitBreaker::allow`] is false) for `cooldown`.
//! Then the first caller is let through as a probe (half-open) while everyone
//! else is still refused; the probe's success closes the breaker, its failure
//! opens it for another cool-down. A probe that never reports back (its
//! future was dropped) is replaced by a new one after another `cooldown`.
//!
//! State and the instant it was entered live in one `AtomicU64`, so every
//! transition is a single compare-and-swap.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the breaker currently does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open: the value of the breaker-state gauge.
    pub fn as_i64(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    fn bits(self) -> u64 {
        self.as_i64() as u64
    }

    fn from_bits(bits: u64) -> Self {
        match bits & STATE_MASK {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// A monotonic clock in nanoseconds; injectable for tests.
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> u64;
}

/// The process' monotonic clock, counted from the breaker's creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A manually advanced clock, for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long it stays open before a probe is let through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            cooldown: Duration::from_secs(1),
        }
    }
}

const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

fn pack(state: BreakerState, since_ns: u64) -> u64 {
    (since_ns << STATE_BITS) | state.bits()
}

fn since(word: u64) -> u64 {
    word >> STATE_BITS
}

pub struct CircuitBreaker<C: Clock = MonotonicClock> {
    /// `since << 2 | state`: the state and when it was entered (ns on `clock`).
    word: AtomicU64,
    failures: AtomicU32,
    threshold: u32,
    cooldown_ns: u64,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("failures", &self.failures.load(Ordering::Relaxed))
            .field("threshold", &self.threshold)
            .field("cooldown_ns", &self.cooldown_ns)
            .finish()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, MonotonicClock::default())
    }
}

impl<C: Clock> CircuitBreaker<C> {
    pub fn with_clock(config: BreakerConfig, clock: C) -> Self {
        Self {
            word: AtomicU64::new(pack(BreakerState::Closed, 0)),
            failures: AtomicU32::new(0),
            threshold: config.failures.max(1),
            // Keep `since + cooldown` far from overflowing the 62 bits of `since`.
            cooldown_ns: u64::try_from(config.cooldown.as_nanos())
                .unwrap_or(u64::MAX)
                .min(1 << 60),
            clock,
        }
    }

    fn now(&self) -> u64 {
        // 62 bits of nanoseconds: 146 years of uptime.
        self.clock.now_ns().min(u64::MAX >> STATE_BITS)
    }

    /// May a call go to the backend now? In the half-open state only the
    /// single probe gets `true`.
    pub fn allow(&self) -> bool {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let state = BreakerState::from_bits(word);
            if state == BreakerState::Closed {
                return true;
            }
            // Open: wait for the cool-down. Half-open: a probe is out; replace
            // it only if it has not reported back within a cool-down.
            let now = self.now();
            if now < since(word).saturating_add(self.cooldown_ns) {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                pack(BreakerState::HalfOpen, now),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
    }

    /// The backend answered.
    pub fn success(&self) {
        // Read first: no cache-line write per request while all is well.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        let word = self.word.load(Ordering::Acquire);
        if BreakerState::from_bits(word) != BreakerState::Closed {
            // Lost races only mean another transition happened meanwhile.
            let _ = self.word.compare_exchange(
                word,
                pack(BreakerState::Closed, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The backend is back (the Redis keepalive's PING was answered within
    /// a request's timeout): an open or half-open breaker closes at once
    /// instead of waiting out its cool-down (black-box round 17 re-check:
    /// ~0.9 s of refusals after Redis was back). A closed one is left as it
    /// is, its failure count too: a Redis that answers PING but times out
    /// scripts still opens it.
    pub fn recovered(&self) {
        let word = self.word.load(Ordering::Acquire);
        if BreakerState::from_bits(word) != BreakerState::Closed {
            self.failures.store(0, Ordering::Relaxed);
            let _ = self.word.compare_exchange(
                word,
                pack(BreakerState::Closed, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The backend failed (error or timeout).
    pub fn failure(&self) {
        let word = self.word.load(Ordering::Acquire);
        match BreakerState::from_bits(word) {
            BreakerState::Closed => {
                let n = self
                    .failures
                    .fetch_add(1, Ordering::AcqRel)
                    .saturating_add(1);
                if n >= self.threshold {
                    let _ = self.word.compare_exchange(
                        word,
                        pack(BreakerState::Open, self.now()),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
            }
            BreakerState::HalfOpen => {
                // The probe failed: another cool-down.
                let _ = self.word.compare_exchange(
                    word,
                    pack(BreakerState::Open, self.now()),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            BreakerState::Open => {}
        }
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_bits(self.word.load(Ordering::Acquire))
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cooldown_ms: u64) -> (CircuitBreaker<ManualClock>, ManualClock) {
        let clock = ManualClock::default();
        clock.advance(Duration::from_secs(5));
        let b = CircuitBreaker::with_clock(
            BreakerConfig {
                failures,
                cooldown: Duration::from_millis(cooldown_ms),
            },
            clock.clone(),
        );
        (b, clock)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (b, _) = breaker(3, 1000);
        b.failure();
        b.failure();
        b.success(); // resets the count
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
    }

    #[test]
    fn recovered_closes_an_open_breaker_but_leaves_a_closed_ones_count() {
        let (b, _) = breaker(3, 1000);
        b.failure();
        b.failure();
        b.recovered();
        // Closed: its count stands, the next failure opens it.
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        b.recovered();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let (b, clock) = breaker(3, 1000);
        for _ in 0..3 {
            b.failure();
        }
        clock.advance(Duration::from_millis(999));
        assert!(!b.allow());
        clock.advance(Duration::from_millis(1));
        assert!(b.allow(), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "only one probe");
        assert!(!b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn failed_probe_reopens_for_another_cooldown() {
        let (b, clock) = breaker(2, 500);
        b.failure();
        b.failure();
        clock.advance(Duration::from_millis(500));
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_millis(499));
        assert!(!b.allow());
        clock.advance(Duration::from_millis(1));
        assert!(b.allow());
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn lost_probe_is_replaced_after_a_cooldown() {
        let (b, clock) = breaker(1, 100);
        b.failure();
        clock.advance(Duration::from_millis(100));
        assert!(b.allow(), "probe that never reports");
        clock.advance(Duration::from_millis(99));
        assert!(!b.allow());
        clock.advance(Duration::from_millis(1));
        assert!(b.allow(), "a new probe");
    }

    #[test]
    fn failures_while_open_do_not_extend_the_cooldown() {
        let (b, clock) = breaker(1, 100);
        b.failure();
        clock.advance(Duration::from_millis(60));
        b.failure(); // a slow call that started before the breaker opened
        clock.advance(Duration::from_millis(40));
        assert!(b.allow());
    }

    #[test]
    fn gauge_values() {
        assert_eq!(BreakerState::Closed.as_i64(), 0);
        assert_eq!(BreakerState::Open.as_i64(), 1);
        assert_eq!(BreakerState::HalfOpen.as_i64(), 2);
    }

    #[test]
    fn one_probe_among_many_threads() {
        let (b, clock) = breaker(1, 10);
        b.failure();
        clock.advance(Duration::from_millis(10));
        let b = Arc::new(b);
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, admitted) = (b.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if b.allow() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1);
    }
}
