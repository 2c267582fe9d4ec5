//! The Redis keys of a quota's count and a key's credit balance, for the
//! readers outside the limiter (the admin API's quota and credit use). The
//! proxy's limiter builds the same keys from its buckets
//! (`redis::script::bucket_key`, `redis::credits::balance_key`); a test in
//! the proxy (`limiter::quota_adjust`) pins them equal.

/// Whose count: a key alone, a key of an identity (its own quota), or an
/// identity (a `scope: identity` quota, shared by its keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Key(i64),
    Member { key: i64, identity: i64 },
    Identity(i64),
}

impl Holder {
    /// The holder of `key`'s quota with `identity_scope` for a key of
    /// `identity`.
    pub fn of_key(key: i64, identity: Option<i64>, identity_scope: bool) -> Self {
        match identity {
            Some(i) if identity_scope => Self::Identity(i),
            Some(i) => Self::Member { key, identity: i },
            None => Self::Key(key),
        }
    }
}

/// The count of quota `name` (a key's, an identity's or a plan's limit:
/// `p:<name>`) in the period starting at `start_us`.
pub fn quota_count_key(holder: Holder, name: &str, start_us: i64) -> String {
    let start_s = start_us.div_euclid(1_000_000);
    match holder {
        Holder::Key(k) => format!("tg:{{k{k}}}:p:{name}:q-{start_s}"),
        Holder::Member { key, identity } => {
            format!("tg:{{i{identity}}}:k{key}:p:{name}:q-{start_s}")
        }
        Holder::Identity(i) => format!("tg:{{i{i}}}:p:{name}:q-{start_s}"),
    }
}

/// A key's credit balance (a key of an identity keeps it under the
/// identity's hash tag).
pub fn key_balance_key(key: i64, identity: Option<i64>) -> String {
    match identity {
        Some(i) => format!("tg:{{i{i}}}:credits:k{key}"),
        None => format!("tg:{{k{key}}}:credits"),
    }
}
