//! The limits that apply to a key or an identity, read from the database
//! and the YAML plans by the one precedence rule
//! ([`crate::rules::effective`]): what the admin API shows and what the
//! quota reset / adjust action looks its quota up in (the admin API and the
//! CLI alike).

use std::collections::BTreeMap;

use crate::config::Plan;
use crate::db::{ApiKey, Db, DbError, Identity};
use crate::limits::Limit;
use crate::rules::effective::{limit_source, KeySide, LimitSource};

/// Where the limits that apply to a key come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsFrom {
    Key,
    Identity,
    Plan,
    /// Neither: each route's `default_plan` (not resolved here: per route).
    RouteDefault,
}

/// The limits that apply to a key besides each route's own.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLimits {
    pub from: LimitsFrom,
    /// The plan whose limits apply (`from = Plan`).
    pub plan: Option<String>,
    pub limits: Vec<Limit>,
    pub concurrency: Option<u32>,
}

impl Db {
    /// A plan's limits and cap by name: the YAML plan before a database
    /// plan of the same name; `None` if it exists nowhere.
    pub async fn plan_limits(
        &self,
        yaml: &BTreeMap<String, Plan>,
        name: &str,
    ) -> Result<Option<(Vec<Limit>, Option<u32>)>, DbError> {
        if let Some(p) = yaml.get(name) {
            return Ok(Some((p.limits.clone(), p.concurrency)));
        }
        if !crate::rules::limits::is_plan_name(name) {
            return Ok(None);
        }
        Ok(self
            .get_plan(name)
            .await?
            .map(|p| (p.limits, p.concurrency)))
    }

    /// [`KeyLimits`] of `key` (its identity read here).
    pub async fn key_limits(
        &self,
        yaml: &BTreeMap<String, Plan>,
        key: &ApiKey,
    ) -> Result<KeyLimits, DbError> {
        let identity = match key.identity_id {
            Some(id) => self.get_identity(id).await?,
            None => None,
        };
        let side = KeySide {
            own_limits: key.limits.is_some(),
            plan: key.plan.as_deref(),
            concurrency: key.concurrency,
            identity_limits: identity.as_ref().is_some_and(|i| i.limits.is_some()),
            identity_plan: identity.as_ref().and_then(|i| i.plan.as_deref()),
        };
        // The plan (limits, concurrency), looked up only if it would apply.
        let plan_name = side.plan_name().map(str::to_string);
        let plan = match (side.own_limits || side.identity_limits, &plan_name) {
            (false, Some(name)) => self.plan_limits(yaml, name).await?,
            _ => None,
        };
        let source = limit_source(side, plan.as_ref(), None);
        let concurrency = source.concurrency(side, |p| p.1);
        let (from, plan, limits) = match source {
            LimitSource::Own => (
                LimitsFrom::Key,
                None,
                key.limits.clone().unwrap_or_default(),
            ),
            LimitSource::IdentityOwn => (
                LimitsFrom::Identity,
                None,
                identity.and_then(|i| i.limits).unwrap_or_default(),
            ),
            LimitSource::Plan(p) => (LimitsFrom::Plan, plan_name, p.0.clone()),
            LimitSource::UnknownPlan(_) | LimitSource::RouteDefault(_) => {
                (LimitsFrom::RouteDefault, None, Vec::new())
            }
        };
        Ok(KeyLimits {
            from,
            plan,
            limits,
            concurrency,
        })
    }

    /// The limits an identity brings to its keys: its own, else its plan's
    /// (none if the plan exists nowhere).
    pub async fn identity_limits(
        &self,
        yaml: &BTreeMap<String, Plan>,
        identity: &Identity,
    ) -> Result<Vec<Limit>, DbError> {
        if let Some(own) = &identity.limits {
            return Ok(own.clone());
        }
        Ok(match &identity.plan {
            Some(name) => self.plan_limits(yaml, name).await?.map(|p| p.0),
            None => None,
        }
        .unwrap_or_default())
    }
}
