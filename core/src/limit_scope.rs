//! Who shares a limit's bucket: `scope: key` (each key its own, the default)
//! or `scope: identity` (one bucket for all keys of the key's identity).
//!
//! A key without an identity keeps an identity-scoped limit as its own
//! bucket: the limit still applies, per key, as if it were `scope: key`
//! (a key is then an identity of one).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// One bucket per key.
    #[default]
    Key,
    /// One bucket per identity, shared by all its keys.
    Identity,
}

impl LimitScope {
    pub fn is_key(&self) -> bool {
        *self == LimitScope::Key
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Key => "key",
            LimitScope::Identity => "identity",
        }
    }

    /// The YAML / API spelling back to a scope.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "key" => Ok(LimitScope::Key),
            "identity" => Ok(LimitScope::Identity),
            other => Err(format!("unknown scope {other:?} (known: identity, key)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_in_lower_case_and_key_by_default() {
        assert_eq!(LimitScope::default(), LimitScope::Key);
        assert_eq!(LimitScope::parse("identity"), Ok(LimitScope::Identity));
        assert!(LimitScope::parse("Identity").is_err());
        assert!(LimitScope::parse("").is_err());
        let v: LimitScope = serde_json::from_str("\"identity\"").expect("json");
        assert_eq!(v, LimitScope::Identity);
        assert!(serde_json::from_str::<LimitScope>("\"route\"").is_err());
    }

    #[test]
    fn yaml_limits_take_a_scope() {
        let yaml = |scope: &str| {
            format!(
                "plans:\n  team: {{ limits: [ {{ name: d, rate: 10, per: 1d{scope} }} ] }}\n\
                 upstreams:\n  demo: {{ targets: [\"127.0.0.1:9\"] }}\n\
                 routes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: demo, \
                 limits: [ {{ name: x, rate: 1, per: 1s{scope} }} ] }}\n"
            )
        };
        let c = crate::config::parse(&yaml(", scope: identity"), "t.yaml").expect("valid");
        assert_eq!(c.plans["team"].limits[0].scope, LimitScope::Identity);
        assert_eq!(c.routes[0].limits[0].scope, LimitScope::Identity);
        let c = crate::config::parse(&yaml(""), "t.yaml").expect("valid");
        assert_eq!(c.plans["team"].limits[0].scope, LimitScope::Key);
        let e = crate::config::parse(&yaml(", scope: tenant"), "t.yaml")
            .expect_err("unknown scope")
            .to_string();
        assert!(e.contains("scope: expected key or identity"), "{e}");
    }
}
