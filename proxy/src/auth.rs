//! Reading the API key from a request: the configured header, or
//! `Authorization: Bearer <key>`.

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
}

impl<'a> Presented<'a> {
    pub fn key(self) -> Option<&'a str> {
        match self {
            Presented::Header(k) | Presented::Bearer(k) => Some(k),
            _ => None,
        }
    }
}

/// The key header wins over `Authorization` when both are present.
pub fn extract<'a>(headers: &'a HeaderMap, key_header: &str) -> Presented<'a> {
    if let Some(v) = headers.get(key_header) {
        return match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Presented::Header(s.trim()),
            Ok(_) => Presented::Missing,
            Err(_) => Presented::Garbled,
        };
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
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
    fn header_then_bearer() {
        let h = headers(&[("x-api-key", b"tg_a"), ("authorization", b"Bearer tg_b")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Header("tg_a"));
        let h = headers(&[("authorization", b"bearer  tg_b ")]);
        assert_eq!(extract(&h, "x-api-key"), Presented::Bearer("tg_b"));
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
