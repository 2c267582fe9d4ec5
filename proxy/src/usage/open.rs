//! A request not reported yet. Pingora runs `logging` once per request,
//! except for one it drops: at the end of a stop's grace period every
//! request still in flight is dropped with its runtime (black-box round 13:
//! requests cut by a stop were never recorded). Each request's context
//! holds an [`Open`] until it reported; a context dropped with it records
//! what it knows instead. The last write after the server stopped waits
//! ([`UsageRecorder::wait_reported`]) until no request is open, so it
//! includes those.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::UsageRecorder;

/// One request that has not reported its usage yet.
#[derive(Debug)]
pub struct Open(Arc<UsageRecorder>);

impl Open {
    /// Where its usage goes.
    pub fn recorder(&self) -> &UsageRecorder {
        &self.0
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Release);
    }
}

impl UsageRecorder {
    /// A request starts: it is open until the returned value is dropped
    /// (after its usage was recorded).
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Requests open now.
    pub fn open_requests(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Block until no request is open, at most `limit` (polling every
    /// millisecond); whether none is.
    pub fn wait_reported(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.open_requests() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_open_until_dropped() {
        let r = UsageRecorder::new();
        let a = r.open();
        let b = r.open();
        assert_eq!(r.open_requests(), 2);
        assert!(!r.wait_reported(Duration::from_millis(5)));
        drop(a);
        drop(b);
        assert!(r.wait_reported(Duration::ZERO));
    }
}
