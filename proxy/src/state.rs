//! The proxy's hot state: the compiled config (swapped on reload) and the
//! database-backed key set and plans (swapped on change). Readers take an
//! `Arc` snapshot per request and never block writers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use parking_lot::Mutex;
use tollgate_core::config::{Auth, Config, Plan, Route};
use tollgate_core::db::instances::TargetHealth;
use tollgate_core::db::plans::StoredPlan;
use tollgate_core::rules::effective::{limit_source, KeySide, LimitSource};

use crate::keyset::{ActiveKey, KeySet};
use crate::limiter::{compile, Bucket, Buckets, Scope};
use crate::metrics::RouteMetrics;
use crate::router::{Routable, Router};
use crate::upstreams::{self, UpstreamPool};

#[derive(Debug)]
pub struct CompiledRoute {
    pub route: Route,
    /// The route's name, shared with usage events.
    pub name: Arc<str>,
    pub buckets: Buckets,
    /// `RateLimit-Policy` of the route's own limits, rendered once.
    pub policy: Option<HeaderValue>,
    pub upstream: Arc<UpstreamPool>,
    /// This route's request metrics, resolved once.
    pub metrics: RouteMetrics,
    /// `cors`, with its header values rendered.
    pub cors: Option<crate::cors::Policy>,
}

impl Routable for CompiledRoute {
    fn path_prefix(&self) -> &str {
        &self.route.path_prefix
    }
    fn methods(&self) -> Option<&[String]> {
        self.route.methods.as_deref()
    }
    fn case_insensitive(&self) -> bool {
        self.route.case_insensitive
    }
}

#[derive(Debug)]
pub struct CompiledPlan {
    /// Shared with each request that forwards it (`X-Tollgate-Plan`).
    pub name: Arc<str>,
    pub buckets: Buckets,
    /// `RateLimit-Policy` of the plan's limits, rendered once.
    pub policy: Option<HeaderValue>,
    pub concurrency: Option<u32>,
}

impl CompiledPlan {
    fn new(name: &str, limits: &[tollgate_core::limits::Limit], concurrency: Option<u32>) -> Self {
        let buckets = compile(Scope::Key, limits);
        Self {
            name: name.into(),
            policy: crate::headers::policy_value(buckets.iter().map(|b| &*b.policy_header)),
            buckets,
            concurrency,
        }
    }
}

/// Everything derived from the YAML file.
#[derive(Debug)]
pub struct ConfigState {
    pub config: Arc<Config>,
    pub router: Router<CompiledRoute>,
    pub plans: HashMap<String, Arc<CompiledPlan>>,
    pub upstreams: HashMap<String, Arc<UpstreamPool>>,
}

impl ConfigState {
    /// Compile a validated config. `previous` lets unchanged upstreams keep
    /// their health state across reloads.
    pub fn compile(config: Config, previous: Option<&ConfigState>) -> Self {
        Self::compile_rebuilding(config, previous, &BTreeSet::new())
    }

    /// The same config with the named upstream pools built afresh (their
    /// host names resolved again); the others are kept.
    pub fn with_upstreams_rebuilt(&self, names: &BTreeSet<String>) -> Self {
        Self::compile_rebuilding((*self.config).clone(), Some(self), names)
    }

    fn compile_rebuilding(
        config: Config,
        previous: Option<&ConfigState>,
        rebuild: &BTreeSet<String>,
    ) -> Self {
        let upstreams =
            upstreams::rebuild(&config.upstreams, previous.map(|p| &p.upstreams), rebuild);
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                // Validation guarantees the upstream exists.
                let upstream = upstreams.get(&r.upstream)?.clone();
                let name: Arc<str> = r.name.as_str().into();
                let buckets = compile(Scope::Route(&r.name), &r.limits);
                Some(Arc::new(CompiledRoute {
                    route: r.clone(),
                    metrics: RouteMetrics::new(name.clone()),
                    name,
                    policy: crate::headers::policy_value(buckets.iter().map(|b| &*b.policy_header)),
                    buckets,
                    upstream,
                    cors: r
                        .cors
                        .as_ref()
                        .map(|c| crate::cors::Policy::new(c, &config.proxy.key_header)),
                }))
            })
            .collect();
        let plans = config
            .plans
            .values()
            .map(|p: &Plan| {
                (
                    p.name.clone(),
                    Arc::new(CompiledPlan::new(&p.name, &p.limits, p.concurrency)),
                )
            })
            .collect();
        Self {
            config: Arc::new(config),
            router: Router::new(routes),
            plans,
            upstreams,
        }
    }
}

impl ConfigState {
    /// What the upstream pools' health checks see, by upstream name then
    /// target (reported in this instance's heartbeat).
    pub fn upstream_health(&self) -> Vec<TargetHealth> {
        let mut upstream_health = Vec::new();
        let mut names: Vec<&String> = self.upstreams.keys().collect();
        names.sort();
        for name in names {
            let Some(pool) = self.upstreams.get(name) else {
                continue;
            };
            for h in pool.health() {
                upstream_health.push(TargetHealth {
                    upstream: name.clone(),
                    target: h.target,
                    healthy: h.healthy,
                    checked_at: h.checked_at,
                    error: h.error,
                    latency_ms: h.latency_ms,
                    latency_samples: h.latency_samples,
                    check_latency_ms: h.check_latency_ms,
                    up_since: h.up_since,
                });
            }
        }
        upstream_health
    }
}

/// Everything derived from the database.
#[derive(Debug, Default)]
pub struct DbState {
    pub keys: KeySet,
    pub plans: HashMap<String, Arc<CompiledPlan>>,
}

impl DbState {
    pub fn new(keys: KeySet, plans: Vec<StoredPlan>) -> Self {
        let plans = plans
            .into_iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Arc::new(CompiledPlan::new(&p.name, &p.limits, p.concurrency)),
                )
            })
            .collect();
        Self { keys, plans }
    }
}

/// The shared, swappable state of one proxy.
#[derive(Debug)]
pub struct State {
    pub config: ArcSwap<ConfigState>,
    pub db: ArcSwap<DbState>,
    /// Open WebSockets by key, closed when their key goes.
    pub websockets: Arc<crate::websocket::Registry>,
    /// Keys whose plan is missing, and when that was last logged.
    unknown_plan_warned: Mutex<HashMap<i64, Instant>>,
}

/// How often a key with a missing plan is logged at most.
const UNKNOWN_PLAN_WARN_EVERY: Duration = Duration::from_secs(60);
/// Keys remembered for that; beyond it the memory starts over.
const UNKNOWN_PLAN_WARN_KEYS: usize = 10_000;

impl State {
    pub fn new(config: ConfigState, db: DbState) -> Self {
        Self {
            config: ArcSwap::from_pointee(config),
            db: ArcSwap::from_pointee(db),
            websockets: Arc::default(),
            unknown_plan_warned: Mutex::new(HashMap::new()),
        }
    }

    /// A request of key `key_id` was refused because its plan `plan` exists
    /// nowhere: counted every time, logged once per key per minute.
    pub fn note_unknown_plan(&self, key_id: i64, plan: &str) {
        crate::metrics::UNKNOWN_PLAN.inc();
        let now = Instant::now();
        let log = {
            let mut warned = self.unknown_plan_warned.lock();
            if warned.len() >= UNKNOWN_PLAN_WARN_KEYS {
                warned.retain(|_, at| now.duration_since(*at) < UNKNOWN_PLAN_WARN_EVERY);
                if warned.len() >= UNKNOWN_PLAN_WARN_KEYS {
                    warned.clear();
                }
            }
            match warned.get(&key_id) {
                Some(at) if now.duration_since(*at) < UNKNOWN_PLAN_WARN_EVERY => false,
                _ => {
                    warned.insert(key_id, now);
                    true
                }
            }
        };
        if log {
            tracing::warn!(
                key_id,
                plan,
                "key's plan exists neither in the YAML nor in the database: its requests are refused (403 unknown-plan)"
            );
        }
    }
}

/// The limits that apply to one request, and the concurrency cap if any.
#[derive(Debug, Default)]
pub struct Applicable<'a> {
    pub buckets: smallvec::SmallVec<[&'a Bucket; 4]>,
    pub concurrency: Option<u32>,
    pub plan: Option<&'a Arc<str>>,
    /// The key names a plan that exists nowhere: refuse (fail closed).
    pub unknown_plan: Option<&'a str>,
    /// `RateLimit-Policy` of `buckets`, from the values rendered when the
    /// plan and route were compiled (`None` without buckets).
    pub policy: Option<HeaderValue>,
}

/// Which limits apply (`tollgate_core::rules::effective`): the key's own
/// limits, else its plan's, else the route's default plan's; plus the route's
/// extra limits. YAML plans take precedence over database plans of the same
/// name. A key whose plan is missing gets no limits but `unknown_plan`: the
/// caller refuses it.
pub fn applicable<'a>(
    route: &'a CompiledRoute,
    key: Option<&'a ActiveKey>,
    config: &'a ConfigState,
    db: &'a DbState,
) -> Applicable<'a> {
    let default_plan = route
        .route
        .default_plan
        .as_deref()
        .and_then(|name| config.plans.get(name).or_else(|| db.plans.get(name)));
    let mut out = key_limits(key, default_plan, config, db);
    out.buckets.extend(route.buckets.iter());
    out.policy = crate::headers::join_values(out.policy.as_ref(), route.policy.as_ref());
    if route.route.auth == Auth::None {
        out.concurrency = None;
    }
    out
}

/// The key's side of [`applicable`]: its own limits, else its identity's,
/// else its (or its identity's) plan's, else `default_plan`'s.
fn key_limits<'a>(
    key: Option<&'a ActiveKey>,
    default_plan: Option<&'a Arc<CompiledPlan>>,
    config: &'a ConfigState,
    db: &'a DbState,
) -> Applicable<'a> {
    let plan_named = |name: &str| -> Option<&'a Arc<CompiledPlan>> {
        config.plans.get(name).or_else(|| db.plans.get(name))
    };
    let identity = key.and_then(|k| db.keys.identity(k)).map(|i| &**i);
    let side = KeySide {
        own_limits: key.is_some_and(|k| k.own_buckets.is_some()),
        plan: key.and_then(|k| k.plan.as_deref()),
        concurrency: key.and_then(|k| k.concurrency),
        identity_limits: identity.is_some_and(|i| i.own_buckets.is_some()),
        identity_plan: identity.and_then(|i| i.plan.as_deref()),
    };
    let source = limit_source(side, side.plan_name().and_then(plan_named), default_plan);
    let mut out = Applicable::default();
    match source {
        LimitSource::UnknownPlan(missing) => {
            out.unknown_plan = Some(missing);
            return out;
        }
        LimitSource::Own | LimitSource::IdentityOwn => {
            let own = match source {
                LimitSource::Own => key.and_then(|k| k.own_buckets.as_ref()),
                _ => identity.and_then(|i| i.own_buckets.as_ref()),
            };
            if let Some(own) = own {
                out.buckets.extend(own.iter());
            }
            // A key's own limits: its members joined per request (keys
            // carry no rendered value, to keep a million of them small).
            out.policy =
                crate::headers::policy_value(out.buckets.iter().map(|b| &*b.policy_header));
        }
        LimitSource::Plan(plan) | LimitSource::RouteDefault(Some(plan)) => {
            out.buckets.extend(plan.buckets.iter());
            out.plan = Some(&plan.name);
            out.policy = plan.policy.clone();
        }
        LimitSource::RouteDefault(None) => {}
    }
    out.concurrency = source.concurrency(side, |p| p.concurrency);
    out
}

/// The limits of a key on no particular route (the verify API asked
/// without `route`): what [`applicable`] gives on a route with no limits
/// and no `default_plan` — the key's own limits, else its plan's.
pub fn key_applicable<'a>(
    key: &'a ActiveKey,
    config: &'a ConfigState,
    db: &'a DbState,
) -> Applicable<'a> {
    key_limits(Some(key), None, config, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
plans:
  pro: { limits: [ { name: second, rate: 5, per: 1s } ], concurrency: 4 }
  free: { limits: [ { name: minute, rate: 60, per: 1m } ], concurrency: 1 }
upstreams:
  demo: { targets: ["127.0.0.1:9"] }
routes:
  - { name: with-default, match: { path_prefix: /a }, upstream: demo, default_plan: free }
  - { name: bare, match: { path_prefix: /b }, upstream: demo, limits: [ { name: r, rate: 1, per: 1s } ] }
"#;

    fn key(plan: Option<&str>, concurrency: Option<u32>) -> ActiveKey {
        ActiveKey {
            id: 1,
            plan: plan.map(Into::into),
            own_buckets: None,
            concurrency,
            enabled: true,
            expires_at: None,
            access: None,
            identity: None,
        }
    }

    /// `applicable` follows `tollgate_core::rules::effective`: plan over the
    /// route's default, a missing plan refuses, and a key's own
    /// concurrency cap holds even where no plan applies.
    #[test]
    fn limits_and_caps_follow_the_core_precedence() {
        let config = tollgate_core::config::parse(YAML, "t.yaml").expect("valid");
        let cfg = ConfigState::compile(config, None);
        let db = DbState::default();
        let route = |name: &str| {
            cfg.router
                .routes()
                .iter()
                .find(|r| &*r.name == name)
                .expect("route")
        };
        let (a, b) = (route("with-default"), route("bare"));

        let pro = key(Some("pro"), None);
        let got = applicable(a, Some(&pro), &cfg, &db);
        assert_eq!(
            (got.plan.map(|p| &**p), got.concurrency, got.buckets.len()),
            (Some("pro"), Some(4), 1)
        );
        assert_eq!(got.policy.expect("policy"), r#""second";q=5;w=1"#);

        let none = key(None, None);
        let got = applicable(a, Some(&none), &cfg, &db);
        assert_eq!(
            (got.plan.map(|p| &**p), got.concurrency),
            (Some("free"), Some(1))
        );
        let got = applicable(b, Some(&none), &cfg, &db);
        assert_eq!(
            (got.plan, got.concurrency, got.buckets.len()),
            (None, None, 1)
        );
        assert_eq!(got.policy.expect("policy"), r#""r";q=1;w=1"#);

        let capped = key(None, Some(2));
        assert_eq!(applicable(a, Some(&capped), &cfg, &db).concurrency, Some(2));
        assert_eq!(applicable(b, Some(&capped), &cfg, &db).concurrency, Some(2));

        // Without a route: what a route with no limits and no default plan gives.
        for k in [&pro, &none, &capped] {
            let on_route = applicable(b, Some(k), &cfg, &db);
            let alone = key_applicable(k, &cfg, &db);
            assert_eq!(
                (alone.plan, alone.concurrency, alone.buckets.len() + 1),
                (on_route.plan, on_route.concurrency, on_route.buckets.len())
            );
        }
        assert_eq!(
            key_applicable(&key(Some("gold"), None), &cfg, &db).unknown_plan,
            Some("gold")
        );

        let lost = key(Some("gold"), Some(2));
        let got = applicable(a, Some(&lost), &cfg, &db);
        assert_eq!((got.unknown_plan, got.buckets.len()), (Some("gold"), 0));
    }
}
