//! Usage analytics, off the request path, one concept per module:
//!
//! - [`recorder`]: the `logging` phase hands every routed request to
//!   [`UsageRecorder::record`] (in-memory aggregation, never blocks);
//! - [`open`]: a request not reported yet, so that one a stop cuts
//!   before `logging` is still recorded, before the last write;
//! - [`buffer`]: what the flusher holds until it is written, written as
//!   batches that count once even when a write is retried after a timeout;
//! - [`flusher`]: [`UsageFlusher`], the background service that writes every
//!   `usage.flush_interval`;
//! - [`heartbeat`]: this instance's row in `instances`;
//! - [`retention`]: deleting old usage and violations;
//! - [`spends`]: the local limiter's credit spends, written with each flush;
//! - [`quota_counts`]: the local limiter's quota counts, written with each flush;
//! - [`shutdown`]: the shutdown protocol (graceful and fast stops), which
//!   the server wires in.

pub mod buffer;
pub mod flusher;
pub mod heartbeat;
pub mod open;
pub mod quota_counts;
pub mod recorder;
pub mod retention;
pub mod shutdown;
pub mod spends;

pub use buffer::Pending;
pub use flusher::UsageFlusher;
pub use recorder::{
    Drained, RowKey, TotalsSnapshot, UsageEvent, UsageRecorder, DEFAULT_MAX_ROWS,
    MAX_HELD_AGGREGATES, MAX_HELD_VIOLATIONS,
};
