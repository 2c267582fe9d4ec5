//! Route matching: a route matches when its `path_prefix` matches on a segment
//! boundary and it takes the method; the longest such prefix wins (file order
//! breaks ties). A path that only routes with other methods match is 405.
//!
//! The path is the canonical one (`tollgate_core::path`). Prefixes match
//! byte for byte unless the route says `match.case_insensitive: true` (ASCII
//! case). Methods are tokens and match exactly, case-sensitively, as HTTP
//! defines them (`get` is not `GET`); `HEAD` is taken wherever `GET` is.

use std::sync::Arc;

// Whether a route's method list takes a method (`HEAD` rides on `GET`):
// core's rule, which the config's route overlap check uses too.
use tollgate_core::rules::access::takes_method as takes;

/// Anything the router can pick between: a path prefix and optional methods.
pub trait Routable {
    fn path_prefix(&self) -> &str;
    /// Upper-case methods; `None` = every method.
    fn methods(&self) -> Option<&[String]>;
    /// Whether the prefix matches in any ASCII case.
    fn case_insensitive(&self) -> bool {
        false
    }
}

/// Whether `route` takes `method` (every method when it names none).
pub fn route_takes<R: Routable>(route: &R, method: &str) -> bool {
    route.methods().is_none_or(|m| takes(m, method))
}

#[derive(Debug)]
pub enum RouteMatch<'a, R> {
    Found(&'a Arc<R>),
    /// Some route has this path, but none takes this method (the `Allow` list).
    MethodNotAllowed(Vec<String>),
    NotFound,
}

/// Routes sorted by descending prefix length, so the first hit is the longest.
#[derive(Debug)]
pub struct Router<R> {
    routes: Vec<Arc<R>>,
}

impl<R: Routable> Router<R> {
    pub fn new(routes: Vec<Arc<R>>) -> Self {
        let mut routes = routes;
        // Stable sort: among equal prefixes the file order decides.
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix().len()));
        Self { routes }
    }

    pub fn routes(&self) -> &[Arc<R>] {
        &self.routes
    }

    pub fn find(&self, path: &str, method: &str) -> RouteMatch<'_, R> {
        let mut allowed: Vec<String> = Vec::new();
        for route in &self.routes {
            let matches = if route.case_insensitive() {
                prefix_matches_ignore_case(route.path_prefix(), path)
            } else {
                prefix_matches(route.path_prefix(), path)
            };
            if !matches {
                continue;
            }
            match route.methods() {
                None => return RouteMatch::Found(route),
                Some(methods) if takes(methods, method) => return RouteMatch::Found(route),
                Some(methods) => {
                    allowed.extend(methods.iter().cloned());
                    if methods.iter().any(|m| m == "GET") {
                        allowed.push("HEAD".to_string());
                    }
                }
            }
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            allowed.sort();
            allowed.dedup();
            RouteMatch::MethodNotAllowed(allowed)
        }
    }
}

/// `/api/users` matches `/api/users`, `/api/users/7`, but not `/api/usersx`.
/// A prefix ending in `/` matches everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

/// [`prefix_matches`] in any ASCII case.
pub fn prefix_matches_ignore_case(prefix: &str, path: &str) -> bool {
    let (p, q) = (prefix.as_bytes(), path.as_bytes());
    if q.len() < p.len() || !q[..p.len()].eq_ignore_ascii_case(p) {
        return false;
    }
    let rest = &q[p.len()..];
    rest.is_empty() || prefix.ends_with('/') || rest[0] == b'/'
}

/// Remove `strip` from the front of `path`, keeping a leading `/`; in any
/// ASCII case when `ignore_case` (the route matched that way).
pub fn strip_path_case<'a>(
    path: &'a str,
    strip: &str,
    ignore_case: bool,
) -> std::borrow::Cow<'a, str> {
    let strip = strip.trim_end_matches('/');
    if ignore_case
        && path.len() >= strip.len()
        && path.as_bytes()[..strip.len()].eq_ignore_ascii_case(strip.as_bytes())
    {
        // ASCII-only comparison: `strip.len()` is a char boundary of `path`.
        let rest = &path[strip.len()..];
        return if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        };
    }
    strip_path(path, strip)
}

/// Remove `strip` from the front of `path`, keeping a leading `/`.
pub fn strip_path<'a>(path: &'a str, strip: &str) -> std::borrow::Cow<'a, str> {
    match path.strip_prefix(strip.trim_end_matches('/')) {
        Some(rest) if rest.starts_with('/') => rest.into(),
        Some(rest) => format!("/{rest}").into(),
        None => path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct R(&'static str, Option<Vec<String>>, bool);
    impl Routable for R {
        fn path_prefix(&self) -> &str {
            self.0
        }
        fn methods(&self) -> Option<&[String]> {
            self.1.as_deref()
        }
        fn case_insensitive(&self) -> bool {
            self.2
        }
    }

    fn m(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    fn router() -> Router<R> {
        Router::new(vec![
            Arc::new(R("/api", None, false)),
            Arc::new(R("/api/users", m(&["GET", "POST"]), false)),
            Arc::new(R("/api/users/admin", m(&["DELETE"]), false)),
            Arc::new(R("/files/", m(&["GET"]), false)),
            Arc::new(R("/Open/Secret", m(&["GET"]), true)),
        ])
    }

    fn found(r: &Router<R>, path: &str, method: &str) -> Option<&'static str> {
        match r.find(path, method) {
            RouteMatch::Found(route) => Some(route.0),
            _ => None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router();
        assert_eq!(found(&r, "/api/users/7", "GET"), Some("/api/users"));
        assert_eq!(found(&r, "/api/orders", "GET"), Some("/api"));
        assert_eq!(
            found(&r, "/api/users/admin", "DELETE"),
            Some("/api/users/admin")
        );
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let r = router();
        assert_eq!(found(&r, "/api/usersx", "GET"), Some("/api"));
        assert_eq!(found(&r, "/apix", "GET"), None);
        assert_eq!(found(&r, "/files/a/b", "GET"), Some("/files/"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn method_mismatch_on_longest_prefix_reports_allowed_methods() {
        let r = router();
        assert_eq!(found(&r, "/api/users/admin", "GET"), Some("/api/users"));
        match r.find("/files/x", "PUT") {
            RouteMatch::MethodNotAllowed(allowed) => assert_eq!(allowed, vec!["GET", "HEAD"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn method_mismatch_falls_back_to_a_shorter_prefix_that_allows_it() {
        // `/api` takes every method, so PUT /api/users/7 goes there.
        let r = router();
        assert_eq!(found(&r, "/api/users/7", "PUT"), Some("/api"));
    }

    #[test]
    fn methods_are_case_sensitive_and_head_rides_on_get() {
        let r = router();
        assert_eq!(found(&r, "/files/x", "HEAD"), Some("/files/"));
        assert!(matches!(
            r.find("/files/x", "get"),
            RouteMatch::MethodNotAllowed(_)
        ));
        // `/api` takes every method, even odd spellings.
        assert_eq!(found(&r, "/api/users", "get"), Some("/api"));
    }

    #[test]
    fn case_insensitive_routes() {
        let r = router();
        assert_eq!(found(&r, "/open/secret/x", "GET"), Some("/Open/Secret"));
        assert_eq!(found(&r, "/OPEN/SECRET", "GET"), Some("/Open/Secret"));
        assert_eq!(found(&r, "/open/secretx", "GET"), None);
        // Others stay exact.
        assert_eq!(found(&r, "/API/users", "GET"), None);
        assert_eq!(strip_path_case("/OPEN/x", "/open", true), "/x");
        assert_eq!(strip_path_case("/OPEN/x", "/open", false), "/OPEN/x");
    }

    #[test]
    fn no_route_is_not_found() {
        assert!(matches!(
            router().find("/other", "GET"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn strip_keeps_a_leading_slash() {
        assert_eq!(strip_path("/api/users/1", "/api"), "/users/1");
        assert_eq!(strip_path("/api", "/api"), "/");
        assert_eq!(strip_path("/api/", "/api/"), "/");
        assert_eq!(strip_path("/other", "/api"), "/other");
    }
}
