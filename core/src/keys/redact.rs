//! Keys out of text kept for people: a path in an access-log line, a span's
//! `url.path`, a violation row. A client that puts its key in the URL path
//! (`GET /api/billing/tg_…`) must not have it stored in clear; what is
//! forwarded upstream is unchanged (the path is the API's).
//!
//! The rule is [`super::carries_key`]'s literal and percent-encoded forms:
//! every syntactically valid key (prefix, length, alphabet, checksum),
//! written literally or with any of its characters `%XX`-escaped (one
//! level), is replaced by [`REDACTED`]. Nothing is allocated when the text
//! holds neither `tg_` nor `%`.

use std::borrow::Cow;

use super::{validate, KEY_LEN, PREFIX};

/// What a key in a path is replaced by.
pub const REDACTED: &str = "tg_[redacted]";

/// What a request method carrying a key is replaced with (a method is one
/// token, so it is replaced whole): never forwarded, logged or stored.
pub const REDACTED_METHOD: &str = "REDACTED";

/// `method` as it may be recorded: [`REDACTED_METHOD`] if it carries a key
/// (black-box round 15: a key sent as the method was logged and forwarded).
pub fn recorded_method(method: &str) -> &str {
    if super::carries_key(method.as_bytes()) {
        REDACTED_METHOD
    } else {
        method
    }
}

/// `text` with every valid key in it (literal or percent-encoded) replaced
/// by [`REDACTED`]; borrowed when there is none.
pub fn redact_keys(text: &str) -> Cow<'_, str> {
    if !text.contains(PREFIX) && !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        match key_at(bytes, i) {
            Some(end) => {
                // A key starts and ends on ASCII bytes: both are char
                // boundaries.
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str(REDACTED);
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The end of a valid key starting at `start` (each of its characters
/// literal or one `%XX` escape), if one does.
fn key_at(bytes: &[u8], start: usize) -> Option<usize> {
    let mut key = [0u8; KEY_LEN];
    let mut j = start;
    for (n, slot) in key.iter_mut().enumerate() {
        let (b, len) = decoded_byte(bytes, j)?;
        if n < PREFIX.len() && b != PREFIX.as_bytes()[n] {
            return None;
        }
        *slot = b;
        j += len;
    }
    let key = std::str::from_utf8(&key).ok()?;
    validate(key).ok().map(|()| j)
}

/// The byte at `j` after percent-decoding, and how many bytes it took.
fn decoded_byte(bytes: &[u8], j: usize) -> Option<(u8, usize)> {
    let b = *bytes.get(j)?;
    if b != b'%' {
        return Some((b, 1));
    }
    let hex = |k: usize| bytes.get(k).and_then(|c| (*c as char).to_digit(16));
    match (hex(j + 1), hex(j + 2)) {
        (Some(hi), Some(lo)) => Some(((hi * 16 + lo) as u8, 3)),
        _ => Some((b'%', 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate;

    fn pct(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn a_key_in_a_path_is_redacted() {
        let k = generate().expect("rng").plain;
        let k2 = generate().expect("rng").plain;
        for (path, want) in [
            (
                format!("/api/billing/{k}"),
                format!("/api/billing/{REDACTED}"),
            ),
            (format!("/a/{k}/b"), format!("/a/{REDACTED}/b")),
            (format!("/{k}{k2}"), format!("/{REDACTED}{REDACTED}")),
            (format!("/x{k}y/{k2}"), format!("/x{REDACTED}y/{REDACTED}")),
            (format!("/ü/tg%5F{}", &k[3..]), format!("/ü/{REDACTED}")),
            (format!("/{}/z", pct(&k)), format!("/{REDACTED}/z")),
            (format!("/tg_/{k}%"), format!("/tg_/{REDACTED}%")),
        ] {
            assert_eq!(redact_keys(&path), want, "{path}");
        }
    }

    #[test]
    fn a_path_without_a_key_is_borrowed_unchanged() {
        let k = generate().expect("rng").plain;
        let mut typo = k.clone().into_bytes();
        typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        for path in [
            "/v1/users/7".to_string(),
            "/nope%zz".to_string(),
            "/ünï/%00/%".to_string(),
            "/tg_".to_string(),
            format!("/{typo}"),
            format!("/{}", &k[..KEY_LEN - 1]),
            format!("/{}", pct(&pct(&k))),
        ] {
            let r = redact_keys(&path);
            assert!(matches!(r, Cow::Borrowed(_)), "{path}");
            assert_eq!(r, path);
        }
    }

    #[test]
    fn a_method_carrying_a_key_is_recorded_redacted() {
        let k = crate::keys::generate().expect("rng").plain;
        assert_eq!(recorded_method(&k), REDACTED_METHOD);
        assert_eq!(recorded_method("GET"), "GET");
        assert_eq!(recorded_method("PROPFIND"), "PROPFIND");
    }
}
