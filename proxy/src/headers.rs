//! Rendering of the rate-limit response headers
//! (draft-ietf-httpapi-ratelimit-headers-10): one list member per limit.
//!
//! `RateLimit-Policy: "minute";q=60;w=60, "route";q=10;w=1`
//! `RateLimit: "minute";r=42;t=3, "route";r=9;t=1`

use std::fmt::Write;

use tollgate_core::limits::LimitState;

pub const POLICY: &str = "RateLimit-Policy";
pub const RATELIMIT: &str = "RateLimit";

/// The `RateLimit-Policy` field value.
pub fn policy(limits: &[LimitState]) -> String {
    let mut out = String::with_capacity(24 * limits.len());
    for (i, l) in limits.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_sf_string(&mut out, &l.name);
        let _ = write!(out, ";q={};w={}", l.quota, l.window_secs);
    }
    out
}

/// The `RateLimit` field value.
pub fn ratelimit(limits: &[LimitState]) -> String {
    let mut out = String::with_capacity(24 * limits.len());
    for (i, l) in limits.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_sf_string(&mut out, &l.name);
        let _ = write!(out, ";r={};t={}", l.remaining, l.reset_secs);
    }
    out
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
    fn empty_list_is_empty() {
        assert_eq!(policy(&[]), "");
    }
}
