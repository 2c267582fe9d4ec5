//! Limiters: who is limited ([`Subject`]), by which buckets ([`Bucket`]), and
//! the backends that decide. The in-process backend lives in [`local`].

pub mod backends;
pub mod breaker;
pub mod concurrency;
pub mod cost;
pub mod credits;
pub mod events;
pub mod identity;
pub mod local;
pub mod quota;
pub mod quota_adjust;
pub mod redis;
#[doc(hidden)]
pub mod scenarios;
pub mod sharded;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use tollgate_core::limits::{Limit, Policy};

pub use local::LocalLimiter;

/// Whose buckets a request takes tokens from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An API key, by its id.
    Key(i64),
    /// A client IP, on `auth: none` routes.
    Ip(IpAddr),
    /// An identity, by its id: the owner of `scope: identity` buckets, one
    /// for all its keys (see [`identity`]).
    Identity(i64),
    /// A key of an identity, on a request that takes from identity-scoped
    /// buckets: those are the identity's, the others the key's (see
    /// [`identity`]). Decided in one atomic step like any subject.
    Member { key: i64, identity: i64 },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Key(id) => write!(f, "k{id}"),
            Subject::Ip(ip) => write!(f, "ip{ip}"),
            // A member's buckets all carry its identity's hash tag.
            Subject::Identity(id) | Subject::Member { identity: id, .. } => write!(f, "i{id}"),
        }
    }
}

/// Where a bucket's limit comes from, which decides the bucket's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The key's own or its plan's limits: one bucket per key, shared by all routes.
    Key,
    /// A route's extra limits: one bucket per key and route.
    Route(&'a str),
}

/// One token bucket a subject has: a limit plus a stable identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Stable 64-bit id (the same in every process).
    pub id: u64,
    /// This process's small number for `id` (never 0), for the local store.
    pub slot: u32,
    /// Stable readable id, `p:minute` or `r:users:route`, for the Redis key.
    pub name: Arc<str>,
    /// The identity plus the limit's values (rate, per, burst, cost): it
    /// changes when the limit does, so a refusal cached under the old values
    /// is not served once a limit is raised.
    pub fingerprint: u64,
    pub limit: Arc<Limit>,
    /// The limit prepared for the arithmetic and the reported state.
    pub policy: Policy,
    /// `scope: identity`: one bucket per identity (per key for a key
    /// without one).
    pub identity_scope: bool,
    /// This limit's member of `RateLimit-Policy`, rendered once.
    pub policy_header: Arc<str>,
    /// A route's cost reservation ([`cost::reserving`]): decided in Redis
    /// without leases, settled when the response arrives.
    pub reserved: bool,
}

impl Bucket {
    /// This bucket for requests that take `cost` tokens each: the same
    /// bucket (id, slot, name: the same stored state and Redis key) with its
    /// own fingerprint (`tag` and cost), so a refusal cached for one cost is
    /// never served for another.
    pub fn at_cost(&self, cost: u64, tag: &str) -> Bucket {
        let limit = self.limit.at_cost(cost);
        Bucket {
            fingerprint: stable_hash(&format!("{}\u{0}{tag}\u{0}{cost}", self.fingerprint)),
            policy: Policy::new(&limit),
            limit: Arc::new(limit),
            name: self.name.clone(),
            policy_header: self.policy_header.clone(),
            ..*self
        }
    }

    pub fn new(scope: Scope<'_>, limit: Limit) -> Self {
        let identity_scope = limit.scope == tollgate_core::limits::LimitScope::Identity;
        let name: Arc<str> = match scope {
            Scope::Key => format!("p:{}", limit.name),
            Scope::Route(route) => format!("r:{route}:{}", limit.name),
        }
        .into();
        // A token bucket stores time in its own definition's units: keys
        // of one identity on plans that define a shared limit differently
        // get one bucket per definition, never one request of a 5/day plan
        // costing 200 of a 1000/day one. (A quota counts requests: one
        // count whatever the amounts.)
        let name = if identity_scope && limit.quota.is_none() {
            let definition = stable_hash(&format!(
                "{}\u{0}{}\u{0}{:?}",
                limit.rate,
                limit.per.as_nanos(),
                limit.burst
            ));
            format!("{name}~{:08x}", definition & 0xffff_ffff).into()
        } else {
            name
        };
        let fingerprint = stable_hash(&format!(
            "{name}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{:?}",
            limit.rate,
            limit.per.as_nanos(),
            limit.burst,
            limit.cost
        ));
        let fingerprint = quota::fingerprint(fingerprint, &limit);
        let policy = Policy::new(&limit);
        let id = stable_hash(&name);
        // Moving a limit between scopes moves its bucket: a refusal cached
        // under the old owner is not served for the new one.
        let fingerprint = if identity_scope {
            stable_hash(&format!("{fingerprint}\u{0}identity"))
        } else {
            fingerprint
        };
        Self {
            identity_scope,
            id,
            slot: slot_of(id, &name),
            name,
            fingerprint,
            policy_header: crate::headers::policy_member(&policy).into(),
            policy,
            limit: Arc::new(limit),
            reserved: false,
        }
    }
}

/// The local limiter stores a 32-bit slot per bucket instead of the 64-bit
/// id: one number per distinct bucket identity (`p:<limit>` or
/// `r:<route>:<limit>`) ever compiled in this process, never reused. That is
/// bounded by the names in the configs and plans, not by keys or requests.
fn slot_of(id: u64, name: &Arc<str>) -> u32 {
    let mut slots = SLOTS.lock();
    let next = u32::try_from(slots.ids.len() + 1).unwrap_or(u32::MAX);
    let slot = *slots.ids.entry(id).or_insert(next);
    slots.names.entry(slot).or_insert_with(|| name.clone());
    slot
}

/// Every slot given out, both ways.
#[derive(Default)]
struct Slots {
    ids: HashMap<u64, u32>,
    names: HashMap<u32, Arc<str>>,
}

static SLOTS: LazyLock<Mutex<Slots>> = LazyLock::new(Default::default);

/// The bucket name a slot was given for (quota counts written to the
/// database name their bucket).
pub fn slot_name(slot: u32) -> Option<Arc<str>> {
    SLOTS.lock().names.get(&slot).cloned()
}

/// The slot of the bucket named `name` (a quota count read back from the
/// database), the one a [`Bucket`] of that name gets.
pub fn slot_for_name(name: &str) -> u32 {
    let name: Arc<str> = name.into();
    slot_of(stable_hash(&name), &name)
}

fn stable_hash(s: &str) -> u64 {
    // Fixed seeds: ids must not change between processes or restarts.
    let state = ahash::RandomState::with_seeds(0x7467, 0x6174, 0x6567, 0x6174);
    state.hash_one(s)
}

/// Buckets compiled once per plan / route / key and shared by every request.
pub type Buckets = Arc<[Bucket]>;

pub fn compile(scope: Scope<'_>, limits: &[Limit]) -> Buckets {
    limits
        .iter()
        .map(|l| Bucket::new(scope, l.clone()))
        .collect::<Vec<_>>()
        .into()
}

/// A limiter config whose Redis has no URL, so every Redis-backend decision
/// is the `on_redis_error: local` fallback's (unit tests).
#[cfg(test)]
pub(crate) fn fallback_only(
    backend: tollgate_core::config::LimiterBackend,
) -> tollgate_core::config::LimiterConfig {
    use std::time::Duration;
    tollgate_core::config::LimiterConfig {
        backend,
        redis_url: None,
        redis_timeout: Duration::from_millis(20),
        on_redis_error: tollgate_core::config::OnRedisError::Local,
        redis_ca_file: None,
        concurrency_lease: Duration::from_secs(10),
        lease_ttl: Duration::ZERO,
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use crate::headers::{join_values, policy, policy_value};

    fn members(buckets: &[Bucket]) -> impl Iterator<Item = &str> {
        buckets.iter().map(|b| &*b.policy_header)
    }

    /// The pre-rendered value is exactly what rendering the reported
    /// states gives, for one list and for two joined.
    #[test]
    fn pre_rendered_policy_is_the_rendered_one() {
        use std::time::Duration;
        use tollgate_core::limits::{Decision, Limit};

        let limit = |name: &str, rate, per, burst| Limit {
            name: name.into(),
            rate,
            per: Duration::from_secs(per),
            burst,
            cost: None,
            quota: None,
            scope: Default::default(),
        };
        let plan = [
            Bucket::new(Scope::Key, limit("min\\ute", 60, 60, None)),
            Bucket::new(
                Scope::Key,
                limit("day", 10_000_000_000_000_000, 86_400, Some(5)),
            ),
        ];
        let route = [Bucket::new(Scope::Route("r"), limit("\"q\"", 10, 1, None))];
        let all: Vec<&Bucket> = plan.iter().chain(&route).collect();
        let d: Decision = LocalLimiter::new(1).check(&Subject::Key(1), &all);
        let joined = join_values(
            policy_value(members(&plan)).as_ref(),
            policy_value(members(&route)).as_ref(),
        )
        .expect("value");
        assert_eq!(joined.to_str().expect("ascii"), policy(&d.limits));
        assert_eq!(
            policy_value(all.iter().map(|b| &*b.policy_header)).expect("value"),
            joined
        );
        assert_eq!(
            join_values(None, policy_value(members(&route)).as_ref()),
            policy_value(members(&route))
        );
    }
}
