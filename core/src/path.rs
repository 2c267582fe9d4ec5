//! The canonical request path: what routes are matched on and exactly what the
//! upstream receives.
//!
//! Upstreams disagree about what a path means: nginx, Spring or ASP.NET resolve
//! `..`, merge `//` and decode `%73`; Tomcat drops `;params`; Windows servers
//! treat `\` as `/`. If the proxy routed on the raw bytes and forwarded them
//! unchanged, `/open/../secret` would be checked against the keyless `/open`
//! route and served as `/secret`. So the request target is brought into one
//! canonical form first, and that form is both routed on and forwarded:
//!
//! - percent-encoded unreserved characters (`%73` → `s`, `%2E` → `.`) are
//!   decoded; every other escape is kept, with upper-case hex;
//! - dot segments (`.`, `..`, raw or encoded in any case) and empty segments
//!   (`//`) are refused ([`PathPolicy::Reject`], the default) or resolved
//!   (RFC 3986 §5.2.4 remove-dot-segments, empty segments merged;
//!   [`PathPolicy::Normalize`]); a trailing `/` is kept;
//! - always refused, whatever the policy: encoded `/` or `\` (`%2F`, `%5C`),
//!   an encoded `?` or `#` (`%3F`, `%23`: an upstream that decodes before it
//!   splits off the query would route on less of the path than was checked),
//!   a raw `\`, `;` path parameters (raw or `%3B`), an encoded `%` (`%25`,
//!   double encoding), NUL and other control bytes (raw or encoded), and
//!   malformed escapes;
//! - other bytes that may not appear in a path (non-ASCII, `"`, `<`, `{`, …)
//!   are percent-encoded.
//!
//! Absolute-form targets (`http://host/path`) are accepted: the authority is
//! returned for the `Host` header and the path goes through the same rules.
//! The query is kept as sent (control bytes refused, bytes a URI cannot hold
//! percent-encoded); the fragment, which is never part of a request, is dropped.

use std::fmt::Write;

/// What to do with dot segments and empty segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathPolicy {
    /// Refuse them: 400 `bad-path`.
    #[default]
    Reject,
    /// Resolve them (RFC 3986 §5.2.4) and merge slashes; route and forward
    /// the result.
    Normalize,
}

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A NUL, control byte, space or DEL, raw or percent-encoded.
    ControlByte,
    /// `%2F` or `%5C` (an encoded `/` or `\`), or a raw `\`.
    EncodedSlash,
    /// `%3F` or `%23`: an encoded `?` or `#`.
    EncodedDelimiter,
    /// A `.` or `..` segment under [`PathPolicy::Reject`].
    DotSegment,
    /// An empty segment (`//`) under [`PathPolicy::Reject`].
    EmptySegment,
    /// A `;` (path parameters), raw or `%3B`.
    Parameters,
    /// `%25`: an encoded `%`, the tool of double-encoding attacks.
    DoubleEncoding,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Not origin-form or absolute-form with an `http`/`https` URL (e.g. `*`,
    /// a relative path, or userinfo in the authority).
    UnsupportedForm,
}

impl PathError {
    /// A short, stable reason for the problem body and logs.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::ControlByte => "control-byte",
            PathError::EncodedSlash => "encoded-slash",
            PathError::EncodedDelimiter => "encoded-delimiter",
            PathError::DotSegment => "dot-segment",
            PathError::EmptySegment => "empty-segment",
            PathError::Parameters => "path-parameters",
            PathError::DoubleEncoding => "double-encoding",
            PathError::BadEscape => "bad-escape",
            PathError::UnsupportedForm => "unsupported-target-form",
        }
    }

    /// A sentence for the problem `detail`.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::ControlByte => "the request target contains a control byte",
            PathError::EncodedSlash => {
                "the path contains an encoded '/' or '\\' (%2F, %5C) or a backslash"
            }
            PathError::EncodedDelimiter => "the path contains an encoded '?' or '#' (%3F, %23)",
            PathError::DotSegment => "the path contains a '.' or '..' segment",
            PathError::EmptySegment => "the path contains an empty segment ('//')",
            PathError::Parameters => "the path contains ';' parameters",
            PathError::DoubleEncoding => "the path contains an encoded '%' (%25)",
            PathError::BadEscape => "the path contains a '%' not followed by two hex digits",
            PathError::UnsupportedForm => {
                "the request target must be a path starting with '/' or an http(s) URL"
            }
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.detail())
    }
}

/// A request target in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Starts with `/`; only unreserved characters, sub-delims (but `;`),
    /// `:`, `@`, `/` and `%XX` escapes with upper-case hex.
    pub path: String,
    /// Without the `?`; `None` when there was no `?`.
    pub query: Option<String>,
    /// The authority of an absolute-form target (`host[:port]`).
    pub authority: Option<String>,
}

impl Canonical {
    /// Path and query, as sent upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters kept literally in a canonical path segment (RFC 3986 pchar
/// without `;` and without escapes).
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// Characters kept literally in a query.
fn is_query_char(b: u8) -> bool {
    is_path_char(b) || matches!(b, b';' | b'/' | b'?' | b'%')
}

fn is_control(b: u8) -> bool {
    b <= 0x20 || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    let _ = write!(out, "%{b:02X}");
}

/// Bring a raw request target into canonical form, or say why it is refused.
pub fn canonicalize(target: &[u8], policy: PathPolicy) -> Result<Canonical, PathError> {
    if target.iter().copied().any(is_control) {
        return Err(PathError::ControlByte);
    }
    // The fragment is not part of a request: drop it.
    let target = match target.iter().position(|&b| b == b'#') {
        Some(i) => &target[..i],
        None => target,
    };
    let (authority, rest) = split_absolute(target)?;
    if rest.first() != Some(&b'/') {
        return Err(PathError::UnsupportedForm);
    }
    let (raw_path, raw_query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let segments = decode_segments(raw_path)?;
    let path = resolve(segments, policy)?;
    let query = raw_query.map(|q| {
        let mut out = String::with_capacity(q.len());
        for &b in q {
            if is_query_char(b) {
                out.push(char::from(b));
            } else {
                push_escaped(&mut out, b);
            }
        }
        out
    });
    Ok(Canonical {
        path,
        query,
        authority,
    })
}

/// `http://host:port/path?q` → (`host:port`, `/path?q`); origin-form passes
/// through. An empty path in absolute form is `/`.
fn split_absolute(target: &[u8]) -> Result<(Option<String>, &[u8]), PathError> {
    let lower_starts =
        |p: &[u8]| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p);
    let rest = if lower_starts(b"http://") {
        &target[7..]
    } else if lower_starts(b"https://") {
        &target[8..]
    } else if target.first() == Some(&b'/') {
        return Ok((None, target));
    } else {
        return Err(PathError::UnsupportedForm);
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let valid_authority = !authority.is_empty()
        && authority.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']' | b'_')
        });
    if !valid_authority {
        // Userinfo (`user@host`), escapes or anything odd in the host.
        return Err(PathError::UnsupportedForm);
    }
    let authority = String::from_utf8_lossy(authority).to_ascii_lowercase();
    let path = &rest[end..];
    if path.is_empty() {
        return Ok((Some(authority), b"/"));
    }
    if path[0] == b'?' {
        // `http://host?q`: a query without a path; not worth supporting.
        return Err(PathError::UnsupportedForm);
    }
    Ok((Some(authority), path))
}

/// Split on `/` (the leading one included: the first segment is empty) and
/// decode each segment's escapes into canonical text.
fn decode_segments(raw: &[u8]) -> Result<Vec<String>, PathError> {
    let mut segments = Vec::new();
    for seg in raw[1..].split(|&b| b == b'/') {
        let mut out = String::with_capacity(seg.len());
        let mut i = 0;
        while i < seg.len() {
            let b = seg[i];
            match b {
                b'%' => {
                    let (Some(h), Some(l)) = (
                        seg.get(i + 1).copied().and_then(hex),
                        seg.get(i + 2).copied().and_then(hex),
                    ) else {
                        return Err(PathError::BadEscape);
                    };
                    let d = h * 16 + l;
                    match d {
                        b'/' | b'\\' => return Err(PathError::EncodedSlash),
                        b'?' | b'#' => return Err(PathError::EncodedDelimiter),
                        b';' => return Err(PathError::Parameters),
                        b'%' => return Err(PathError::DoubleEncoding),
                        _ if is_control(d) && d != b' ' => return Err(PathError::ControlByte),
                        _ if is_unreserved(d) => out.push(char::from(d)),
                        _ => push_escaped(&mut out, d),
                    }
                    i += 3;
                    continue;
                }
                b'\\' => return Err(PathError::EncodedSlash),
                b';' => return Err(PathError::Parameters),
                _ if is_path_char(b) => out.push(char::from(b)),
                _ => push_escaped(&mut out, b),
            }
            i += 1;
        }
        segments.push(out);
    }
    Ok(segments)
}

/// Apply the policy to dot and empty segments and join.
fn resolve(segments: Vec<String>, policy: PathPolicy) -> Result<String, PathError> {
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    // Whether the result ends with a `/` (an empty last segment).
    let mut trailing = false;
    for (i, seg) in segments.into_iter().enumerate() {
        let is_last = i == last;
        match seg.as_str() {
            "." | ".." if policy == PathPolicy::Reject => return Err(PathError::DotSegment),
            "." => trailing = is_last,
            ".." => {
                out.pop();
                trailing = is_last;
            }
            "" if is_last => trailing = true,
            "" if policy == PathPolicy::Reject => return Err(PathError::EmptySegment),
            "" => {}
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    let mut path = String::with_capacity(out.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Whether `path` is already canonical under [`PathPolicy::Reject`] (for
/// config validation of route prefixes).
pub fn is_canonical(path: &str) -> bool {
    canonicalize(path.as_bytes(), PathPolicy::Reject)
        .is_ok_and(|c| c.path == path && c.query.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reject(t: &str) -> Result<String, PathError> {
        canonicalize(t.as_bytes(), PathPolicy::Reject).map(|c| c.path)
    }
    fn normalize(t: &str) -> Result<String, PathError> {
        canonicalize(t.as_bytes(), PathPolicy::Normalize).map(|c| c.path)
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_upper_cased() {
        assert_eq!(reject("/v1/%73earch").as_deref(), Ok("/v1/search"));
        assert_eq!(reject("/a%7eb%2D").as_deref(), Ok("/a~b-"));
        assert_eq!(reject("/a%c3%a9").as_deref(), Ok("/a%C3%A9"));
        assert_eq!(reject("/a b").as_deref(), Err(&PathError::ControlByte));
        assert_eq!(reject("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(reject("/x\"<>{}").as_deref(), Ok("/x%22%3C%3E%7B%7D"));
        assert_eq!(
            canonicalize(b"/caf\xc3\xa9", PathPolicy::Reject).map(|c| c.path),
            Ok("/caf%C3%A9".to_string())
        );
    }

    #[test]
    fn dot_segments_in_every_spelling_are_refused_by_default() {
        for t in [
            "/health/../api/users",
            "/health/%2e%2e/api",
            "/health/%2E%2E/api",
            "/health/.%2e/api",
            "/v1/./search",
            "/v1/%2e/search",
            "/v1/search/..",
            "/v1/search/.",
            "/..",
        ] {
            assert_eq!(reject(t), Err(PathError::DotSegment), "{t}");
        }
        // Dots inside a segment are fine.
        assert_eq!(reject("/a/..b/.c/d..").as_deref(), Ok("/a/..b/.c/d.."));
    }

    #[test]
    fn slashes_params_escapes_and_controls() {
        assert_eq!(reject("/v1//search"), Err(PathError::EmptySegment));
        assert_eq!(reject("//v1"), Err(PathError::EmptySegment));
        assert_eq!(reject("/health/..%2fapi"), Err(PathError::EncodedSlash));
        assert_eq!(reject("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(reject("/a%5cb"), Err(PathError::EncodedSlash));
        assert_eq!(reject("/a\\b"), Err(PathError::EncodedSlash));
        for p in [
            "/open/secret%3f/admin",
            "/open/secret%3F",
            "/a%23b",
            "/a%23",
        ] {
            assert_eq!(reject(p), Err(PathError::EncodedDelimiter), "{p}");
            assert_eq!(normalize(p), Err(PathError::EncodedDelimiter), "{p}");
        }
        assert_eq!(reject("/v1/search;"), Err(PathError::Parameters));
        assert_eq!(
            reject("/v1/search;jsessionid=1"),
            Err(PathError::Parameters)
        );
        assert_eq!(reject("/v1/search%3bx"), Err(PathError::Parameters));
        assert_eq!(reject("/a%2573"), Err(PathError::DoubleEncoding));
        assert_eq!(reject("/a%00"), Err(PathError::ControlByte));
        assert_eq!(reject("/a%0d%0a"), Err(PathError::ControlByte));
        assert_eq!(reject("/a%7F"), Err(PathError::ControlByte));
        assert_eq!(
            canonicalize(b"/a\x00b", PathPolicy::Normalize),
            Err(PathError::ControlByte)
        );
        assert_eq!(
            canonicalize(b"/a\tb", PathPolicy::Reject),
            Err(PathError::ControlByte)
        );
        assert_eq!(
            canonicalize(b"/a?x=\x1b", PathPolicy::Reject),
            Err(PathError::ControlByte)
        );
        assert_eq!(reject("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(reject("/a%4"), Err(PathError::BadEscape));
        assert_eq!(reject("*"), Err(PathError::UnsupportedForm));
        assert_eq!(reject("api/x"), Err(PathError::UnsupportedForm));
        assert_eq!(reject(""), Err(PathError::UnsupportedForm));
        // Normalize does not lift the always-refused cases.
        assert_eq!(normalize("/a/..%2f"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a;b"), Err(PathError::Parameters));
    }

    #[test]
    fn normalize_follows_rfc3986_remove_dot_segments() {
        assert_eq!(
            normalize("/health/../api/users").as_deref(),
            Ok("/api/users")
        );
        assert_eq!(normalize("/health/%2E%2e/api").as_deref(), Ok("/api"));
        assert_eq!(normalize("/a/b/c/./../../g").as_deref(), Ok("/a/g"));
        assert_eq!(normalize("/../../x").as_deref(), Ok("/x"));
        assert_eq!(normalize("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(normalize("/v1//search").as_deref(), Ok("/v1/search"));
        assert_eq!(normalize("//v1///x//").as_deref(), Ok("/v1/x/"));
        assert_eq!(normalize("/..").as_deref(), Ok("/"));
        assert_eq!(normalize("/").as_deref(), Ok("/"));
    }

    #[test]
    fn absolute_form_gives_host_and_path() {
        let c = canonicalize(
            b"http://Example.com:8080/v1/%73earch?q=1#frag",
            PathPolicy::Reject,
        )
        .expect("absolute");
        assert_eq!(c.authority.as_deref(), Some("example.com:8080"));
        assert_eq!(c.path, "/v1/search");
        assert_eq!(c.query.as_deref(), Some("q=1"));
        assert_eq!(c.path_and_query(), "/v1/search?q=1");
        let c = canonicalize(b"HTTPS://h", PathPolicy::Reject).expect("no path");
        assert_eq!(c.path, "/");
        for bad in [
            &b"http://user@h/x"[..],
            b"http:///x",
            b"ftp://h/x",
            b"http://h%41/x",
        ] {
            assert_eq!(
                canonicalize(bad, PathPolicy::Reject),
                Err(PathError::UnsupportedForm),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            canonicalize(b"http://h/a/../b", PathPolicy::Reject),
            Err(PathError::DotSegment)
        );
    }

    #[test]
    fn query_is_kept_with_odd_bytes_escaped() {
        let c = canonicalize(b"/a?x=1&y=%2e%2E/..;z\"", PathPolicy::Reject).expect("query");
        assert_eq!(c.path, "/a");
        assert_eq!(c.query.as_deref(), Some("x=1&y=%2e%2E/..;z%22"));
        let c = canonicalize(b"/a?", PathPolicy::Reject).expect("empty query");
        assert_eq!(c.query.as_deref(), Some(""));
    }

    #[test]
    fn canonical_prefixes() {
        assert!(is_canonical("/api/users"));
        assert!(is_canonical("/files/"));
        assert!(is_canonical("/"));
        assert!(!is_canonical("/a//b"));
        assert!(!is_canonical("/a/../b"));
        assert!(!is_canonical("/%7euser"));
        assert!(!is_canonical("/a;b"));
        assert!(!is_canonical("/a?b"));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E%2e".to_string()),
            Just(String::new()),
            Just("%73".to_string()),
            Just("%41b".to_string()),
            Just("%C3%A9".to_string()),
            "[a-zA-Z0-9._~-]{1,6}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 0..8).prop_map(|s| format!("/{}", s.join("/")))
    }

    /// Every path segment of a canonical path is neither `.`, `..` nor empty
    /// (but a trailing one), and has no raw `;`, `\` or encoded unreserved.
    fn check_canonical(p: &str) {
        assert!(p.starts_with('/'), "{p}");
        let segs: Vec<&str> = p[1..].split('/').collect();
        for (i, s) in segs.iter().enumerate() {
            assert!(*s != "." && *s != "..", "{p}");
            assert!(!s.is_empty() || i + 1 == segs.len(), "{p}");
        }
        assert!(!p.contains([';', '\\']), "{p}");
        assert!(!p.contains("%2E") && !p.contains("%73"), "{p}");
    }

    proptest! {
        #[test]
        fn normalized_paths_are_canonical_and_stable(p in path()) {
            let once = normalize(&p).expect("normalize never refuses these");
            check_canonical(&once);
            prop_assert_eq!(normalize(&once), Ok(once.clone()));
            prop_assert_eq!(reject(&once), Ok(once.clone()));
        }

        #[test]
        fn reject_accepts_only_canonical_paths(p in path()) {
            if let Ok(c) = reject(&p) {
                check_canonical(&c);
                prop_assert_eq!(normalize(&p), Ok(c.clone()));
                prop_assert!(is_canonical(&c));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_give_canonical_paths(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut t = b"/".to_vec();
            t.extend(bytes);
            for policy in [PathPolicy::Reject, PathPolicy::Normalize] {
                if let Ok(c) = canonicalize(&t, policy) {
                    check_canonical(&c.path);
                    prop_assert!(c.path.bytes().all(|b| b.is_ascii_graphic()));
                    let again = canonicalize(c.path_and_query().as_bytes(), policy);
                    prop_assert_eq!(again.map(|a| a.path), Ok(c.path.clone()));
                }
            }
        }
    }
}
