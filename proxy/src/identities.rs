//! Identities as the proxy holds them: one [`ActiveIdentity`] per identity,
//! shared (an `Arc`) by every key of it in the key set.

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_core::db::Identity;
use tollgate_core::rules::identities::check_external_id;

use crate::limiter::{compile, Buckets, Scope};

/// What the request path reads of a key's identity.
#[derive(Debug)]
pub struct ActiveIdentity {
    pub id: i64,
    /// Sent as `X-Tollgate-Identity`; `None` if the stored value is not a
    /// valid external id (written around the rules: logged, not sent).
    pub external_id: Option<Box<str>>,
    /// Shared with the keys' plan names.
    pub plan: Option<Arc<str>>,
    /// The identity's own limits (used unless a key has its own).
    pub own_buckets: Option<Buckets>,
}

impl ActiveIdentity {
    pub fn new(i: Identity, plan_name: &mut impl FnMut(String) -> Arc<str>) -> Self {
        let external_id = match check_external_id(&i.external_id) {
            Ok(()) => Some(i.external_id.into_boxed_str()),
            Err(e) => {
                tracing::error!(
                    identity_id = i.id,
                    "stored external_id refused ({e}): X-Tollgate-Identity is not sent"
                );
                None
            }
        };
        Self {
            id: i.id,
            external_id,
            plan: i.plan.map(&mut *plan_name),
            own_buckets: i.limits.as_deref().map(|l| compile(Scope::Key, l)),
        }
    }
}

/// Every identity by id.
pub fn compile_all(
    identities: Vec<Identity>,
    plan_name: &mut impl FnMut(String) -> Arc<str>,
) -> HashMap<i64, Arc<ActiveIdentity>> {
    identities
        .into_iter()
        .map(|i| (i.id, Arc::new(ActiveIdentity::new(i, plan_name))))
        .collect()
}

/// The `X-Tollgate-Identity` value for a key's identity: only a validated
/// external id (letters, digits, `._-:@`), so it cannot inject anything.
pub fn header_value(identity: Option<&ActiveIdentity>) -> Option<&str> {
    identity.and_then(|i| i.external_id.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(external_id: &str) -> Identity {
        Identity {
            id: 3,
            external_id: external_id.into(),
            name: "n".into(),
            metadata: serde_json::json!({}),
            plan: Some("pro".into()),
            limits: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn only_valid_external_ids_reach_the_header() {
        let mut plans = |p: String| Arc::<str>::from(p);
        let ok = ActiveIdentity::new(identity("cus_1"), &mut plans);
        assert_eq!(header_value(Some(&ok)), Some("cus_1"));
        assert_eq!(ok.plan.as_deref(), Some("pro"));
        let bad = ActiveIdentity::new(identity("a\r\nX-Evil: 1"), &mut plans);
        assert_eq!(header_value(Some(&bad)), None);
        assert_eq!(header_value(None), None);
    }
}
