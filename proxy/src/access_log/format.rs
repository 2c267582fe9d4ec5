//! The access line, written by hand into a byte buffer: the same bytes as
//! `tracing-subscriber`'s `fmt` layer writes for the `tollgate::access`
//! event (text with or without ANSI styling, or JSON), without its
//! formatting machinery. `tests` in [`super`] check the two agree.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tollgate_core::config::Target;
use tollgate_core::keys::redact_keys;

use super::Line;

const HEX: &[u8; 16] = b"0123456789abcdef";

// nu-ansi-term's styles as tracing-subscriber uses them.
const DIM: &[u8] = b"\x1b[2m";
const ITALIC: &[u8] = b"\x1b[3m";
const GREEN: &[u8] = b"\x1b[32m";
const RESET: &[u8] = b"\x1b[0m";

/// The event's target, as `tracing` names it.
pub const TARGET: &str = "tollgate::access";

/// Microseconds since the epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `2026-12-01T19:35:13.178118Z` (RFC 3339, UTC, microseconds), as
/// `tracing-subscriber`'s default timer writes it.
pub fn timestamp(out: &mut Vec<u8>, us: u64) {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    push_padded(out, y as u64, 4);
    out.push(b'-');
    push_padded(out, m as u64, 2);
    out.push(b'-');
    push_padded(out, d as u64, 2);
    out.push(b'T');
    push_padded(out, rem / 3600, 2);
    out.push(b':');
    push_padded(out, rem / 60 % 60, 2);
    out.push(b':');
    push_padded(out, rem % 60, 2);
    out.push(b'.');
    push_padded(out, micros, 6);
    out.push(b'Z');
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        out.push(b'0');
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_padded(out, v, 1);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// A `String` as `Debug` writes it (quoted, escaped). Printable ASCII
/// without `"` or `\` is copied; anything else goes through `Debug`.
fn push_debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let mut t = String::new();
        let _ = write!(t, "{s:?}");
        out.extend_from_slice(t.as_bytes());
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `203.0.113.5`, or `-` when there is none, as [`super::Client`]
/// displays it (black-box round 15: it was `Some(203.0.113.5)`).
fn push_client(out: &mut Vec<u8>, client: Option<IpAddr>) {
    match client {
        None => out.push(b'-'),
        Some(IpAddr::V4(v4)) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
        }
        Some(ip) => {
            let mut t = String::new();
            let _ = write!(t, "{ip}");
            out.extend_from_slice(t.as_bytes());
        }
    }
}

/// The target as its `Display` writes it (`http://host:port`), into a
/// scratch buffer.
fn upstream_text(t: &Target, out: &mut String) {
    out.push_str(if t.tls { "https://" } else { "http://" });
    if t.host.contains(':') {
        out.push('[');
        out.push_str(&t.host);
        out.push(']');
    } else {
        out.push_str(&t.host);
    }
    out.push(':');
    let mut buf = Vec::with_capacity(5);
    push_u64(&mut buf, u64::from(t.port));
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

fn trace_hex(id: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    out
}

/// One field's name and `=` of the text format.
fn text_name(out: &mut Vec<u8>, first: bool, name: &str, ansi: bool) {
    if !first {
        out.push(b' ');
    }
    if ansi {
        out.extend_from_slice(ITALIC);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(RESET);
        out.extend_from_slice(DIM);
        out.push(b'=');
        out.extend_from_slice(RESET);
    } else {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
    }
}

/// The text line (with its newline), at `now_us`.
pub fn text(out: &mut Vec<u8>, l: &Line<'_>, ansi: bool, now_us: u64) {
    if ansi {
        out.extend_from_slice(DIM);
        timestamp(out, now_us);
        out.extend_from_slice(RESET);
        out.push(b' ');
        out.extend_from_slice(GREEN);
        out.extend_from_slice(b" INFO");
        out.extend_from_slice(RESET);
        out.push(b' ');
        out.extend_from_slice(DIM);
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(RESET);
        out.extend_from_slice(DIM);
        out.push(b':');
        out.extend_from_slice(RESET);
        out.push(b' ');
    } else {
        timestamp(out, now_us);
        out.extend_from_slice(b"  INFO ");
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b": ");
    }
    text_name(out, true, "request_id", ansi);
    out.extend_from_slice(l.request_id.as_bytes());
    text_name(out, false, "route", ansi);
    push_debug_str(out, l.route);
    if let Some(id) = l.key_id {
        text_name(out, false, "key_id", ansi);
        push_i64(out, id);
    }
    text_name(out, false, "method", ansi);
    out.extend_from_slice(l.method.as_bytes());
    text_name(out, false, "path", ansi);
    out.extend_from_slice(redact_keys(l.path).as_bytes());
    text_name(out, false, "client", ansi);
    push_client(out, l.client);
    text_name(out, false, "status", ansi);
    push_u64(out, u64::from(l.status));
    text_name(out, false, "outcome", ansi);
    push_debug_str(out, l.outcome);
    text_name(out, false, "limiter", ansi);
    push_debug_str(out, l.limiter);
    if let Some(t) = l.upstream {
        text_name(out, false, "upstream", ansi);
        let mut s = String::with_capacity(32);
        upstream_text(t, &mut s);
        push_debug_str(out, &s);
    }
    if let Some(id) = l.trace_id {
        text_name(out, false, "trace_id", ansi);
        out.push(b'"');
        out.extend_from_slice(&trace_hex(id));
        out.push(b'"');
    }
    text_name(out, false, "duration_us", ansi);
    push_u64(out, l.duration_us);
    out.push(b'\n');
}

/// The JSON line (with its newline), at `now_us`.
pub fn json(out: &mut Vec<u8>, l: &Line<'_>, now_us: u64) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, now_us);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"request_id\":");
    push_json_str(out, l.request_id);
    out.extend_from_slice(b",\"route\":");
    push_json_str(out, l.route);
    if let Some(id) = l.key_id {
        out.extend_from_slice(b",\"key_id\":");
        push_i64(out, id);
    }
    out.extend_from_slice(b",\"method\":");
    push_json_str(out, l.method);
    out.extend_from_slice(b",\"path\":");
    push_json_str(out, &redact_keys(l.path));
    out.extend_from_slice(b",\"client\":\"");
    // Digits, dots, colons, hex and `Some(…)`/`None`: nothing to escape.
    push_client(out, l.client);
    out.extend_from_slice(b"\",\"status\":");
    push_u64(out, u64::from(l.status));
    out.extend_from_slice(b",\"outcome\":");
    push_json_str(out, l.outcome);
    out.extend_from_slice(b",\"limiter\":");
    push_json_str(out, l.limiter);
    if let Some(t) = l.upstream {
        out.extend_from_slice(b",\"upstream\":");
        let mut s = String::with_capacity(32);
        upstream_text(t, &mut s);
        push_json_str(out, &s);
    }
    if let Some(id) = l.trace_id {
        out.extend_from_slice(b",\"trace_id\":\"");
        out.extend_from_slice(&trace_hex(id));
        out.push(b'"');
    }
    out.extend_from_slice(b",\"duration_us\":");
    push_u64(out, l.duration_us);
    out.extend_from_slice(b"},\"target\":\"");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(us: u64) -> String {
        let mut v = Vec::new();
        timestamp(&mut v, us);
        String::from_utf8(v).expect("ascii")
    }

    #[test]
    fn timestamps_match_jiff() {
        // Epoch, leap days, century rules, ends of months and years, far future.
        let samples: [i64; 10] = [
            0,
            951_782_400_123_456,   // 2000-02-29
            1_709_164_799_999_999, // 2024-02-28T23:59:59.999999
            1_709_251_200_000_001, // 2024-03-01
            1_735_689_599_500_000, // 2024-12-31T23:59:59.5
            4_107_542_400_000_000, // 2100-03-01
            4_102_444_800_000_000, // 2100-01-01
            1_796_150_113_178_118,
            253_402_000_000_999_999, // late 9999 (jiff's range ends there)
            86_399_000_001,
        ];
        for us in samples {
            let t = jiff::Timestamp::from_microsecond(us).expect("in range");
            let want = t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            assert_eq!(ts(us as u64), want, "{us}");
        }
    }

    #[test]
    fn json_strings_escape_like_serde_json() {
        for s in [
            "plain",
            "quote\" back\\slash",
            "ctl\u{1}\u{1f}\u{7f}\n\r\t\u{8}\u{c}",
            "ünï\u{80}\u{2028}",
            "",
        ] {
            let mut v = Vec::new();
            push_json_str(&mut v, s);
            let want = serde_json::to_string(s).expect("json");
            assert_eq!(String::from_utf8(v).expect("utf-8"), want, "{s:?}");
        }
    }

    #[test]
    fn debug_strings_match_debug() {
        for s in [
            "api",
            "a\"b",
            "tab\there",
            "é",
            "\u{1b}[31m",
            "\u{301}x",
            "",
        ] {
            let mut v = Vec::new();
            push_debug_str(&mut v, s);
            assert_eq!(String::from_utf8(v).expect("utf-8"), format!("{s:?}"));
        }
    }

    #[test]
    fn numbers_and_clients() {
        for n in [0i64, 7, -1, i64::MIN, i64::MAX, 1_000_000] {
            let mut v = Vec::new();
            push_i64(&mut v, n);
            assert_eq!(String::from_utf8(v).expect("ascii"), n.to_string());
        }
        for c in [
            None,
            Some("203.0.113.5".parse().expect("v4")),
            Some("0.0.0.0".parse().expect("v4")),
            Some("2001:db8::1".parse().expect("v6")),
            Some("::ffff:1.2.3.4".parse().expect("v6")),
        ] {
            let mut v = Vec::new();
            push_client(&mut v, c);
            assert_eq!(
                String::from_utf8(v).expect("ascii"),
                super::super::Client(c).to_string(),
                "{c:?}"
            );
        }
        let mut v = Vec::new();
        push_client(&mut v, Some("203.0.113.5".parse().expect("v4")));
        assert_eq!(v, b"203.0.113.5", "an address, not Some(...)");
        for (tls, host, port) in [
            (false, "127.0.0.1", 80),
            (true, "::1", 8443),
            (false, "up.example", 65535),
        ] {
            let t = Target {
                tls,
                host: host.into(),
                port,
            };
            let mut s = String::new();
            upstream_text(&t, &mut s);
            assert_eq!(s, t.to_string());
        }
    }
}
