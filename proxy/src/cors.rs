//! CORS for browser callers (`routes[].cors`): the proxy answers preflights
//! itself (no key, no limits, no auth failure counted) and adds the CORS
//! headers to every answer of the route, its own 401/403/429 included, so a
//! browser can read why it was refused. Plain functions over the header.

use http::header::{ORIGIN, VARY};
use http::HeaderMap;
use pingora::http::RequestHeader;
use tollgate_core::config::{Cors, CorsOrigins};

use crate::answer::{self, Answer};

/// The `outcome` label of an answered preflight.
pub const PREFLIGHT: &str = "preflight";

/// Response headers a browser script may read besides the safelisted ones.
pub const EXPOSE: &str = "Retry-After, RateLimit, RateLimit-Policy, X-Request-Id";

const ACRM: &str = "access-control-request-method";
const ACRH: &str = "access-control-request-headers";

/// A route's CORS policy, with its header values rendered once.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    origins: CorsOrigins,
    methods: Vec<String>,
    /// Lower case; the key header and `authorization` included.
    headers: Vec<String>,
    allow_methods: String,
    allow_headers: String,
    max_age: Option<String>,
    credentials: bool,
}

/// The method a CORS preflight asks about: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`; `None` for any other request.
pub fn preflight_method(req: &RequestHeader) -> Option<&str> {
    if req.method != http::Method::OPTIONS || !req.headers.contains_key(ORIGIN) {
        return None;
    }
    req.headers.get(ACRM).and_then(|v| v.to_str().ok())
}

impl Policy {
    pub fn new(cfg: &Cors, key_header: &str) -> Self {
        let mut headers = cfg.headers.clone();
        for always in [key_header.to_ascii_lowercase(), "authorization".to_string()] {
            if !headers.contains(&always) {
                headers.push(always);
            }
        }
        Self {
            origins: cfg.origins.clone(),
            allow_methods: cfg.methods.join(", "),
            methods: cfg.methods.clone(),
            allow_headers: headers.join(", "),
            headers,
            max_age: cfg.max_age.map(|s| s.to_string()),
            credentials: cfg.credentials,
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request's `Origin`
    /// (exactly one, listed, byte for byte), or `None`.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<String> {
        let mut all = headers.get_all(ORIGIN).iter();
        let origin = all.next()?;
        if all.next().is_some() {
            return None;
        }
        match &self.origins {
            CorsOrigins::Any if !self.credentials => Some("*".to_string()),
            CorsOrigins::Any => None,
            CorsOrigins::List(list) => list
                .iter()
                .find(|o| o.as_bytes() == origin.as_bytes())
                .cloned(),
        }
    }

    /// The headers every answer of the route carries (the upstream's own
    /// `Access-Control-*` are replaced by these).
    pub fn response_headers(&self, req: &HeaderMap) -> Vec<(&'static str, String)> {
        let mut out = vec![("Vary", "Origin".to_string())];
        if let Some(origin) = self.allow_origin(req) {
            out.push(("Access-Control-Allow-Origin", origin));
            if self.credentials {
                out.push(("Access-Control-Allow-Credentials", "true".into()));
            }
            out.push(("Access-Control-Expose-Headers", EXPOSE.into()));
        }
        out
    }

    /// The answer to a preflight asking for `method`: 204 with the allowed
    /// methods and headers, or 403 `cors-refused` without any
    /// `Access-Control-Allow-*` header.
    pub fn preflight(&self, req: &RequestHeader, method: &str) -> Answer {
        let vary = (
            "Vary",
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_string(),
        );
        let Some(origin) = self.allow_origin(&req.headers) else {
            return answer::cors_refused("this origin").with_header(vary.0, vary.1);
        };
        if !self.methods.iter().any(|m| m == method) {
            return answer::cors_refused("this method").with_header(vary.0, vary.1);
        }
        let asked = req
            .headers
            .get_all(ACRH)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|h| !h.is_empty());
        for h in asked {
            if !self
                .headers
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(h))
            {
                return answer::cors_refused("a requested header").with_header(vary.0, vary.1);
            }
        }
        let mut a = Answer {
            status: 204,
            headers: vec![
                vary,
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Methods", self.allow_methods.clone()),
                ("Access-Control-Allow-Headers", self.allow_headers.clone()),
            ],
            body: Vec::new(),
            reason: PREFLIGHT.to_string(),
        };
        if self.credentials {
            a.headers
                .push(("Access-Control-Allow-Credentials", "true".into()));
        }
        if let Some(age) = &self.max_age {
            a.headers.push(("Access-Control-Max-Age", age.clone()));
        }
        a
    }
}

/// Replace the upstream's CORS headers with the route's and add `Origin` to
/// its `Vary`.
pub fn apply(
    policy: &Policy,
    req: &HeaderMap,
    resp: &mut pingora::http::ResponseHeader,
) -> pingora::Result<()> {
    let upstream_cors: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in upstream_cors {
        resp.remove_header(&n);
    }
    for (name, value) in policy.response_headers(req) {
        if name == "Vary" {
            let has_origin = resp.headers.get_all(VARY).iter().any(|v| {
                v.as_bytes().split(|&b| b == b',').any(|t| {
                    t.trim_ascii().eq_ignore_ascii_case(b"origin") || t.trim_ascii() == b"*"
                })
            });
            if !has_origin {
                resp.append_header(name, value)?;
            }
        } else {
            resp.insert_header(name, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: CorsOrigins, credentials: bool) -> Policy {
        Policy::new(
            &Cors {
                origins,
                methods: vec!["GET".into(), "POST".into()],
                headers: vec!["content-type".into()],
                max_age: Some(600),
                credentials,
            },
            "X-Api-Key",
        )
    }

    fn list() -> CorsOrigins {
        CorsOrigins::List(vec!["https://app.example".into()])
    }

    fn preflight(origin: &[u8], method: &str, headers: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("OPTIONS", b"/a", None).expect("req");
        r.insert_header("Origin", origin).expect("origin");
        r.insert_header(ACRM, method).expect("acrm");
        if let Some(h) = headers {
            r.insert_header(ACRH, h).expect("acrh");
        }
        r
    }

    #[test]
    fn only_options_with_origin_and_method_is_a_preflight() {
        let r = preflight(b"https://app.example", "POST", None);
        assert_eq!(preflight_method(&r), Some("POST"));
        let mut get = RequestHeader::build("GET", b"/a", None).expect("req");
        get.insert_header("Origin", "https://app.example")
            .expect("o");
        get.insert_header(ACRM, "POST").expect("m");
        assert_eq!(preflight_method(&get), None);
        let bare = RequestHeader::build("OPTIONS", b"/a", None).expect("req");
        assert_eq!(preflight_method(&bare), None);
    }

    #[test]
    fn a_listed_origin_gets_methods_headers_and_the_key_header() {
        let a = policy(list(), true).preflight(
            &preflight(
                b"https://app.example",
                "POST",
                Some("Content-Type, x-api-key"),
            ),
            "POST",
        );
        assert_eq!(a.status, 204);
        assert_eq!(
            a.header("Access-Control-Allow-Origin"),
            Some("https://app.example")
        );
        assert_eq!(a.header("Access-Control-Allow-Methods"), Some("GET, POST"));
        assert_eq!(
            a.header("Access-Control-Allow-Headers"),
            Some("content-type, x-api-key, authorization")
        );
        assert_eq!(a.header("Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(a.header("Access-Control-Max-Age"), Some("600"));
        assert!(a.header("Vary").is_some_and(|v| v.starts_with("Origin")));
    }

    #[test]
    fn hostile_preflights_are_refused_without_allow_headers() {
        let huge = vec![b'a'; 20_000];
        let p = policy(list(), false);
        for (origin, method, headers) in [
            (&b"null"[..], "POST", None),
            (&b"https://evil.example"[..], "POST", None),
            (&b"https://app.example.evil.example"[..], "POST", None),
            (&b"https://APP.example"[..], "POST", None),
            (&b"https://app.example/"[..], "POST", None),
            (&huge[..], "POST", None),
            (&b"https://app.example"[..], "DELETE", None),
            (&b"https://app.example"[..], "post", None),
            (&b"https://app.example"[..], "POST", Some("x-admin")),
            (
                &b"https://app.example"[..],
                "POST",
                Some("content-type,,x-admin "),
            ),
        ] {
            let a = p.preflight(&preflight(origin, method, headers), method);
            assert_eq!(a.status, 403, "{method} {headers:?}");
            assert!(
                a.headers
                    .iter()
                    .all(|(n, _)| !n.starts_with("Access-Control")),
                "{a:?}"
            );
            assert_eq!(a.reason, "cors-refused");
        }
    }

    #[test]
    fn two_origins_are_refused_and_any_is_a_star() {
        let mut r = preflight(b"https://app.example", "GET", None);
        r.append_header("Origin", "https://app.example").expect("o");
        assert_eq!(policy(list(), false).preflight(&r, "GET").status, 403);

        let any = policy(CorsOrigins::Any, false);
        let a = any.preflight(&preflight(b"null", "GET", None), "GET");
        assert_eq!(a.header("Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(a.header("Access-Control-Allow-Credentials"), None);
    }

    #[test]
    fn answers_carry_vary_and_the_origin_only_when_listed() {
        let p = policy(list(), true);
        let mut h = HeaderMap::new();
        assert_eq!(p.response_headers(&h), vec![("Vary", "Origin".to_string())]);
        h.insert(ORIGIN, "https://evil.example".parse().expect("v"));
        assert_eq!(p.response_headers(&h).len(), 1);
        h.insert(ORIGIN, "https://app.example".parse().expect("v"));
        let out = p.response_headers(&h);
        assert!(out.contains(&("Access-Control-Allow-Origin", "https://app.example".into())));
        assert!(out.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(out.contains(&("Access-Control-Expose-Headers", EXPOSE.into())));
    }

    #[test]
    fn upstream_cors_headers_are_replaced_and_vary_kept() {
        let p = policy(list(), false);
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, "https://app.example".parse().expect("v"));
        let mut resp = pingora::http::ResponseHeader::build(200, None).expect("resp");
        resp.insert_header("Access-Control-Allow-Origin", "*")
            .expect("h");
        resp.insert_header("Access-Control-Allow-Credentials", "true")
            .expect("h");
        resp.insert_header("Vary", "Accept-Encoding").expect("h");
        apply(&p, &h, &mut resp).expect("apply");
        let acao: Vec<_> = resp
            .headers
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        assert_eq!(acao, ["https://app.example"]);
        assert!(resp
            .headers
            .get("access-control-allow-credentials")
            .is_none());
        let vary: Vec<_> = resp.headers.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    }
}
