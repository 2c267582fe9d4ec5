//! The cost ladder of the load harness (`benches/load/run --sections ladder`):
//! `TOLLGATE_BENCH_LADDER=N`, read once when the gateway is built, turns
//! Tollgate's request work on one step at a time over the same
//! pass-through, so that the CPU each step costs can be read in one run.
//! Unset (every deployment) means every step. It is a measuring tool, not a
//! setting: with a low step the proxy checks no key and enforces no limit,
//! so any value other than the full ladder is logged as a warning at start.

/// The steps, in the order they are turned on. Each includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Forward to the first route's upstream: no edge checks, nothing else.
    Pass = 0,
    /// Edge checks, request id, route matching.
    Route = 1,
    /// Key extraction, parse and lookup.
    Key = 2,
    /// Applicable limits and the limiter's decision.
    Limiter = 3,
    /// Path rewrite and header edits on the way up.
    UpstreamHeaders = 4,
    /// `RateLimit-*` and `X-Request-Id` on the way down, target latency.
    ResponseHeaders = 5,
    /// `tollgate_requests_total` and the request duration histogram.
    Metrics = 6,
    /// Usage recording (the access log is `log.access_log`, step 8 of the harness).
    Usage = 7,
}

/// The environment variable that selects the last step turned on.
pub const ENV: &str = "TOLLGATE_BENCH_LADDER";

/// Which steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder(Step);

impl Default for Ladder {
    fn default() -> Self {
        Self(Step::Usage)
    }
}

impl Ladder {
    /// From [`ENV`]: the full ladder when it is unset or not a step number.
    pub fn from_env() -> Self {
        let Ok(v) = std::env::var(ENV) else {
            return Self::default();
        };
        match Self::parse(&v) {
            Some(l) => {
                if l != Self::default() {
                    tracing::warn!(
                        "{ENV}={v}: bench mode, request steps after {:?} are OFF \
                         (keys and limits may not be enforced)",
                        l.0
                    );
                }
                l
            }
            None => {
                tracing::warn!("{ENV}={v:?} is not a step 0..=7; every step runs");
                Self::default()
            }
        }
    }

    /// `"0"` … `"7"` (a larger number means every step).
    pub fn parse(v: &str) -> Option<Self> {
        let n: u8 = v.trim().parse().ok()?;
        Some(Self(match n {
            0 => Step::Pass,
            1 => Step::Route,
            2 => Step::Key,
            3 => Step::Limiter,
            4 => Step::UpstreamHeaders,
            5 => Step::ResponseHeaders,
            6 => Step::Metrics,
            _ => Step::Usage,
        }))
    }

    /// Whether `step` runs.
    pub fn on(self, step: Step) -> bool {
        step <= self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_runs_every_step() {
        let l = Ladder::default();
        for s in [
            Step::Pass,
            Step::Route,
            Step::Key,
            Step::Limiter,
            Step::Usage,
        ] {
            assert!(l.on(s));
        }
    }

    #[test]
    fn a_step_includes_the_ones_before() {
        let l = Ladder::parse("2").expect("2");
        assert!(l.on(Step::Pass) && l.on(Step::Route) && l.on(Step::Key));
        assert!(!l.on(Step::Limiter) && !l.on(Step::Usage));
        assert_eq!(Ladder::parse("99"), Some(Ladder::default()));
    }

    #[test]
    fn garbage_is_not_a_step() {
        for v in ["", "-1", "x", "1.5", "256"] {
            assert_eq!(Ladder::parse(v), None, "{v:?}");
        }
    }
}
