//! Reading the API key from a request: the configured header, or
//! `Authorization: Bearer <key>`.
//!
//! Exactly one credential: two key header lines, a key header beside an
//! `Authorization: Bearer tg_…`, or (without a key header) two
//! `Authorization` lines are [`Presented::Several`], a 400 whichever would be
//! valid, as the admin and verify APIs answer two `Authorization` headers
//! (RFC 6750 §3.1 `invalid_request`). Which one would win must never depend
//! on the proxy's reading order. An upstream's own bearer token (not a
//! Tollgate key) beside the key header is not a second key: it is forwarded.

use http::header::AUTHORIZATION;
use http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// From the configured key header.
    Header(&'a str),
    /// From `Authorization: Bearer`.
    Bearer(&'a str),
    /// A header was sent but is not valid visible ASCII.
    Garbled,
    Missing,
    /// More than one credential (400, whichever would be valid).
    Several(Several),
}

/// Which two credentials a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Several {
    /// The key header, twice or more.
    KeyHeaders,
    /// The key header and an `Authorization: Bearer tg_…`.
    KeyHeaderAndBearer,
    /// No key header, and `Authorization` twice or more.
    Authorizations,
}

/// The `reason` of the 400 (and its `tollgate_edge_refused_total` label).
pub const SEVERAL_REASON: &str = "several-credentials";

impl Several {
    /// The problem's `detail`.
    pub fn detail(self, key_header: &str) -> String {
        match self {
            Self::KeyHeaders => {
                format!("more than one {key_header} header: send exactly one credential")
            }
            Self::KeyHeaderAndBearer => format!(
                "a key in both {key_header} and Authorization: Bearer: send exactly one credential"
            ),
            Self::Authorizations => {
                "more than one Authorization header: send exactly one credential".to_string()
            }
        }
    }
}

impl<'a> Presented<'a> {
    pub fn key(self) -> Option<&'a str> {
        match self {
            Presented::Header(k) | Presented::Bearer(k) => Some(k),
            _ => None,
        }
    }
}

/// The key the request presents: the key header, else `Authorization:
/// Bearer`; [`Presented::Several`] for more than one credential.
pub fn extract<'a>(headers: &'a HeaderMap, key_header: &str) -> Presented<'a> {
    let mut key_lines = headers.get_all(key_header).iter();
    let mut authorizations = headers.get_all(AUTHORIZATION).iter();
    if let Some(v) = key_lines.next() {
        if key_lines.next().is_some() {
            return Presented::Several(Several::KeyHeaders);
        }
        if authorizations.any(|a| is_bearer_key(a.as_bytes())) {
            return Presented::Several(Several::KeyHeaderAndBearer);
        }
        return match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Presented::Header(s.trim()),
            Ok(_) => Presented::Missing,
            Err(_) => Presented::Garbled,
        };
    }
    if let Some(v) = authorizations.next() {
        if authorizations.next().is_some() {
            return Presented::Several(Several::Authorizations);
        }
        let Ok(s) = v.to_str() else {
            return Presented::Garbled;
        };
        let s = s.trim();
        if s.len() > 7 && s[..7].eq_ignore_ascii_case("bearer ") {
            let token = s[7..].trim();
            if !token.is_empty() {
                return Presented::Bearer(token);
            }
        }
    }
    Presented::Missing
}

/// Whether an `Authorization` value carries a Tollgate key as a bearer token.
pub fn is_bearer_key(v: &[u8]) -> bool {
    let s = String::from_utf8_lossy(v);
    let s = s.trim();
    s.len() > 7
        && s[..7].eq_ignore_ascii_case("bearer ")
        && s[7..]
            .trim_start()
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("tg_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_bytes(v).expect("header value"));
        }
        h
    }

    #[test]
    fn header_or_bearer() {
        let h = headers(&[("x-api-key", b"tg_a"), ("authorization", b"Bearer eyJ.up")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Header("tg_a"));
        let h = headers(&[("authorization", b"bearer  tg_b ")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Bearer("tg_b"));
    }

    /// Round 12 (black-box): the first of two credentials used to win.
    #[test]
    fn two_credentials_are_several() {
        type Pairs = &'static [(&'static str, &'static [u8])];
        let cases: [(Pairs, Several); 4] = [
            (
                &[("x-api-key", b"tg_a"), ("x-api-key", b"tg_b")],
                Several::KeyHeaders,
            ),
            (
                &[("x-api-key", b"tg_a"), ("authorization", b"Bearer tg_b")],
                Several::KeyHeaderAndBearer,
            ),
            (
                &[("x-api-key", b""), ("authorization", b"bearer  tg_b")],
                Several::KeyHeaderAndBearer,
            ),
            (
                &[
                    ("authorization", b"Basic x"),
                    ("authorization", b"Bearer tg_b"),
                ],
                Several::Authorizations,
            ),
        ];
        for (pairs, several) in cases {
            let h = headers(pairs);
            assert_eq!(
                extract(&h, "x-api-key"),
                Presented::Several(several),
                "{pairs:?}"
            );
        }
        assert!(Several::KeyHeaders
            .detail("x-api-key")
            .starts_with("more than one x-api-key header"));
    }

    #[test]
    fn missing_and_garbled() {
        assert_eq!(extract(&HeaderMap::new(), "x-api-key"), Presented::Missing);
        let h = headers(&[("authorization", b"Basic abc")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Missing);
        let h = headers(&[("x-api-key", b"")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Missing);
        let h = headers(&[("x-api-key", b"tg_\xff\xfe")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Garbled);
    }
}
