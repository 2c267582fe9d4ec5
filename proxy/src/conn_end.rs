//! [`ConnEnd`]: how a connection is ended from outside its own future (the
//! header deadline's answer, a revoked WebSocket). A flag and one waker: the
//! connection's future reads it on every poll with a few atomic operations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;

use atomic_waker::AtomicWaker;

/// Set once; the connection it belongs to ends at its next poll.
#[derive(Debug, Default)]
pub struct ConnEnd {
    ended: AtomicBool,
    waker: AtomicWaker,
}

impl ConnEnd {
    /// End the connection (at once if it is waiting; a flag it sees at its
    /// next poll if it is running).
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether it was ended; if not, `cx` is woken when it is.
    pub fn poll_ended(&self, cx: &mut Context<'_>) -> bool {
        if self.is_ended() {
            return true;
        }
        self.waker.register(cx.waker());
        // Ended between the check and the registration: seen here.
        self.is_ended()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    async fn ended(end: &ConnEnd) {
        poll_fn(|cx| {
            if end.poll_ended(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_and_a_later_one_sees_the_flag() {
        let end = Arc::new(ConnEnd::default());
        let waiter = tokio::spawn({
            let end = end.clone();
            async move { ended(&end).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "not ended yet");
        end.end();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        // Ended before anyone waits: seen at once.
        tokio::time::timeout(Duration::from_secs(5), ended(&end))
            .await
            .expect("seen");
    }
}
