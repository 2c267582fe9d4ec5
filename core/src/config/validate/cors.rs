//! `routes[].cors` and `routes[].max_body_bytes`.

use super::raw::RawCors;
use super::*;

/// Methods a preflight may ask for when neither `cors.methods` nor
/// `match.methods` says.
const DEFAULT_CORS_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// `Access-Control-Max-Age` above this is capped by every browser anyway.
const MAX_CORS_MAX_AGE: u64 = 86_400;

/// The largest `max_body_bytes` written (1 TiB).
const MAX_BODY_CAP: usize = 1 << 40;

impl Validator<'_> {
    pub(super) fn max_body_bytes(&mut self, path: &str, s: &Option<Scalar>) -> u64 {
        match given(s) {
            Some(s) => self
                .byte_size(path, s, 0, MAX_BODY_CAP)
                .map_or(DEFAULT_MAX_BODY_BYTES, |n| n as u64),
            None => DEFAULT_MAX_BODY_BYTES,
        }
    }

    pub(super) fn cors(
        &mut self,
        path: &str,
        raw: &RawCors,
        route_methods: Option<&[String]>,
    ) -> Option<Cors> {
        let op = child(path, "origins");
        let origins = match &raw.origins {
            None => {
                self.missing(&op, " (list the origins allowed, or [\"*\"])");
                None
            }
            Some(list) => self.origins(&op, list),
        };
        let methods = match &raw.methods {
            Some(list) => self
                .methods(&child(path, "methods"), list)
                .unwrap_or_default(),
            None => route_methods
                .map(<[String]>::to_vec)
                .unwrap_or_else(|| DEFAULT_CORS_METHODS.iter().map(|m| m.to_string()).collect()),
        };
        let headers = match &raw.headers {
            Some(list) => self.header_names(&child(path, "headers"), list),
            None => Vec::new(),
        };
        let ap = child(path, "max_age");
        let max_age = given(&raw.max_age).and_then(|s| {
            let secs = match s {
                Scalar::Int(_) => self.number(&ap, s, 0, MAX_CORS_MAX_AGE)?,
                _ => self.duration(&ap, s, Duration::ZERO)?.as_secs(),
            };
            if secs > MAX_CORS_MAX_AGE {
                self.error(&ap, format!("must be at most 1d (86400), got {s}"));
                return None;
            }
            Some(secs)
        });
        let cp = child(path, "credentials");
        let credentials = self.flag_or(&cp, &raw.credentials, false);
        if credentials && origins == Some(CorsOrigins::Any) {
            self.error(
                &cp,
                "credentials: true cannot go with origins [\"*\"] (browsers refuse it); list the origins",
            );
            return None;
        }
        Some(Cors {
            origins: origins?,
            methods,
            headers,
            max_age,
            credentials,
        })
    }

    fn origins(&mut self, path: &str, list: &[Scalar]) -> Option<CorsOrigins> {
        if list.is_empty() {
            self.error(
                path,
                "must not be empty (leave cors out to add no CORS headers)",
            );
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut any = false;
        let mut ok = true;
        for (i, s) in list.iter().enumerate() {
            let ip = item(path, i);
            let text = s.text().unwrap_or_default();
            if text == "*" {
                any = true;
                continue;
            }
            match parse_origin(&text) {
                Ok(o) => {
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
                Err(why) => {
                    self.error(&ip, format!("{s} is not an origin: {why}"));
                    ok = false;
                }
            }
        }
        if any && !out.is_empty() {
            self.error(path, "\"*\" already allows every origin: list \"*\" alone");
            return None;
        }
        match (ok, any) {
            (false, _) => None,
            (true, true) => Some(CorsOrigins::Any),
            (true, false) => Some(CorsOrigins::List(out)),
        }
    }

    /// Header field names, lower-cased and deduplicated.
    fn header_names(&mut self, path: &str, list: &[Scalar]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let name = s.text().unwrap_or_default().to_ascii_lowercase();
            if !is_token(&name) {
                self.error(&item(path, i), format!("invalid header name {s}"));
                continue;
            }
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// An origin as browsers serialize it (RFC 6454 §6.2): `scheme://host` or
/// `scheme://host:port`, nothing else; returned in lower case.
pub(super) fn parse_origin(text: &str) -> Result<String, &'static str> {
    if text.eq_ignore_ascii_case("null") {
        return Err("\"null\" is sent by sandboxed frames and file: pages, which anyone can make");
    }
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or("expected scheme://host[:port], such as https://app.example")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err("the scheme must be a word such as https");
    }
    let (host, port) = if rest.starts_with('[') {
        // An IPv6 literal: `[…]` then optionally `:port`.
        let end = rest.find(']').ok_or("an IPv6 address must end with ']'")?;
        let (h, tail) = rest.split_at(end + 1);
        match tail {
            "" => (h, None),
            t => (
                h,
                Some(
                    t.strip_prefix(':')
                        .ok_or("only a :port may follow the host")?,
                ),
            ),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    };
    if !host_ok {
        return Err("no path, query, user or trailing '/': only scheme://host[:port]");
    }
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|n| n > 0) || p.starts_with('0') {
            return Err("the port must be a number from 1 to 65535");
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_scheme_host_port_only() {
        for good in [
            "https://app.example",
            "HTTPS://App.Example:8443",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
            "http://[::1]",
        ] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
        assert_eq!(
            parse_origin("HTTPS://App.Example:8443").as_deref(),
            Ok("https://app.example:8443")
        );
        for bad in [
            "null",
            "NULL",
            "app.example",
            "https://app.example/",
            "https://app.example/x",
            "https://user@app.example",
            "https://app.example?x",
            "https://app.example:0",
            "https://app.example:99999",
            "https://app.example:",
            "https://",
            "://app.example",
            "1https://app.example",
            "https://app example",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
