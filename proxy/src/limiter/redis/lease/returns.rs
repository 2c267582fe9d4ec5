//! Giving back the unspent tokens of idle subjects' leases, from the
//! limiter's runtime (an active subject gives them back with its next call).

use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tokio::runtime::Handle;

use super::{LeaseArgs, Leases, Returned};
use crate::limiter::redis::conn::Conn;
use crate::limiter::redis::script::{invocation, ScriptArgs};
use crate::limiter::{Bucket, Subject};

/// Every half lease, give back the tokens of leases that expired at least
/// half a lease ago: one script call per subject (cost 0), all sent at once
/// on the multiplexed connection (one pipeline), each bounded by `timeout`
/// (at least a second). A lost return loses its tokens: fewer admissions,
/// never more. Nothing runs without leases.
pub(in crate::limiter::redis) fn spawn_returns(
    handle: &Handle,
    leases: Arc<Leases>,
    conn: Conn,
    timeout: Duration,
) {
    if !leases.enabled() {
        return;
    }
    let every = (leases.ttl() / 2).max(Duration::from_millis(5));
    let timeout = timeout.max(Duration::from_secs(1));
    drop(handle.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let back = leases.drain_expired(Instant::now(), every);
            if back.is_empty() {
                continue;
            }
            let mut calls = tokio::task::JoinSet::new();
            for (subject, returned) in back {
                let mut conn = conn.clone();
                calls.spawn(async move {
                    let n = returned.len();
                    let inv = return_call(&subject, &returned);
                    match tokio::time::timeout(timeout, conn.invoke(&inv)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::debug!("returning {n} leases: {e}"),
                        Err(_) => tracing::debug!("returning {n} leases: timed out"),
                    }
                });
            }
            while calls.join_next().await.is_some() {}
        }
    }));
}

/// The script call that gives `returned` back and takes nothing.
pub fn return_call(subject: &Subject, returned: &[Returned]) -> ::redis::ScriptInvocation<'static> {
    let buckets: SmallVec<[&Bucket; 4]> = returned.iter().map(|r| &r.bucket).collect();
    let args: SmallVec<[ScriptArgs; 4]> = returned
        .iter()
        .map(|r| ScriptArgs {
            cost: 0,
            ..ScriptArgs::new(&r.bucket.limit)
        })
        .collect();
    let asked: SmallVec<[LeaseArgs; 4]> = returned
        .iter()
        .map(|r| LeaseArgs {
            ret: r.tokens,
            want: 0,
        })
        .collect();
    invocation(subject, &buckets, &args, &asked, None)
}
