//! The proxy's hot state: the compiled config (swapped on reload) and the
//! database-backed key set and plans (swapped on change). Readers take an
//! `Arc` snapshot per request and never block writers.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tollgate_core::config::{Auth, Config, Plan, Route};
use tollgate_core::db::plans::StoredPlan;

use crate::keyset::{ActiveKey, KeySet};
use crate::limiter::{compile, Bucket, Buckets, Scope};
use crate::router::{Routable, Router};
use crate::upstreams::{self, UpstreamPool};

#[derive(Debug)]
pub struct CompiledRoute {
    pub route: Route,
    /// The route's name, shared with usage events.
    pub name: Arc<str>,
    pub buckets: Buckets,
    pub upstream: Arc<UpstreamPool>,
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
    pub name: String,
    pub buckets: Buckets,
    pub concurrency: Option<u32>,
}

impl CompiledPlan {
    fn new(name: &str, limits: &[tollgate_core::limits::Limit], concurrency: Option<u32>) -> Self {
        Self {
            name: name.to_string(),
            buckets: compile(Scope::Key, limits),
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
        let upstreams = upstreams::rebuild(&config.upstreams, previous.map(|p| &p.upstreams));
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                // Validation guarantees the upstream exists.
                let upstream = upstreams.get(&r.upstream)?.clone();
                Some(Arc::new(CompiledRoute {
                    route: r.clone(),
                    name: r.name.as_str().into(),
                    buckets: compile(Scope::Route(&r.name), &r.limits),
                    upstream,
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
}

impl State {
    pub fn new(config: ConfigState, db: DbState) -> Self {
        Self {
            config: ArcSwap::from_pointee(config),
            db: ArcSwap::from_pointee(db),
        }
    }
}

/// The limits that apply to one request, and the concurrency cap if any.
#[derive(Debug, Default)]
pub struct Applicable<'a> {
    pub buckets: smallvec::SmallVec<[&'a Bucket; 4]>,
    pub concurrency: Option<u32>,
    pub plan: Option<&'a str>,
}

/// Which limits apply: the key's own limits, else its plan's, else the route's
/// default plan's; plus the route's extra limits. YAML plans take precedence
/// over database plans of the same name.
pub fn applicable<'a>(
    route: &'a CompiledRoute,
    key: Option<&'a ActiveKey>,
    config: &'a ConfigState,
    db: &'a DbState,
) -> Applicable<'a> {
    let plan_named = |name: &str| -> Option<&'a Arc<CompiledPlan>> {
        config.plans.get(name).or_else(|| db.plans.get(name))
    };
    let mut out = Applicable::default();
    let key_plan = key.and_then(|k| k.plan.as_deref()).and_then(&plan_named);
    let default_plan = route.route.default_plan.as_deref().and_then(plan_named);
    match (key.and_then(|k| k.own_buckets.as_ref()), key_plan) {
        (Some(own), _) => {
            out.buckets.extend(own.iter());
            out.concurrency = key.and_then(|k| k.concurrency);
        }
        (None, Some(plan)) => {
            out.buckets.extend(plan.buckets.iter());
            out.concurrency = key.and_then(|k| k.concurrency).or(plan.concurrency);
            out.plan = Some(&plan.name);
        }
        (None, None) => {
            if let (Some(k), Some(missing)) = (key, key.and_then(|k| k.plan.as_deref())) {
                tracing::warn!(
                    key_id = k.id,
                    plan = missing,
                    "key's plan does not exist; using the route's default plan"
                );
            }
            if let Some(plan) = default_plan {
                out.buckets.extend(plan.buckets.iter());
                out.concurrency = key.and_then(|k| k.concurrency).or(plan.concurrency);
                out.plan = Some(&plan.name);
            }
        }
    }
    out.buckets.extend(route.buckets.iter());
    if route.route.auth == Auth::None {
        out.concurrency = None;
    }
    out
}
