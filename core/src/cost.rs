//! Costs known from the response (`routes[].cost`): a route reserves tokens
//! before forwarding and settles them when the upstream's answer says what
//! the request really cost.
//!
//! - **Admission.** On a route with `cost`, the request takes `reserve`
//!   tokens from each of its buckets (in place of each limit's own `cost`),
//!   in the ordinary all-or-nothing step: refused if the reservation does
//!   not fit.
//! - **Settlement.** When the response headers arrive, the actual cost is
//!   read from `from_response_header` ([`parse_actual`]); [`settlement`]
//!   decides how many tokens go back to, or are taken from, each bucket; the
//!   backends apply it with [`settle`]'s arithmetic. A status listed in
//!   `refund_on` (or an upstream failure answered with such a status)
//!   refunds the whole reservation; a missing or invalid header keeps it.
//! - **The bound.** Tokens taken beyond the reservation may drive a bucket
//!   into debt (its TAT beyond `now + burst × T`: later requests wait), but
//!   never by more than one reservation: over any window of length `t`, the
//!   tokens charged are at most `burst + reserve + t / T` (proved by the
//!   property test in `core/tests/cost_props.rs`). An actual cost beyond that is
//!   not charged (counted by the proxy's settlement metric).

use std::fmt;

/// The largest actual cost a response header may state: 2^53 − 1, exact in
/// the Redis script's doubles. A larger number is invalid (the reservation
/// stays).
pub const MAX_ACTUAL_COST: u64 = (1 << 53) - 1;

/// A `refund_on` entry: a status class or one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusMatch {
    /// `4xx` or `5xx`: the hundreds digit.
    Class(u16),
    /// One status code, 100–599.
    Code(u16),
}

impl StatusMatch {
    /// Parse `5xx`, `4xx` (any case) or a status code `100`–`599`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "4xx" => return Some(Self::Class(4)),
            "5xx" => return Some(Self::Class(5)),
            _ => {}
        }
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u16 = s.parse().ok()?;
        (100..=599).contains(&code).then_some(Self::Code(code))
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Class(c) => status / 100 == c,
            Self::Code(c) => status == c,
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Class(c) => write!(f, "{c}xx"),
            Self::Code(c) => write!(f, "{c}"),
        }
    }
}

/// `routes[].cost`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCost {
    /// Tokens taken from each bucket at admission (≥ 1).
    pub reserve: u64,
    /// The response header stating the actual cost, lower-case; removed
    /// before the client sees the response.
    pub from_response_header: String,
    /// Statuses on which the whole reservation is given back.
    pub refund_on: Vec<StatusMatch>,
}

impl RouteCost {
    pub fn refunds(&self, status: u16) -> bool {
        self.refund_on.iter().any(|m| m.matches(status))
    }
}

/// Why a cost header was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CostHeaderError {
    #[error("missing")]
    Missing,
    #[error("sent more than once")]
    Repeated,
    #[error("not a whole number of 1 to 16 digits")]
    Invalid,
    #[error("above {MAX_ACTUAL_COST}")]
    TooLarge,
    /// The upstream gave no response (the proxy answered, or the client left).
    #[error("no response from the upstream")]
    NoResponse,
}

impl CostHeaderError {
    /// Label of the settlement metric.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Repeated => "repeated",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::NoResponse => "no_response",
        }
    }
}

/// The actual cost from the header's values (each occurrence one value),
/// strictly: one occurrence, ASCII digits only (surrounding spaces or tabs
/// allowed, as HTTP allows), at most 16 digits, at most [`MAX_ACTUAL_COST`].
/// No sign, no fraction, no list.
pub fn parse_actual<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
) -> Result<u64, CostHeaderError> {
    let first = values.next().ok_or(CostHeaderError::Missing)?;
    if values.next().is_some() {
        return Err(CostHeaderError::Repeated);
    }
    let digits = trim_ows(first);
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(CostHeaderError::Invalid);
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    if n > MAX_ACTUAL_COST {
        return Err(CostHeaderError::TooLarge);
    }
    Ok(n)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What settling a request does to each of its buckets, relative to the
/// reservation taken at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Give tokens back (the actual cost was lower, or a refund).
    Return(u64),
    /// Take more tokens (the actual cost was higher), within the debt bound.
    Take(u64),
    /// Nothing to do: the reservation was the cost.
    Keep,
}

/// Why a settlement is what it is (the metric's `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The header's value.
    Header,
    /// A `refund_on` status: everything back.
    Refund,
    /// No usable header: the reservation stays.
    Kept(CostHeaderError),
}

impl Basis {
    pub fn label(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Refund => "refund",
            Self::Kept(e) => e.kind(),
        }
    }
}

/// Decide the settlement of a request that reserved `cost.reserve` and was
/// answered `status` (the upstream's, or the proxy's own for an upstream
/// failure) with the header parsed as `actual`.
pub fn settlement(
    cost: &RouteCost,
    status: u16,
    actual: Result<u64, CostHeaderError>,
) -> (Settle, Basis) {
    if cost.refunds(status) {
        return (Settle::Return(cost.reserve), Basis::Refund);
    }
    match actual {
        Err(e) => (Settle::Keep, Basis::Kept(e)),
        Ok(a) if a < cost.reserve => (Settle::Return(cost.reserve - a), Basis::Header),
        Ok(a) if a > cost.reserve => (Settle::Take(a - cost.reserve), Basis::Header),
        Ok(_) => (Settle::Keep, Basis::Header),
    }
}

/// One bucket's settlement on its TAT, in any time unit: `interval` per
/// token, capacity `burst` tokens, `reserve` the request's (clamped)
/// reservation, which is also the most debt a take may leave. Returns the
/// new TAT and the tokens given back or taken.
///
/// - Return `n`: the TAT moves back by `n × interval`, never below `now` (a
///   full bucket stays full: tokens that refilled since the reservation are
///   not given twice). The count is rounded up (a token partly refilled
///   meanwhile counts as given back).
/// - Take `n`: the TAT moves forward from `max(tat, now)` by `n` whole
///   tokens, but never beyond `now + (burst + reserve) × interval`: the debt
///   is at most one reservation.
///
/// `lua/settle.lua` does the same in µs.
pub fn settle(
    tat: u64,
    now: u64,
    interval: u64,
    burst: u64,
    reserve: u64,
    s: Settle,
) -> (u64, u64) {
    let t = interval.max(1);
    match s {
        Settle::Keep => (tat, 0),
        Settle::Return(n) => {
            if tat <= now {
                return (tat, 0);
            }
            let new_tat = tat.saturating_sub(n.saturating_mul(t)).max(now);
            (new_tat, (tat - new_tat).div_ceil(t))
        }
        Settle::Take(n) => {
            let base = tat.max(now);
            let ceiling = now.saturating_add(burst.saturating_add(reserve).saturating_mul(t));
            let room = ceiling.saturating_sub(base) / t;
            let taken = n.min(room);
            (base + taken * t, taken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(reserve: u64, refund_on: &[&str]) -> RouteCost {
        RouteCost {
            reserve,
            from_response_header: "x-tollgate-cost".into(),
            refund_on: refund_on
                .iter()
                .map(|s| StatusMatch::parse(s).expect("status"))
                .collect(),
        }
    }

    #[test]
    fn status_matches() {
        assert_eq!(StatusMatch::parse("5XX"), Some(StatusMatch::Class(5)));
        assert_eq!(StatusMatch::parse("429"), Some(StatusMatch::Code(429)));
        for bad in [
            "", "6xx", "5x", "99", "600", "+50", "5 0", "1e2", "0500", "xx5",
        ] {
            assert_eq!(StatusMatch::parse(bad), None, "{bad:?}");
        }
        assert!(StatusMatch::Class(5).matches(503));
        assert!(!StatusMatch::Class(5).matches(499));
        assert!(StatusMatch::Code(429).matches(429));
        assert!(!StatusMatch::Code(429).matches(428));
    }

    #[test]
    fn actual_cost_is_parsed_strictly() {
        let one = |s: &'static str| parse_actual(std::iter::once(s.as_bytes()));
        assert_eq!(one("10"), Ok(10));
        assert_eq!(one(" 7\t"), Ok(7));
        assert_eq!(one("0"), Ok(0));
        assert_eq!(one("9007199254740991"), Ok(MAX_ACTUAL_COST));
        assert_eq!(one("9007199254740992"), Err(CostHeaderError::TooLarge));
        for bad in [
            "",
            " ",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "0x10",
            "1,2",
            "١٢",
            "12345678901234567",
            "99999999999999999999999",
        ] {
            assert_eq!(one(bad), Err(CostHeaderError::Invalid), "{bad:?}");
        }
        assert_eq!(
            parse_actual(std::iter::empty()),
            Err(CostHeaderError::Missing)
        );
        assert_eq!(
            parse_actual([&b"1"[..], &b"2"[..]].into_iter()),
            Err(CostHeaderError::Repeated)
        );
    }

    #[test]
    fn settlement_follows_status_then_header() {
        let c = cost(10, &["5xx", "429"]);
        assert_eq!(settlement(&c, 200, Ok(4)).0, Settle::Return(6));
        assert_eq!(settlement(&c, 200, Ok(25)).0, Settle::Take(15));
        assert_eq!(settlement(&c, 200, Ok(10)).0, Settle::Keep);
        assert_eq!(settlement(&c, 503, Ok(25)).0, Settle::Return(10));
        assert_eq!(settlement(&c, 429, Ok(25)).1, Basis::Refund);
        let (s, b) = settlement(&c, 200, Err(CostHeaderError::Invalid));
        assert_eq!((s, b.label()), (Settle::Keep, "invalid"));
        // A 4xx not listed is settled from the header like a success.
        assert_eq!(settlement(&c, 404, Ok(1)).0, Settle::Return(9));
    }

    #[test]
    fn settle_arithmetic() {
        // T = 10, burst 5, reserve 2; now = 1000.
        // Return: never below now.
        assert_eq!(settle(1030, 1000, 10, 5, 2, Settle::Return(2)), (1010, 2));
        assert_eq!(settle(1030, 1000, 10, 5, 2, Settle::Return(9)), (1000, 3));
        // Part of a token refilled since: the rest of it goes back.
        assert_eq!(settle(1025, 1000, 10, 5, 2, Settle::Return(9)), (1000, 3));
        assert_eq!(settle(1025, 1000, 10, 5, 2, Settle::Return(1)), (1015, 1));
        assert_eq!(settle(900, 1000, 10, 5, 2, Settle::Return(2)), (900, 0));
        // Take: from max(tat, now), at most into one reservation of debt.
        assert_eq!(settle(900, 1000, 10, 5, 2, Settle::Take(3)), (1030, 3));
        assert_eq!(settle(1050, 1000, 10, 5, 2, Settle::Take(3)), (1070, 2));
        assert_eq!(settle(1070, 1000, 10, 5, 2, Settle::Take(3)), (1070, 0));
        assert_eq!(
            settle(
                0,
                u64::MAX - 5,
                10,
                u64::MAX,
                u64::MAX,
                Settle::Take(u64::MAX)
            ),
            (u64::MAX - 5, 0)
        );
        assert_eq!(settle(1030, 1000, 10, 5, 2, Settle::Keep), (1030, 0));
    }
}
