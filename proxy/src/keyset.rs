//! The active key set: every key, by the SHA-256 of its secret, in memory.
//!
//! The proxy never reads the database per request. [`KeySet`] is rebuilt from
//! the database whenever its fingerprint changes (see `reload::KeyRefresher`)
//! and swapped in atomically.
//!
//! Compact, for a million keys in little memory (benches/memory.rs): keys are
//! indexed by the first 128 bits of the SHA-256 of their secret (finding a
//! secret that matches one needs a 2^128 preimage search, as much as for the
//! whole hash in practice), a key holds only what the request path reads, and
//! plan names are shared.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use ipnet::IpNet;
use tollgate_core::db::{Identity, KeyRecord};
use tollgate_core::keys::KeyHash;
use tollgate_core::rules::access::{parse_ips, Scopes};

use crate::limiter::{compile, Buckets, Scope};

pub use crate::identities::ActiveIdentity;

/// What the proxy needs to know about one key (what the request path reads).
#[derive(Debug)]
pub struct ActiveKey {
    pub id: i64,
    /// Shared by every key of the plan in one key set.
    pub plan: Option<Arc<str>>,
    /// The key's own limits, used instead of any plan's.
    pub own_buckets: Option<Buckets>,
    pub concurrency: Option<u32>,
    pub enabled: bool,
    /// Unix ms.
    pub expires_at: Option<i64>,
    /// Scopes and address rules, for the few keys that have them.
    pub access: Option<Box<KeyAccess>>,
    /// The id of the identity the key belongs to: a small integer that
    /// fits the struct's padding (see [`KeySet::identity`] for the rest).
    pub identity: Option<NonZeroU32>,
}

impl ActiveKey {
    /// The id of the key's identity, if it has one (for the request
    /// context: shared limits, credits, `X-Tollgate-Identity`).
    pub fn identity_id(&self) -> Option<i64> {
        self.identity.map(|i| i64::from(i.get()))
    }
}

/// A key's own scopes and `allowed_ips`, parsed once at load.
#[derive(Debug, Default, PartialEq)]
pub struct KeyAccess {
    pub scopes: Option<Scopes>,
    pub allowed_ips: Option<Vec<IpNet>>,
}

impl KeyAccess {
    /// `None` when the key has neither. A stored address list that no longer
    /// parses refuses every address (fail closed) and is logged.
    fn of(id: i64, scopes: Option<Scopes>, allowed_ips: Option<Vec<String>>) -> Option<Box<Self>> {
        if scopes.is_none() && allowed_ips.is_none() {
            return None;
        }
        let allowed_ips = allowed_ips.map(|l| {
            parse_ips("allowed_ips", &l).unwrap_or_else(|e| {
                tracing::error!(
                    key_id = id,
                    "stored allowed_ips refused ({e}): the key is refused from every address"
                );
                Vec::new()
            })
        });
        Some(Box::new(Self {
            scopes,
            allowed_ips,
        }))
    }
}

fn compact_id(id: i64) -> Option<NonZeroU32> {
    u32::try_from(id).ok().and_then(NonZeroU32::new)
}

/// A key's identity id, if that identity is loaded. An id past `u32::MAX`
/// (four billion identities) is logged and the key treated as having none.
fn compact_identity(
    key: i64,
    identity: i64,
    loaded: &HashMap<i64, Arc<ActiveIdentity>>,
) -> Option<NonZeroU32> {
    let id = compact_id(identity);
    if id.is_none() {
        tracing::error!(
            key_id = key,
            identity_id = identity,
            "identity id out of range: ignored"
        );
    }
    id.filter(|_| loaded.contains_key(&identity))
}

/// Why a well-formed key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Disabled,
    Expired,
}

impl KeyRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRejection::Unknown => "unknown",
            KeyRejection::Disabled => "disabled",
            KeyRejection::Expired => "expired",
        }
    }
}

/// The index: the first 128 bits of a secret's SHA-256.
type HashPrefix = [u8; 16];

fn prefix(hash: &KeyHash) -> HashPrefix {
    let mut p = [0u8; 16];
    p.copy_from_slice(&hash[..16]);
    p
}

#[derive(Debug, Default)]
pub struct KeySet {
    by_hash: HashMap<HashPrefix, Arc<ActiveKey>, ahash::RandomState>,
    /// Rotated-out secrets in their grace period, valid until the Unix ms.
    previous: HashMap<HashPrefix, (Arc<ActiveKey>, i64), ahash::RandomState>,
    keys: usize,
    /// The identities keys belong to, by id.
    identities: HashMap<NonZeroU32, Arc<ActiveIdentity>, ahash::RandomState>,
}

impl KeySet {
    pub fn from_records(records: Vec<KeyRecord>) -> Self {
        Self::from_records_with(records, Vec::new())
    }

    /// The key set with its keys' identities (a key naming an identity
    /// not in `identities`, deleted meanwhile, has none).
    pub fn from_records_with(records: Vec<KeyRecord>, identities: Vec<Identity>) -> Self {
        let mut plans: HashMap<String, Arc<str>> = HashMap::new();
        let identities = crate::identities::compile_all(identities, &mut |p: String| {
            plans
                .entry(p)
                .or_insert_with_key(|p| Arc::from(p.as_str()))
                .clone()
        });
        let mut by_hash = HashMap::with_capacity_and_hasher(records.len(), Default::default());
        let mut previous = HashMap::default();
        let keys = records.len();
        for r in records {
            let k = r.key;
            let plan = k.plan.map(|p| {
                plans
                    .entry(p)
                    .or_insert_with_key(|p| Arc::from(p.as_str()))
                    .clone()
            });
            let key = Arc::new(ActiveKey {
                id: k.id,
                plan,
                own_buckets: k.limits.as_deref().map(|l| compile(Scope::Key, l)),
                concurrency: k.concurrency,
                enabled: k.enabled,
                expires_at: k.expires_at,
                access: KeyAccess::of(k.id, k.scopes, k.allowed_ips),
                identity: k
                    .identity_id
                    .and_then(|i| compact_identity(k.id, i, &identities)),
            });
            if let Some((prev, until)) = r.previous {
                previous.insert(prefix(&prev), (key.clone(), until));
            }
            by_hash.insert(prefix(&r.hash), key);
        }
        previous.shrink_to_fit();
        let identities = identities
            .into_iter()
            .filter_map(|(id, i)| Some((compact_id(id)?, i)))
            .collect();
        Self {
            by_hash,
            previous,
            keys,
            identities,
        }
    }

    /// The identity `key` belongs to, if any.
    pub fn identity(&self, key: &ActiveKey) -> Option<&Arc<ActiveIdentity>> {
        key.identity.and_then(|id| self.identities.get(&id))
    }

    /// Every key loaded (each once).
    pub fn keys(&self) -> impl Iterator<Item = &Arc<ActiveKey>> {
        self.by_hash.values()
    }

    /// Every identity a loaded key belongs to.
    pub fn identities(&self) -> impl Iterator<Item = &Arc<ActiveIdentity>> {
        self.identities.values()
    }

    /// Number of keys (not secrets) loaded.
    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// The key a (well-formed) secret belongs to, if it may be used at `now_ms`.
    pub fn lookup(&self, hash: &KeyHash, now_ms: i64) -> Result<&Arc<ActiveKey>, KeyRejection> {
        let p = prefix(hash);
        let key = match self.by_hash.get(&p) {
            Some(key) => key,
            None => match self.previous.get(&p) {
                Some((key, until)) if now_ms < *until => key,
                // A rotated-out secret past its grace period is simply unknown.
                _ => return Err(KeyRejection::Unknown),
            },
        };
        if !key.enabled {
            return Err(KeyRejection::Disabled);
        }
        if key.expires_at.is_some_and(|at| now_ms >= at) {
            return Err(KeyRejection::Expired);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::db::ApiKey;
    use tollgate_core::keys;

    fn record(id: i64, secret: &str, enabled: bool, expires_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            key: ApiKey {
                id,
                name: format!("k{id}"),
                owner: None,
                metadata: serde_json::json!({}),
                plan: None,
                limits: None,
                concurrency: None,
                scopes: None,
                allowed_ips: None,
                enabled,
                expires_at,
                created_at: 0,
                updated_at: 0,
                last_used_at: None,
                key_prefix: keys::display_prefix(secret),
                identity_id: None,
            },
            hash: keys::hash(secret),
            previous: None,
        }
    }

    #[test]
    fn keys_share_their_identity_compactly() {
        let mut a = record(1, "a", true, None);
        a.key.identity_id = Some(7);
        let mut gone = record(2, "b", true, None);
        gone.key.identity_id = Some(8);
        let acme = tollgate_core::db::Identity {
            id: 7,
            external_id: "cus_acme".into(),
            name: "Acme".into(),
            metadata: serde_json::json!({}),
            plan: None,
            limits: None,
            created_at: 0,
            updated_at: 0,
        };
        let set = KeySet::from_records_with(vec![a, gone], vec![acme]);
        let k = set.lookup(&keys::hash("a"), 0).expect("a");
        assert_eq!(k.identity_id(), Some(7));
        let i = set.identity(k).expect("loaded");
        assert_eq!(i.external_id.as_deref(), Some("cus_acme"));
        // An identity deleted meanwhile: none.
        let k = set.lookup(&keys::hash("b"), 0).expect("b");
        assert_eq!((k.identity_id(), set.identity(k).is_none()), (None, true));
        // The id fits the key's padding: no bigger than without it.
        assert!(
            std::mem::size_of::<ActiveKey>() <= 80,
            "{}",
            std::mem::size_of::<ActiveKey>()
        );
    }

    #[test]
    fn lookup_distinguishes_unknown_disabled_expired() {
        let mut rotated = record(4, "new", true, None);
        rotated.previous = Some((keys::hash("old"), 1_000));
        let set = KeySet::from_records(vec![
            record(1, "a", true, None),
            record(2, "b", false, None),
            record(3, "c", true, Some(500)),
            rotated,
        ]);
        assert_eq!(set.len(), 4);
        assert_eq!(set.lookup(&keys::hash("a"), 0).map(|k| k.id), Ok(1));
        assert_eq!(
            set.lookup(&keys::hash("b"), 0).err(),
            Some(KeyRejection::Disabled)
        );
        assert_eq!(set.lookup(&keys::hash("c"), 499).map(|k| k.id), Ok(3));
        assert_eq!(
            set.lookup(&keys::hash("c"), 500).err(),
            Some(KeyRejection::Expired)
        );
        assert_eq!(
            set.lookup(&keys::hash("zz"), 0).err(),
            Some(KeyRejection::Unknown)
        );
        // Old secret of a rotated key: valid during the grace period only.
        assert_eq!(set.lookup(&keys::hash("old"), 999).map(|k| k.id), Ok(4));
        assert_eq!(
            set.lookup(&keys::hash("old"), 1_000).err(),
            Some(KeyRejection::Unknown)
        );
        assert_eq!(set.lookup(&keys::hash("new"), 5_000).map(|k| k.id), Ok(4));
    }
}
