//! `routes[].max_body_bytes`: a request body larger than the route allows is
//! refused with 413 as soon as its declared `Content-Length` or the bytes
//! streamed so far say so, before the upstream sees more than the limit.

use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;

/// Whether the declared `Content-Length` is over `max` (0 = no cap). A
/// malformed value was already refused at the edge.
pub fn declared_over(req: &RequestHeader, max: u64) -> bool {
    if max == 0 {
        return false;
    }
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().unwrap_or(u64::MAX))
        .is_some_and(|n| n > max)
}

/// The body bytes of one request seen so far against its cap.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counter {
    max: u64,
    seen: u64,
}

impl Counter {
    pub fn new(max: u64) -> Self {
        Self { max, seen: 0 }
    }

    /// Count the next piece; `false` once the total is over the cap (that
    /// piece must not be forwarded).
    pub fn take(&mut self, n: usize) -> bool {
        self.seen = self.seen.saturating_add(n as u64);
        self.max == 0 || self.seen <= self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(v: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/a", None).expect("req");
        r.insert_header("Content-Length", v).expect("cl");
        r
    }

    #[test]
    fn declared_lengths_over_the_cap_are_caught() {
        assert!(!declared_over(&with_length("10"), 10));
        assert!(declared_over(&with_length("11"), 10));
        assert!(declared_over(&with_length("99999999999999999999999"), 10));
        assert!(!declared_over(&with_length("99999999999999999999999"), 0));
        let none = RequestHeader::build("POST", b"/a", None).expect("req");
        assert!(!declared_over(&none, 10));
    }

    #[test]
    fn the_piece_that_crosses_the_cap_is_refused() {
        let mut c = Counter::new(10);
        assert!(c.take(4));
        assert!(c.take(6));
        assert!(c.take(0));
        assert!(!c.take(1));
        let mut none = Counter::new(0);
        assert!(none.take(usize::MAX));
        assert!(none.take(usize::MAX));
    }
}
