//! `scope: identity`: buckets shared by all keys of one identity.
//!
//! A request from a key of an identity is decided for
//! [`Subject::Member`]: its
//! identity-scoped buckets belong to [`Subject::Identity`] (one per
//! identity), its other buckets to [`Subject::Key`], and all are checked
//! and taken in one atomic step (in the local limiter under the identity's
//! lock and then the key's; in Redis in one script call, every key under
//! the identity's hash tag: `tg:{i7}:p:monthly~<definition>` for the
//! shared bucket, `tg:{i7}:k42:p:second` for the key's own). A shared token
//! bucket is one per identity *and definition* (rate, per, burst): keys on
//! plans that define it differently do not convert each other's requests
//! into their own units.
//!
//! Every request of such a key is a member's, whatever its route's limits,
//! so its own buckets have one Redis key on every route. (Joining or
//! leaving an identity thus starts the key's Redis buckets afresh.)
//!
//! Any other request keeps its subject: a key without an identity takes
//! from an identity-scoped limit as from its own (a key alone is an
//! identity of one: `tg:{k42}:p:monthly~<definition>`).
//!
//! Requests of a [`Subject::Member`] are not served from Redis leases: the
//! shared bucket is counted in Redis on every request, so whichever key asks
//! next after the limit is reached is refused, on any proxy. (The price: a
//! key of an identity costs one Redis call per request.)

use super::{Bucket, Subject};

/// The subject a key's request is decided for (see the module docs).
pub fn subject_for(key: i64, identity: Option<i64>) -> Subject {
    match identity {
        Some(identity) => Subject::Member { key, identity },
        None => Subject::Key(key),
    }
}

/// A request's subject: a key's becomes its identity's
/// [`Subject::Member`] when it has one; any other stays.
pub fn member_subject(subject: Subject, identity: Option<i64>) -> Subject {
    match subject {
        Subject::Key(key) => subject_for(key, identity),
        other => other,
    }
}

impl Subject {
    /// Whose bucket `bucket` is when this subject takes from it.
    pub fn owner(&self, bucket: &Bucket) -> Subject {
        match *self {
            Subject::Member { identity, .. } if bucket.identity_scope => {
                Subject::Identity(identity)
            }
            Subject::Member { key, .. } => Subject::Key(key),
            other => other,
        }
    }

    /// Whether this subject's requests may be served from Redis leases
    /// (not those touching an identity's shared buckets).
    pub fn leased(&self) -> bool {
        !matches!(self, Subject::Member { .. } | Subject::Identity(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Scope;
    use std::time::Duration;
    use tollgate_core::limits::{Limit, LimitScope};

    fn bucket(name: &str, scope: LimitScope) -> Bucket {
        let mut l = Limit::new(name, 10, Duration::from_secs(1), None, None);
        l.scope = scope;
        Bucket::new(Scope::Key, l)
    }

    #[test]
    fn members_are_keys_of_an_identity() {
        let own = bucket("second", LimitScope::Key);
        let shared = bucket("monthly", LimitScope::Identity);
        assert!(shared.identity_scope && !own.identity_scope);
        assert_ne!(
            own.fingerprint,
            bucket("second", LimitScope::Identity).fingerprint
        );
        assert_eq!(subject_for(4, None), Subject::Key(4));
        assert_eq!(member_subject(Subject::Key(4), None), Subject::Key(4));
        let ip = Subject::Ip("10.0.0.1".parse().expect("ip"));
        assert_eq!(member_subject(ip, Some(7)), ip);
        let m = subject_for(4, Some(7));
        assert_eq!(member_subject(Subject::Key(4), Some(7)), m);
        assert_eq!(
            m,
            Subject::Member {
                key: 4,
                identity: 7
            }
        );
        assert_eq!(m.owner(&shared), Subject::Identity(7));
        assert_eq!(m.owner(&own), Subject::Key(4));
        assert_eq!(Subject::Key(4).owner(&shared), Subject::Key(4));
        assert!(!m.leased() && !Subject::Identity(7).leased() && Subject::Key(4).leased());
        assert_eq!(m.to_string(), "i7");
    }

    /// One hash tag per member request (one cluster slot); the shared
    /// bucket is the identity's, the others the key's.
    #[test]
    fn redis_keys_of_a_member() {
        use crate::limiter::redis::bucket_key;
        let own = bucket("second", LimitScope::Key);
        let shared = bucket("monthly", LimitScope::Identity);
        let m = Subject::Member {
            key: 42,
            identity: 7,
        };
        let shared_key = bucket_key(&m, &shared);
        assert!(shared_key.starts_with("tg:{i7}:p:monthly~"), "{shared_key}");
        assert_eq!(bucket_key(&m, &own), "tg:{i7}:k42:p:second");
        assert_eq!(bucket_key(&Subject::Identity(7), &shared), shared_key);
        // No identity: the limit is the key's own, as `scope: key` would be.
        assert_eq!(
            bucket_key(&Subject::Key(42), &shared),
            shared_key.replace("{i7}", "{k42}")
        );
    }

    /// Plans that define a shared limit differently get a bucket each
    /// (black-box round 3, B6: a bucket stores time in its definition's
    /// units); the same definition on two plans is one bucket.
    #[test]
    fn a_shared_bucket_per_definition() {
        let shared = |rate, per_s| {
            let mut l = Limit::new("daily", rate, Duration::from_secs(per_s), None, None);
            l.scope = LimitScope::Identity;
            Bucket::new(Scope::Key, l)
        };
        let (small, large) = (shared(5, 86_400), shared(1_000, 86_400));
        assert_ne!(small.name, large.name);
        assert_ne!(small.id, large.id);
        assert_eq!(shared(5, 86_400).name, small.name);
        assert_eq!(shared(5, 86_400).id, small.id);
        // A key's own limit of the same name keeps its plain name.
        assert_eq!(&*bucket("daily", LimitScope::Key).name, "p:daily");

        // Through the local limiter: the large key's budget is untouched by
        // the small key's requests.
        let local = crate::limiter::LocalLimiter::new(1);
        let (s, l) = (subject_for(1, Some(9)), subject_for(2, Some(9)));
        for _ in 0..5 {
            assert!(local.check(&s, &[&small]).allowed);
        }
        assert!(!local.check(&s, &[&small]).allowed);
        let d = local.check(&l, &[&large]);
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, 999, "{d:?}");
    }
}
