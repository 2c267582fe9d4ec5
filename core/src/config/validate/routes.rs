//! `routes:`: matching, references to upstreams and plans, overlaps.

use super::*;

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        raw: &[RawRoute],
        plans: &[&str],
        upstreams: &[&str],
    ) -> Vec<Route> {
        let mut routes = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // (index, prefix, methods, case_insensitive) of the routes so far.
        let mut matchers: Vec<(usize, String, Option<Vec<String>>, bool)> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let path = item("routes", i);
            let name_path = child(&path, "name");
            let name = self.non_empty(&name_path, &r.name).filter(|name| {
                if let Err(message) = crate::rules::check_name("route", name) {
                    self.error(&name_path, message);
                    return false;
                }
                if let Some(first) = names.get(name) {
                    self.error(
                        &name_path,
                        format!("duplicate route name {name:?} (also routes[{first}])"),
                    );
                    return false;
                }
                names.insert(name.clone(), i);
                true
            });

            let match_path = child(&path, "match");
            let (path_prefix, methods, case_insensitive) = match &r.match_ {
                None => {
                    self.missing(&match_path, "");
                    (None, None, false)
                }
                Some(m) => {
                    let pp = child(&match_path, "path_prefix");
                    let prefix = self.required_text(&pp, &m.path_prefix).filter(|p| {
                        if !p.starts_with('/') {
                            self.error(&pp, format!("must start with '/', got {p:?}"));
                            return false;
                        }
                        if p.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
                            self.error(&pp, format!("{p:?} is not a path: no spaces, '?' or '#'"));
                            return false;
                        }
                        if !crate::path::is_canonical(p) {
                            let hint = crate::path::canonicalize(p.as_bytes(), PathPolicy::Normalize)
                                .map(|c| {
                                    // A prefix also has no trailing '/' (below).
                                    let bare = match c.path.trim_end_matches('/') {
                                        "" => "/",
                                        b => b,
                                    };
                                    format!(" (write {bare:?})")
                                })
                                .unwrap_or_default();
                            self.error(
                                &pp,
                                format!(
                                    "{p:?} is not a canonical path: no '.', '..' or empty segments, ';', '\\', encoded '/' or escapes of plain characters{hint}"
                                ),
                            );
                            return false;
                        }
                        if p.len() > 1 && p.ends_with('/') {
                            let bare = p.trim_end_matches('/');
                            self.error(
                                &pp,
                                format!(
                                    "{p:?} ends with '/': write {bare:?}, which takes {bare:?} and everything below it (a prefix matches on segment boundaries); \
                                     with the '/' the path {bare:?} itself would be left to another route"
                                ),
                            );
                            return false;
                        }
                        true
                    });
                    let methods = m
                        .methods
                        .as_ref()
                        .map(|list| self.methods(&child(&match_path, "methods"), list));
                    let ci = self.flag_or(
                        &child(&match_path, "case_insensitive"),
                        &m.case_insensitive,
                        false,
                    );
                    (prefix, methods, ci)
                }
            };

            let upstream_path = child(&path, "upstream");
            let upstream = self.required_text(&upstream_path, &r.upstream).filter(|u| {
                let ok = upstreams.contains(&u.as_str());
                if !ok {
                    self.error(
                        &upstream_path,
                        format!(
                            "unknown upstream {u:?} ({})",
                            rules::known(upstreams, "upstreams")
                        ),
                    );
                }
                ok
            });

            if let Some(prefix) = &path_prefix {
                let own = methods.clone().flatten();
                let clash = matchers.iter().find(|(_, p, m, ci)| {
                    let same = if *ci || case_insensitive {
                        p.eq_ignore_ascii_case(prefix)
                    } else {
                        p == prefix
                    };
                    same && methods_overlap(m.as_deref(), own.as_deref())
                });
                if let Some((first, _, m, _)) = clash {
                    let head = if methods_share_one(m.as_deref(), own.as_deref()) {
                        ""
                    } else {
                        " (HEAD is taken wherever GET is)"
                    };
                    self.error(
                        &child(&match_path, "path_prefix"),
                        format!(
                            "{prefix:?} with these methods is also matched by routes[{first}]{head}; \
                             only one of them could ever be chosen"
                        ),
                    );
                }
                matchers.push((i, prefix.clone(), own, case_insensitive));
            }

            let strip_path = child(&path, "strip_prefix");
            let strip_prefix = self.text(&r.strip_prefix);
            if let Some(s) = &strip_prefix {
                if !s.starts_with('/') {
                    self.error(&strip_path, format!("must start with '/', got {s:?}"));
                } else if let Some(p) = &path_prefix {
                    if !p.starts_with(s.as_str()) {
                        self.error(
                            &strip_path,
                            format!("{s:?} is not a prefix of match.path_prefix {p:?}"),
                        );
                    }
                }
            }

            let auth = self.choice_or(
                &child(&path, "auth"),
                &r.auth,
                &[("api_key", Auth::ApiKey), ("none", Auth::None)],
                Auth::ApiKey,
            );

            let plan_path = child(&path, "default_plan");
            let default_plan = self.text(&r.default_plan);
            if let Some(p) = &default_plan {
                if !plans.contains(&p.as_str()) {
                    self.error(&plan_path, rules::unknown_plan(p, plans));
                }
            }

            let limits = self.limits(&child(&path, "limits"), r.limits.as_deref());
            let shadow = self.flag_or(&child(&path, "shadow"), &r.shadow, false);
            let allow_method_override = self.flag_or(
                &child(&path, "allow_method_override"),
                &r.allow_method_override,
                false,
            );

            let ip_allow = self.ip_list(&child(&path, "ip_allow"), r.ip_allow.as_deref());
            let ip_deny = self.ip_list(&child(&path, "ip_deny"), r.ip_deny.as_deref());
            let websocket = self.flag_or(&child(&path, "websocket"), &r.websocket, false);
            let max_body_bytes =
                self.max_body_bytes(&child(&path, "max_body_bytes"), &r.max_body_bytes);
            let cors = r.cors.as_ref().and_then(|c| {
                self.cors(
                    &child(&path, "cors"),
                    c,
                    methods.clone().flatten().as_deref(),
                )
            });

            let cost = r
                .cost
                .as_ref()
                .and_then(|c| self.route_cost(&child(&path, "cost"), c));
            if let Some(c) = &cost {
                self.reserve_fits(&child(&path, "cost"), c.reserve, &limits);
            }

            if let (Some(name), Some(path_prefix), Some(upstream)) = (name, path_prefix, upstream) {
                routes.push(Route {
                    name,
                    path_prefix,
                    methods: methods.flatten(),
                    upstream,
                    strip_prefix,
                    auth,
                    default_plan,
                    limits,
                    shadow,
                    case_insensitive,
                    allow_method_override,
                    ip_allow,
                    ip_deny,
                    websocket,
                    max_body_bytes,
                    cors,
                    cost,
                });
            }
        }
        routes
    }

    /// `match.methods`: upper-cased, deduplicated, in file order.
    pub(super) fn methods(&mut self, path: &str, list: &[Scalar]) -> Option<Vec<String>> {
        if list.is_empty() {
            self.error(
                path,
                "must not be empty (leave methods out to match every method)",
            );
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let mp = item(path, i);
            let Some(text) = m.text() else {
                self.error(&mp, "expected an HTTP method such as GET, got null");
                continue;
            };
            let upper = text.to_ascii_uppercase();
            if !is_token(&upper) {
                self.error(&mp, format!("invalid HTTP method {m}"));
                continue;
            }
            if !out.contains(&upper) {
                out.push(upper);
            }
        }
        Some(out)
    }
}

/// Whether a request could be taken by either of two routes' method lists
/// (`None`: every method): they share a method, or one takes HEAD through
/// its GET ([`crate::rules::access::takes_method`], the router's rule)
/// while the other names HEAD. Which of two such routes a HEAD reaches
/// would depend on their order, and the other would never see it.
fn methods_overlap(a: Option<&[String]>, b: Option<&[String]>) -> bool {
    use crate::rules::access::takes_method;
    match (a, b) {
        // A method `a` takes is one it names, or HEAD.
        (Some(a), Some(b)) => a
            .iter()
            .map(String::as_str)
            .chain(["HEAD"])
            .any(|m| takes_method(a, m) && takes_method(b, m)),
        _ => true,
    }
}

/// Whether two method lists name one method alike (no HEAD-on-GET).
fn methods_share_one(a: Option<&[String]>, b: Option<&[String]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}
