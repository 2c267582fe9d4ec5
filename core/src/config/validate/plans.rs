//! `plans:` and the limit lists of plans and routes, by the rules of
//! [`crate::rules::limits`].

use super::*;
use crate::limits::LimitScope;

impl Validator<'_> {
    /// Check the names of a `plans` or `upstreams` mapping: non-empty,
    /// unique and passing `rule`. Returns, per entry, whether its name is usable.
    pub(super) fn names<T>(
        &mut self,
        section: &str,
        what: &str,
        map: &OrderedMap<T>,
        rule: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<bool> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        map.0
            .iter()
            .map(|(name, _)| {
                let path = child(section, name);
                let n = seen.entry(name.as_str()).or_insert(0);
                let occurrence = *n;
                *n += 1;
                let pos = self
                    .index
                    .key_occurrence(&path, occurrence)
                    .unwrap_or_else(|| self.index.locate(section));
                if name.trim().is_empty() {
                    self.error_at(pos, section, format!("{what} name must not be empty"));
                    false
                } else if occurrence > 0 {
                    self.error_at(pos, &path, format!("duplicate {what} name {name:?}"));
                    false
                } else if let Err(message) = rule(name) {
                    self.error_at(pos, &path, message);
                    false
                } else {
                    true
                }
            })
            .collect()
    }

    pub(super) fn plans(&mut self, raw: &OrderedMap<RawPlan>) -> BTreeMap<String, Plan> {
        let ok = self.names("plans", "plan", raw, |n| limit_rules::check_name("plan", n));
        let mut plans = BTreeMap::new();
        for ((name, p), ok) in raw.0.iter().zip(ok) {
            let path = child("plans", name);
            let limits = self.limits(&child(&path, "limits"), p.limits.as_deref());
            let concurrency = given(&p.concurrency).and_then(|s| {
                self.number(
                    &child(&path, "concurrency"),
                    s,
                    1,
                    limit_rules::MAX_CONCURRENCY,
                )
            });
            let scopes = p
                .scopes
                .as_ref()
                .and_then(|s| self.scopes(&child(&path, "scopes"), s));
            let credits_refill = self.plan_refill(&path, p.credits.as_ref());
            if ok {
                plans.insert(
                    name.clone(),
                    Plan {
                        name: name.clone(),
                        limits,
                        concurrency: concurrency.and_then(|c| u32::try_from(c).ok()),
                        scopes,
                        credits_refill,
                    },
                );
            }
        }
        plans
    }

    /// A plan's `scopes`, by [`crate::rules::access`].
    pub(super) fn scopes(
        &mut self,
        path: &str,
        raw: &RawScopes,
    ) -> Option<crate::rules::access::Scopes> {
        let routes = raw
            .routes
            .as_ref()
            .and_then(|l| self.text_list(&child(path, "routes"), l));
        let methods = raw
            .methods
            .as_ref()
            .and_then(|l| self.text_list(&child(path, "methods"), l));
        let scopes = crate::rules::access::Scopes { routes, methods };
        match crate::rules::access::normalise_scopes(path, &scopes) {
            Ok(s) => (!s.is_open()).then_some(s),
            Err(e) => {
                self.error(&e.field, e.message);
                None
            }
        }
    }

    /// A list of strings (`None`, reported, if an entry is not text).
    pub(super) fn text_list(&mut self, path: &str, list: &[Scalar]) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            match s.text() {
                Some(t) => out.push(t),
                None => {
                    self.error(&item(path, i), "expected text, got null");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A route's `ip_allow` / `ip_deny`.
    pub(super) fn ip_list(&mut self, path: &str, list: Option<&[Scalar]>) -> Vec<ipnet::IpNet> {
        let Some(list) = list else {
            return Vec::new();
        };
        let Some(texts) = self.text_list(path, list) else {
            return Vec::new();
        };
        match crate::rules::access::parse_ips(path, &texts) {
            Ok(nets) => nets,
            Err(e) => {
                self.error(&e.field, e.message);
                Vec::new()
            }
        }
    }

    /// A list of limits (a plan's or a route's), by the rules of
    /// [`limit_rules`]; every problem is reported at its field.
    pub(super) fn limits(&mut self, path: &str, raw: Option<&[RawLimit]>) -> Vec<Limit> {
        let raw = raw.unwrap_or_default();
        if let Err(message) = limit_rules::check_count(raw.len(), limit_rules::ListKind::Plan) {
            self.error(path, message);
        }
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, l) in raw.iter().enumerate() {
            let lp = item(path, i);
            let name_path = child(&lp, "name");
            let name = self.non_empty(&name_path, &l.name).filter(|name| {
                if let Err(message) = limit_rules::check_limit_name(name) {
                    self.error(&name_path, message);
                    return false;
                }
                if let Some(first) = names.get(name) {
                    self.error(
                        &name_path,
                        limit_rules::duplicate_name(name, &item(path, *first)),
                    );
                    return false;
                }
                names.insert(name.clone(), i);
                true
            });
            let scope = self.choice_or(
                &child(&lp, "scope"),
                &l.scope,
                &[("key", LimitScope::Key), ("identity", LimitScope::Identity)],
                LimitScope::Key,
            );
            if super::quotas::is_quota(l) {
                out.extend(self.quota_limit(&lp, name, l).map(|q| Limit { scope, ..q }));
                continue;
            }
            let rate = match given(&l.rate) {
                Some(s) => self.number(&child(&lp, "rate"), s, 1, limit_rules::MAX_RATE),
                None => {
                    self.missing(&child(&lp, "rate"), "");
                    None
                }
            };
            let per = match given(&l.per) {
                Some(s) => {
                    let per_path = child(&lp, "per");
                    self.duration(&per_path, s, limit_rules::MIN_PER)
                        .filter(|per| match limit_rules::check_per(*per) {
                            Ok(()) => true,
                            Err(message) => {
                                self.error(&per_path, message);
                                false
                            }
                        })
                }
                None => {
                    self.missing(&child(&lp, "per"), "");
                    None
                }
            };
            // `Some(None)`: omitted; `None`: invalid (and reported).
            let mut tokens = |field: &str, s: &Option<Scalar>| match given(s) {
                None => Some(None),
                Some(s) => self
                    .number(&child(&lp, field), s, 1, limit_rules::MAX_TOKENS)
                    .map(Some),
            };
            let burst = tokens("burst", &l.burst);
            let cost = tokens("cost", &l.cost);
            let (Some(name), Some(rate), Some(per), Some(burst), Some(cost)) =
                (name, rate, per, burst, cost)
            else {
                continue;
            };
            let limit = Limit {
                name,
                rate,
                per,
                burst,
                cost,
                quota: None,
                scope,
            };
            if let Err(message) = limit_rules::check_burst_fits(&limit) {
                self.error(&child(&lp, "burst"), message);
                continue;
            }
            if let Err(message) = limit_rules::check_cost_fits(&limit) {
                self.error(&child(&lp, "cost"), message);
                continue;
            }
            out.push(limit);
        }
        out
    }
}
