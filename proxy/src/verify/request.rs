//! The verify request: its body read with a cap and parsed strictly, each
//! field checked. Every refusal is a 4xx problem ([`Refusal`]); nothing a
//! caller sends reaches the rules unchecked.

use std::net::IpAddr;

use serde::Deserialize;
use tollgate_core::problem::Problem;

use crate::limiter::cost::MAX_COST;

/// The largest body accepted (a key, a route name, a method and an address
/// fit many times over).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The longest `key` looked at (longer is no key: `key-invalid`).
pub const MAX_KEY_LEN: usize = 256;
/// The longest `route` name.
pub const MAX_ROUTE_LEN: usize = 256;
/// The longest `method`.
pub const MAX_METHOD_LEN: usize = 32;

/// The body as sent: unknown fields, duplicates and wrong types are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    key: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    cost: Option<u64>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    ip: Option<String>,
}

/// A checked verify request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    pub key: String,
    pub route: Option<String>,
    /// How many times the request counts against each limit (default 1).
    pub cost: u64,
    pub method: Option<String>,
    /// The client's address, as the calling service saw it.
    pub ip: Option<IpAddr>,
}

/// A request the verify API refuses before deciding anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub problem: Box<Problem>,
    /// The connection cannot carry another request (body left unread).
    pub close: bool,
}

impl Refusal {
    pub fn new(kind: &str, title: &str, status: u16, detail: impl Into<String>) -> Self {
        Self {
            problem: Box::new(Problem::new(kind, title, status).detail(detail)),
            close: false,
        }
    }

    /// An extension member of the problem.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.problem
            .extensions
            .insert(key.to_string(), value.into());
        self
    }

    fn bad(field: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(
            "bad-request",
            "Bad Request",
            400,
            format!("{field}: {detail}"),
        )
        .with("field", field)
    }

    pub fn too_large() -> Self {
        Self {
            close: true,
            ..Self::new(
                "body-too-large",
                "Content Too Large",
                413,
                format!("the verify request body may be at most {MAX_BODY_BYTES} bytes"),
            )
        }
    }
}

/// Whether a `Content-Type` value is JSON (`application/json`, any
/// parameters, any case).
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(v) = content_type.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    let media = v.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
}

/// Parse and check a body of at most [`MAX_BODY_BYTES`].
pub fn parse(body: &[u8]) -> Result<VerifyRequest, Refusal> {
    // serde would also take the struct's positional form, a JSON array
    // (`["tg_…",null,…]`): only an object names its fields.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Refusal::bad("body", "expected a JSON object"));
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        // serde quotes offending values: never echo what may be a secret.
        let msg = e.to_string();
        let msg = if tollgate_core::keys::contains_key(msg.as_bytes()) || msg.len() > 300 {
            format!("invalid JSON at line {} column {}", e.line(), e.column())
        } else {
            msg
        };
        Refusal::bad("body", msg)
    })?;
    let route = match raw.route {
        None => None,
        Some(r) if r.is_empty() || r.len() > MAX_ROUTE_LEN || r.chars().any(char::is_control) => {
            return Err(Refusal::bad(
                "route",
                format!("expected a route name of 1 to {MAX_ROUTE_LEN} printable characters"),
            ))
        }
        Some(r) => Some(r),
    };
    let cost = match raw.cost {
        None => 1,
        Some(c @ 1..=MAX_COST) => c,
        Some(c) => {
            return Err(Refusal::bad(
                "cost",
                format!("{c} is out of range (1 to {MAX_COST})"),
            ))
        }
    };
    let method = match raw.method {
        None => None,
        Some(m)
            if !m.is_empty()
                && m.len() <= MAX_METHOD_LEN
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
        {
            Some(m)
        }
        Some(_) => {
            return Err(Refusal::bad(
                "method",
                format!("expected an HTTP method (a token of 1 to {MAX_METHOD_LEN} characters)"),
            ))
        }
    };
    let ip = match raw.ip {
        None => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip.to_canonical()),
            Err(_) => {
                return Err(Refusal::bad(
                    "ip",
                    "expected an IPv4 or IPv6 address such as 203.0.113.7 or 2001:db8::1",
                ))
            }
        },
    };
    Ok(VerifyRequest {
        key: raw.key,
        route,
        cost,
        method,
        ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_parses() {
        let r = parse(
            br#"{"key":"tg_x","route":"users","cost":3,"method":"GET","ip":"::ffff:203.0.113.7"}"#,
        )
        .expect("valid");
        assert_eq!(
            r,
            VerifyRequest {
                key: "tg_x".into(),
                route: Some("users".into()),
                cost: 3,
                method: Some("GET".into()),
                ip: Some("203.0.113.7".parse().expect("ip")),
            }
        );
        let r = parse(br#"{"key":"k","route":null}"#).expect("valid");
        assert_eq!((r.route, r.cost, r.method, r.ip), (None, 1, None, None));
    }

    #[test]
    fn hostile_bodies_are_400_naming_the_field() {
        for (body, field) in [
            (&b""[..], "body"),
            (b"null", "body"),
            (b"[]", "body"),
            (b"[\"tg_k\",null,null,null,null]", "body"),
            (b" [\"tg_k\"]", "body"),
            (b"{}", "body"),
            (b"{\"key\":5}", "body"),
            (b"{\"key\":null}", "body"),
            (b"{\"key\":\"k\",\"extra\":1}", "body"),
            (b"{\"key\":\"k\",\"key\":\"j\"}", "body"),
            (b"{\"key\":\"k\"} trailing", "body"),
            (b"{\"key\":\"\xff\"}", "body"),
            (b"{\"key\":\"k\",\"cost\":-1}", "body"),
            (b"{\"key\":\"k\",\"cost\":1.5}", "body"),
            (b"{\"key\":\"k\",\"cost\":\"3\"}", "body"),
            (b"{\"key\":\"k\",\"cost\":1e30}", "body"),
            (b"{\"key\":\"k\",\"cost\":0}", "cost"),
            (b"{\"key\":\"k\",\"cost\":1000001}", "cost"),
            (b"{\"key\":\"k\",\"route\":\"\"}", "route"),
            (b"{\"key\":\"k\",\"route\":\"a\\u0000b\"}", "route"),
            (b"{\"key\":\"k\",\"method\":\"GE T\"}", "method"),
            (b"{\"key\":\"k\",\"method\":\"\"}", "method"),
            (b"{\"key\":\"k\",\"ip\":\"10.0.0.0/8\"}", "ip"),
            (b"{\"key\":\"k\",\"ip\":\"localhost\"}", "ip"),
            (b"{\"key\":\"k\",\"ip\":7}", "body"),
        ] {
            let r = parse(body).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(r.problem.status, 400, "{body:?}");
            assert_eq!(r.problem.extensions["field"], field, "{body:?}");
        }
        let long = format!(
            "{{\"key\":\"k\",\"route\":\"{}\"}}",
            "r".repeat(MAX_ROUTE_LEN + 1)
        );
        assert!(parse(long.as_bytes()).is_err());
    }

    #[test]
    fn a_key_in_a_wrong_place_is_not_echoed() {
        let key = tollgate_core::keys::generate().expect("random").plain;
        let body = format!(r#"{{"key":"k","cost":"{key}"}}"#);
        let r = parse(body.as_bytes()).expect_err("wrong type");
        assert!(!r
            .problem
            .to_json()
            .windows(key.len())
            .any(|w| w == key.as_bytes()));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some(b"application/json")));
        assert!(is_json(Some(b"Application/JSON; charset=utf-8")));
        assert!(!is_json(Some(b"text/plain")));
        assert!(!is_json(Some(b"application/jsonx")));
        assert!(!is_json(None));
        assert!(!is_json(Some(b"\xff")));
    }
}
