//! W3C Trace Context (`traceparent`, `tracestate`): reading what a client
//! sent, starting a trace when it sent nothing usable, and the header the
//! next hop gets. Plain functions, no I/O.
//!
//! Only version `00` of `traceparent` is taken as written; anything malformed
//! (wrong lengths, upper-case hex, all-zero ids, version `ff`, junk after the
//! fields) is ignored and a fresh trace started. A `tracestate` is passed on
//! only along a valid `traceparent` and only when it is well-formed and
//! within the spec's limits (32 members, 512 bytes).

use std::fmt::Write as _;

/// A trace id (16 bytes) and span id (8 bytes), never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// The most `tracestate` the proxy passes on (W3C: at least 512 bytes must
/// be propagated; longer ones may be dropped).
pub const MAX_TRACESTATE: usize = 512;
/// The most list members of a `tracestate`.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Where the request's span hangs: a valid incoming parent (kept with its
/// `tracestate`, if valid), or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub parent: Option<SpanContext>,
    pub tracestate: Option<String>,
}

/// Read the client's `traceparent` (and `tracestate`, only with a valid
/// parent). Header values that are not valid UTF-8 count as absent.
pub fn incoming(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Incoming {
    let parent = traceparent
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(parse_traceparent);
    let tracestate = parent
        .and(tracestate)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|s| valid_tracestate(s))
        // Round 15 (black-box): a list member holding a key is well formed,
        // but the state is passed on to the upstream; it is dropped whole.
        .filter(|s| !crate::keys::carries_key(s.as_bytes()))
        .map(str::to_string);
    Incoming { parent, tracestate }
}

/// [`incoming`] from every line of each header as received: two or more
/// `traceparent` lines are invalid (W3C Trace Context: the trace starts
/// afresh), several `tracestate` lines are one list, joined with commas
/// (RFC 9110 §5.3), then checked as one.
pub fn incoming_lines<'a>(
    traceparent: impl IntoIterator<Item = &'a [u8]>,
    tracestate: impl IntoIterator<Item = &'a [u8]>,
) -> Incoming {
    let mut lines = traceparent.into_iter();
    let parent = match (lines.next(), lines.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    };
    let states: Vec<&[u8]> = tracestate.into_iter().collect();
    let joined;
    let state = match states.as_slice() {
        [] => None,
        [one] => Some(*one),
        many => {
            joined = many.join(&b","[..]);
            Some(joined.as_slice())
        }
    };
    incoming(parent, state)
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower-case hex, non-zero ids. Versions
/// other than 00 (but not `ff`) are read by their first four fields, as the
/// spec asks, when what follows starts with `-`.
pub fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let v = v.trim_matches([' ', '\t']);
    if v.len() < 55 || !v.is_ascii() {
        return None;
    }
    let version = lower_hex::<1>(&v[0..2])?[0];
    if version == 0xff
        || (version == 0 && v.len() != 55)
        || (version != 0 && v.len() > 55 && !v[55..].starts_with('-'))
    {
        return None;
    }
    let b = v.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = lower_hex::<16>(&v[3..35])?;
    let span_id = lower_hex::<8>(&v[36..52])?;
    let flags = lower_hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(SpanContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Exactly `2 * N` lower-case hex digits.
fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A `tracestate` within the limits, each member `key=value` with the
/// spec's characters (keys: lower-case letters, digits, `_-*/` and one `@`;
/// values: printable ASCII but `,` and `=`, no trailing space).
pub fn valid_tracestate(s: &str) -> bool {
    if s.len() > MAX_TRACESTATE || !s.is_ascii() {
        return false;
    }
    let members: Vec<&str> = s
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return false;
    }
    let mut keys = Vec::with_capacity(members.len());
    for m in members {
        let Some((key, value)) = m.split_once('=') else {
            return false;
        };
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key.matches('@').count() <= 1
            && key.bytes().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
            })
            && key.as_bytes()[0].is_ascii_alphanumeric();
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && !value.ends_with(' ')
            && value
                .bytes()
                .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=');
        if !key_ok || !value_ok || keys.contains(&key) {
            return false;
        }
        keys.push(key);
    }
    true
}

/// Random non-zero ids.
pub trait IdSource {
    fn trace_id(&mut self) -> [u8; 16];
    fn span_id(&mut self) -> [u8; 8];
}

/// Ids from the operating system's generator (one call each).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIds;

impl IdSource for OsIds {
    fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let mut id = [0u8; 16];
            if getrandom::fill(&mut id).is_ok() && id != [0; 16] {
                return id;
            }
        }
    }
    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let mut id = [0u8; 8];
            if getrandom::fill(&mut id).is_ok() && id != [0; 8] {
                return id;
            }
        }
    }
}

/// The proxy's own span: a child of the incoming parent, or the root of a
/// fresh (sampled) trace.
pub fn child_of(parent: Option<&SpanContext>, ids: &mut impl IdSource) -> SpanContext {
    match parent {
        Some(p) => SpanContext {
            trace_id: p.trace_id,
            span_id: ids.span_id(),
            sampled: p.sampled,
        },
        None => SpanContext {
            trace_id: ids.trace_id(),
            span_id: ids.span_id(),
            sampled: true,
        },
    }
}

impl SpanContext {
    /// The `traceparent` the next hop gets: this span as its parent.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        for b in self.trace_id {
            let _ = write!(s, "{b:02x}");
        }
        s.push('-');
        for b in self.span_id {
            let _ = write!(s, "{b:02x}");
        }
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn several_header_lines() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice();
        let other = b"00-11111111111111111111111111111111-2222222222222222-01".as_slice();
        // One traceparent line: the parent, with both tracestate lines as one list.
        let one = incoming_lines([tp], [b"a=1".as_slice(), b"b=2".as_slice()]);
        assert!(one.parent.is_some());
        assert_eq!(one.tracestate.as_deref(), Some("a=1,b=2"));
        // Two traceparent lines (even the same twice): a fresh trace.
        for second in [tp, other] {
            let two = incoming_lines([tp, second], [b"a=1".as_slice()]);
            assert_eq!((two.parent, two.tracestate), (None, None));
        }
        // A key in two tracestate lines: the list is invalid, the parent stays.
        let dup = incoming_lines([tp], [b"a=1".as_slice(), b"a=2".as_slice()]);
        assert!(dup.parent.is_some());
        assert_eq!(dup.tracestate, None);
        assert_eq!(incoming_lines([], []), incoming(None, None));
    }
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    struct Fixed;
    impl IdSource for Fixed {
        fn trace_id(&mut self) -> [u8; 16] {
            [7; 16]
        }
        fn span_id(&mut self) -> [u8; 8] {
            [9; 8]
        }
    }

    #[test]
    fn a_valid_parent_is_kept_and_the_child_gets_a_new_span() {
        let inc = incoming(
            Some(VALID.as_bytes()),
            Some(b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        );
        let p = inc.parent.expect("parent");
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id_hex(), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(
            inc.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        let c = child_of(Some(&p), &mut Fixed);
        assert_eq!(
            c.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0909090909090909-01"
        );
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid");
        assert!(!child_of(Some(&unsampled), &mut Fixed).sampled);
        // A later version is read by its first fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
    }

    #[test]
    fn hostile_traceparents_start_a_fresh_trace() {
        let long = "0".repeat(10_000);
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
            long.as_str(),
        ] {
            let inc = incoming(Some(bad.as_bytes()), Some(b"a=b"));
            assert_eq!(
                inc,
                Incoming {
                    parent: None,
                    tracestate: None
                },
                "{bad:?}"
            );
            let c = child_of(inc.parent.as_ref(), &mut Fixed);
            assert_eq!(c.trace_id, [7; 16]);
        }
        assert_eq!(incoming(Some(&[0xff, 0xfe]), None).parent, None);
        assert_eq!(incoming(None, Some(b"a=b")).tracestate, None);
    }

    #[test]
    fn hostile_tracestates_are_dropped_but_the_parent_kept() {
        let huge = format!("a={}", "x".repeat(MAX_TRACESTATE));
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        for bad in [
            huge.as_str(),
            many.as_str(),
            "",
            "novalue",
            "a=",
            "=b",
            "A=b",
            "a=b,a=c",
            "a=b=c",
            "a=b\u{7f}",
            "a=é",
            "a@b@c=d",
        ] {
            let inc = incoming(Some(VALID.as_bytes()), Some(bad.as_bytes()));
            assert!(inc.parent.is_some());
            assert_eq!(inc.tracestate, None, "{bad:?}");
        }
        assert!(valid_tracestate("vendor@tenant=x, other=1"));
    }

    /// Round 15 (black-box): a well-formed member holding a key is not
    /// passed on to the upstream.
    #[test]
    fn a_tracestate_carrying_a_key_is_dropped() {
        let key = crate::keys::generate().expect("rng").plain;
        for state in [format!("vendor={key}"), format!("a=b,v@t={key}")] {
            assert!(valid_tracestate(&state), "{state}");
            let inc = incoming(Some(VALID.as_bytes()), Some(state.as_bytes()));
            assert!(inc.parent.is_some());
            assert_eq!(inc.tracestate, None, "{state}");
        }
    }

    #[test]
    fn os_ids_are_random_and_non_zero() {
        let a = child_of(None, &mut OsIds);
        let b = child_of(None, &mut OsIds);
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, [0; 8]);
        assert!(parse_traceparent(&a.traceparent()).is_some());
    }
}
