//! Which limits apply to a key on a route (besides the route's own, which
//! always apply): the proxy decides requests by it and the admin API shows
//! it. Generic over the plan type, so each side passes its own (compiled
//! buckets in the proxy, limit lists in the admin API).
//!
//! - the key's own limits, if it has any;
//! - else its identity's own limits, if it belongs to an identity that has
//!   any;
//! - else the plan it names, or else the plan its identity names (a YAML plan before a database plan of the same
//!   name: the caller's lookup does that); a named plan that exists nowhere
//!   refuses the key (fail closed);
//! - else the route's default plan, if the route has one.
//!
//! The concurrency cap: the key's own if set, else that of the plan whose
//! limits apply (none with own or identity limits).
//!
//! In short: key overrides > identity overrides > key plan > identity plan >
//! route default. This is the one place that order lives.

/// Where a key's limits come from.
#[derive(Debug, PartialEq, Eq)]
pub enum LimitSource<'a, P> {
    /// The key's own list.
    Own,
    /// The list of the key's identity.
    IdentityOwn,
    /// The plan the key names.
    Plan(&'a P),
    /// The key names this plan, which exists nowhere: refuse the key.
    UnknownPlan(&'a str),
    /// The key has neither: the route's default plan, if any.
    RouteDefault(Option<&'a P>),
}

// Manual impls: `P` itself need not be `Clone`/`Copy` (only references are held).
impl<P> Clone for LimitSource<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P> Copy for LimitSource<'_, P> {}

/// What a key brings to the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySide<'a> {
    /// Whether the key has its own limits.
    pub own_limits: bool,
    /// The plan it names, if any.
    pub plan: Option<&'a str>,
    /// Its own concurrency cap, if any.
    pub concurrency: Option<u32>,
    /// Whether the key's identity has its own limits.
    pub identity_limits: bool,
    /// The plan the key's identity names, if any.
    pub identity_plan: Option<&'a str>,
}

impl<'a> KeySide<'a> {
    /// The plan name to look up: the key's, else its identity's.
    pub fn plan_name(&self) -> Option<&'a str> {
        self.plan.or(self.identity_plan)
    }
}

/// Where the limits come from. `key_plan` is the plan named by
/// [`KeySide::plan_name`] as the caller found it (`None`: it exists
/// nowhere); it is only used when that names a plan.
pub fn limit_source<'a, P>(
    key: KeySide<'a>,
    key_plan: Option<&'a P>,
    route_default: Option<&'a P>,
) -> LimitSource<'a, P> {
    if key.own_limits {
        return LimitSource::Own;
    }
    if key.identity_limits {
        return LimitSource::IdentityOwn;
    }
    match (key.plan_name(), key_plan) {
        (Some(_), Some(plan)) => LimitSource::Plan(plan),
        (Some(name), None) => LimitSource::UnknownPlan(name),
        (None, _) => LimitSource::RouteDefault(route_default),
    }
}

impl<'a, P> LimitSource<'a, P> {
    /// The plan whose limits apply, if any.
    pub fn plan(self) -> Option<&'a P> {
        match self {
            LimitSource::Plan(p) | LimitSource::RouteDefault(Some(p)) => Some(p),
            _ => None,
        }
    }

    /// The concurrency cap: the key's own, else the applying plan's.
    pub fn concurrency(self, key: KeySide<'_>, of_plan: impl Fn(&P) -> Option<u32>) -> Option<u32> {
        match self {
            LimitSource::UnknownPlan(_) => None,
            LimitSource::Own | LimitSource::IdentityOwn => key.concurrency,
            other => key.concurrency.or_else(|| other.plan().and_then(of_plan)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Plan(&'static str, Option<u32>);

    const PRO: Plan = Plan("pro", Some(4));
    const FREE: Plan = Plan("free", Some(1));

    fn key(own: bool, plan: Option<&'static str>, c: Option<u32>) -> KeySide<'static> {
        KeySide {
            own_limits: own,
            plan,
            concurrency: c,
            ..KeySide::default()
        }
    }

    #[test]
    fn identity_overrides_sit_between_the_key_and_any_plan() {
        let conc = |p: &Plan| p.1;
        let with_identity = |own, plan, ilimits, iplan| KeySide {
            own_limits: own,
            plan,
            concurrency: None,
            identity_limits: ilimits,
            identity_plan: iplan,
        };
        // The key's own limits win over its identity's.
        let k = with_identity(true, None, true, Some("pro"));
        assert_eq!(limit_source(k, Some(&PRO), None), LimitSource::Own);
        // The identity's limits win over the key's plan and the identity's plan.
        let k = with_identity(false, Some("free"), true, Some("pro"));
        let s = limit_source(k, Some(&FREE), Some(&FREE));
        assert_eq!(s, LimitSource::IdentityOwn);
        assert_eq!(s.plan(), None);
        assert_eq!(s.concurrency(k, conc), None);
        // The key's plan over the identity's.
        let k = with_identity(false, Some("free"), false, Some("pro"));
        assert_eq!(k.plan_name(), Some("free"));
        // No key plan: the identity's, over the route's default.
        let k = with_identity(false, None, false, Some("pro"));
        assert_eq!(k.plan_name(), Some("pro"));
        let s = limit_source(k, Some(&PRO), Some(&FREE));
        assert_eq!(s, LimitSource::Plan(&PRO));
        assert_eq!(s.concurrency(k, conc), Some(4));
        // An identity plan that exists nowhere refuses, as a key's would.
        let k = with_identity(false, None, false, Some("gold"));
        assert_eq!(
            limit_source::<Plan>(k, None, Some(&FREE)),
            LimitSource::UnknownPlan("gold")
        );
    }

    #[test]
    fn precedence() {
        let conc = |p: &Plan| p.1;
        // Own limits win over a plan and the default; the plan's cap is not used.
        let k = key(true, Some("pro"), None);
        let s = limit_source(k, Some(&PRO), Some(&FREE));
        assert_eq!(s, LimitSource::Own);
        assert_eq!(s.concurrency(k, conc), None);
        let k = key(true, None, Some(7));
        assert_eq!(
            limit_source(k, None, Some(&FREE)).concurrency(k, conc),
            Some(7)
        );
        // The key's plan over the route's default.
        let k = key(false, Some("pro"), None);
        let s = limit_source(k, Some(&PRO), Some(&FREE));
        assert_eq!(s, LimitSource::Plan(&PRO));
        assert_eq!(s.concurrency(k, conc), Some(4));
        let k = key(false, Some("pro"), Some(9));
        assert_eq!(
            limit_source(k, Some(&PRO), None).concurrency(k, conc),
            Some(9)
        );
        // A missing plan refuses, even with a default.
        let k = key(false, Some("gold"), Some(2));
        let s = limit_source(k, None, Some(&FREE));
        assert_eq!(s, LimitSource::UnknownPlan("gold"));
        assert_eq!(s.plan(), None);
        assert_eq!(s.concurrency(k, conc), None);
        // No plan: the route's default, or nothing but the key's own cap.
        let k = key(false, None, None);
        let s = limit_source(k, Some(&PRO), Some(&FREE));
        assert_eq!(s, LimitSource::RouteDefault(Some(&FREE)));
        assert_eq!(s.concurrency(k, conc), Some(1));
        let k = key(false, None, Some(3));
        let s = limit_source::<Plan>(k, None, None);
        assert_eq!(s, LimitSource::RouteDefault(None));
        assert_eq!(s.concurrency(k, conc), Some(3));
    }
}
