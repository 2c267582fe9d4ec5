//! The request filter's scope and IP steps: the route's `ip_allow` /
//! `ip_deny`, then the key's `allowed_ips` and scopes (the key's own lists,
//! else those of the YAML plan it names), by the rules of
//! `tollgate_core::rules::access`.

use std::net::IpAddr;

use tollgate_core::rules::access::{self, effective_scopes, Denial, EffectiveScopes};

use crate::keyset::ActiveKey;
use crate::state::{CompiledRoute, ConfigState, DbState};

/// The route's address rules.
pub fn route_ip(route: &CompiledRoute, client: IpAddr) -> Result<(), Denial> {
    let r = &route.route;
    if r.ip_allow.is_empty() && r.ip_deny.is_empty() {
        return Ok(());
    }
    access::check_route_ip(&r.ip_allow, &r.ip_deny, client)
}

/// The scopes of the YAML plan the key names, if any.
fn plan_scopes<'a>(key: &ActiveKey, config: &'a ConfigState) -> Option<&'a access::Scopes> {
    let plan = key.plan.as_deref()?;
    config.config.plans.get(plan)?.scopes.as_ref()
}

/// The scope lists that apply to the key: per list, its own, else its
/// YAML plan's.
pub fn scopes<'a>(key: &'a ActiveKey, config: &'a ConfigState) -> EffectiveScopes<'a> {
    let own = key.access.as_deref().and_then(|a| a.scopes.as_ref());
    effective_scopes(own, plan_scopes(key, config))
}

/// The key's address list and scopes on this route and method.
pub fn key(
    key: &ActiveKey,
    route: &CompiledRoute,
    method: &str,
    client: IpAddr,
    config: &ConfigState,
) -> Result<(), Denial> {
    key_on(key, &route.route.name, method, client, config)
}

/// [`key`] on the route named `route` (`""`: none, as the verify API asked
/// without a route — only a `*` route pattern takes it).
pub fn key_on(
    key: &ActiveKey,
    route: &str,
    method: &str,
    client: IpAddr,
    config: &ConfigState,
) -> Result<(), Denial> {
    let own = key.access.as_deref();
    if own.is_none() && plan_scopes(key, config).is_none() {
        return Ok(());
    }
    access::check_key(
        scopes(key, config),
        own.and_then(|a| a.allowed_ips.as_deref()),
        route,
        method,
        client,
    )
}

/// Whether a WebSocket `key` opened on the route named `route` from
/// `client` would still be let through, as of `config` and `db`: the route
/// still exists as a `websocket` route, its address rules and the key's
/// scopes and `allowed_ips` allow it, and the plan the key names still
/// exists (the checks its upgrade request passed).
pub fn websocket_allowed(
    key: &ActiveKey,
    route: &str,
    client: IpAddr,
    config: &ConfigState,
    db: &DbState,
) -> bool {
    let Some(compiled) = config
        .router
        .routes()
        .iter()
        .find(|r| r.route.name == route)
    else {
        return false;
    };
    compiled.route.websocket
        && route_ip(compiled, client).is_ok()
        && key_on(key, route, "GET", client, config).is_ok()
        && crate::state::applicable(compiled, Some(key), config, db)
            .unknown_plan
            .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyset::KeyAccess;
    use tollgate_core::rules::access::Scopes;

    const YAML: &str = r#"
plans:
  reader: { limits: [ { name: s, rate: 5, per: 1s } ], scopes: { routes: ["users*"], methods: [get] } }
  open: { limits: [ { name: s, rate: 5, per: 1s } ] }
upstreams:
  demo: { targets: ["127.0.0.1:9"] }
routes:
  - { name: users, match: { path_prefix: /users }, upstream: demo }
  - { name: orders, match: { path_prefix: /orders }, upstream: demo,
      ip_allow: [10.0.0.0/8], ip_deny: [10.9.0.0/16] }
"#;

    fn state() -> ConfigState {
        let cfg = tollgate_core::config::parse(YAML, "t.yaml").expect("config");
        ConfigState::compile(cfg, None)
    }

    fn active(plan: Option<&str>, access: Option<KeyAccess>) -> ActiveKey {
        ActiveKey {
            id: 1,
            plan: plan.map(Into::into),
            own_buckets: None,
            concurrency: None,
            enabled: true,
            expires_at: None,
            access: access.map(Box::new),
            identity: None,
        }
    }

    fn route<'a>(cfg: &'a ConfigState, name: &str) -> &'a CompiledRoute {
        cfg.router
            .routes()
            .iter()
            .find(|r| r.route.name == name)
            .expect("route")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn route_rules() {
        let cfg = state();
        assert_eq!(route_ip(route(&cfg, "users"), ip("192.0.2.1")), Ok(()));
        let orders = route(&cfg, "orders");
        assert_eq!(route_ip(orders, ip("10.1.0.1")), Ok(()));
        assert_eq!(route_ip(orders, ip("10.9.0.1")), Err(Denial::RouteIpDenied));
        assert_eq!(
            route_ip(orders, ip("192.0.2.1")),
            Err(Denial::RouteIpNotAllowed)
        );
    }

    #[test]
    fn plan_scopes_and_key_overrides() {
        let cfg = state();
        let users = route(&cfg, "users");
        let orders = route(&cfg, "orders");
        let c = ip("10.1.0.1");
        let reader = active(Some("reader"), None);
        assert_eq!(key(&reader, users, "GET", c, &cfg), Ok(()));
        assert_eq!(
            key(&reader, users, "POST", c, &cfg),
            Err(Denial::MethodOutOfScope("POST".into()))
        );
        assert_eq!(
            key(&reader, orders, "GET", c, &cfg),
            Err(Denial::RouteOutOfScope("orders".into()))
        );
        // The key's own route list replaces the plan's; the plan's methods stay.
        let own = active(
            Some("reader"),
            Some(KeyAccess {
                scopes: Some(Scopes {
                    routes: Some(vec!["orders".into()]),
                    methods: None,
                }),
                allowed_ips: Some(vec!["10.0.0.0/8".parse().expect("net")]),
            }),
        );
        assert_eq!(key(&own, orders, "GET", c, &cfg), Ok(()));
        assert!(key(&own, users, "GET", c, &cfg).is_err());
        assert!(key(&own, orders, "DELETE", c, &cfg).is_err());
        assert_eq!(
            key(&own, orders, "GET", ip("192.0.2.1"), &cfg),
            Err(Denial::KeyIpNotAllowed)
        );
        assert_eq!(
            key(&active(Some("open"), None), orders, "PUT", c, &cfg),
            Ok(())
        );
        assert_eq!(key(&active(None, None), orders, "PUT", c, &cfg), Ok(()));
    }
}
