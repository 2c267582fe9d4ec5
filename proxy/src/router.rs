//! Route matching: a route matches when its `path_prefix` matches on a segment
//! boundary and it takes the method; the longest such prefix wins (file order
//! breaks ties). A path that only routes with other methods match is 405.

use std::sync::Arc;

/// Anything the router can pick between: a path prefix and optional methods.
pub trait Routable {
    fn path_prefix(&self) -> &str;
    /// Upper-case methods; `None` = every method.
    fn methods(&self) -> Option<&[String]>;
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
            if !prefix_matches(route.path_prefix(), path) {
                continue;
            }
            match route.methods() {
                None => return RouteMatch::Found(route),
                Some(methods) if methods.iter().any(|m| m == method) => {
                    return RouteMatch::Found(route)
                }
                Some(methods) => allowed.extend(methods.iter().cloned()),
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
    struct R(&'static str, Option<Vec<String>>);
    impl Routable for R {
        fn path_prefix(&self) -> &str {
            self.0
        }
        fn methods(&self) -> Option<&[String]> {
            self.1.as_deref()
        }
    }

    fn m(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    fn router() -> Router<R> {
        Router::new(vec![
            Arc::new(R("/api", None)),
            Arc::new(R("/api/users", m(&["GET", "POST"]))),
            Arc::new(R("/api/users/admin", m(&["DELETE"]))),
            Arc::new(R("/files/", m(&["GET"]))),
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
            RouteMatch::MethodNotAllowed(allowed) => assert_eq!(allowed, vec!["GET"]),
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
