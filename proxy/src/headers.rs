//! Rendering of the rate-limit response headers
//! (draft-ietf-httpapi-ratelimit-headers-10): one list member per limit.
//!
//! `RateLimit-Policy: "minute";q=60;w=60, "route";q=10;w=1`
//! `RateLimit: "minute";r=42;t=3, "route";r=9;t=1`

use std::fmt::Write;

use http::{HeaderName, HeaderValue};
use tollgate_core::limits::{LimitState, Policy};

pub const POLICY: &str = "RateLimit-Policy";
pub const RATELIMIT: &str = "RateLimit";
pub const POLICY_NAME: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT_NAME: HeaderName = HeaderName::from_static("ratelimit");

/// The `RateLimit-Policy` field value.
pub fn policy(limits: &[LimitState]) -> String {
    let mut out = String::with_capacity(24 * limits.len());
    for (i, l) in limits.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_member(&mut out, &l.name, l.quota, l.window_secs);
    }
    out
}

fn push_member(out: &mut String, name: &str, quota: u64, window_secs: u64) {
    push_sf_string(out, name);
    let _ = write!(out, ";q={};w={}", sf_int(quota), sf_int(window_secs));
}

/// One limit's member of `RateLimit-Policy` (rendered once per compiled limit).
pub fn policy_member(p: &Policy) -> String {
    let mut out = String::with_capacity(24);
    push_member(&mut out, &p.name, p.quota, p.window_secs);
    out
}

/// The whole `RateLimit-Policy` value of some buckets, in their order, from
/// their pre-rendered members ([`policy_member`]): the same text as
/// [`policy`] of the states a limiter reports for them. `None` for none.
pub fn policy_value<'a>(members: impl IntoIterator<Item = &'a str>) -> Option<HeaderValue> {
    let mut out = String::new();
    for m in members {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(m);
    }
    joined_value(out)
}

/// `first, second` (either may be absent), as one header value.
pub fn join_values(
    first: Option<&HeaderValue>,
    second: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    match (first, second) {
        (None, None) => None,
        (Some(v), None) | (None, Some(v)) => Some(v.clone()),
        (Some(a), Some(b)) => {
            let mut out = Vec::with_capacity(a.len() + 2 + b.len());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b", ");
            out.extend_from_slice(b.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
        }
    }
}

fn joined_value(s: String) -> Option<HeaderValue> {
    if s.is_empty() {
        return None;
    }
    // Printable ASCII only (`push_sf_string`): always a valid value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// The `RateLimit` field value.
pub fn ratelimit(limits: &[LimitState]) -> String {
    let mut out = String::with_capacity(24 * limits.len());
    for (i, l) in limits.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_sf_string(&mut out, &l.name);
        out.push_str(";r=");
        push_int(&mut out, sf_int(l.remaining));
        out.push_str(";t=");
        push_int(&mut out, sf_int(l.reset_secs));
    }
    out
}

/// [`ratelimit`] as a header value (`None` for no limits).
pub fn ratelimit_value(limits: &[LimitState]) -> Option<HeaderValue> {
    joined_value(ratelimit(limits))
}

/// [`policy`] as a header value (`None` for no limits).
pub fn policy_header(limits: &[LimitState]) -> Option<HeaderValue> {
    joined_value(policy(limits))
}

/// `n` in decimal (per request: no formatting machinery).
fn push_int(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// The largest RFC 8941 sf-integer (15 digits).
pub const SF_MAX_INT: u64 = 999_999_999_999_999;

/// `n` as an sf-integer: larger numbers (a quota or burst the config allows
/// up to `u64::MAX`, a reset decades away) would make the whole field
/// unparseable, so they are capped at [`SF_MAX_INT`].
fn sf_int(n: u64) -> u64 {
    n.min(SF_MAX_INT)
}

/// An RFC 8941 sf-string: printable ASCII, `"` and `\` escaped; anything else
/// (config validation refuses it anyway) is replaced by `?`.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, quota: u64, w: u64, r: u64, t: u64) -> LimitState {
        LimitState {
            name: name.into(),
            quota,
            window_secs: w,
            remaining: r,
            reset_secs: t,
            violated: false,
            retry_after_secs: 0,
        }
    }

    #[test]
    fn renders_one_member_per_limit() {
        let l = vec![state("minute", 60, 60, 42, 3), state("route", 10, 1, 9, 1)];
        assert_eq!(policy(&l), r#""minute";q=60;w=60, "route";q=10;w=1"#);
        assert_eq!(ratelimit(&l), r#""minute";r=42;t=3, "route";r=9;t=1"#);
    }

    #[test]
    fn escapes_names() {
        let l = vec![state("a\"b\\c\u{e9}", 1, 1, 0, 1)];
        assert_eq!(policy(&l), r#""a\"b\\c?";q=1;w=1"#);
    }

    #[test]
    fn numbers_beyond_sf_integers_are_capped() {
        // `rate: 10000000000000000` is a valid config; 17 digits are not a
        // valid sf-integer (found by proxy/tests/props.rs).
        let l = vec![state("big", 10_000_000_000_000_000, u64::MAX, u64::MAX, 7)];
        assert_eq!(policy(&l), r#""big";q=999999999999999;w=999999999999999"#);
        assert_eq!(ratelimit(&l), r#""big";r=999999999999999;t=7"#);
    }

    #[test]
    fn numbers_render_as_decimal() {
        for n in [0, 1, 9, 10, 42, 999, 1_000_000, SF_MAX_INT] {
            let mut s = String::new();
            push_int(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn empty_list_is_empty() {
        assert_eq!(policy(&[]), "");
        assert_eq!(policy_value([]), None);
        assert_eq!(join_values(None, None), None);
    }
}
