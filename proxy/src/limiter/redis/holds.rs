//! Per-key concurrency across proxies (`lua/concurrency.lua`): a request
//! takes a hold in the key's sorted set in Redis, renewed by this process
//! while the request runs ([`RedisLimiter::renew_holds`], from the
//! background) and removed when it ends ([`RedisHold`]'s drop). A proxy that
//! dies stops renewing, and its holds expire after one lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use ::redis::Script;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::{Conn, RedisLimitError, RedisLimiter};
use crate::limiter::Subject;

/// The Lua source, loaded at build time.
pub const SCRIPT_SOURCE: &str = include_str!("../../../../lua/concurrency.lua");

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SCRIPT_SOURCE));

/// The Redis key of a key's holds, e.g. `tg:{k42}:inflight` (the same hash
/// tag as its token buckets).
pub fn holds_key(key_id: i64) -> String {
    format!("tg:{{{}}}:inflight", Subject::Key(key_id))
}

/// Hold ids: unique per process start (a random prefix) and request.
static NEXT_HOLD: AtomicU64 = AtomicU64::new(0);
static PROCESS_TAG: LazyLock<String> =
    LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());

/// One request's slot in Redis; released (ZREM, in the background) on drop.
pub struct RedisHold {
    limiter: Arc<RedisLimiter>,
    key_id: i64,
    id: String,
}

impl std::fmt::Debug for RedisHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHold")
            .field("key_id", &self.key_id)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for RedisHold {
    fn drop(&mut self) {
        self.limiter.holds.lock().remove(&self.id);
        let (key, id) = (holds_key(self.key_id), std::mem::take(&mut self.id));
        let timeout = self.limiter.timeout.max(Duration::from_secs(1));
        let mut conn = self.limiter.conn.clone();
        // Fire and forget: if it is lost, the hold expires after its lease.
        drop(self.limiter.handle.spawn(async move {
            let cmd = {
                let mut c = ::redis::cmd("ZREM");
                c.arg(key).arg(id);
                c
            };
            let _ = tokio::time::timeout(timeout, conn.query_i64(&cmd)).await;
        }));
    }
}

impl RedisLimiter {
    /// Take one of the key's `max` slots across every proxy on this Redis,
    /// for the limiter's lease (renewed while held). `Ok(None)`: all slots are taken.
    /// Bounded by the timeout, skipped while the breaker is open, like
    /// [`Self::check`].
    pub async fn acquire_hold(
        self: &Arc<Self>,
        key_id: i64,
        max: u32,
    ) -> Result<Option<RedisHold>, RedisLimitError> {
        self.acquire_hold_by(key_id, max, self.deadline()).await
    }

    /// [`Self::acquire_hold`] bounded by the request's one Redis deadline
    /// (see [`Self::check_by`]).
    pub async fn acquire_hold_by(
        self: &Arc<Self>,
        key_id: i64,
        max: u32,
        deadline: Instant,
    ) -> Result<Option<RedisHold>, RedisLimitError> {
        if max == 0 {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(RedisLimitError::Timeout(self.timeout));
        }
        if !self.breaker.allow() {
            return Err(RedisLimitError::CircuitOpen);
        }
        let id = format!(
            "{}:{}",
            *PROCESS_TAG,
            NEXT_HOLD.fetch_add(1, Ordering::Relaxed)
        );
        let lease_ms = u64::try_from(self.lease.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut inv = SCRIPT.prepare_invoke();
        inv.key(holds_key(key_id))
            .arg("acquire")
            .arg(max)
            .arg(lease_ms)
            .arg(&id);
        let result = self
            .run(deadline, move |mut conn| async move {
                conn.invoke_i64(&inv).await
            })
            .await;
        let hold = || RedisHold {
            limiter: self.clone(),
            key_id,
            id: id.clone(),
        };
        match result {
            Ok(1) => {
                self.breaker.success();
                self.holds.lock().insert(id.clone(), key_id);
                Ok(Some(hold()))
            }
            Ok(_) => {
                self.breaker.success();
                Ok(None)
            }
            Err(e) => {
                self.failed();
                // The script may have run: remove what it may have added.
                drop(hold());
                Err(e)
            }
        }
    }

    /// Give every hold of this process a new lease now (the limiter's own
    /// task does it every third of the lease). Returns how many holds were
    /// renewed.
    pub async fn renew_holds(&self) -> Result<u64, RedisLimitError> {
        let (holds, conn, lease) = (self.holds.clone(), self.conn.clone(), self.lease);
        let task = self.handle.spawn(renew(holds, conn, lease));
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), task).await {
            Ok(Ok(result)) => result.map_err(|e| RedisLimitError::from_redis(&e)),
            Ok(Err(join)) => Err(RedisLimitError::Other(format!("redis task: {join}"))),
            Err(_) => Err(RedisLimitError::Timeout(self.timeout)),
        }
    }

    /// Holds this process has now.
    pub fn holds_held(&self) -> usize {
        self.holds.lock().len()
    }
}

/// Holds of this process: hold id → key id.
pub(super) type Holds = Arc<Mutex<HashMap<String, i64>>>;

/// One renewal pass over every hold of this process.
async fn renew(holds: Holds, mut conn: Conn, lease: Duration) -> Result<u64, ::redis::RedisError> {
    let mut by_key: HashMap<i64, Vec<String>> = HashMap::new();
    for (id, key) in holds.lock().iter() {
        by_key.entry(*key).or_default().push(id.clone());
    }
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut renewed = 0;
    for (key, ids) in by_key {
        let mut inv = SCRIPT.prepare_invoke();
        inv.key(holds_key(key)).arg("renew").arg(lease_ms);
        for id in &ids {
            inv.arg(id);
        }
        renewed += u64::try_from(conn.invoke_i64(&inv).await?).unwrap_or(0);
    }
    Ok(renewed)
}

/// Renew this process' holds every third of the lease, for as long as the
/// limiter's runtime runs (each pass bounded by the lease itself).
pub(super) fn spawn_renewal(handle: &Handle, holds: Holds, conn: Conn, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(50));
    drop(handle.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if holds.lock().is_empty() {
                continue;
            }
            match tokio::time::timeout(lease, renew(holds.clone(), conn.clone(), lease)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!("renewing concurrency holds: {e}"),
                Err(_) => tracing::debug!("renewing concurrency holds: timed out"),
            }
        }
    }));
}
